"""`mrnet preprocess` on the synthetic FMA dataset: content, resume, lock, refusals."""

from __future__ import annotations

import json
import shutil
import signal

import h5py
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from cli import app
from pipeline.audio import load_audio
from pipeline.cache import open_cache
from pipeline.cache.shards import read_shard
from pipeline.features import FeatureConfig, log_mel
from pipeline.lock import DirLock
from pipeline.sources import fma

runner = CliRunner()

from helpers import args, cache_content, interrupt_mid_run, kill_mid_run  # noqa: E402


def test_every_selected_track_is_cached_or_failed_never_both(cache, synth):
    sel = fma.select(fma.load_tracks(synth.metadata_dir), "small")
    tracks = pd.read_csv(cache / "tracks.csv")
    fails = pd.read_csv(cache / "failures.csv")
    cached, failed = set(tracks["track_id"]), set(fails["track_id"])
    assert not cached & failed
    assert cached | failed == set(sel.tracks["track_id"])
    assert len(tracks) == len(cached) and len(fails) == len(failed)
    # the deliberately broken files are classified failures with a reason each
    broken_in_small = {t for t in synth.broken if t in set(sel.tracks["track_id"])}
    assert broken_in_small and broken_in_small <= failed
    assert set(fails["reason"]) <= {
        "missing",
        "empty_file",
        "undecodable",
        "no_audio",
        "too_short",
        "truncated_decode",
    }
    m = json.loads((cache / "manifest.json").read_text())
    assert m["status"] == "complete" and m["labels"] == sel.labels
    assert m["summary"]["cached"] == len(tracks)
    assert m["summary"]["skipped"] == sel.skipped == {"no_genre": 0, "no_split": 0}
    assert sum(s["tracks"] for s in m["splits"].values()) == len(tracks)
    assert not (cache / ".lock").exists()


def test_shard_contents_equal_features_computed_directly(cache, synth):
    c = open_cache(cache)
    cfg = FeatureConfig.from_dict(c.feature_config)
    for _, row in c.tracks.sample(4, random_state=0).iterrows():
        idx = c.shards[row["shard"]]
        x = load_audio(
            fma.audio_path(synth.audio_dir, row["track_id"]), cfg.sample_rate, cfg.max_seconds
        )
        expected = log_mel(x, cfg).astype(np.float16)
        got = idx.track(int(row["row"]))
        assert got.shape == expected.shape == (row["n_frames"], cfg.n_mels)
        np.testing.assert_array_equal(got, expected)
        assert idx.track_id[row["row"]] == row["track_id"]
        assert idx.label[row["row"]] == row["label"]


def test_memmap_view_equals_h5py_read(cache):
    for p in sorted((cache / "shards").glob("*.h5")):
        idx = read_shard(p)
        with h5py.File(p, "r") as f:
            np.testing.assert_array_equal(idx.memmap(), f["mel"][()])


def test_rerun_of_finished_cache_changes_nothing(cache, synth):
    before = cache_content(cache)
    r = runner.invoke(app, args(synth, cache, "--jobs", "2", "--shard-size", "8"))
    assert r.exit_code == 0, r.output
    assert cache_content(cache) == before


def test_killed_run_resumes_to_identical_cache(cache, synth, tmp_path):
    out = tmp_path / "killed"
    kill_mid_run(synth, out, min_shards=2)
    done = list((out / "shards").glob("*.h5"))
    assert 2 <= len(done) < len(list((cache / "shards").glob("*.h5"))), "kill missed the run"
    assert (out / ".lock").exists()  # a stale lock, taken over below
    r = runner.invoke(app, ["info", str(out)])
    assert r.exit_code == 0 and "in_progress" in r.output, r.output
    r = runner.invoke(app, args(synth, out, "--jobs", "2", "--shard-size", "8"))
    assert r.exit_code == 0, r.output
    assert "resuming" in r.output
    assert not list((out / "shards").glob("*.partial*"))
    assert cache_content(out) == cache_content(cache)


def test_partial_shard_is_discarded(cache, synth, tmp_path):
    out = tmp_path / "c"
    out.mkdir()
    import shutil

    shutil.copytree(cache, out, dirs_exist_ok=True)
    victim = sorted((out / "shards").glob("*.h5"))[-1]
    partial = victim.with_name(victim.name + ".partial-1-deadbeef")
    partial.write_bytes(victim.read_bytes()[:1000])
    victim.unlink()
    (out / "manifest.json").write_text(
        (out / "manifest.json").read_text().replace('"complete"', '"in_progress"')
    )
    r = runner.invoke(app, args(synth, out, "--shard-size", "8"))
    assert r.exit_code == 0, r.output
    assert not partial.exists() and victim.exists()
    assert cache_content(out) == cache_content(cache)


