"""MRNet training configurations on real recorded music: grouped k-fold x seeds, each run
paired with the built-in baseline on the same split.

    python benchmarks/bench_real_music.py run --config NAME --dataset styles|multisource \
        --folds 0,1,2,3,4 --seeds 0 [--jobs 2] [--threads T] [--code /work/exp] \
        -- <extra mrnet train args>
    python benchmarks/bench_real_music.py summary

`run` trains, for every (fold, seed) of NAME not yet in results/real_music_runs.csv,
`mrnet train --channels 64 --device cpu --workers 0 --no-progress --seed S <extra>` on
data/caches/<dataset>-f<fold> into data/runs/<NAME>/<dataset>-f<fold>-s<seed> (a run dir
left by a killed run is deleted and the run starts again), evaluates best.pt on the test
split and appends one row: test and validation figures, the baseline's test figures from the
evaluate report (same split), wall clock and peak RSS of the train process (os.wait4), the
commit of the code run. With --jobs N, N trainings run at once, each with
cpu_count // N threads (OMP_NUM_THREADS, MKL_NUM_THREADS) unless --threads says otherwise
(two `run`s with --jobs 1 --threads 1 side by side share the CSV safely).

`summary` prints per (config, dataset): runs, test accuracy and balanced accuracy
mean ± sample std over folds x seeds, the baseline's over the same rows, the paired
difference model - baseline (mean ± std, wins/ties/losses) and median cost; it writes the
table to results/real_music_summary.csv.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import tomllib

ROOT = Path(__file__).resolve().parents[1]
CACHES = ROOT / "data" / "caches"
RUNS = ROOT / "data" / "runs"
RESULTS = ROOT / "benchmarks" / "results"
RUNS_CSV = RESULTS / "real_music_runs.csv"
SUMMARY_CSV = RESULTS / "real_music_summary.csv"
FIXED = ["--channels", "64", "--device", "cpu", "--workers", "0", "--no-progress"]
COLUMNS = [
    "config",
    "args",
    "dataset",
    "fold",
    "seed",
    "n_train",
    "test_accuracy",
    "test_balanced_accuracy",
    "best_val_acc",
    "best_epoch",
    "epochs",
    "steps",
    "train_minutes",
    "seconds_per_epoch",
    "peak_rss_mib",
    "baseline_test_accuracy",
    "baseline_test_balanced_accuracy",
    "commit",
    "batch_size",
    "threads",
    "majority_test_accuracy",
    "finished_utc",
]
KEY = ["config", "dataset", "fold", "seed"]
CHILDREN: set[int] = set()
STOP = threading.Event()  # set by SIGTERM/SIGINT: no new process starts after it


@dataclass(frozen=True)
class Job:
    config: str
    dataset: str
    fold: int
    seed: int
    extra: tuple[str, ...]
    code: Path
    commit: str
    threads: int

    @property
    def cache(self) -> Path:
        return CACHES / f"{self.dataset}-f{self.fold}"

    @property
    def run_dir(self) -> Path:
        return RUNS / self.config / f"{self.dataset}-f{self.fold}-s{self.seed}"

    def train_argv(self) -> list[str]:
        return [
            sys.executable,
            str(self.code / "cli.py"),
            "train",
            "--cache",
            str(self.cache),
            "--out",
            str(self.run_dir),
            *FIXED,
            "--seed",
            str(self.seed),
            *self.extra,
        ]


def git_commit(code: Path) -> str:
    """The short commit of `code`; refuses a work tree with changes to tracked files."""
    status = ["git", "-C", str(code), "status", "--porcelain", "--untracked-files=no"]
    dirty = subprocess.run(status, capture_output=True, text=True, check=True).stdout.strip()
    if dirty:
        raise SystemExit(f"{code} has uncommitted changes; run a committed tree:\n{dirty}")
    return subprocess.run(
        ["git", "-C", str(code), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def child_env(code: Path, threads: int) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(code), OMP_NUM_THREADS=str(threads))
    env["MKL_NUM_THREADS"] = str(threads)
    return env


def check_imports(code: Path) -> None:
    """mrnet and pipeline must come from `code`, not from an editable install elsewhere."""
    probe = "import mrnet, pipeline; print(mrnet.__file__); print(pipeline.__file__)"
    out = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=code,
        env=child_env(code, 1),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    wrong = [p for p in out if not Path(p).resolve().is_relative_to(code.resolve())]
    if wrong:
        raise SystemExit(f"imports resolve outside {code}: {wrong}")


def read_runs() -> pd.DataFrame:
    if not RUNS_CSV.exists():
        return pd.DataFrame(columns=COLUMNS)
    return pd.read_csv(RUNS_CSV, keep_default_na=False, na_values=[""])


def append_row(row: dict) -> None:
    """Append one row under an exclusive lock (several `run`s may share the file)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    with open(RUNS_CSV, "a", newline="") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        header = f.tell() == 0
        pd.DataFrame([row], columns=COLUMNS).to_csv(f, header=header, index=False)
        f.flush()
        fcntl.flock(f, fcntl.LOCK_UN)


