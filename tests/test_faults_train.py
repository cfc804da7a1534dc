"""Faults a user meets around training and scoring, reproduced as they happen: SIGKILL at
awkward moments, a second run on the same directory, NaN features, damaged shards and
checkpoints, run directories left by mrnet 0.1. Each asks what the user sees afterwards
and whether any result is silently wrong."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from helpers import ROOT, cli_train, fault_env, make_cache, one_line_error, tiny
from typer.testing import CliRunner

from cli import app
from mrnet.checkpoint import Checkpoint, best_epoch
from mrnet.checkpoint import load as load_checkpoint
from mrnet.train import TIMING_COLUMNS, train
from pipeline.cache import open_cache
from pipeline.cache.shards import read_shard

runner = CliRunner()
# The reference run: 5 epochs at one thread (float results depend on the thread count, so
# every run here uses one thread, in this process and in the subprocesses). Which epoch is
# the best depends on the CPU's arithmetic, so it is read from the run itself: the tests
# need a best epoch after the first (best.pt rewritten mid-run), and the first seed whose
# run has one is used.
RUN = dict(epochs=5, lr=1e-2, batch_size=4, input_norm="instance")  # as mrnet 0.1 ran
SEEDS = range(8)
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def run_args(seed: int) -> list[str]:
    """The CLI arguments of `tiny(**RUN, seed=seed)`."""
    return [
        "--arch",
        "mrnet",
        "--channels",
        "16",
        "--min-steps",
        "0",
        "--val-crops",
        "0",
        "--epochs",
        "5",
        "--batch-size",
        "4",
        "--lr",
        "0.01",
        "--crop-seconds",
        "2",
        "--workers",
        "0",
        "--device",
        "cpu",
        "--seed",
        str(seed),
        "--mixup",
        "0",
        "--no-specaugment",
        "--input-norm",
        "instance",
        "--no-progress",
    ]


@dataclass
class Reference:
    """An unbroken run: ``copies[e]`` is its last.pt after epoch e, ``copies[0]`` the run
    directory; ``best`` its best epoch (2 or later); ``args`` the same run's CLI arguments."""

    copies: dict[int, Path]
    seed: int
    best: int

    def __getitem__(self, epoch: int) -> Path:
        return self.copies[epoch]

    @property
    def args(self) -> list[str]:
        return run_args(self.seed)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return make_cache(tmp_path_factory.mktemp("cache") / "c", frames=(150, 40, 150))


@pytest.fixture(scope="module")
def epochs(cache_dir, tmp_path_factory) -> Reference:
    """The reference run, one copy of last.pt per epoch (a resumed epoch equals an
    unbroken one on the CPU, so these are the unbroken run's checkpoints)."""
    tried = []
    for seed in SEEDS:
        tmp = tmp_path_factory.mktemp(f"ref{seed}")
        out, copies = tmp / "run", {}
        with one_thread():
            for e in range(1, RUN["epochs"] + 1):
                cfg = tiny(
                    cache_dir,
                    out,
                    **{**RUN, "epochs": e},
                    seed=seed,
                    t0=RUN["epochs"],
                    resume=e > 1,
                )
                train(cfg)
                copies[e] = tmp / f"last-{e}.pt"
                shutil.copy(out / "last.pt", copies[e])
        history = load_checkpoint(copies[5]).history
        best = best_epoch(history)
        if best >= 2:
            copies[0] = out  # the run directory itself
            return Reference(copies, seed, best)
        tried.append([round(r["val_acc"], 3) for r in history])
    pytest.fail(f"no seed gave a best epoch after the first: {tried}")


@contextmanager
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def same_weights(a: dict, b: dict, atol: float = 1e-6) -> bool:
    return set(a) == set(b) and all(
        torch.allclose(a[k].float(), b[k].float(), atol=atol) for k in a
    )


def popen_train(out: Path, cache: Path, ref: Reference, *extra: str, **faults: str):
    return subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "cli.py"),
            "train",
            "--cache",
            str(cache),
            "--out",
            str(out),
            *ref.args,
            *extra,
        ],
        cwd=ROOT,
        env={**fault_env(**faults), **ONE_THREAD},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def writes(ref: Reference, name: str) -> int:
    """How many times an unbroken run has written ``name`` by the end of its best epoch:
    last.pt and metrics.csv once an epoch, best.pt at each new best validation figure."""
    if name != "best.pt":
        return ref.best
    scores = [r["val_acc"] for r in load_checkpoint(ref[5]).history[: ref.best]]
    return sum(1 for e, v in enumerate(scores) if v > max(scores[:e], default=-1.0))