def test_live_lock_is_refused(synth, tmp_path):
    out = tmp_path / "locked"
    out.mkdir()
    with DirLock(out):
        r = runner.invoke(app, args(synth, out))
    assert r.exit_code == 2
    assert "being written by another run" in r.output
    assert not (out / "manifest.json").exists()


def test_other_feature_settings_are_refused(cache, synth):
    before = cache_content(cache)
    r = runner.invoke(app, args(synth, cache, "--shard-size", "8", "--n-mels", "64"))
    assert r.exit_code == 2
    assert "other settings" in r.output and "n_mels" in r.output
    assert cache_content(cache) == before


def _bad(synth, tmp_path):
    not_fma = tmp_path / "notfma"
    not_fma.mkdir()
    (not_fma / "tracks.csv").write_text("a,b\n1,2\n")
    no_csv = tmp_path / "nocsv"
    no_csv.mkdir()
    empty_audio = tmp_path / "emptyaudio"
    empty_audio.mkdir()
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    out = tmp_path / "out"
    md, ad = str(synth.metadata_dir), str(synth.audio_dir)
    base = ["preprocess", "--out", str(out)]
    return {
        "audio dir missing": base + ["--audio-dir", str(tmp_path / "nope"), "--metadata-dir", md],
        "metadata dir missing": base + ["--audio-dir", ad, "--metadata-dir", str(tmp_path / "no")],
        "no tracks.csv": base + ["--audio-dir", ad, "--metadata-dir", str(no_csv)],
        "not FMA": base + ["--audio-dir", ad, "--metadata-dir", str(not_fma)],
        "unknown subset": base + ["--audio-dir", ad, "--metadata-dir", md, "--subset", "tiny"],
        "no audio": base + ["--audio-dir", str(empty_audio), "--metadata-dir", md],
        "out is a file": [
            "preprocess",
            "--out",
            str(a_file),
            "--audio-dir",
            ad,
            "--metadata-dir",
            md,
        ],
        "jobs < 1": base + ["--audio-dir", ad, "--metadata-dir", md, "--jobs", "0"],
    }


@pytest.mark.parametrize(
    "case",
    [
        "audio dir missing",
        "metadata dir missing",
        "no tracks.csv",
        "not FMA",
        "unknown subset",
        "no audio",
        "out is a file",
        "jobs < 1",
    ],
)
def test_bad_input_is_one_line_exit_2(case, synth, tmp_path):
    argv = _bad(synth, tmp_path)[case]
    r = runner.invoke(app, argv)
    assert r.exit_code == 2, (case, r.output)
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.output
    assert "Traceback" not in r.output
    assert not (tmp_path / "out").exists(), "bad input wrote something"
    if case == "out is a file":
        assert (tmp_path / "file.txt").read_text() == "x"


def test_info_describes_cache(cache):
    r = runner.invoke(app, ["info", str(cache)])
    assert r.exit_code == 0, r.output
    tracks = pd.read_csv(cache / "tracks.csv")
    assert "training" in r.output and "failures" in r.output
    assert "total" in r.output and str(len(tracks)) in r.output


def test_sigint_leaves_resumable_cache(cache, synth, tmp_path):
    out = tmp_path / "int"
    code, err = interrupt_mid_run(synth, out, signal.SIGINT, min_shards=1)
    assert code == 130, err
    assert "rerun the same command to resume" in err
    assert "Traceback" not in err
    r = runner.invoke(app, args(synth, out, "--shard-size", "8"))
    assert r.exit_code == 0 and "resuming" in r.output, r.output
    assert cache_content(out) == cache_content(cache)


def test_changed_metadata_into_finished_cache_is_refused(cache, synth, tmp_path):
    before = cache_content(cache)
    meta = tmp_path / "meta"
    shutil.copytree(synth.metadata_dir, meta)
    victim = int(pd.read_csv(cache / "tracks.csv")["track_id"].iloc[0])
    full = pd.read_csv(meta / "tracks.csv", index_col=0, header=[0, 1])
    full.drop(index=victim).to_csv(meta / "tracks.csv")
    argv = args(synth, cache, "--shard-size", "8")
    argv[argv.index("--metadata-dir") + 1] = str(meta)
    r = runner.invoke(app, argv)
    assert r.exit_code == 2, r.output
    assert "selected tracks" in r.output
    assert cache_content(cache) == before


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--hop-length", "0"], "hop_length must be positive"),
        (["--n-mels", "256", "--n-fft", "256"], "cover no FFT bin"),
        (["--max-seconds", "-1"], "max_seconds must be 0 (whole tracks) or more"),
        (["--clip", "end"], "unknown --clip 'end'; use one of middle, start"),
        (["--min-seconds", "-1"], "--min-seconds"),
    ],
)
def test_bad_feature_values_are_one_line_errors(synth, tmp_path, extra, needle):
    r = runner.invoke(app, args(synth, tmp_path / "out", *extra))
    assert r.exit_code == 2, r.output
    assert needle in r.output and len(r.output.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
