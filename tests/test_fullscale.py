"""fma_full: middle clips, whole tracks in chunks, windowed scoring, checksums, the 1 % rule."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile
import torch
from helpers import args, cache_content, kill_mid_run
from typer.testing import CliRunner

from cli import app
from mrnet.checkpoint import load as load_checkpoint
from mrnet.checkpoint import load_model
from mrnet.scoring import score, window_frames, window_starts
from mrnet.task import TASKS
from pipeline.audio import _middle, _middle_mp3, decode_file, load_audio, open_audio
from pipeline.cache.reader import FrameStore, open_cache, split_index
from pipeline.features import FeatureConfig, cached_log_mel, mel_filterbank
from pipeline.sources.fma import audio_path
from pipeline.synth import encode_mp3
from pipeline.synth.metadata import full_size_metadata

runner = CliRunner()
FAST = ("--jobs", "2", "--no-progress")


def noise(
    seconds: float, sr: int = 44100, channels: int = 2, level: float = 0.01, seed: int = 0
) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((int(seconds * sr), channels)) * level).astype(np.float32)


def audio_copy(synth, tmp_path: Path) -> Path:
    audio = tmp_path / "audio"
    shutil.copytree(synth.audio_dir, audio)
    return audio


def preprocess(synth, audio: Path, out: Path, *extra: str):
    argv = args(synth, out, *FAST, *extra)
    argv[argv.index("--audio-dir") + 1] = str(audio)
    return runner.invoke(app, argv)


def track_frames(cache: Path, track_id) -> np.ndarray:
    """The cached float16 [frames, n_mels] of one track, wherever it lies."""
    c = open_cache(cache)
    split = c.tracks.set_index("track_id").loc[track_id, "split"]
    index = split_index(c, split)
    i = int(np.flatnonzero(index.track_id == track_id)[0])
    return FrameStore(index.shards).track(index, i)


def replaceable_track(synth) -> int:
    """A healthy fma_small test-split track (its file gets replaced in these tests)."""
    t = synth.tracks
    ok = t[
        (t["subset"] == "small")
        & (t["split"] == "test")
        & t["broken"].isna()
        & (t["sample_rate"] == 44100)
        & (t["channels"] == 2)
    ]
    return int(ok["track_id"].iloc[0])


# ---------------------------------------------------------------- 1. where the clip comes from


@pytest.mark.parametrize("fmt", ["mp3", "mp3 read in chunks", "wav", "flac"])
def test_middle_clip_equals_the_middle_of_a_full_decode(tmp_path, fmt, monkeypatch):
    if fmt == "mp3 read in chunks":  # as files above IN_MEMORY_LIMIT (hours of audio) are
        monkeypatch.setattr("pipeline.audio.IN_MEMORY_LIMIT", 0)
        monkeypatch.setattr("pipeline.mp3._TABLE_CHUNK", 10_007)  # headers straddle chunks
        fmt = "mp3"
    x = noise(60.0, level=0.1)
    path = tmp_path / f"a.{fmt}"
    if fmt == "mp3":
        path.write_bytes(encode_mp3(x, 44100, 320))
    else:
        soundfile.write(path, x, 44100, subtype="PCM_16")
    af = open_audio(path)
    if fmt == "mp3":
        assert _middle_mp3(af, 10.0, True) is not None  # decoded by seeking, not cut
    clip = _middle(af, 10.0, mono=True)
    full = decode_file(af, None, mono=True).samples
    a = (len(full) - 441000) // 2
    np.testing.assert_array_equal(clip.samples, full[a : a + 441000])


def test_middle_clip_carries_the_tone_put_in_the_middle(synth, tmp_path):
    """A 150-s track holding a 1 kHz tone only from 60 to 90 s: the default clip (the
    middle 30 s) carries it in every frame, --clip start in none."""
    audio = audio_copy(synth, tmp_path)
    tid = replaceable_track(synth)
    x = noise(150.0)
    t = np.arange(30 * 44100) / 44100
    x[60 * 44100 : 90 * 44100] += 0.3 * np.sin(2 * np.pi * 1000 * t)[:, None].astype(np.float32)
    audio_path(audio, tid).write_bytes(encode_mp3(x, 44100, 320))
    cfg = FeatureConfig()
    band = int(np.argmax(mel_filterbank(cfg)[round(1000 * cfg.n_fft / cfg.sample_rate)]))
    for clip, carries in (("middle", True), ("start", False)):
        out = tmp_path / clip
        r = preprocess(synth, audio, out, "--clip", clip)
        assert r.exit_code == 0, r.output
        mel = track_frames(out, tid).astype(np.float32)[5:-5]  # edges: half-filled windows
        tone = mel[:, band] - np.median(mel, axis=1)
        assert len(mel) > 1400
        assert (tone > 4.0).mean() == (1.0 if carries else 0.0), (clip, tone.min(), tone.max())
        frames = pd.read_csv(out / "tracks.csv").set_index("track_id").loc[tid, "n_frames"]
        assert frames == 1501  # 30 s
        assert json.loads((out / "manifest.json").read_text())["feature_config"]["clip"] == clip


def test_caches_of_mrnet_0_1_read_as_start_clips():
    old = {k: v for k, v in FeatureConfig().to_dict().items() if k != "clip"}
    assert FeatureConfig.from_dict(old).clip == "start"


def test_resume_with_clip_middle_is_exact(synth, tmp_path):
    extra = ("--max-seconds", "2", "--clip", "middle")
    whole = tmp_path / "whole"
    r = runner.invoke(app, args(synth, whole, "--jobs", "1", "--shard-size", "8", *extra))
    assert r.exit_code == 0, r.output
    killed = tmp_path / "killed"
    kill_mid_run(synth, killed, 2, *extra)
    assert 2 <= len(list((killed / "shards").glob("*.h5"))) < len(list(whole.glob("shards/*")))
    r = runner.invoke(app, args(synth, killed, "--jobs", "2", "--shard-size", "8", *extra))
    assert r.exit_code == 0 and "resuming" in r.output, r.output
    assert cache_content(killed) == cache_content(whole)
    tid = synth.ids("small", healthy=True)[0]
    middle = load_audio(audio_path(synth.audio_dir, tid), 16000, 2.0, clip="middle")
    start = load_audio(audio_path(synth.audio_dir, tid), 16000, 2.0, clip="start")
    cfg = FeatureConfig(max_seconds=2.0)
    np.testing.assert_array_equal(track_frames(killed, tid), cached_log_mel(middle, cfg))
    assert not np.array_equal(cached_log_mel(start, cfg), cached_log_mel(middle, cfg))


# ---------------------------------------------------------------- 2. whole tracks, windows


@pytest.fixture(scope="module")
def whole_run(synth, tmp_path_factory):
    """fma_small with one test track replaced by a 10-minute MP3, preprocessed with
    --max-seconds 0, and a tiny model trained one epoch on it."""
    tmp = tmp_path_factory.mktemp("whole")
    audio = audio_copy(synth, tmp)
    tid = replaceable_track(synth)
    long_file = audio_path(audio, tid)
    rng = np.random.default_rng(1)
    x = noise(600.0, level=0.05, seed=2)
    x += (
        0.2
        * np.sin(2 * np.pi * np.cumsum(rng.uniform(200, 2000, len(x) // 4410).repeat(4410)) / 44100)
    )[: len(x), None].astype(np.float32)
    long_file.write_bytes(encode_mp3(x, 44100, 128))
    cache = tmp / "cache"
    r = preprocess(synth, audio, cache, "--max-seconds", "0")
    assert r.exit_code == 0, r.output
    run = tmp / "run"
    r = runner.invoke(
        app,
        [
            "train",
            "--cache",
            str(cache),
            "--out",
            str(run),
            "--epochs",
            "1",
            "--channels",
            "8",
            "--min-steps",
            "0",
            "--val-crops",
            "0",
            "--batch-size",
            "8",
            "--workers",
            "0",
            "--device",
            "cpu",
            "--no-progress",
        ],
    )
    assert r.exit_code == 0, r.output
    return cache, run, tid, long_file


def test_whole_track_features_equal_the_one_shot_features(whole_run):
    cache, _, tid, long_file = whole_run
    cfg = FeatureConfig(max_seconds=0)
    one_shot = cached_log_mel(load_audio(long_file, cfg.sample_rate, None), cfg)
    chunked = track_frames(cache, tid)
    assert chunked.shape == one_shot.shape and len(chunked) > 600 * 50
    a, b = chunked.astype(np.float32), one_shot.astype(np.float32)
    ulp = np.spacing(np.abs(one_shot)).astype(np.float32)  # float16 spacing at each value
    assert (np.abs(a - b) <= ulp).all()
    frames = pd.read_csv(cache / "tracks.csv").set_index("track_id").loc[tid, "n_frames"]
    assert abs(frames - (600 * 50 + 1)) <= 5  # MP3 encoder padding


def test_long_tracks_are_scored_as_the_mean_of_their_windows(whole_run):
    cache, run, tid, _ = whole_run
    ckpt = load_checkpoint(run / "best.pt")
    model = load_model(ckpt).eval()
    index = split_index(open_cache(cache), "test")
    window = window_frames(30.0, ckpt.feature_config)
    assert window == 1501
    probs = score(model, index, TASKS["single"], torch.device("cpu"), window, 4 * window)
    i = int(np.flatnonzero(index.track_id == tid)[0])
    frames = torch.from_numpy(track_frames(cache, tid).astype(np.float32).T)
    starts = window_starts(frames.shape[1], window)
    assert starts[1] == 750 and starts[-1] + window == frames.shape[1] and len(starts) >= 39
    with torch.no_grad():
        per_window = [
            torch.softmax(model(frames[None, :, s : s + window]), -1)[0].double() for s in starts
        ]
    np.testing.assert_allclose(probs[i], torch.stack(per_window).mean(0).numpy(), atol=1e-5)


def test_windowed_evaluation_equals_whole_tracks_below_a_window(whole_run, tmp_path):
    cache, run, tid, long_file = whole_run
    preds = {}
    for window in ("30", "0"):
        out = tmp_path / window
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
                "--window",
                window,
                "--device",
                "cpu",
                "--no-progress",
            ],
        )
        assert r.exit_code == 0, r.output
        preds[window] = pd.read_csv(out / "predictions.csv").set_index("track_id")
    short = preds["0"].index != tid
    pd.testing.assert_frame_equal(preds["30"][short], preds["0"][short])
    assert not preds["30"].loc[tid].equals(preds["0"].loc[tid])  # 39+ windows vs one pass
    # predict streams the file through the same windows
    r = runner.invoke(
        app,
        [
            "predict",
            "--checkpoint",
            str(run / "best.pt"),
            "--json",
            "--top",
            "8",
            "--device",
            "cpu",
            str(long_file),
        ],
    )
    assert r.exit_code == 0, r.output
    top = dict(json.loads(r.output.splitlines()[0])["top"])
    want = {c[2:]: v for c, v in preds["30"].loc[tid].items() if c.startswith("p_")}
    assert top == pytest.approx(want, abs=1e-5)


def test_bad_window_is_refused(whole_run, tmp_path):
    cache, run, _, _ = whole_run
    out = tmp_path / "e"
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
            "--window",
            "0.2",
        ],
    )
    assert r.exit_code == 2 and "--window must be 0" in r.output, r.output
    assert not out.exists()


# ---------------------------------------------------------------- 3. checksums


def write_checksums(audio: Path, where: Path, ids, wrong: set[int] = frozenset()) -> None:
    lines = []
    for tid in ids:
        p = audio_path(audio, tid)
        digest = hashlib.sha1(p.read_bytes()).hexdigest() if p.exists() else "0" * 40
        if tid in wrong:
            digest = "f" * 40
        lines.append(f"{digest}  {p.relative_to(audio).as_posix()}")
    where.write_text("\n".join(lines) + "\n")


def test_checksum_mismatch_is_a_failure_and_the_rest_is_cached(synth, cache, tmp_path):
    audio = audio_copy(synth, tmp_path)
    ids = synth.ids("small")
    write_checksums(audio, audio / "checksums", ids)
    victim = synth.ids("small", healthy=True)[3]
    data = bytearray(audio_path(audio, victim).read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)  # corrupt, yet it still decodes
    audio_path(audio, victim).write_bytes(bytes(data))
    unchecked = preprocess(synth, audio, tmp_path / "unchecked")
    assert unchecked.exit_code == 0, unchecked.output
    cached = set(pd.read_csv(tmp_path / "unchecked" / "tracks.csv")["track_id"])
    assert victim in cached  # without the check, the damage goes unnoticed
    out = tmp_path / "checked"
    r = preprocess(synth, audio, out, "--verify-checksums")
    assert r.exit_code == 0, r.output
    fails = pd.read_csv(out / "failures.csv").set_index("track_id")["reason"]
    assert fails[victim] == "checksum_mismatch"
    assert set(pd.read_csv(out / "tracks.csv")["track_id"]) == cached - {victim}
    missing = next(t for t, why in synth.broken.items() if why == "missing")
    assert fails[missing] == "missing"  # listed, but no file: still missing


def test_checksums_file_elsewhere_and_a_wrong_sum(synth, tmp_path):
    audio = audio_copy(synth, tmp_path)
    ids = synth.ids("small", healthy=True)
    sums = tmp_path / "fma_full.sha1"
    write_checksums(audio, sums, ids, wrong={ids[0]})
    out = tmp_path / "c"
    r = preprocess(synth, audio, out, "--verify-checksums", "--checksums", str(sums))
    assert r.exit_code == 0, r.output
    fails = pd.read_csv(out / "failures.csv").set_index("track_id")["reason"]
    assert fails[ids[0]] == "checksum_mismatch"
    assert (fails == "checksum_mismatch").sum() == 1
    assert "are not listed in" in r.output  # the broken tracks: said, not checked


def test_verify_checksums_without_a_checksums_file_exits_2(synth, tmp_path):
    r = preprocess(synth, synth.audio_dir, tmp_path / "c", "--verify-checksums")
    assert r.exit_code == 2, r.output
    assert f"no checksums file {synth.audio_dir / 'checksums'}" in r.output
    assert "Traceback" not in r.output and not (tmp_path / "c").exists()


def test_checksums_listing_none_of_the_tracks_exits_2(synth, tmp_path):
    sums = tmp_path / "other"
    sums.write_text(f"{'a' * 40}  999/999999.mp3\n")
    r = preprocess(
        synth, synth.audio_dir, tmp_path / "c", "--verify-checksums", "--checksums", str(sums)
    )
    assert r.exit_code == 2 and "lists none of the" in r.output, r.output
    assert not (tmp_path / "c").exists()


# ---------------------------------------------------------------- 4. the 1 % rule


def test_wrong_subset_for_the_audio_is_refused_unless_allow_missing(tmp_path):
    """--subset large over a folder holding a few of its files: refused (fewer than
    1 % exist), cached with --allow-missing."""
    meta = tmp_path / "meta"
    specs = full_size_metadata(meta, n_tracks=3000, text_bytes=50)
    audio = tmp_path / "audio"
    have = [s.track_id for s in specs if s.genre_top][:5]
    for k, tid in enumerate(have):
        p = audio_path(audio, tid)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(encode_mp3(noise(2.0, seed=k, level=0.1), 44100, 128))
    argv = [
        "preprocess",
        "--audio-dir",
        str(audio),
        "--metadata-dir",
        str(meta),
        "--subset",
        "large",
        "--out",
        str(tmp_path / "c"),
        *FAST,
    ]
    r = runner.invoke(app, argv)
    assert r.exit_code == 2, r.output
    assert "only 5 of the" in r.output and "--allow-missing" in r.output, r.output
    assert not (tmp_path / "c").exists()
    r = runner.invoke(app, [*argv, "--allow-missing"])
    assert r.exit_code == 0, r.output
    assert "tracks have no regular file" in r.output  # the warning still says so
    assert sorted(pd.read_csv(tmp_path / "c" / "tracks.csv")["track_id"]) == sorted(have)
