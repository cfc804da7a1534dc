"""FMA's multi-label task through every stage: labels from genres_all, the multi-label
cache, BCE training, the multi-label report, predict, and the refusals."""

from __future__ import annotations

import ast
import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import ROOT, fault_env, make_cache, one_line_error
from sklearn import metrics
from typer.testing import CliRunner

from cli import app
from mrnet.checkpoint import load as load_checkpoint
from mrnet.train import TIMING_COLUMNS
from pipeline.sources import fma
from pipeline.synth import generate

runner = CliRunner()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A synthetic FMA with 60 two-genre tracks in its large subset (3-s clips)."""
    return generate(
        tmp_path_factory.mktemp("multi"), n_per_genre=8, seconds=3.0, jobs=2, n_multi=60
    )


def pre(data, out: Path, *extra: str, meta: Path | None = None) -> list[str]:
    return [
        "preprocess",
        "--audio-dir",
        str(data.audio_dir),
        "--metadata-dir",
        str(meta or data.metadata_dir),
        "--subset",
        "large",
        "--labels",
        "top-multi",
        "--out",
        str(out),
        *extra,
    ]


@pytest.fixture(scope="module")
def cache(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("mc") / "cache"
    r = runner.invoke(app, pre(data, out))
    assert r.exit_code == 0, r.output
    return out


TRAIN = [
    "--channels",
    "16",
    "--min-steps",
    "0",
    "--val-crops",
    "0",
    "--batch-size",
    "8",
    "--crop-seconds",
    "2",
    "--workers",
    "0",
    "--device",
    "cpu",
    "--lr",
    "3e-3",
    "--no-progress",
]


@pytest.fixture(scope="module")
def run(cache, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("mr") / "run"
    r = runner.invoke(
        app, ["train", "--cache", str(cache), "--out", str(out), "--epochs", "6", *TRAIN]
    )
    assert r.exit_code == 0, r.output
    return out


# ---------------------------------------------------------------- labels


def expected_sets(meta: Path, subset: str, mode: str) -> dict[int, set[str]]:
    """Each track's labels computed independently: csv + ast + genres.csv, row by row."""
    t = pd.read_csv(meta / "tracks.csv", index_col=0, header=[0, 1])
    g = pd.read_csv(meta / "genres.csv", index_col=0)
    rank = {"small": 0, "medium": 1, "large": 2}
    out = {}
    for tid, row in t.iterrows():
        if rank[row[("set", "subset")]] > rank[subset]:
            continue
        if row[("set", "split")] not in ("training", "validation", "test"):
            continue
        ids = ast.literal_eval(row[("track", "genres_all")])
        if not ids:
            continue
        if mode == "top-multi":
            out[tid] = {g.loc[g.loc[i, "top_level"], "title"] for i in ids}
        else:
            out[tid] = {g.loc[i, "title"] for i in ids}
    return out


@pytest.mark.parametrize("mode", ["top-multi", "all"])
def test_label_sets_equal_an_independent_computation(data, mode):
    sel = fma.read_selection(data.metadata_dir, "large", labels=mode, min_label_tracks=1)
    want = expected_sets(data.metadata_dir, "large", mode)
    got = {
        int(t): {sel.labels[i] for i in ls}
        for t, ls in zip(sel.tracks["track_id"], sel.tracks["labels"])
    }
    assert got == want
    assert sel.labels == sorted({n for s in want.values() for n in s})
    assert sum(len(s) > 1 for s in got.values()) >= 50  # the two-genre tracks


def test_cache_holds_the_label_sets(data, cache):
    want = expected_sets(data.metadata_dir, "large", "top-multi")
    t = pd.read_csv(cache / "tracks.csv")
    fails = set(pd.read_csv(cache / "failures.csv")["track_id"])
    assert set(t["track_id"]) | fails == set(want)
    for tid, names in zip(t["track_id"], t["labels"]):
        assert set(names.split("|")) == want[tid]
    m = json.loads((cache / "manifest.json").read_text())
    assert m["task"] == "multi" and m["labels"] == sorted({n for s in want.values() for n in s})
    assert m["plan"]["label_mode"] == "top-multi"
    r = runner.invoke(app, ["verify", str(cache), "--no-progress"])
    assert r.exit_code == 0, r.output


def test_min_label_tracks_drops_rare_labels(data, tmp_path):
    sel = fma.read_selection(data.metadata_dir, "large", labels="all", min_label_tracks=10)
    train = sel.tracks[sel.tracks["split"] == "training"]
    counts = pd.Series([sel.labels[i] for ls in train["labels"] for i in ls]).value_counts()
    assert (counts >= 10).all() and sel.dropped_labels
    every = fma.read_selection(data.metadata_dir, "large", labels="all", min_label_tracks=1)
    assert set(sel.labels) | set(sel.dropped_labels) == set(every.labels)
    assert sel.skipped.get("no_label_left", 0) > 0