def assert_best_is_first_best_of_metrics(run: Path, reference: Reference) -> None:
    m = pd.read_csv(run / "metrics.csv")
    first_best = int(m.loc[m["val_acc"].idxmax(), "epoch"])  # idxmax: the first maximum
    best = load_checkpoint(run / "best.pt")
    assert best.epoch == first_best == reference.best
    assert same_weights(best.model, load_checkpoint(reference[first_best]).model)


# ---------------------------------------------------------------- 2. best.pt after a crash


@pytest.mark.parametrize("written", ["best.pt", "last.pt", "metrics.csv"])
def test_kill_between_checkpoint_writes_then_resume(tmp_path, cache_dir, epochs, written):
    """SIGKILL right after one of the three writes of the best epoch (a new best after
    the first epoch): after --resume, best.pt holds exactly the first epoch with the
    highest val acc of metrics.csv, and the run equals the unbroken one."""
    run = tmp_path / "run"
    p = popen_train(run, cache_dir, epochs, kill_after=f"{written}:{writes(epochs, written)}")
    p.communicate(timeout=300)
    assert p.returncode == -signal.SIGKILL, "the fault point was not reached"
    q = popen_train(run, cache_dir, epochs, "--resume")
    _, err = q.communicate(timeout=300)
    assert q.returncode == 0, err
    assert_best_is_first_best_of_metrics(run, epochs)
    ref = load_checkpoint(epochs[5])
    got = load_checkpoint(run / "last.pt")
    assert got.epoch == 5 and same_weights(got.model, ref.model)
    cols = list(TIMING_COLUMNS)
    pd.testing.assert_frame_equal(
        pd.read_csv(run / "metrics.csv").drop(columns=cols),
        pd.read_csv(epochs[0] / "metrics.csv").drop(columns=cols),
    )


def version_1(ck: Checkpoint) -> dict:
    """The checkpoint as mrnet 0.1 wrote it (flat keys, best.pt a full copy)."""
    mc = ck.model_config
    scored = [r["val_acc"] for r in ck.history]
    return {
        "model": ck.model,
        "optimizer": ck.optimizer,
        "scheduler": ck.scheduler,
        "epoch": ck.epoch,
        "best": max(scored),
        "history": ck.history,
        "rng": ck.rng,
        "feature_config": ck.feature_config,
        "genres": ck.labels,
        "config": ck.train_config,
        "arch": mc.arch,
        "n_mels": mc.n_mels,
        "n_classes": mc.n_classes,
        "channels": mc.channels,
        "world": ck.world,
        "format_version": 1,
    }


@pytest.mark.parametrize(
    "last_epoch, stale_best",
    [("best", "first"), ("last", "before best"), ("last", None)],
    ids=["best is last: copied", "replayed from stale best.pt", "replayed from scratch"],
)
def test_run_left_by_mrnet_0_1_heals(tmp_path, cache_dir, epochs, last_epoch, stale_best):
    """mrnet 0.1 wrote last.pt then best.pt: a kill in between left best.pt at an older
    epoch for good. --resume rebuilds the right best.pt (copying, or replaying epochs,
    which is exact on the CPU)."""
    run = tmp_path / "run"
    run.mkdir()
    last = {"best": epochs.best, "last": RUN["epochs"]}[last_epoch]
    torch.save(version_1(load_checkpoint(epochs[last])), run / "last.pt")
    if stale_best is not None:
        stale = {"first": 1, "before best": epochs.best - 1}[stale_best]
        torch.save(version_1(load_checkpoint(epochs[stale])), run / "best.pt")
    with one_thread():
        r = cli_train(cache_dir, run, "--resume", *epochs.args)
    assert r.exit_code == 0, r.output
    assert "repaired" in r.output
    best = load_checkpoint(run / "best.pt")
    assert best.epoch == epochs.best
    assert same_weights(best.model, load_checkpoint(epochs[epochs.best]).model)
    assert_best_is_first_best_of_metrics(run, epochs)


def test_info_flags_a_stale_best_pt(tmp_path, epochs):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(epochs[5], run / "last.pt")
    torch.save(load_checkpoint(epochs[1]).to_dict(), run / "best.pt")
    r = runner.invoke(app, ["info", str(run)])
    stale = f"best.pt holds epoch 1 but the best epoch is {epochs.best}"
    assert r.exit_code == 0 and stale in r.output


