"""GTZAN (both download layouts, the filtered split, k-fold) and folder datasets through
`mrnet preprocess`, and everything after the cache on them."""

from __future__ import annotations

import functools
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import ROOT, cache_content, fault_env, one_line_error, tiny_args
from typer.testing import CliRunner

from cli import app
from pipeline.sources import gtzan as gtzan_source
from pipeline.sources.split import fold_splits, stratified_folds
from pipeline.synth import folder as folder_synth
from pipeline.synth import gtzan as gtzan_synth

runner = CliRunner()
refused = functools.partial(one_line_error, alone=True)  # the only line printed


def pre(audio: Path, out: Path, *extra: str, dataset: str = "gtzan") -> list[str]:
    return [
        "preprocess",
        "--dataset",
        dataset,
        "--audio-dir",
        str(audio),
        "--out",
        str(out),
        "--min-seconds",
        "0.1",
        *extra,
    ]


def without_source(root: Path) -> dict:
    """cache_content minus what names the audio files themselves (paths, suffixes)."""
    c = cache_content(root)
    c["manifest"]["plan"].pop("tracks_sha256")
    c["failures"] = "\n".join(line.rsplit(",", 1)[-1] for line in c["failures"].splitlines())
    return c


@pytest.fixture(scope="module")
def mini(tmp_path_factory) -> dict[str, gtzan_synth.GTZANDataset]:
    """The same 7 clips per genre (2 s) in both layouts."""
    tmp = tmp_path_factory.mktemp("gtzan")
    return {
        layout: gtzan_synth.generate(tmp / layout, layout, 7, 2.0, jobs=2)
        for layout in ("original", "kaggle")
    }