def _edited_metadata(data, tmp_path: Path, edit) -> Path:
    meta = tmp_path / "meta"
    shutil.copytree(data.metadata_dir, meta)
    t = pd.read_csv(meta / "tracks.csv", index_col=0, header=[0, 1])
    edit(t)
    t.to_csv(meta / "tracks.csv")
    return meta


def test_skipped_tracks_are_counted_by_reason(data, tmp_path):
    def edit(t):
        small = t.index[t[("set", "subset")] == "small"]
        t.loc[small[:2], ("track", "genres_all")] = "[21, "  # malformed literal
        t.loc[small[2:5], ("track", "genres_all")] = "[99999]"  # not in genres.csv
        t.loc[small[5:6], ("track", "genres_all")] = "[]"

    meta = _edited_metadata(data, tmp_path, edit)
    sel = fma.read_selection(meta, "small", labels="top-multi")
    assert sel.skipped == {"malformed_genres": 2, "unknown_genre": 3, "no_genre": 1}
    out = tmp_path / "c"
    r = runner.invoke(
        app, pre(data, out, meta=meta)[:-2] + ["--subset", "small", "--out", str(out)]
    )
    assert r.exit_code == 0, r.output
    assert "malformed genres 2" in r.output and "unknown genre 3" in r.output


# ---------------------------------------------------------------- training and the report


def frequency_baseline_map(cache: Path, split: str) -> float:
    """Validation mAP of the constant predictor that gives every track each label's
    training frequency (AP of a constant = the label's prevalence in the split)."""
    t = pd.read_csv(cache / "tracks.csv")
    labels = json.loads((cache / "manifest.json").read_text())["labels"]
    y = np.array([[n in s.split("|") for n in labels] for s in t["labels"]], np.uint8)
    train, part = y[(t["split"] == "training").to_numpy()], y[(t["split"] == split).to_numpy()]
    probs = np.broadcast_to(train.mean(axis=0), part.shape)
    aps = [
        metrics.average_precision_score(part[:, j], probs[:, j])
        for j in range(len(labels))
        if part[:, j].any()
    ]
    return float(np.mean(aps))


def test_bce_training_beats_the_label_frequency_baseline(cache, run):
    m = pd.read_csv(run / "metrics.csv")
    assert {"val_map", "val_macro_auc"} <= set(m.columns) and "val_acc" not in m.columns
    best = load_checkpoint(run / "best.pt")
    assert best.task == "multi" and len(best.thresholds) == len(best.labels)
    assert best.epoch == int(m.loc[m["val_map"].idxmax(), "epoch"])
    baseline = frequency_baseline_map(cache, "validation")
    assert m["val_map"].max() > baseline + 0.1, (m["val_map"].tolist(), baseline)
    assert m["val_macro_auc"].max() > 0.6