# ---------------------------------------------------------------- 3. one run per directory


def test_second_run_on_the_same_directory_is_refused(tmp_path, cache_dir, epochs):
    run = tmp_path / "run"
    first = popen_train(run, cache_dir, epochs, step_delay="1.0")
    try:
        deadline = time.time() + 60
        while not (run / ".lock").exists():
            assert first.poll() is None and time.time() < deadline, first.stderr.read()
            time.sleep(0.02)
        second = popen_train(run, cache_dir, epochs, "--seed", "7")
        out, err = second.communicate(timeout=120)
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert second.returncode == 2 and len(lines) == 1, err
        assert "being written by another run" in lines[0] and "Traceback" not in err
        first.send_signal(signal.SIGKILL)  # a dead run's lock is taken over
        first.wait()
        # on a slow machine the first run may have saved an epoch: then it is resumed
        resumed = (run / "last.pt").exists()
        extra = ["--resume"] if resumed else ["--seed", "7", "--epochs", "1"]
        third = popen_train(run, cache_dir, epochs, *extra)
        _, err = third.communicate(timeout=300)
        assert third.returncode == 0, err
    finally:
        for p in (first,):
            if p.poll() is None:
                p.kill()
    last, best = load_checkpoint(run / "last.pt"), load_checkpoint(run / "best.pt")
    assert last.train_config["seed"] == best.train_config["seed"] == (epochs.seed if resumed else 7)
    assert last.run_id == best.run_id


# ---------------------------------------------------------------- 1. non-finite values


def poison(cache: Path, split: str, i: int, value: float = np.nan) -> int:
    """Write ``value`` into the frames of the i-th track of ``split`` in place (as a bit
    flip or an mrnet 0.1 cache would hold it); returns its track id."""
    c = open_cache(cache)
    row = c.split(split).iloc[i]
    idx = c.shards[row["shard"]]
    mm = np.memmap(idx.path, np.float16, "r+", offset=idx.mel_offset, shape=idx.mel_shape)
    mm[idx.offsets[row["row"]] : idx.offsets[row["row"] + 1], ::4] = value
    mm.flush()
    return int(row["track_id"])


def test_nan_features_stop_training_with_exit_2(tmp_path):
    cache = make_cache(tmp_path / "c", frames=(150,))
    run = tmp_path / "run"
    r = cli_train(cache, run, "--epochs", "1")
    assert r.exit_code == 0, r.output
    before = {n: (run / n).read_bytes() for n in ("last.pt", "best.pt", "metrics.csv")}
    tid = poison(cache, "training", 3)
    r = cli_train(cache, run, "--epochs", "2", "--resume")
    one_line_error(r, "NaN or infinite", "epoch 2", "mrnet verify")
    assert str(tid) in r.output.split("tracks")[1].split(";")[0].split()
    assert {n: (run / n).read_bytes() for n in before} == before
    r = cli_train(cache, tmp_path / "new", "--epochs", "1")  # a new run stops alike
    one_line_error(r, "NaN or infinite")
    assert not (tmp_path / "new" / "last.pt").exists()


def test_nan_features_in_validation_stop_training(tmp_path):
    cache = make_cache(tmp_path / "c", frames=(150,))
    tid = poison(cache, "validation", 0, np.inf)
    r = cli_train(cache, tmp_path / "run", "--epochs", "1")
    one_line_error(r, "validation outputs are NaN or infinite", str(tid))
    assert not (tmp_path / "run" / "last.pt").exists()


@pytest.fixture(scope="module")
def diverged(cache_dir, epochs, tmp_path_factory) -> Path:
    """best.pt of a run that diverged under mrnet 0.1: NaN weights."""
    ck = load_checkpoint(epochs[1])
    ck.model = {
        k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
        for k, v in ck.model.items()
    }
    path = tmp_path_factory.mktemp("nan") / "best.pt"
    torch.save(ck.to_dict(), path)
    return path


def test_evaluate_and_predict_refuse_nan_weights(tmp_path, cache_dir, diverged, synth):
    r = runner.invoke(
        app,
        [
            "evaluate",
            "--checkpoint",
            str(diverged),
            "--cache",
            str(cache_dir),
            "--out",
            str(tmp_path / "rep"),
            "--device",
            "cpu",
        ],
    )
    one_line_error(r, "NaN or infinity", "diverged")
    assert not (tmp_path / "rep").exists()
    audio = next(synth.audio_dir.rglob("*.mp3"))
    r = runner.invoke(app, ["predict", "--checkpoint", str(diverged), "--json", str(audio)])
    one_line_error(r, "NaN or infinity")
    assert "NaN" not in r.stdout