@pytest.fixture(scope="module")
def kfold_cache(mini, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("kf") / "cache"
    r = runner.invoke(app, pre(mini["original"].root, out, "--folds", "7", "--fold", "2"))
    assert r.exit_code == 0, r.output
    return out


# ---------------------------------------------------------------- GTZAN


def test_both_layouts_give_the_same_cache(mini, kfold_cache, tmp_path):
    """Kaggle's Data/genres_original/*.wav and the archive's genres/*.au of the same
    audio make the same cache; --audio-dir may name the genre folders' parent or above."""
    out = tmp_path / "kaggle"
    kaggle = mini["kaggle"].root / "Data" / "genres_original"
    r = runner.invoke(app, pre(kaggle, out, "--folds", "7", "--fold", "2"))
    assert r.exit_code == 0, r.output
    assert without_source(out) == without_source(kfold_cache)
    t = pd.read_csv(out / "tracks.csv", dtype={"track_id": str})
    assert t["track_id"].str.fullmatch(r"[a-z]+\.000\d\d").all()
    assert sorted(t["genre"].unique()) == list(gtzan_source.GENRES)


def test_filtered_split_is_torchaudios(tmp_path):
    """On all 1,000 GTZAN names (0.3-s clips): the selected tracks and their splits are
    exactly torchaudio's filtered lists, the 70 others are counted, and the Kaggle copy's
    jazz.00054.wav becomes a failure, not a crash."""
    from torchaudio.datasets import gtzan as ta

    ds = gtzan_synth.generate(tmp_path / "g", "kaggle", 100, 0.3, jobs=2)
    assert len(ds.files) == 1000 and ds.broken == {"jazz.00054"}
    out = tmp_path / "cache"
    r = runner.invoke(app, pre(ds.root, out))
    assert r.exit_code == 0, r.output
    m = json.loads((out / "manifest.json").read_text())
    assert m["dataset"] == "gtzan" and m["skipped"] == {"not_in_filtered_split": 70}
    assert {s: v["tracks"] + v["failed"] for s, v in m["splits"].items()} == {
        "training": 443,
        "validation": 197,
        "test": 290,
    }
    t = pd.read_csv(out / "tracks.csv", dtype={"track_id": str})
    fails = pd.read_csv(out / "failures.csv", dtype={"track_id": str})
    for split, names in (
        ("training", ta.filtered_train),
        ("validation", ta.filtered_valid),
        ("test", ta.filtered_test),
    ):
        got = set(t["track_id"][t["split"] == split])
        if split == "training":
            got.add("jazz.00054")  # listed for training, but its file does not decode
        assert got == set(names), split
    assert fails.set_index("track_id")["reason"].to_dict() == {"jazz.00054": "undecodable"}
    assert "not in filtered split 70" in runner.invoke(app, ["info", str(out)]).output


def test_kfold_folds_are_disjoint_stratified_and_cover_every_file():
    labels = [g for g in range(10) for _ in range(100)]  # GTZAN: 10 x 100, sorted
    fold = stratified_folds(labels, 10, seed=3)
    tests = [set(np.flatnonzero(fold_splits(fold, k, 10) == "test")) for k in range(10)]
    assert sum(len(t) for t in tests) == 1000 and set().union(*tests) == set(range(1000))
    labels = [g for g in range(4) for _ in range(7 + g)]  # uneven labels
    fold = stratified_folds(labels, 3, seed=0)
    for g in range(4):
        per_fold = np.bincount(fold[np.array(labels) == g], minlength=3)
        assert per_fold.max() - per_fold.min() <= 1  # within one track per genre
    k = fold_splits(fold, 1, 3)
    assert set(np.flatnonzero(k == "validation")) == set(np.flatnonzero(fold == 2))
    assert not np.array_equal(stratified_folds(labels, 3, seed=1), fold)  # the seed matters
    np.testing.assert_array_equal(stratified_folds(labels, 3, seed=0), fold)


def test_kfold_does_not_depend_on_jobs(mini, kfold_cache, tmp_path):
    out = tmp_path / "one"
    r = runner.invoke(
        app, pre(mini["original"].root, out, "--folds", "7", "--fold", "2", "--jobs", "1")
    )
    assert r.exit_code == 0, r.output
    assert cache_content(out) == cache_content(kfold_cache)
    t = pd.read_csv(out / "tracks.csv", dtype={"track_id": str})
    per_genre = t.groupby(["genre", "split"]).size().unstack()[["test", "validation"]]
    assert (per_genre.to_numpy() == 1).all()


def test_killed_gtzan_run_resumes_to_the_same_cache(mini, kfold_cache, tmp_path):
    out = tmp_path / "killed"
    argv = [
        sys.executable,
        str(ROOT / "cli.py"),
        *pre(mini["original"].root, out, "--folds", "7", "--fold", "2"),
    ]
    p = subprocess.Popen(
        argv,
        cwd=ROOT,
        env=fault_env(track_delay="0.1"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 60
    while len(list((out / "shards").glob("*.h5"))) < 2:
        assert p.poll() is None and time.time() < deadline
        time.sleep(0.02)
    p.send_signal(signal.SIGKILL)
    p.wait()
    done = len(list((out / "shards").glob("*.h5")))
    assert done < len(list((kfold_cache / "shards").glob("*.h5"))), "the kill missed the run"
    r = runner.invoke(app, pre(mini["original"].root, out, "--folds", "7", "--fold", "2"))
    assert r.exit_code == 0 and "resuming" in r.output, r.output
    assert cache_content(out) == cache_content(kfold_cache)


def test_train_evaluate_predict_on_a_gtzan_cache(mini, kfold_cache, tmp_path):
    run, rep = tmp_path / "run", tmp_path / "rep"
    r = runner.invoke(
        app,
        [
            "train",
            "--cache",
            str(kfold_cache),
            "--out",
            str(run),
            "--channels",
            "16",
            "--min-steps",
            "0",
            "--val-crops",
            "0",
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--crop-seconds",
            "1",
            "--workers",
            "0",
            "--no-progress",
        ],
    )
    assert r.exit_code == 0, r.output
    r = runner.invoke(
        app,
        [
            "evaluate",
            "--checkpoint",
            str(run / "best.pt"),
            "--cache",
            str(kfold_cache),
            "--out",
            str(rep),
            "--no-progress",
        ],
    )
    assert r.exit_code == 0, r.output
    pred = pd.read_csv(rep / "predictions.csv", dtype={"track_id": str})
    t = pd.read_csv(kfold_cache / "tracks.csv", dtype={"track_id": str})
    assert set(pred["track_id"]) == set(t["track_id"][t["split"] == "test"])
    assert json.loads((rep / "report.json").read_text())["n_tracks"] == 10
    clip = mini["original"].files["rock.00003"]
    r = runner.invoke(app, ["predict", "--checkpoint", str(run / "best.pt"), "--json", str(clip)])
    assert r.exit_code == 0 and json.loads(r.stdout)["error"] is None, r.output


# ---------------------------------------------------------------- folder datasets


@pytest.mark.parametrize("splits", [False, True], ids=["80/10/10", "train-valid-test folders"])
def test_folder_dataset(tmp_path, splits):
    files = folder_synth.generate(tmp_path / "data", n_per_label=10, seconds=1.0, splits=splits)
    out = tmp_path / "cache"
    r = runner.invoke(app, pre(tmp_path / "data", out, dataset="folder"))
    assert r.exit_code == 0, r.output
    t = pd.read_csv(out / "tracks.csv", dtype={"track_id": str})
    assert set(t["track_id"]) == set(files)  # relative paths, '/', no suffix, Unicode kept
    assert sorted(t["genre"].unique()) == sorted(folder_synth.LABELS)
    assert any("/live/2024/" in i for i in t["track_id"])  # nested folders
    counts = t.groupby(["genre", "split"]).size().unstack()
    assert (counts["validation"] == 1).all() and (counts["test"] == 1).all()
    if splits:
        assert all(i.split("/")[0] in ("train", "valid", "test") for i in t["track_id"])
        assert (t[t["track_id"].str.startswith("valid/")]["split"] == "validation").all()
    m = json.loads((out / "manifest.json").read_text())
    assert m["dataset"] == "folder"
    assert m["split_scheme"].startswith("folders" if splits else "stratified 80/10/10")
    r = runner.invoke(
        app,
        [
            "train",
            "--cache",
            str(out),
            "--out",
            str(tmp_path / "run"),
            *tiny_args(crop_seconds=0.5),
        ],
    )
    assert r.exit_code == 0, r.output


def test_folder_split_is_a_pure_function_of_paths_and_seed(tmp_path):
    from pipeline.sources import folder

    folder_synth.generate(tmp_path / "d", n_per_label=10, seconds=0.3)
    a = folder.read_selection(tmp_path / "d", seed=0).tracks
    pd.testing.assert_frame_equal(a, folder.read_selection(tmp_path / "d", seed=0).tracks)
    b = folder.read_selection(tmp_path / "d", seed=1).tracks
    split_a, split_b = (dict(zip(t["track_id"], t["split"])) for t in (a, b))
    assert set(split_a) == set(split_b) and split_a != split_b


def test_changed_folder_is_refused_on_rerun(tmp_path):
    files = folder_synth.generate(tmp_path / "data", n_per_label=6, seconds=0.5)
    out = tmp_path / "cache"
    assert runner.invoke(app, pre(tmp_path / "data", out, dataset="folder")).exit_code == 0
    before = cache_content(out)
    shutil.copy(next(iter(files.values())), tmp_path / "data" / "techno" / "new track.mp3")
    r = runner.invoke(app, pre(tmp_path / "data", out, dataset="folder"))
    refused(r, "other settings", "selected tracks")
    assert cache_content(out) == before


def test_label_only_in_train_is_a_warning(tmp_path):
    folder_synth.generate(tmp_path / "d", n_per_label=5, seconds=0.5, splits=True)
    for split in ("valid", "test"):
        shutil.rmtree(tmp_path / "d" / split / "techno")
    r = runner.invoke(app, pre(tmp_path / "d", tmp_path / "cache", dataset="folder"))
    assert r.exit_code == 0, r.output
    assert "warning: label 'techno' has tracks in train/ but none in valid/ or test/" in r.output


# ---------------------------------------------------------------- bad input


def _bad_cases(tmp_path: Path, mini) -> dict[str, tuple[list[str], list[str]]]:
    empty = tmp_path / "empty"
    empty.mkdir()
    one = tmp_path / "one" / "genres"
    shutil.copytree(mini["original"].audio_dir / "blues", one / "blues")
    hollow = tmp_path / "hollow"
    shutil.copytree(mini["original"].audio_dir, hollow / "genres")
    for f in (hollow / "genres" / "jazz").iterdir():
        f.unlink()
    single = tmp_path / "single"
    (single / "techno").mkdir(parents=True)
    shutil.copy(mini["original"].files["disco.00001"], single / "techno" / "a.au")
    partial = tmp_path / "partial"
    (partial / "train" / "a").mkdir(parents=True)
    (partial / "test" / "a").mkdir(parents=True)
    g = mini["original"].root
    return {
        "gtzan without genre folders": (pre(empty, tmp_path / "o"), ["no GTZAN genre folders"]),
        "gtzan with one genre": (pre(one.parent, tmp_path / "o"), ["only one genre folder"]),
        "genre folder without audio": (pre(hollow, tmp_path / "o"), ["jazz", "no audio"]),
        "folder with one label": (
            pre(single, tmp_path / "o", dataset="folder"),
            ["1 label folder", "two or more"],
        ),
        "folds below 2": (pre(g, tmp_path / "o", "--folds", "1"), ["--folds must be 2"]),
        "fold outside": (
            pre(g, tmp_path / "o", "--folds", "5", "--fold", "5"),
            ["--fold must be in 0..4"],
        ),
        "fold without folds": (pre(g, tmp_path / "o", "--fold", "1"), ["--fold 1 needs --folds"]),
        "fma without metadata": (pre(g, tmp_path / "o", dataset="fma"), ["--metadata-dir"]),
        "partial split layout": (
            pre(partial, tmp_path / "o", dataset="folder"),
            ["no valid/", "add them"],
        ),
        "unknown dataset": (pre(g, tmp_path / "o", dataset="mp3s"), ["unknown --dataset"]),
    }


BAD = [
    "gtzan without genre folders",
    "gtzan with one genre",
    "genre folder without audio",
    "folder with one label",
    "folds below 2",
    "fold outside",
    "fold without folds",
    "fma without metadata",
    "partial split layout",
    "unknown dataset",
]


@pytest.mark.parametrize("case", BAD)
def test_bad_input(tmp_path, mini, case):
    argv, words = _bad_cases(tmp_path, mini)[case]
    refused(runner.invoke(app, argv), *words)
    assert not (tmp_path / "o").exists(), "bad input wrote something"