def run_measured(argv: list[str], cwd: Path, env: dict[str, str], log: Path) -> tuple[float, float]:
    """Run argv to completion; (wall seconds, peak RSS MiB of that process tree via wait4)."""
    t0 = time.perf_counter()
    with open(log, "w") as out:
        if STOP.is_set():
            raise RuntimeError("stopped before it started")
        p = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        CHILDREN.add(p.pid)
        if STOP.is_set():  # the signal came between the check and the add
            p.terminate()
        _, status, usage = os.wait4(p.pid, 0)
        CHILDREN.discard(p.pid)
        p.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-5:])
        raise RuntimeError(f"exit {p.returncode}: {shlex.join(argv)}\n{tail}")
    return wall, usage.ru_maxrss / 1024


def resolved_settings(job: Job) -> dict:
    """The run's settings as mrnet resolves them (--print-config), e.g. the batch size."""
    out = subprocess.run(
        [*job.train_argv(), "--print-config"],
        cwd=job.code,
        env=child_env(job.code, 1),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return tomllib.loads(out)


def majority_accuracy(cache: Path) -> float:
    """Test accuracy of always answering the training split's most common style."""
    tracks = pd.read_csv(cache / "tracks.csv")
    top = Counter(tracks.loc[tracks["split"] == "training", "genre"]).most_common(1)[0][0]
    test = tracks[tracks["split"] == "test"]
    return float((test["genre"] == top).mean())


def train_figures(metrics_csv: Path, batch: int) -> dict:
    m = pd.read_csv(metrics_csv)
    best = int(m["val_acc"].idxmax())  # first epoch with the best accuracy, as best.pt
    return {
        "best_val_acc": float(m["val_acc"].max()),
        "best_epoch": int(m["epoch"][best]),
        "epochs": len(m),
        "steps": int((m["train_samples"] // batch).sum()),
        "seconds_per_epoch": float(m["seconds"].mean()),
    }


def run_job(job: Job) -> dict:
    if job.run_dir.exists():  # left by a killed run: start again from scratch
        shutil.rmtree(job.run_dir)
    settings = resolved_settings(job)
    job.run_dir.mkdir(parents=True)
    (job.run_dir / "bench_command.txt").write_text(shlex.join(job.train_argv()) + "\n")
    env = child_env(job.code, job.threads)
    wall, peak = run_measured(job.train_argv(), job.code, env, job.run_dir / "train.log")
    report_dir = job.run_dir / "eval-test"
    ev = [
        sys.executable,
        str(job.code / "cli.py"),
        "evaluate",
        "--checkpoint",
        str(job.run_dir / "best.pt"),
        "--cache",
        str(job.cache),
        "--out",
        str(report_dir),
        "--split",
        "test",
        "--device",
        "cpu",
        "--no-progress",
    ]
    run_measured(ev, job.code, env, job.run_dir / "evaluate.log")
    rep = json.loads((report_dir / "report.json").read_text())
    n_train = int((pd.read_csv(job.cache / "tracks.csv")["split"] == "training").sum())
    return {
        "config": job.config,
        "args": shlex.join(job.extra),
        "dataset": job.dataset,
        "fold": job.fold,
        "seed": job.seed,
        "n_train": n_train,
        "test_accuracy": rep["accuracy"],
        "test_balanced_accuracy": rep["balanced_accuracy"],
        **train_figures(job.run_dir / "metrics.csv", settings["batch_size"]),
        "train_minutes": wall / 60,
        "peak_rss_mib": peak,
        "baseline_test_accuracy": rep["baseline"]["accuracy"],
        "baseline_test_balanced_accuracy": rep["baseline"]["balanced_accuracy"],
        "commit": job.commit,
        "batch_size": settings["batch_size"],
        "threads": job.threads,
        "majority_test_accuracy": majority_accuracy(job.cache),
        "finished_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def pending_jobs(a: argparse.Namespace, extra: list[str], commit: str) -> list[Job]:
    done = read_runs()
    mine = done[done["config"] == a.config]
    if len(mine) and set(mine["args"].fillna("")) != {shlex.join(extra)}:
        raise SystemExit(
            f"config {a.config} was recorded with other args: "
            f"{sorted(set(mine['args'].fillna('')))}; pick another name"
        )
    keys = {(r.dataset, int(r.fold), int(r.seed)) for r in mine.itertuples()}
    threads = a.threads or max(1, (os.cpu_count() or 1) // a.jobs)
    return [
        Job(a.config, a.dataset, f, s, tuple(extra), a.code, commit, threads)
        for s in a.seeds
        for f in a.folds
        if (a.dataset, f, s) not in keys
    ]


def describe(row: dict) -> str:
    return (
        f"{row['config']} {row['dataset']}-f{row['fold']}-s{row['seed']}: test acc "
        f"{row['test_accuracy']:.3f} (baseline {row['baseline_test_accuracy']:.3f}, majority "
        f"{row['majority_test_accuracy']:.3f}) balanced {row['test_balanced_accuracy']:.3f} "
        f"(baseline {row['baseline_test_balanced_accuracy']:.3f})  best val "
        f"{row['best_val_acc']:.3f} @ epoch {row['best_epoch']}/{row['epochs']}  "
        f"{row['steps']} steps  {row['train_minutes']:.1f} min  "
        f"{row['seconds_per_epoch']:.1f} s/epoch  peak {row['peak_rss_mib']:.0f} MiB"
    )


def stop_children(signum: int, _frame: object) -> None:
    STOP.set()
    for pid in list(CHILDREN):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    raise SystemExit(128 + signum)


def cmd_run(a: argparse.Namespace, extra: list[str]) -> None:
    a.code = a.code.resolve()
    check_imports(a.code)
    commit = git_commit(a.code)
    jobs = pending_jobs(a, extra, commit)
    print(
        f"{a.config} on {a.dataset}: {len(jobs)} runs to do, {a.jobs} at once, code "
        f"{a.code} @ {commit}, extra args: {shlex.join(extra) or '(none)'}",
        flush=True,
    )
    signal.signal(signal.SIGTERM, stop_children)
    signal.signal(signal.SIGINT, stop_children)
    failed = 0
    pool = ThreadPoolExecutor(max_workers=a.jobs)
    try:
        futures: dict[Future, Job] = {pool.submit(run_job, j): j for j in jobs}
        for fut in as_completed(futures):
            j = futures[fut]
            try:
                row = fut.result()
            except Exception as e:  # noqa: BLE001 - report and go on with the other runs
                failed += 1
                print(f"FAILED {j.config} {j.dataset}-f{j.fold}-s{j.seed}: {e}", flush=True)
                continue
            append_row(row)
            print(describe(row), flush=True)
    finally:  # after a signal: no queued run starts (the running ones' processes are stopped)
        pool.shutdown(wait=True, cancel_futures=True)
    if failed:
        raise SystemExit(f"{failed} runs failed")


def mean_std(x: pd.Series) -> str:
    sd = x.std(ddof=1) if len(x) > 1 else float("nan")
    return f"{x.mean():.3f} ± {sd:.3f}"


def summarise(g: pd.DataFrame) -> dict:
    diff = g["test_accuracy"] - g["baseline_test_accuracy"]
    bdiff = g["test_balanced_accuracy"] - g["baseline_test_balanced_accuracy"]
    ties = (diff.abs() < 1e-9).sum()
    return {
        "runs": len(g),
        "folds": g["fold"].nunique(),
        "seeds": g["seed"].nunique(),
        "test_acc": mean_std(g["test_accuracy"]),
        "test_bal_acc": mean_std(g["test_balanced_accuracy"]),
        "baseline_acc": mean_std(g["baseline_test_accuracy"]),
        "baseline_bal_acc": mean_std(g["baseline_test_balanced_accuracy"]),
        "majority_acc": f"{g['majority_test_accuracy'].mean():.3f}",
        "diff_acc": mean_std(diff),
        "w/t/l": f"{(diff > 1e-9).sum()}/{ties}/{(diff < -1e-9).sum()}",
        "diff_bal_acc": mean_std(bdiff),
        "best_val_acc": f"{g['best_val_acc'].mean():.3f}",
        "median_train_min": round(float(g["train_minutes"].median()), 1),
        "median_s_per_epoch": round(float(g["seconds_per_epoch"].median()), 1),
        "median_steps": int(g["steps"].median()),
        "median_peak_rss_mib": int(g["peak_rss_mib"].median()),
        "threads": int(g["threads"].median()),
    }


def cmd_summary() -> None:
    runs = read_runs()
    if runs.empty:
        raise SystemExit(f"no runs in {RUNS_CSV}")
    order = list(dict.fromkeys(runs["config"]))
    rows = [
        {"config": c, "dataset": d, **summarise(g)}
        for (c, d), g in runs.groupby(["config", "dataset"], sort=False)
    ]
    table = pd.DataFrame(rows)
    table["_o"] = table["config"].map(order.index)
    table = table.sort_values(["dataset", "_o"]).drop(columns="_o")
    with pd.option_context("display.width", 250, "display.max_columns", None):
        print(table.to_string(index=False))
    for c in order:
        print(f"{c}: {runs.loc[runs['config'] == c, 'args'].fillna('').iloc[0] or '(defaults)'}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    table.to_csv(SUMMARY_CSV, index=False)
    print(f"written {SUMMARY_CSV}")


def int_list(s: str) -> list[int]:
    return [int(x) for x in s.split(",") if x.strip()]


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    ours, extra = (
        (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    )
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="train and evaluate the (fold, seed) runs not yet recorded")
    r.add_argument("--config", required=True, help="name of this set of extra args")
    r.add_argument("--dataset", required=True, choices=["styles", "multisource"])
    r.add_argument("--folds", type=int_list, default=[0, 1, 2, 3, 4])
    r.add_argument("--seeds", type=int_list, default=[0])
    r.add_argument("--jobs", type=int, default=1, help="trainings at once")
    r.add_argument("--threads", type=int, default=0, help="per training (0: cpu_count // jobs)")
    r.add_argument("--code", type=Path, default=Path("/work/exp"), help="mrnet tree to run")
    sub.add_parser("summary", help="per (config, dataset) table; writes the summary CSV")
    return ap.parse_args(ours), extra


def main() -> None:
    a, extra = parse(sys.argv[1:])
    if a.cmd == "run":
        cmd_run(a, extra)
    else:
        cmd_summary()


if __name__ == "__main__":
    main()