def test_predict_json_stays_valid_with_a_nan_audio_file(tmp_path, epochs):
    import soundfile

    x = np.zeros(16000 * 2, np.float32)
    x[100:200] = np.nan
    bad = tmp_path / "nan.wav"
    soundfile.write(bad, x, 16000, subtype="FLOAT")
    good = tmp_path / "ok.wav"
    soundfile.write(
        good,
        np.random.default_rng(0).standard_normal(32000).astype(np.float32) * 0.1,
        16000,
        subtype="FLOAT",
    )
    best = tmp_path / "best.pt"
    torch.save(load_checkpoint(epochs[3]).to_dict(), best)
    r = runner.invoke(app, ["predict", "--checkpoint", str(best), "--json", str(bad), str(good)])
    rows = [json.loads(line) for line in r.stdout.splitlines()]  # strict JSON: no NaN
    assert rows[0]["error"] == "non_finite" and rows[1]["error"] is None, r.output
    assert len(rows[1]["top"]) == 3


# ---------------------------------------------------------------- 5. the very tracks


def test_resume_refuses_a_cache_with_other_tracks(tmp_path, cache_dir, epochs):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(epochs[2], run / "last.pt")
    other = make_cache(tmp_path / "other", n_per_class=(7, 2, 2), frames=(150, 40, 150))
    assert open_cache(other).feature_config == open_cache(cache_dir).feature_config
    r = cli_train(other, run, "--resume", *epochs.args)
    one_line_error(r, "other tracks", "--out")
    assert load_checkpoint(run / "last.pt").epoch == 2
    shutil.copy(epochs[2], run / "best.pt")
    r = runner.invoke(
        app,
        [
            "evaluate",
            "--checkpoint",
            str(run / "best.pt"),
            "--cache",
            str(other),
            "--out",
            str(tmp_path / "rep"),
            "--device",
            "cpu",
        ],
    )
    assert r.exit_code == 0, r.output  # scoring another cache of the same features is fine


# ---------------------------------------------------------------- 6, 7. damaged caches


def test_flipped_label_is_refused_by_train_and_evaluate(tmp_path, cache_dir, epochs):
    cache = tmp_path / "c"
    shutil.copytree(cache_dir, cache)
    shard = sorted((cache / "shards").glob("training-*.h5"))[0]
    with h5py.File(shard, "r+") as f:
        f["label"][1] = 77
    r = cli_train(cache, tmp_path / "run")
    one_line_error(r, "labels outside 0..2", "mrnet verify")
    best = tmp_path / "best.pt"
    torch.save(load_checkpoint(epochs[3]).to_dict(), best)
    r = runner.invoke(
        app,
        [
            "evaluate",
            "--checkpoint",
            str(best),
            "--cache",
            str(cache),
            "--out",
            str(tmp_path / "rep"),
            "--device",
            "cpu",
        ],
    )
    one_line_error(r, "labels outside")


@pytest.mark.parametrize("where", ["manifest", "tracks.csv", "absolute"])
def test_shard_paths_outside_the_cache_are_refused(tmp_path, cache_dir, where):
    cache = tmp_path / "c"
    shutil.copytree(cache_dir, cache)
    outside = tmp_path / "evil.h5"
    shutil.copy(sorted((cache / "shards").glob("training-*.h5"))[0], outside)
    name = "shards/training-00000.h5"
    evil = str(outside) if where == "absolute" else "../evil.h5"
    if where in ("manifest", "absolute"):
        m = json.loads((cache / "manifest.json").read_text())
        m["shards"][0]["name"] = evil
        (cache / "manifest.json").write_text(json.dumps(m))
    t = pd.read_csv(cache / "tracks.csv")
    t.loc[t["shard"] == name, "shard"] = evil
    t.to_csv(cache / "tracks.csv", index=False)
    r = cli_train(cache, tmp_path / "run")
    one_line_error(r, "outside cache")
    r = runner.invoke(app, ["verify", str(cache)])
    one_line_error(r, "outside cache")


# ---------------------------------------------------------------- 13. checkpoint contents


