"""Defects a new user met, each reproduced the way they met it: a folder cache through
verify, finite bit rot under evaluate and embed, a label without training tracks, audio
suffixes, contradictory settings, checkpoint and compare messages, cosmetics."""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile
from helpers import ROOT, cli_preprocess_folder, one_line_error, tiny_args
from typer.testing import CliRunner

from cli import app
from pipeline.cache import open_cache
from pipeline.synth import folder as folder_synth

runner = CliRunner()
refused = functools.partial(one_line_error, alone=True)  # the only line printed
CPU = ("--device", "cpu", "--no-progress")
TINY = (*tiny_args(crop_seconds=0.5), *CPU)


def preprocess_folder(audio: Path, out: Path, *extra: str):
    return cli_preprocess_folder(audio, out, "--min-seconds", "0.1", *extra)


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(audio folder, cache, run) of a folder dataset: string track ids throughout."""
    tmp = tmp_path_factory.mktemp("folder")
    folder_synth.generate(tmp / "audio", n_per_label=8, seconds=1.0)
    r = preprocess_folder(tmp / "audio", tmp / "cache", "--shard-size", "4")
    assert r.exit_code == 0, r.output
    r = runner.invoke(
        app, ["train", "--cache", str(tmp / "cache"), "--out", str(tmp / "run"), *TINY]
    )
    assert r.exit_code == 0, r.output
    return tmp / "audio", tmp / "cache", tmp / "run"


def overwrite_frames(cache: Path, split: str, value: float = 1.0) -> Path:
    """Finite bit rot: the first track's frames of ``split`` set to ``value`` in place."""
    c = open_cache(cache)
    row = c.split(split).iloc[0]
    idx = c.shards[row["shard"]]
    mm = np.memmap(idx.path, np.float16, "r+", offset=idx.mel_offset, shape=idx.mel_shape)
    mm[idx.offsets[row["row"]] : idx.offsets[row["row"] + 1]] = value
    mm.flush()
    return idx.path


# ---------------------------------------------------------------- 1. verify on named ids


def test_verify_and_repair_a_folder_cache(folder_run, tmp_path):
    audio, cache_dir, _ = folder_run
    cache = tmp_path / "cache"
    shutil.copytree(cache_dir, cache)
    r = runner.invoke(app, ["verify", str(cache), "--no-progress"])
    assert r.exit_code == 0 and "all sound" in r.output, r.output
    r = runner.invoke(
        app, ["train", "--cache", str(cache), "--out", str(tmp_path / "run"), "--verify", *TINY]
    )
    assert r.exit_code == 0, r.output
    shard = overwrite_frames(cache, "training")
    r = runner.invoke(app, ["verify", str(cache), "--no-progress"])
    assert r.exit_code == 2 and "checksum mismatch" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["verify", str(cache), "--repair", "--no-progress"])
    assert r.exit_code == 0 and "deleted 1 damaged" in r.output, r.output
    assert not shard.exists()
    r = preprocess_folder(audio, cache, "--shard-size", "4")
    assert r.exit_code == 0 and "resuming" in r.output, r.output
    r = runner.invoke(app, ["verify", str(cache), "--no-progress"])
    assert r.exit_code == 0 and "all sound" in r.output, r.output


# ---------------------------------------------------------------- 2. finite bit rot


def test_evaluate_and_embed_refuse_a_shard_whose_bytes_changed(folder_run, tmp_path):
    _, cache_dir, run = folder_run
    cache = tmp_path / "cache"
    shutil.copytree(cache_dir, cache)
    report = tmp_path / "rep"
    argv = [
        "evaluate",
        "--checkpoint",
        str(run / "best.pt"),
        "--cache",
        str(cache),
        "--out",
        str(report),
        *CPU,
    ]
    assert runner.invoke(app, argv).exit_code == 0
    before = (report / "report.json").read_bytes()
    shard = overwrite_frames(cache, "test")  # finite values: only the checksum can tell
    r = runner.invoke(app, argv)
    refused(r, f"shard {shard}", "no longer matches its checksum", f"mrnet verify {cache} --repair")
    assert (report / "report.json").read_bytes() == before  # the old report, untouched
    r = runner.invoke(
        app,
        [
            "embed",
            "--checkpoint",
            str(run / "best.pt"),
            "--cache",
            str(cache),
            "--out",
            str(tmp_path / "emb"),
            *CPU,
        ],
    )
    refused(r, "no longer matches its checksum")
    assert not (tmp_path / "emb").exists()
    r = runner.invoke(
        app, ["baseline", "--cache", str(cache), "--out", str(tmp_path / "base"), "--no-progress"]
    )  # the stored statistics sit under the same checksum
    refused(r, "no longer matches its checksum")
    assert not (tmp_path / "base").exists()


