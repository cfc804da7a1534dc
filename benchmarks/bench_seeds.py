"""Several seeds of the demo's training, per --input-norm, compared with `mrnet compare`:
the multi-seed recipe of README, run on a synthetic FMA.

    python benchmarks/bench_seeds.py --n-per-genre 80 --norms instance batch
    python benchmarks/bench_seeds.py --n-per-genre 40 --norms instance   # the demo's data

Every stage is the `mrnet` command a user runs (printed); a rerun with the same --out
reuses what is done. Also prints a reference: a logistic regression on each track's
per-band mean and std of the same log-mels (the long-term spectrum that an InstanceNorm
over time removes).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline import synth  # noqa: E402

DEMO_TRAIN = ["--config", "demo", "--no-progress"]  # the demo's training: recipes/demo.toml


def mrnet(*argv: str) -> str:
    cmd = [sys.executable, str(ROOT / "cli.py"), *argv]
    print("$ mrnet " + " ".join(shlex.quote(a) for a in argv), flush=True)
    return subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True).stdout


def band_statistics_baseline(cache: Path) -> float:
    """Test accuracy of a logistic regression on per-band mean and std over time."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from pipeline.cache.reader import FrameStore, open_cache, split_index

    c = open_cache(cache)

    def features(split: str) -> tuple[np.ndarray, np.ndarray]:
        index = split_index(c, split)
        store = FrameStore(index.shards)
        rows = []
        for i in range(len(index)):
            x = store.track(index, i).astype(np.float32)
            rows.append(np.concatenate([x.mean(0), x.std(0)]))
        return np.array(rows), index.label

    x, y = features("training")
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(x, y)
    xt, yt = features("test")
    return float((clf.predict(xt) == yt).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n-per-genre", type=int, default=80)
    ap.add_argument("--norms", nargs="+", default=["instance", "batch"])
    ap.add_argument("--seeds", nargs="+", default=["0", "1", "2"])
    ap.add_argument("--out", type=Path, default=Path("bench-seeds"))
    ap.add_argument("--jobs", type=int, default=len(os.sched_getaffinity(0)))
    a = ap.parse_args()
    t0 = time.perf_counter()
    ds = synth.generate(
        a.out / "fma", n_per_genre=a.n_per_genre, seconds=30.0, jobs=a.jobs, reuse=True
    )
    cache = a.out / "cache"
    mrnet(
        "preprocess",
        "--audio-dir",
        str(ds.audio_dir),
        "--metadata-dir",
        str(ds.metadata_dir),
        "--out",
        str(cache),
        "--no-progress",
    )
    tracks = json.loads((cache / "manifest.json").read_text())["splits"]
    print({k: v["tracks"] for k, v in tracks.items()})
    results = {}
    for norm in a.norms:
        reports = []
        for seed in a.seeds:
            run, report = a.out / f"run-{norm}-{seed}", a.out / f"report-{norm}-{seed}"
            if not (report / "report.json").exists():
                resume = ["--resume"] if (run / "last.pt").exists() else []
                mrnet(
                    "train",
                    "--cache",
                    str(cache),
                    "--out",
                    str(run),
                    "--seed",
                    seed,
                    "--input-norm",
                    norm,
                    *DEMO_TRAIN,
                    *resume,
                )
                mrnet(
                    "evaluate",
                    "--checkpoint",
                    str(run / "best.pt"),
                    "--cache",
                    str(cache),
                    "--out",
                    str(report),
                    "--device",
                    "cpu",
                    "--no-progress",
                )
            reports.append(str(report))
        print(mrnet("compare", *reports, "--out", str(a.out / f"compare-{norm}")))
        acc = [json.loads((Path(r) / "report.json").read_text())["accuracy"] for r in reports]
        results[norm] = (np.mean(acc), np.std(acc, ddof=1) if len(acc) > 1 else np.nan, acc)
    print(f"\n{a.n_per_genre} tracks per genre, seeds {' '.join(a.seeds)}, test accuracy:")
    for norm, (mean, std, acc) in results.items():
        each = ", ".join(f"{x:.3f}" for x in acc)
        print(f"  --input-norm {norm:<8} {mean:.3f} ± {std:.3f}   ({each})")
    print(
        f"  reference: logistic regression on per-band mean and std: "
        f"{band_statistics_baseline(cache):.3f}"
    )
    print(f"({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