def _resave(src: Path, dst: Path, edit) -> Path:
    d = torch.load(src, weights_only=True)
    edit(d)
    torch.save(d, dst)
    return dst


@pytest.mark.parametrize(
    "case, words",
    [
        ("missing optimizer", ["cannot be resumed", "last.pt"]),
        ("missing train_config", ["cannot be resumed"]),
        ("unknown arch", ["unknown arch 'resnet'"]),
        ("model not a dict", ["model is not a dict of tensors"]),
        ("labels do not fit", ["3 labels for 4 outputs"]),
    ],
)
def test_checkpoint_with_wrong_contents(tmp_path, cache_dir, epochs, case, words):
    run = tmp_path / "run"
    run.mkdir()
    edits = {
        "missing optimizer": lambda d: d.pop("optimizer"),
        "missing train_config": lambda d: d.pop("train_config"),
        "unknown arch": lambda d: d["model_config"].update(arch="resnet"),
        "model not a dict": lambda d: d.update(model=[1, 2, 3]),
        "labels do not fit": lambda d: d["model_config"].update(n_classes=4),
    }
    _resave(epochs[2], run / "last.pt", edits[case])
    r = cli_train(cache_dir, run, "--resume", *epochs.args)
    one_line_error(r, *words)


def test_pickle_with_code_is_refused_in_one_line(tmp_path, cache_dir):
    class Payload:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    evil = tmp_path / "evil.pt"
    torch.save({"model": Payload()}, evil)
    r = runner.invoke(
        app,
        [
            "evaluate",
            "--checkpoint",
            str(evil),
            "--cache",
            str(cache_dir),
            "--out",
            str(tmp_path / "rep"),
            "--device",
            "cpu",
        ],
    )
    one_line_error(r, "not a weights-only mrnet checkpoint; refusing to load it")
    assert "pwned" not in r.output and "WeightsUnpickler" not in r.output


# ---------------------------------------------------------------- 14. predict output


@pytest.fixture(scope="module")
def demo_best(epochs, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("best") / "best.pt"
    torch.save(load_checkpoint(epochs[3]).to_dict(), path)
    return path


@pytest.mark.parametrize("top", ["-1", "0"])
def test_predict_refuses_top_below_one(demo_best, top, tmp_path):
    import soundfile

    soundfile.write(tmp_path / "a.wav", np.zeros(16000, np.float32), 16000)
    r = runner.invoke(
        app, ["predict", "--checkpoint", str(demo_best), "--top", top, str(tmp_path / "a.wav")]
    )
    one_line_error(r, "--top must be 1 or more")


@pytest.mark.parametrize("top", ["1", "2", "9"])
def test_predict_csv_header_and_rows_agree(demo_best, top, tmp_path):
    import csv
    import io

    import soundfile

    rng = np.random.default_rng(0)
    soundfile.write(tmp_path / "a.wav", rng.standard_normal(32000).astype(np.float32) * 0.1, 16000)
    (tmp_path / "b.wav").write_bytes(b"not audio")
    r = runner.invoke(
        app,
        [
            "predict",
            "--checkpoint",
            str(demo_best),
            "--csv",
            "--top",
            top,
            str(tmp_path / "a.wav"),
            str(tmp_path / "b.wav"),
        ],
    )
    assert r.exit_code == 0, r.output
    rows = list(csv.reader(io.StringIO(r.stdout)))
    k = min(int(top), 3)
    assert rows[0] == [
        "path",
        *[f"{c}_{i}" for i in range(1, k + 1) for c in ("genre", "p")],
        "error",
    ]
    assert all(len(row) == len(rows[0]) for row in rows[1:]) and len(rows) == 3
    assert rows[2][-1] == "undecodable" and rows[1][-1] == ""


def test_shard_checksum_detects_a_flipped_mel_byte(tmp_path, cache_dir):
    """(6) the record every shard carries: a byte flipped in `mel` no longer matches."""
    from pipeline.cache.shards import checksum

    cache = tmp_path / "c"
    shutil.copytree(cache_dir, cache)
    shard = sorted((cache / "shards").glob("*.h5"))[0]
    idx = read_shard(shard)
    assert checksum(idx) == idx.checksum
    with open(shard, "r+b") as f:
        f.seek(idx.mel_offset + 1001)
        b = f.read(1)
        f.seek(idx.mel_offset + 1001)
        f.write(bytes([b[0] ^ 0x01]))
    assert checksum(read_shard(shard)) != idx.checksum
