"""`mrnet train` and mrnet.data on small caches built directly with ShardWriter."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import (
    ROOT,
    cli_train,
    fault_env,
    h5_track,
    make_cache,
    one_line_error,
    reference_crop,
    tiny,
)
from typer.testing import CliRunner

from mrnet.checkpoint import ModelConfig, build_model, load_model
from mrnet.checkpoint import load as load_checkpoint
from mrnet.data import CropDataset, CropPlan, MemmapCrops, ResidentCrops, crop_plan, passes_for
from mrnet.scoring import cache_windows
from mrnet.task import TASKS
from mrnet.train import TIMING_COLUMNS, train
from mrnet.train.steps import validate
from pipeline.cache import open_cache, split_index
from pipeline.errors import BadInput

runner = CliRunner()


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    # lengths 150 (3 s at 50 frames/s) and 40 (< a 2-s crop: wrap-padded)
    return make_cache(tmp_path_factory.mktemp("cache") / "c", frames=(150, 40, 150))


@pytest.fixture(scope="module")
def trained(cache_dir, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("run") / "run"
    summary = train(tiny(cache_dir, out, epochs=2))
    return out, summary


# ---------------------------------------------------------------- data


def test_crops_shape_dtype_and_wrap_pad(cache_dir):
    cache = open_cache(cache_dir)
    index = split_index(cache, "training")
    assert list(index.length[:3]) == [150, 40, 150]
    x, y = CropDataset(index, 100)[np.array([[0, 17], [1, 0], [2, 50]])]
    assert x.shape == (3, 16, 100) and x.dtype == torch.float32 and x.is_contiguous()
    assert y.dtype == torch.int64 and y.tolist() == list(index.label[:3])
    short = h5_track(cache, "training", 1)  # 40 frames
    np.testing.assert_array_equal(x[1, :, :40].numpy(), short.T)
    np.testing.assert_array_equal(x[1, :, 40:80].numpy(), short.T)
    np.testing.assert_array_equal(x[1, :, 80:].numpy(), short[:20].T)
    np.testing.assert_array_equal(x[0].numpy(), h5_track(cache, "training", 0)[17:117].T)
    np.testing.assert_array_equal(x[2].numpy(), h5_track(cache, "training", 2)[50:150].T)


def test_crop_plan_is_reproducible_and_in_range():
    lengths = np.array([150, 40, 300, 100] * 5)
    a = crop_plan(lengths, 100, 4, seed=1, epoch=3)
    b = crop_plan(lengths, 100, 4, seed=1, epoch=3)
    c = crop_plan(lengths, 100, 4, seed=1, epoch=4)
    assert len(a) == 5 and all(len(t) == 4 for t, _ in a)
    assert all(
        np.array_equal(t1, t2) and np.array_equal(s1, s2) for (t1, s1), (t2, s2) in zip(a, b)
    )
    assert not all(np.array_equal(t1, t2) for (t1, _), (t2, _) in zip(a, c))
    tracks = np.concatenate([t for t, _ in a])
    starts = np.concatenate([s for _, s in a])
    assert sorted(tracks) == list(range(20))  # a permutation: every track once
    assert (starts <= np.maximum(lengths[tracks] - 100, 0)).all() and (starts >= 0).all()
    # two ranks: disjoint halves of the same permutation
    r0 = np.concatenate([t for t, _ in crop_plan(lengths, 100, 2, 1, 3, rank=0, world=2)])
    r1 = np.concatenate([t for t, _ in crop_plan(lengths, 100, 2, 1, 3, rank=1, world=2)])
    assert sorted(np.concatenate([r0, r1])) == list(range(20))


def test_the_epoch_rule_gives_enough_steps_on_any_dataset_size():
    """An epoch visits every track as many times as min_steps needs (once when one visit
    makes enough steps); one visit is the plan of mrnet 0.2, crop for crop."""
    lengths = np.array([150, 40, 300, 100] * 5)  # 20 tracks
    assert passes_for(20, 4, 1, 0) == passes_for(20_000, 48, 1, 100) == 1
    assert passes_for(85, 48, 1, 100) == 57  # 85 tracks, batch 48: 100 steps, not 1
    plan = CropPlan(lengths, 100, 4, seed=1, passes=passes_for(20, 4, 1, 12))
    batches = plan.epoch(3)
    assert len(batches) == plan.steps >= 12
    tracks = np.concatenate([t for t, _ in batches])
    assert np.bincount(tracks, minlength=20).tolist() == [plan.passes] * 20  # each k times
    first = crop_plan(lengths, 100, 4, seed=1, epoch=3)  # one pass: as before the rule
    assert all(
        np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
        for a, b in zip(first, CropPlan(lengths, 100, 4, seed=1).epoch(3))
    )


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_equals_h5py_reads(cache_dir, workers):
    cache = open_cache(cache_dir)
    index = split_index(cache, "training")
    frames, batch = 100, 5
    plan = CropPlan(index.length, frames, batch, seed=7)
    loader = MemmapCrops(index, plan, workers=workers)
    resident = ResidentCrops(index, plan, device=torch.device("cpu"))
    plan = plan.epoch(2)
    got = list(loader.batches(2))
    assert len(got) == len(loader) == len(plan) == len(resident) == 24 // 5
    for (x, y), (xr, yr), (tracks, starts) in zip(got, resident.batches(2), plan):
        ref = np.stack(
            [
                reference_crop(h5_track(cache, "training", t), s, frames)
                for t, s in zip(tracks, starts)
            ]
        )
        np.testing.assert_array_equal(x.numpy(), ref)
        np.testing.assert_array_equal(xr.numpy(), ref)
        assert y.tolist() == yr.tolist() == list(index.label[tracks])


def test_short_tracks_are_one_window_each(cache_dir):
    cache = open_cache(cache_dir)
    index = split_index(cache, "validation")
    seen = []
    for rows, x in cache_windows(index, window=10_000, max_frames=300):
        assert x.dtype == torch.float32 and x.shape[0] * x.shape[2] <= max(300, x.shape[2])
        seen += rows.tolist()
    assert sorted(seen) == list(range(len(index))) and len(index) == 6
    rows, x = next(cache_windows(index, window=10_000, max_frames=1))  # shortest first
    assert int(index.length[rows[0]]) == x.shape[2] == int(index.length.min())
    np.testing.assert_array_equal(x[0].numpy(), h5_track(cache, "validation", int(rows[0])).T)


# ---------------------------------------------------------------- training


@pytest.mark.parametrize("arch", ["mrnet", "cnn"])
def test_one_epoch_reduces_loss(tmp_path, arch):
    """The epoch's mean training loss falls below the untrained model's validation loss
    (ln 3); for the cnn the validation loss falls too. (After 12 steps MRNet's eval-mode
    BatchNorm statistics are still too young for its validation loss to show it.)"""
    cache_dir = make_cache(tmp_path / "c", n_per_class=(32, 4, 1), frames=(150,))
    cfg = tiny(cache_dir, tmp_path / "run", arch=arch, batch_size=8, lr=3e-3, noise_prob=0.0)
    val = split_index(open_cache(cache_dir), "validation")
    single, cpu, ones = TASKS["single"], torch.device("cpu"), np.ones(3, np.float32)
    torch.manual_seed(cfg.seed)
    untrained = build_model(ModelConfig(arch, 16, 3, channels=16))
    before = validate(untrained, single, val, ones, cpu, 0, 600)[0]["val_loss"]
    assert abs(before - np.log(3)) < 0.05
    s = train(cfg)
    assert s.last["train_loss"] < 0.9 * before, (before, s.last)
    if arch == "cnn":
        model = load_model(load_checkpoint(cfg.out / "last.pt"))
        figures, _ = validate(model, single, val, ones, cpu, 0, 600)
        after, acc = figures["val_loss"], figures["val_acc"]
        assert after < 0.5 * before and acc > 0.9, (before, after, acc)


def test_checkpoint_plain_and_loadable(trained, cache_dir):
    out, summary = trained
    assert summary.epochs == 2 and 0.0 <= summary.best <= 1.0
    scoring = {"model", "model_config", "feature_config", "labels", "epoch", "history"}
    resuming = {"optimizer", "scheduler", "rng", "train_config", "cache_fingerprint", "run_id"}
    for name in ("last.pt", "best.pt"):
        ckpt = torch.load(out / name, map_location="cpu", weights_only=True)
        assert scoring <= set(ckpt)
        assert resuming <= set(ckpt) or name == "best.pt"
        assert ckpt["model_config"] == {
            "arch": "mrnet",
            "n_mels": 16,
            "n_classes": 3,
            "channels": 16,
            "embed_dim": 128,
            "dilations": [2, 3, 4],
            "scale": 8,
            "dropout": 0.5,
            "input_norm": "batch",
        }
        assert not any(k.startswith(("_orig_mod.", "module.")) for k in ckpt["model"])
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt.epoch == 2 and ckpt.labels == ["g0", "g1", "g2"]
    assert ckpt.feature_config == open_cache(cache_dir).feature_config
    assert ckpt.train_config["cache"] == str(cache_dir) and ckpt.train_config["batch_size"] == 6
    model = load_model(ckpt)
    with torch.no_grad():
        assert model(torch.randn(2, 16, 77)).shape == (2, 3)
    m = pd.read_csv(out / "metrics.csv")
    assert list(m["epoch"]) == [1, 2] and set(TIMING_COLUMNS) <= set(m.columns)
    assert {"train_loss", "train_acc", "val_loss", "val_acc", "lr"} <= set(m.columns)
    assert (m["val_tracks"] == 6).all() and (m["train_samples"] == 24).all()


def test_compile_wrapped_model_saves_plain_keys(tmp_path, cache_dir, monkeypatch):
    """A stand-in for torch.compile's wrapper: the checkpoint must hold unprefixed keys."""

    class Wrapped(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self._orig_mod = m

        def forward(self, x):
            return self._orig_mod(x)

    monkeypatch.setattr(torch, "compile", Wrapped)
    train(tiny(cache_dir, tmp_path / "run", compile=True))
    keys = load_checkpoint(tmp_path / "run" / "last.pt").model
    assert keys and not any(k.startswith("_orig_mod.") for k in keys)


def test_bad_checkpoints(tmp_path, trained):
    with pytest.raises(BadInput, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    data = (trained[0] / "last.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    (tmp_path / "text.pt").write_text("epoch,val_acc\n1,0.5\n")
    for name, words in (
        ("cut.pt", "is truncated or corrupt"),
        ("junk.pt", "is not a PyTorch checkpoint file"),
        ("text.pt", "is not a PyTorch checkpoint file"),
        (".", "is a directory; pass a checkpoint file such as"),
    ):
        with pytest.raises(BadInput, match=words) as e:
            load_checkpoint(tmp_path / name)
        assert "\n" not in str(e.value) and "(101)" not in str(e.value)
        assert "If you are seeing" not in str(e.value)


def run_cli(*args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "cli.py"), "train", *args],
        cwd=ROOT,
        env=env or dict(os.environ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def test_kill_and_resume_is_exact(tmp_path, cache_dir):
    """SIGKILL during epoch 2, --resume: same weights and metrics as an unbroken run."""
    common = [
        "--cache",
        str(cache_dir),
        "--arch",
        "mrnet",
        "--channels",
        "16",
        "--min-steps",
        "0",
        "--val-crops",
        "0",
        "--epochs",
        "3",
        "--batch-size",
        "4",
        "--crop-seconds",
        "2",
        "--workers",
        "1",
        "--device",
        "cpu",
        "--seed",
        "5",
        "--specaugment",
        "--no-progress",
    ]
    full, broken = tmp_path / "full", tmp_path / "broken"
    procs = [run_cli(*common, "--out", str(full))]
    try:
        # 0.15 s per step, 6 steps: epoch 2 lasts over a second after metrics.csv appears
        p = run_cli(*common, "--out", str(broken), env=fault_env(step_delay="0.15"))
        procs.append(p)
        deadline = time.time() + 300
        while not (broken / "metrics.csv").exists():
            assert p.poll() is None and time.time() < deadline, p.stderr.read().decode()
            time.sleep(0.02)
        time.sleep(0.3)
        p.send_signal(signal.SIGKILL)
        p.wait()
        assert load_checkpoint(broken / "last.pt").epoch == 1
        assert len(pd.read_csv(broken / "metrics.csv")) == 1
        procs.append(run_cli(*common, "--out", str(broken), "--resume"))
        for q in (procs[2], procs[0]):
            assert q.wait(timeout=300) == 0, q.stderr.read().decode()
    finally:
        for q in procs:
            if q.poll() is None:
                q.kill()
                q.wait()
    a, b = load_checkpoint(full / "last.pt"), load_checkpoint(broken / "last.pt")
    assert a.epoch == b.epoch == 3 and a.best_epoch == b.best_epoch
    for k, v in a.model.items():
        assert torch.allclose(v.float(), b.model[k].float(), atol=1e-6), k
    ma = pd.read_csv(full / "metrics.csv").drop(columns=list(TIMING_COLUMNS))
    mb = pd.read_csv(broken / "metrics.csv").drop(columns=list(TIMING_COLUMNS))
    pd.testing.assert_frame_equal(ma, mb)


# ---------------------------------------------------------------- bad input via the CLI


def broken_cache(tmp_path: Path, case: str) -> Path:
    root = make_cache(tmp_path / case, n_per_class=(3, 1, 1))
    first = root / "shards" / "training-00000.h5"
    if case == "no_manifest":
        (root / "manifest.json").unlink()
    elif case == "unfinished":
        make_cache(root, n_per_class=(3, 1, 1), status="in_progress")
    elif case == "shard_missing":
        first.unlink()
    elif case == "shard_truncated":
        data = first.read_bytes()
        first.write_bytes(data[: len(data) - 4000])
    elif case == "no_training":
        import shutil

        shutil.rmtree(root)
        make_cache(root, n_per_class=(0, 2, 2))
    return root


@pytest.mark.parametrize(
    "case,words",
    [
        ("absent", ["does not exist", "mrnet preprocess"]),
        ("no_manifest", ["manifest.json"]),
        ("unfinished", ["unfinished"]),
        ("shard_missing", ["missing"]),
        ("shard_truncated", ["truncated"]),
        ("no_training", ["no training tracks"]),
    ],
)
def test_bad_cache(tmp_path, case, words):
    cache = tmp_path / "absent" if case == "absent" else broken_cache(tmp_path, case)
    one_line_error(cli_train(cache, tmp_path / "run"), *words)
    assert not (tmp_path / "run" / "last.pt").exists()


def test_resume_without_last(tmp_path, cache_dir):
    one_line_error(cli_train(cache_dir, tmp_path / "run", "--resume"), "--resume", "last.pt")


def test_resume_with_other_features(tmp_path, trained):
    other = make_cache(tmp_path / "hop", n_per_class=(8, 2, 2), hop_length=160)
    r = cli_train(other, trained[0], "--resume", "--epochs", "3")
    one_line_error(r, "other features", "hop_length")
    assert load_checkpoint(trained[0] / "last.pt").epoch == 2


def test_resume_truncated_checkpoint(tmp_path, cache_dir, trained):
    run = tmp_path / "run"
    run.mkdir()
    data = (trained[0] / "last.pt").read_bytes()
    (run / "last.pt").write_bytes(data[:1000])
    one_line_error(cli_train(cache_dir, run, "--resume"), "truncated or corrupt")


def test_new_run_over_existing_run(cache_dir, trained):
    one_line_error(cli_train(cache_dir, trained[0]), "--resume")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_without_gpu(tmp_path, cache_dir):
    one_line_error(cli_train(cache_dir, tmp_path / "run", "--device", "cuda"), "cuda")


def test_batch_larger_than_training_set(tmp_path, cache_dir):
    r = cli_train(cache_dir, tmp_path / "run", "--batch-size", "25")
    one_line_error(r, "--batch-size 25", "24 training tracks")


def test_out_is_a_file(tmp_path, cache_dir):
    (tmp_path / "f").write_text("x")
    one_line_error(cli_train(cache_dir, tmp_path / "f"), "is a file")


def test_resume_continues_with_more_epochs(tmp_path, cache_dir, trained):
    run = tmp_path / "run"
    run.mkdir()
    (run / "last.pt").write_bytes((trained[0] / "last.pt").read_bytes())
    s = train(dataclasses.replace(tiny(cache_dir, run, epochs=3), resume=True))
    assert s.epochs == 3
    assert list(pd.read_csv(run / "metrics.csv")["epoch"]) == [1, 2, 3]