@pytest.fixture(scope="module")
def report(cache, run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("rep") / "rep"
    r = runner.invoke(
        app,
        [
            "evaluate",
            "--checkpoint",
            str(run / "best.pt"),
            "--cache",
            str(cache),
            "--out",
            str(out),
            "--no-progress",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "mAP" in r.output and "ROC-AUC" in r.output
    return out


def test_report_figures_recompute_from_predictions_csv(report):
    rep = json.loads((report / "report.json").read_text())
    pred = pd.read_csv(report / "predictions.csv", keep_default_na=False)
    labels = list(rep["per_label"])
    probs = pred[[f"p_{n}" for n in labels]].to_numpy()
    y = np.array([[n in s.split("|") for n in labels] for s in pred["true"]], np.uint8)
    thresholds = np.array([rep["per_label"][n]["threshold"] for n in labels])
    predicted = np.array([[n in s.split("|") for n in labels] for s in pred["predicted"]])
    np.testing.assert_array_equal(predicted, probs >= thresholds)
    defined = [j for j in range(len(labels)) if y[:, j].any()]
    assert rep["mean_average_precision"] == pytest.approx(
        np.mean([metrics.average_precision_score(y[:, j], probs[:, j]) for j in defined]),
        abs=1e-6,
    )
    both = [j for j in defined if not y[:, j].all()]
    assert rep["macro_roc_auc"] == pytest.approx(
        np.mean([metrics.roc_auc_score(y[:, j], probs[:, j]) for j in both]), abs=1e-6
    )
    assert rep["micro_roc_auc"] == pytest.approx(
        metrics.roc_auc_score(y.ravel(), probs.ravel()), abs=1e-6
    )
    assert rep["sample_f1"] == pytest.approx(
        metrics.f1_score(y, predicted, average="samples", zero_division=0), abs=1e-6
    )
    for j, name in enumerate(labels):
        m = rep["per_label"][name]
        assert m["support"] == int(y[:, j].sum())
        if j in defined:
            assert m["average_precision"] == pytest.approx(
                metrics.average_precision_score(y[:, j], probs[:, j]), abs=1e-6
            )
        else:  # no positives in this split: undefined, not 0
            assert m["average_precision"] is None and m["roc_auc"] is None
    per_label = pd.read_csv(report / "per_label.csv", index_col=0)
    assert list(per_label.index) == labels
    assert (report / "labels.png").stat().st_size > 10_000


def test_predict_prints_the_labels_above_their_thresholds(run, data):
    best = load_checkpoint(run / "best.pt")
    tid = int(
        data.tracks.query("subset == 'large' and recipe.str.contains('\\\\+')")["track_id"].iloc[0]
    )
    path = fma.audio_path(data.audio_dir, tid)
    r = runner.invoke(app, ["predict", "--checkpoint", str(run / "best.pt"), "--json", str(path)])
    assert r.exit_code == 0, r.output
    row = json.loads(r.stdout)
    assert set(row["probabilities"]) == set(best.labels)
    above = {
        n for n, p in row["probabilities"].items() if p >= best.thresholds[best.labels.index(n)]
    }
    assert {n for n, _ in row["labels"]} == above
    r = runner.invoke(app, ["predict", "--checkpoint", str(run / "best.pt"), str(path)])
    assert r.exit_code == 0 and str(path) in r.output


def test_kill_and_resume_is_exact_for_multi_label(cache, tmp_path):
    """SIGKILL after epoch 2's last.pt write, --resume: the weights and metrics of an
    unbroken run (both on one thread: float sums depend on the thread count)."""
    args = ["train", "--cache", str(cache), "--epochs", "3", *TRAIN]

    def train(out: Path, *extra: str, **faults: str) -> int:
        env = {**fault_env(**faults), "OMP_NUM_THREADS": "1"}
        p = subprocess.run(
            [sys.executable, str(ROOT / "cli.py"), *args, "--out", str(out), *extra],
            cwd=ROOT,
            env=env,
            capture_output=True,
        )
        return p.returncode

    assert train(tmp_path / "full") == 0
    assert train(tmp_path / "broken", kill_after="last.pt:2") == -signal.SIGKILL
    assert load_checkpoint(tmp_path / "broken" / "last.pt").epoch == 2
    assert train(tmp_path / "broken", "--resume") == 0
    a, b = (load_checkpoint(tmp_path / r / "last.pt") for r in ("full", "broken"))
    for k, v in a.model.items():
        assert torch.allclose(v.float(), b.model[k].float(), atol=1e-6), k
    assert a.thresholds == pytest.approx(b.thresholds)
    cols = list(TIMING_COLUMNS)
    pd.testing.assert_frame_equal(
        *(pd.read_csv(tmp_path / r / "metrics.csv").drop(columns=cols) for r in ("full", "broken"))
    )


# ---------------------------------------------------------------- bad input


def test_unknown_labels_mode(data, tmp_path):
    argv = pre(data, tmp_path / "o")
    argv[argv.index("--labels") + 1] = "genres"
    one_line_error(runner.invoke(app, argv), "unknown --labels 'genres'")
    assert not (tmp_path / "o").exists()


def test_multi_label_needs_genres_csv(data, tmp_path):
    meta = tmp_path / "meta"
    shutil.copytree(data.metadata_dir, meta)
    (meta / "genres.csv").unlink()
    one_line_error(runner.invoke(app, pre(data, tmp_path / "o", meta=meta)), "genres.csv")
    assert not (tmp_path / "o").exists()


def test_too_high_min_label_tracks(data, tmp_path):
    argv = pre(data, tmp_path / "o", "--min-label-tracks", "1000")
    argv[argv.index("--labels") + 1] = "all"
    one_line_error(runner.invoke(app, argv), "--min-label-tracks 1000", "lower")
    assert not (tmp_path / "o").exists()


def test_every_row_malformed_is_refused(data, tmp_path):
    def edit(t):
        t[("track", "genres_all")] = "21; 811"

    meta = _edited_metadata(data, tmp_path, edit)
    one_line_error(runner.invoke(app, pre(data, tmp_path / "o", meta=meta)), "malformed")


def test_task_mismatch_is_refused(cache, run, tmp_path):
    single = make_cache(tmp_path / "single", n_per_class=(8, 2, 2))
    single_run = tmp_path / "srun"
    r = runner.invoke(
        app,
        [
            "train",
            "--cache",
            str(single),
            "--out",
            str(single_run),
            "--epochs",
            "1",
            "--channels",
            "8",
            "--min-steps",
            "0",
            "--val-crops",
            "0",
            "--batch-size",
            "4",
            "--crop-seconds",
            "1",
            "--workers",
            "0",
            "--no-progress",
        ],
    )
    assert r.exit_code == 0, r.output
    for ckpt, other in ((run / "best.pt", single), (single_run / "best.pt", cache)):
        r = runner.invoke(
            app,
            [
                "evaluate",
                "--checkpoint",
                str(ckpt),
                "--cache",
                str(other),
                "--out",
                str(tmp_path / "rep"),
                "--no-progress",
            ],
        )
        one_line_error(r, "-label model and cache")
    shutil.copytree(single_run, tmp_path / "resume")
    r = runner.invoke(
        app, ["train", "--cache", str(cache), "--out", str(tmp_path / "resume"), "--resume", *TRAIN]
    )
    one_line_error(r, "single-label model", "multi-label cache")
