"""`mrnet evaluate`, `mrnet predict` and `mrnet demo` on the synthetic dataset."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn import metrics
from typer.testing import CliRunner

from cli import app
from mrnet.options import TrainConfig
from mrnet.train import train
from pipeline.sources import fma

runner = CliRunner()


@pytest.fixture(scope="module")
def run(cache, tmp_path_factory) -> Path:
    """A tiny MRNet trained for 2 epochs on the synthetic cache."""
    out = tmp_path_factory.mktemp("run") / "run"
    train(
        TrainConfig(
            cache=cache,
            out=out,
            arch="mrnet",
            channels=16,
            epochs=2,
            batch_size=8,
            crop_seconds=2.0,
            workers=0,
            device="cpu",
            progress=False,
        )
    )
    return out


@pytest.fixture(scope="module")
def report(run, cache, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report") / "rep"
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
            "--device",
            "cpu",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "accuracy" in r.output and "precision" in r.output
    return out


def test_report_agrees_with_predictions_csv(report, cache):
    rep = json.loads((report / "report.json").read_text())
    pred = pd.read_csv(report / "predictions.csv")
    genres = rep["confusion"]["labels"]
    assert genres == json.loads((cache / "manifest.json").read_text())["labels"]
    test = pd.read_csv(cache / "tracks.csv").query("split == 'test'")
    assert sorted(pred["track_id"]) == sorted(test["track_id"])
    assert rep["n_tracks"] == len(pred) == len(test)
    assert rep["accuracy"] == pytest.approx((pred["true"] == pred["predicted"]).mean())
    assert rep["macro_f1"] == pytest.approx(
        metrics.f1_score(
            pred["true"], pred["predicted"], labels=genres, average="macro", zero_division=0
        )
    )
    probs = pred[[f"p_{g}" for g in genres]].to_numpy()
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-4)
    assert (np.array(genres)[probs.argmax(1)] == pred["predicted"]).all()
    np.testing.assert_allclose(pred["confidence"], probs.max(1), atol=1e-5)
    cm = np.array(rep["confusion"]["matrix"])
    assert cm.sum() == len(pred)
    expected = pd.crosstab(
        pd.Categorical(pred["true"], genres),
        pd.Categorical(pred["predicted"], genres),
        dropna=False,
    )
    np.testing.assert_array_equal(cm, expected.to_numpy())
    csv = pd.read_csv(report / "confusion.csv", index_col=0)
    np.testing.assert_array_equal(csv.to_numpy(), cm)
    per = pd.read_csv(report / "per_genre.csv", index_col=0)
    assert list(per.index) == genres and per["support"].sum() == len(pred)
    for g in genres:
        assert rep["per_genre"][g]["support"] == int((pred["true"] == g).sum())
    assert {"artist", "title"} <= set(pred.columns)  # the FMA metadata was at hand
    assert (report / "confusion.png").stat().st_size > 5000


def test_predict_matches_evaluate_top_genre(report, run, synth):
    pred = pd.read_csv(report / "predictions.csv").iloc[:3]
    files = [str(fma.audio_path(synth.audio_dir, t)) for t in pred["track_id"]]
    r = runner.invoke(
        app, ["predict", "--checkpoint", str(run / "best.pt"), "--json", "--device", "cpu", *files]
    )
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in r.output.splitlines()]
    assert [row["top"][0][0] for row in rows] == list(pred["predicted"])
    for row, conf in zip(rows, pred["confidence"]):
        assert row["top"][0][1] == pytest.approx(conf, abs=1e-3)


def test_predict_reports_unreadable_files_and_goes_on(run, synth, tmp_path):
    bad = tmp_path / "bad.mp3"
    bad.write_bytes(b"\x00" * 3000)
    good = fma.audio_path(synth.audio_dir, synth.ids("small", healthy=True)[0])
    r = runner.invoke(
        app,
        ["predict", "--checkpoint", str(run / "best.pt"), "--device", "cpu", str(bad), str(good)],
    )
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert "cannot read" in lines[0] and str(good) in lines[1]
    assert len(lines[1].split(",")) == 3  # top-3 genres


def _refuse(argv: list[str], needle: str) -> None:
    r = runner.invoke(app, argv)
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], r.output


def _evaluate(ckpt, cache, out):
    return [
        "evaluate",
        "--checkpoint",
        str(ckpt),
        "--cache",
        str(cache),
        "--out",
        str(out),
        "--device",
        "cpu",
    ]


def test_refuses_checkpoint_with_other_features_or_genres(run, cache, tmp_path):
    ck = torch.load(run / "best.pt", weights_only=True)
    ck["feature_config"] = dict(ck["feature_config"], hop_length=160)
    torch.save(ck, tmp_path / "feat.pt")
    _refuse(_evaluate(tmp_path / "feat.pt", cache, tmp_path / "r1"), "other features")
    ck = torch.load(run / "best.pt", weights_only=True)
    ck["labels"] = list(reversed(ck["labels"]))
    torch.save(ck, tmp_path / "genres.pt")
    _refuse(_evaluate(tmp_path / "genres.pt", cache, tmp_path / "r2"), "genre order")
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r2").exists()


def test_refuses_missing_corrupt_and_truncated_checkpoints(run, cache, tmp_path):
    _refuse(_evaluate(tmp_path / "absent.pt", cache, tmp_path / "r"), "does not exist")
    (tmp_path / "random.pt").write_bytes(np.random.default_rng(0).bytes(4096))
    _refuse(_evaluate(tmp_path / "random.pt", cache, tmp_path / "r"), "corrupt")
    data = (run / "best.pt").read_bytes()
    (tmp_path / "trunc.pt").write_bytes(data[: len(data) // 2])
    _refuse(_evaluate(tmp_path / "trunc.pt", cache, tmp_path / "r"), "corrupt")
    assert not (tmp_path / "r").exists()


def test_refuses_empty_split_and_file_as_out(run, cache, tmp_path):
    copy = tmp_path / "cache"
    shutil.copytree(cache, copy)
    t = pd.read_csv(copy / "tracks.csv")
    t[t["split"] != "validation"].to_csv(copy / "tracks.csv", index=False)
    _refuse(
        _evaluate(run / "best.pt", copy, tmp_path / "r") + ["--split", "validation"], "no tracks"
    )
    (tmp_path / "file").write_text("keep")
    _refuse(_evaluate(run / "best.pt", cache, tmp_path / "file"), "is a file")
    assert (tmp_path / "file").read_text() == "keep"


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path):
    r = runner.invoke(
        app,
        [
            "demo",
            "--out",
            str(tmp_path / "demo"),
            "--n-per-genre",
            "10",
            "--seconds",
            "8",
            "--epochs",
            "3",
            "--channels",
            "16",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "test accuracy" in r.output
    rep = json.loads((tmp_path / "demo" / "report" / "report.json").read_text())
    assert rep["n_tracks"] > 0 and 0.0 <= rep["accuracy"] <= 1.0
    for p in ("cache/manifest.json", "run/best.pt", "run/metrics.csv", "report/confusion.png"):
        assert (tmp_path / "demo" / p).exists(), p


def test_metrics_with_two_genres():
    from mrnet.metrics import single_label_report as compute_metrics

    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]], np.float32)
    rep = compute_metrics(np.array([0, 1, 1]), probs, ["a", "b"])
    assert rep["accuracy"] == pytest.approx(2 / 3) and rep["top2_accuracy"] == 1.0
    assert np.array(rep["confusion"]["matrix"]).sum() == 3


def test_predict_all_unreadable_is_bad_input_and_skips_folders(run, tmp_path):
    (tmp_path / "album.mp3").mkdir()  # a folder with an audio suffix is not a file
    (tmp_path / "bad.mp3").write_bytes(b"\x00" * 100)
    r = runner.invoke(
        app, ["predict", "--checkpoint", str(run / "best.pt"), "--device", "cpu", str(tmp_path)]
    )
    assert r.exit_code == 2, r.output
    assert "bad.mp3: cannot read" in r.output and "none of the 1 files" in r.output


@pytest.mark.parametrize("features", ["logmel", "wavlm"])
def test_demo_prints_the_commands_it_runs(tmp_path, monkeypatch, features):
    """Each command the demo prints, given to the real CLI, makes the very options the
    demo ran that stage with (so the printed commands cannot drift from the CLI)."""
    import dataclasses
    import shlex

    import mrnet.evaluate
    import mrnet.train.loop
    import pipeline.preprocess
    from mrnet.demo import stage_options, train_command
    from mrnet.options import DemoOptions
    from pipeline.settings import command_line

    opts = DemoOptions(
        out=tmp_path / "demo", epochs=3, channels=16, jobs=2, progress=False, features=features
    )
    if features == "wavlm":
        from mrnet.demo import RANDOM_WAVLM
        from pipeline.synth.wavlm import write_random_wavlm

        write_random_wavlm(opts.out / RANDOM_WAVLM)
    stages = stage_options(opts, tmp_path / "fma_large", tmp_path / "fma_metadata", 20)
    seen = {}
    monkeypatch.setattr(pipeline.preprocess, "run", lambda o: seen.setdefault("p", o) and None)
    monkeypatch.setattr(mrnet.train.loop, "train", lambda o, *a: seen.setdefault("t", o) and None)
    monkeypatch.setattr(mrnet.evaluate, "run", lambda o: seen.setdefault("e", o) and None)
    pre, fit, score = stages
    lines = [
        command_line("preprocess", pre),
        train_command(fit, opts),
        command_line("evaluate", score),
    ]
    for key, line, stage in zip("pte", lines, stages):
        r = runner.invoke(app, shlex.split(line)[1:])  # without the leading "mrnet"
        assert r.exit_code == 0, (line, r.output)
        got = seen[key]
        for f in dataclasses.fields(stage):  # every setting, the recipe's too
            assert getattr(got, f.name) == getattr(stage, f.name), (line, f.name)