# ---------------------------------------------------------------- 3. a label without training


def test_a_label_without_training_tracks_is_named_by_preprocess_and_refused_by_train(tmp_path):
    audio = tmp_path / "audio"
    folder_synth.generate(audio, n_per_label=5, seconds=1.0, splits=True)
    shutil.rmtree(audio / "train" / "fólk")  # fólk: only in valid/ and test/
    out = tmp_path / "cache"
    r = preprocess_folder(audio, out)
    assert r.exit_code == 0, r.output
    assert "labels without tracks in a split (training: fólk)" in r.output
    r = runner.invoke(app, ["train", "--cache", str(out), "--out", str(tmp_path / "run"), *TINY])
    refused(r, "labels fólk have no training tracks")
    assert not (tmp_path / "run" / "best.pt").exists()


def test_a_multilabel_label_without_positives_is_noted(tmp_path):
    from pipeline.cache import Track, write_cache
    from pipeline.features import FeatureConfig

    rng = np.random.default_rng(0)
    tracks = [
        Track(i, split, (i % 2,), rng.normal(-4, 1, (100, 16)), 2.0)
        for i, split in enumerate(["training"] * 8 + ["validation"] * 4)
    ]
    tracks.append(Track(99, "validation", (2,), rng.normal(-4, 1, (100, 16)), 2.0))
    root = tmp_path / "c"
    write_cache(
        root,
        FeatureConfig(n_mels=16).to_dict(),
        ["a", "b", "c"],
        tracks,
        8,
        subset="small",
        task="multi",
    )
    r = runner.invoke(app, ["train", "--cache", str(root), "--out", str(tmp_path / "run"), *TINY])
    assert r.exit_code == 0, r.output
    assert "warning: labels without a positive training track: c" in r.output


# ---------------------------------------------------------------- 4. one list of suffixes


def test_audio_suffixes_come_from_the_decoders_and_skipped_files_are_named(folder_run, tmp_path):
    from pipeline.audio import AUDIO_SUFFIXES, UNSUPPORTED_SUFFIXES

    _, _, run = folder_run
    assert {".au", ".opus", ".ogg", ".mp3", ".flac", ".wav"} <= set(AUDIO_SUFFIXES)
    assert ".m4a" in UNSUPPORTED_SUFFIXES
    music = tmp_path / "music"
    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        (music / label).mkdir(parents=True)
        for i, (fmt, subtype, suffix, rate) in enumerate(
            [
                ("AU", "PCM_16", ".au", 22050),
                ("OGG", "OPUS", ".opus", 48000),
                ("WAV", "PCM_16", ".wav", 16000),
            ]
            * 2
        ):
            x = (rng.standard_normal(rate) * 0.1).astype(np.float32)
            soundfile.write(music / label / f"{i}{suffix}", x, rate, format=fmt, subtype=subtype)
        (music / label / "song.m4a").write_bytes(b"\0\0\0\x18ftypM4A ")
    r = runner.invoke(app, ["predict", "--checkpoint", str(run / "best.pt"), "--json", str(music)])
    assert r.exit_code == 0, r.output
    rows = {
        Path(row["path"]).relative_to(music).as_posix(): row["error"]
        for row in map(json.loads, r.stdout.splitlines())
    }
    assert len(rows) == 14 and rows["a/0.au"] is None and rows["b/1.opus"] is None
    assert rows["a/song.m4a"] == rows["b/song.m4a"] == "unsupported_format"
    r = runner.invoke(
        app,
        [
            "embed",
            "--checkpoint",
            str(run / "best.pt"),
            "--out",
            str(tmp_path / "emb"),
            str(music),
            *CPU,
        ],
    )
    assert r.exit_code == 0 and "song.m4a: cannot read (unsupported_format)" in r.output
    failures = pd.read_csv(tmp_path / "emb" / "failures.csv")
    assert sorted(Path(p).name for p in failures["path"]) == ["song.m4a", "song.m4a"]
    r = preprocess_folder(music, tmp_path / "cache")
    assert r.exit_code == 0, r.output
    assert "skipped 2 files of formats no decoder here reads" in r.output and "song.m4a" in r.output
    t = pd.read_csv(tmp_path / "cache" / "tracks.csv", dtype={"track_id": str})
    assert sum(i.endswith("1") for i in t["track_id"]) == 2  # the .opus files are cached


