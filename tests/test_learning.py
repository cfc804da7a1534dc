"""Learning mechanics: enough optimiser steps on any dataset size, validation on fixed
crops, mixup, and the built-in baseline that MRNet is reported beside."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from helpers import make_cache, tiny
from typer.testing import CliRunner

from cli import app
from mrnet.augment import mixup
from mrnet.checkpoint import load as load_checkpoint
from mrnet.checkpoint import load_model
from mrnet.linear import fit, statistics, stored_statistics
from mrnet.scoring import crop_starts
from mrnet.task import TASKS
from mrnet.train import Trained, train
from mrnet.train.steps import validate
from pipeline.cache import open_cache, split_index
from pipeline.cache.reader import FrameStore
from pipeline.features import TrackStats, stats_dim

runner = CliRunner()
V02 = Path(__file__).resolve().parent / "fixtures" / "v0_2"
CPU = ("--device", "cpu", "--workers", "0", "--no-progress")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return make_cache(tmp_path_factory.mktemp("c") / "c", n_per_class=(8, 3, 3), frames=(300, 80))


# ---------------------------------------------------------------- steps and validation


def test_a_small_dataset_gets_min_steps_per_epoch_and_few_steps_warn(cache_dir, tmp_path):
    r = runner.invoke(
        app,
        [
            "train",
            "--cache",
            str(cache_dir),
            "--out",
            str(tmp_path / "r"),
            "--channels",
            "8",
            "--epochs",
            "1",
            "--batch-size",
            "4",
            "--crop-seconds",
            "1",
            "--min-steps",
            "15",
            *CPU,
        ],
    )
    assert r.exit_code == 0, r.output
    # 24 tracks, 4 a step: 3 visits of each make 18 steps, the fewest that reach 15
    assert "18 steps of 4 crops per epoch (3 crops of each track)" in r.output
    assert "warning: this run makes only 18 optimiser steps in all" in r.output
    m = pd.read_csv(tmp_path / "r" / "metrics.csv")
    assert m["train_samples"].tolist() == [72]


def test_crop_starts_cover_the_track_evenly():
    assert crop_starts(1000, 300, 3).tolist() == [0, 350, 700]
    assert crop_starts(300, 300, 3).tolist() == [0]  # no longer than a crop: whole
    assert crop_starts(200, 300, 3).tolist() == [0]
    assert crop_starts(301, 300, 3).tolist() == [0, 1]  # duplicates are scored once


def test_validation_scores_fixed_crops_and_metrics_say_so(cache_dir, tmp_path):
    out = tmp_path / "run"
    train(tiny(cache_dir, out, epochs=1, val_crops=2, crop_seconds=1.0))
    m = pd.read_csv(out / "metrics.csv")
    assert m["val_scoring"].tolist() == ["mean of 2 crops of 1 s"]
    model = load_model(load_checkpoint(out / "last.pt"))
    val = split_index(open_cache(cache_dir), "validation")
    figures, _ = validate(
        model, TASKS["single"], val, np.ones(3, np.float32), torch.device("cpu"), 50, 400, crops=2
    )
    assert m["val_acc"].iloc[0] == figures["val_acc"]  # weights all 1: balanced training
    out2 = tmp_path / "whole"
    train(tiny(cache_dir, out2, epochs=1, val_crops=0))
    assert pd.read_csv(out2 / "metrics.csv")["val_scoring"].tolist() == [
        "whole tracks (30-s windows)"
    ]


# ---------------------------------------------------------------- mixup


def test_mixup_mixes_pairs_convexly():
    torch.manual_seed(0)
    x = torch.randn(6, 4, 10)
    y = torch.arange(6)
    mixed, partner, lam = mixup(x, y, 0.4)
    assert 0.0 < lam < 1.0 and sorted(partner.tolist()) == list(range(6))
    np.testing.assert_allclose(mixed.numpy(), (lam * x + (1 - lam) * x[partner]).numpy())


def test_mixup_is_a_recipe_setting_that_trains_and_is_recorded(cache_dir, tmp_path):
    recipe = tmp_path / "mix.toml"
    recipe.write_text(
        "mixup = 0.4\nchannels = 8\nepochs = 2\nbatch_size = 4\ncrop_seconds = 1.0\nmin_steps = 0\n"
    )
    out = tmp_path / "run"
    r = runner.invoke(
        app, ["train", "--config", str(recipe), "--cache", str(cache_dir), "--out", str(out), *CPU]
    )
    assert r.exit_code == 0, r.output
    ck = load_checkpoint(out / "last.pt")
    assert ck.train_config["mixup"] == 0.4
    assert all(np.isfinite(row["train_loss"]) for row in ck.history)
    plain = tmp_path / "plain"
    r = runner.invoke(
        app,
        [
            "train",
            "--config",
            str(recipe),
            "--set",
            "mixup=0",
            "--cache",
            str(cache_dir),
            "--out",
            str(plain),
            *CPU,
        ],
    )
    assert r.exit_code == 0, r.output
    assert (
        load_checkpoint(plain / "last.pt").history[0]["train_loss"] != ck.history[0]["train_loss"]
    )


# ---------------------------------------------------------------- the baseline


def test_shards_store_track_statistics_of_their_frames_under_the_checksum(cache_dir, tmp_path):
    cache = open_cache(cache_dir)
    index = split_index(cache, "training")
    stored = stored_statistics(index)
    assert stored.shape == (len(index), stats_dim(16))
    store = FrameStore(index.shards)
    for t in (0, 1, len(index) - 1):
        acc = TrackStats(16)
        acc.push(store.track(index, t))
        np.testing.assert_allclose(stored[t], acc.value(), rtol=1e-6, atol=1e-6)
    copy = tmp_path / "c"
    shutil.copytree(cache_dir, copy)
    shard = sorted((copy / "shards").glob("training-*.h5"))[0]
    with h5py.File(shard, "r+") as f:
        f["stats"][0, 0] += 1.0
    r = runner.invoke(app, ["verify", str(copy), "--no-progress"])
    assert r.exit_code == 2 and "checksum mismatch" in r.output, r.output


def test_baseline_writes_evaluates_report_files_and_compare_sets_it_beside_mrnet(
    cache_dir, tmp_path
):
    base = tmp_path / "base"
    r = runner.invoke(
        app, ["baseline", "--cache", str(cache_dir), "--out", str(base), "--no-progress"]
    )
    assert r.exit_code == 0, r.output
    rep = json.loads((base / "report.json").read_text())
    assert rep["source"]["arch"] == "baseline" and rep["source"]["model_config"]["C"] > 0
    run = tmp_path / "run"
    train(tiny(cache_dir, run, epochs=1))
    ours = tmp_path / "ours"
    r = runner.invoke(
        app,
        [
            "evaluate",
            "--checkpoint",
            str(run / "best.pt"),
            "--cache",
            str(cache_dir),
            "--out",
            str(ours),
            "--device",
            "cpu",
            "--no-progress",
        ],
    )
    assert r.exit_code == 0, r.output
    assert {p.name for p in base.iterdir()} == {p.name for p in ours.iterdir()}
    evaluated = json.loads((ours / "report.json").read_text())
    assert evaluated["baseline"]["accuracy"] == pytest.approx(rep["accuracy"])
    assert "baseline (logistic regression" in r.output and "the model's" in r.output
    pred = pd.read_csv(base / "predictions.csv")
    assert rep["accuracy"] == pytest.approx((pred["true"] == pred["predicted"]).mean())
    r = runner.invoke(app, ["compare", str(base), str(ours)])
    assert r.exit_code == 0 and "arch" in r.output, r.output


def test_baseline_chooses_c_on_validation(cache_dir):
    b = fit(open_cache(cache_dir))
    assert b.c in (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0) and 0.0 <= b.value <= 1.0
    val = split_index(open_cache(cache_dir), "validation")
    probs = b.probabilities(statistics(val))
    assert b.value == pytest.approx((probs.argmax(1) == val.label).mean())


def test_baseline_on_a_cache_of_mrnet_0_2_computes_statistics_and_writes_nothing_there(
    tmp_path,
):
    cache = tmp_path / "cache"
    shutil.copytree(V02 / "cache", cache)
    before = {p: p.read_bytes() for p in cache.rglob("*") if p.is_file()}
    r = runner.invoke(
        app, ["baseline", "--cache", str(cache), "--out", str(tmp_path / "b"), "--no-progress"]
    )
    assert r.exit_code == 0, r.output
    assert "computed from its frames; nothing was written into the cache" in r.output
    assert {p: p.read_bytes() for p in cache.rglob("*") if p.is_file()} == before
    r = runner.invoke(
        app,
        [
            "evaluate",
            "--checkpoint",
            str(V02 / "run" / "best.pt"),
            "--cache",
            str(cache),
            "--out",
            str(tmp_path / "e"),
            "--device",
            "cpu",
            "--no-progress",
        ],
    )
    assert r.exit_code == 0 and "baseline: none (the cache holds no track statistics" in r.output


def test_train_says_plainly_when_it_is_below_the_baseline():
    below = Trained(True, "runs/x", 5, "val_acc", 0.41, 3, None, baseline=0.61)
    assert "below the baseline: its validation accuracy is 0.610" in below.summary()
    above = Trained(True, "runs/x", 5, "val_acc", 0.71, 3, None, baseline=0.61)
    assert "below" not in above.summary() and "(the baseline's: 0.610)" in above.summary()