# ---------------------------------------------------------------- 8. contradictory settings


def test_min_seconds_above_max_seconds_is_refused_and_a_cache_of_nothing_fails(tmp_path):
    audio = tmp_path / "audio"
    folder_synth.generate(audio, n_per_label=3, seconds=1.0)
    r = preprocess_folder(audio, tmp_path / "c", "--min-seconds", "10", "--max-seconds", "5")
    refused(r, "--min-seconds 10 is more than --max-seconds 5")
    assert not (tmp_path / "c").exists()
    r = preprocess_folder(audio, tmp_path / "c", "--min-seconds", "4")  # 1-s clips: all too short
    lines = [ln for ln in r.output.splitlines() if ln.startswith("error: ")]
    assert r.exit_code == 2 and len(lines) == 1 and "not one track could be cached" in lines[0]
    assert "too_short 9" in lines[0] and "failures.csv" in lines[0]
    assert len(pd.read_csv(tmp_path / "c" / "failures.csv")) == 9
    r = preprocess_folder(audio, tmp_path / "c", "--min-seconds", "4")  # a rerun says it again
    assert r.exit_code == 2 and "not one track could be cached" in r.output


# ---------------------------------------------------------------- 10. compare


def test_compare_refuses_an_input_given_twice_and_names_what_differs(folder_run, tmp_path):
    _, cache, run = folder_run
    r = runner.invoke(app, ["compare", str(run), str(run) + "/"])
    refused(r, "are the same input")
    other = tmp_path / "wide"
    r = runner.invoke(
        app, ["train", "--cache", str(cache), "--out", str(other), *TINY, "--channels", "16"]
    )
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["compare", str(run), str(other)])
    assert r.exit_code == 0, r.output
    assert "note: the inputs differ in more than the seed: channels (8, 16)" in r.output


# ---------------------------------------------------------------- 11. what a user sees


def test_train_says_what_it_does_before_the_first_epoch(folder_run, tmp_path):
    _, cache, _ = folder_run
    r = runner.invoke(app, ["train", "--cache", str(cache), "--out", str(tmp_path / "run"), *TINY])
    assert r.exit_code == 0, r.output
    first = r.output.splitlines()[0]
    assert first.startswith("training mrnet on 18 tracks") and "steps of 4 crops" in first


def test_slow_epochs_are_not_shown_as_zero_samples_per_second():
    from mrnet.train.report import epoch_line

    row = {
        "epoch": 1,
        "train_loss": 1.0,
        "train_acc": 0.5,
        "val_loss": 1.0,
        "val_acc": 0.5,
        "lr": 1e-3,
        "samples_per_s": 0.46,
        "seconds": 100.0,
    }
    assert "0.46 samples/s" in epoch_line(row, 3)
    assert "1234 samples/s" in epoch_line({**row, "samples_per_s": 1234.4}, 3)


def test_extreme_audio_is_a_failure_without_numpy_warnings(folder_run, tmp_path):
    _, _, run = folder_run
    x = np.zeros(16000, np.float32)
    x[::7], x[1::7] = 3e38, -3e38
    soundfile.write(tmp_path / "loud.wav", x, 16000, subtype="FLOAT")
    p = subprocess.run(
        [
            sys.executable,
            str(ROOT / "cli.py"),
            "predict",
            "--checkpoint",
            str(run / "best.pt"),
            str(tmp_path / "loud.wav"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert p.returncode == 2 and "Warning" not in p.stderr, p.stderr
    assert "non_finite" in p.stdout


def test_top_level_help_keeps_one_command_per_line():
    r = runner.invoke(app, ["--help"])
    assert r.exit_code == 0
    lines = r.output.splitlines()
    for cmd in ("mrnet preprocess", "mrnet train", "mrnet evaluate"):
        assert any(ln.strip().startswith(cmd) for ln in lines), r.output


def test_a_run_directory_passed_as_checkpoint_says_so(folder_run, tmp_path):
    _, cache, run = folder_run
    r = runner.invoke(
        app,
        [
            "evaluate",
            "--checkpoint",
            str(run),
            "--cache",
            str(cache),
            "--out",
            str(tmp_path / "rep"),
            *CPU,
        ],
    )
    refused(r, "is a directory", f"{run}/best.pt")
