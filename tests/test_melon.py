"""Melon Playlist Dataset through `mrnet preprocess`: arrays ingested without decoding (as
they are, or converted from a linear scale), every bad array accounted for, artist-grouped
splits, the label schemes, --split-file, and a Melon model refused by predict."""

from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from helpers import cli_evaluate, cli_train, one_line_error
from typer.testing import CliRunner

from cli import app
from pipeline.arrays import array_scale
from pipeline.errors import BadInput
from pipeline.sources import melon
from pipeline.synth import melon as synth

runner = CliRunner()
refused = functools.partial(one_line_error, alone=True)


def pre(ds: synth.SynthMelon, out: Path, *extra: str) -> list[str]:
    return [
        "preprocess",
        "--dataset",
        "melon",
        "--audio-dir",
        str(ds.audio_dir),
        "--metadata-dir",
        str(ds.metadata_dir),
        "--out",
        str(out),
        "--jobs",
        "1",
        "--no-progress",
        *extra,
    ]


@pytest.fixture(scope="module")
def ds(tmp_path_factory) -> synth.SynthMelon:
    """4 genres x 8 songs of 4 s, log-compressed arrays."""
    return synth.generate(tmp_path_factory.mktemp("melon") / "ds", n_per_genre=8, seconds=4)


@pytest.fixture(scope="module")
def cache(ds, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("melon-cache") / "cache"
    r = runner.invoke(app, pre(ds, out))
    assert r.exit_code == 0, r.output
    return out


def stored(cache: Path) -> dict[int, np.ndarray]:
    """Song id -> its frames in the shards, float16 [frames, 48]."""
    out = {}
    for shard in sorted((cache / "shards").glob("*.h5")):
        with h5py.File(shard) as f:
            offsets = f["offsets"][()]
            for i, tid in enumerate(f["track_id"][()]):
                out[int(tid)] = f["mel"][offsets[i] : offsets[i + 1]]
    return out


def test_arrays_are_ingested_as_they_are(ds, cache):
    """Log-compressed arrays: detected as logarithmic and stored unchanged (float16,
    frames first); the manifest says they are Melon's mels, and how the scale was found."""
    m = json.loads((cache / "manifest.json").read_text())
    assert m["feature_config"]["kind"] == "melon-log"
    assert m["feature_config"]["n_mels"] == 48 and m["feature_config"]["hop_length"] == 256
    assert m["source"]["array_scale"].startswith("log (auto:")
    frames = stored(cache)
    for tid, mel in frames.items():
        a = np.load(melon.array_path(ds.audio_dir, tid))
        np.testing.assert_array_equal(mel, a.T.astype(np.float16))
    tracks = pd.read_csv(cache / "tracks.csv")
    assert sorted(tracks["track_id"]) == sorted(frames)


def test_labels_skips_and_artist_groups(ds, cache):
    """Single-label: the songs with one top genre, labelled "CODE name"; the song with
    two genres and the one with none are counted, not cached; no artist in two splits."""
    meta = json.loads((ds.metadata_dir / melon.SONG_META).read_text())
    names = json.loads((ds.metadata_dir / melon.GENRE_NAMES).read_text())
    one = {s["id"]: s for s in meta if len(s["song_gn_gnr_basket"]) == 1}
    tracks = pd.read_csv(cache / "tracks.csv")
    assert set(tracks["track_id"]) == set(one)
    for row in tracks.itertuples():
        code = one[row.track_id]["song_gn_gnr_basket"][0]
        assert row.genre == f"{code} {names[code]}"
    m = json.loads((cache / "manifest.json").read_text())
    assert m["skipped"] == {"no_genre": 1, "several_genres": 1}
    split_of = dict(zip(tracks["track_id"], tracks["split"]))
    sides: dict[int, set[str]] = {}
    for s in meta:
        for artist in s["artist_id_basket"]:
            if s["id"] in split_of:
                sides.setdefault(artist, set()).add(split_of[s["id"]])
    assert all(len(v) == 1 for v in sides.values()), sides
    assert set(tracks["split"]) == {"training", "validation", "test"}


def test_artist_groups_follow_shared_artists():
    """Songs linked through any shared artist form one group; a song without artists is
    its own."""
    groups = melon.artist_groups([["a"], ["b", "a"], ["c"], ["b"], [], ["d", "c"]])
    assert groups[0] == groups[1] == groups[3] != groups[2] == groups[5]
    assert groups[4] not in groups[:4] + groups[5:]


@pytest.mark.parametrize("labels", ["top-multi", "all"])
def test_multi_label_schemes(ds, labels):
    """top-multi: every top genre (the two-genre song included); all: the sub-genres."""
    sel = melon.read_selection(ds.audio_dir, ds.metadata_dir, labels, min_label_tracks=1)
    assert sel.task == "multi" and sel.skipped == {"no_genre": 1}
    assert len(sel) == len(ds.song_ids)
    codes = {n.split()[0] for n in sel.labels}
    if labels == "top-multi":
        assert codes == set(synth.GENRES)
        assert sel.tracks["labels"].str.len().max() == 2
    else:
        assert codes == {c for _, _, subs in synth.GENRES.values() for c in subs}


def test_linear_arrays_are_converted(tmp_path):
    """Mel power arrays: detected as linear and stored as log(x + 1e-6); --array-scale
    log overrides the detection and stores them unchanged."""
    ds = synth.generate(tmp_path / "lin", n_per_genre=3, seconds=2, scale="linear")
    r = runner.invoke(app, pre(ds, tmp_path / "c", "--min-seconds", "0.5"))
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert m["feature_config"]["kind"] == "melon-linear"
    for tid, mel in stored(tmp_path / "c").items():
        a = np.load(melon.array_path(ds.audio_dir, tid))
        want = np.log(a.T + np.float32(1e-6)).astype(np.float16)
        np.testing.assert_allclose(mel.astype(np.float32), want.astype(np.float32), atol=1e-2)
    args = pre(ds, tmp_path / "k", "--min-seconds", "0.5", "--array-scale", "log")
    assert runner.invoke(app, args).exit_code == 0
    kept = json.loads((tmp_path / "k" / "manifest.json").read_text())
    assert kept["feature_config"]["kind"] == "melon-log"
    assert kept["source"]["array_scale"] == "log (--array-scale log)"


def test_scale_detection():
    """Negative values: logarithmic; power and amplitude: linear; log10(1 + 10^4 x): log."""
    power = [synth.mel_array(np.sin(np.arange(32000) * f) * 0.3, "linear") for f in (0.05, 0.2)]
    power = [p + np.random.default_rng(0).random(p.shape).astype(np.float32) * 1e-3 for p in power]
    assert array_scale(power)[0] == "linear"
    assert array_scale([np.sqrt(p) for p in power])[0] == "linear"
    assert array_scale([np.log10(1 + 1e4 * p) for p in power])[0] == "log"
    assert array_scale([10 * np.log10(p) for p in power])[0] == "log"


def test_bad_arrays_are_accounted_failures(ds, tmp_path):
    """A wrong shape, an integer dtype, NaN, a truncated file, an empty file and a missing
    file each become a failures.csv row with its reason; the other songs are cached, and
    cached + failed is every selected song."""
    copy = tmp_path / "ds"
    shutil.copytree(ds.metadata_dir, copy)
    arrays = copy / "arena_mel"
    ids = ds.song_ids
    path = functools.partial(melon.array_path, arrays)
    np.save(path(ids[0]), np.zeros((40, 100), np.float32))  # 40 bands
    np.save(path(ids[1]), np.zeros((48, 100), np.int16))
    a = np.load(path(ids[2]))
    a[3, 5] = np.nan
    np.save(path(ids[2]), a)
    data = path(ids[3]).read_bytes()
    path(ids[3]).write_bytes(data[: len(data) // 2])  # a download cut off half-way
    path(ids[4]).write_bytes(b"")
    path(ids[5]).unlink()
    bad = copy / "bad"
    r = runner.invoke(app, pre(synth.SynthMelon(arrays, copy, ids), bad))
    assert r.exit_code == 0, r.output
    failures = pd.read_csv(bad / "failures.csv").set_index("track_id")["reason"].to_dict()
    want = {
        ids[0]: "bad_array",
        ids[1]: "bad_array",
        ids[2]: "non_finite",
        ids[3]: "undecodable",
        ids[4]: "empty_file",
        ids[5]: "missing",
    }
    selected = melon.read_selection(arrays, copy)
    assert {k: v for k, v in failures.items() if k in want} == want
    cached = pd.read_csv(bad / "tracks.csv")
    assert len(cached) + len(failures) == len(selected)


def test_bad_metadata_is_refused(ds, tmp_path):
    """A missing or malformed song_meta.json, a song without an id, no --metadata-dir and
    --folds are each one line, exit 2, and nothing is written."""
    out = tmp_path / "out"
    meta = tmp_path / "meta"
    meta.mkdir()
    shutil.copy(ds.metadata_dir / melon.GENRE_NAMES, meta)
    bad = synth.SynthMelon(ds.audio_dir, meta, [])
    refused(runner.invoke(app, pre(bad, out)), "song_meta.json", "does not exist")
    (meta / melon.SONG_META).write_text('[{"id": 1, "song_gn_gnr_basket": [')
    refused(runner.invoke(app, pre(bad, out)), "not valid JSON")
    (meta / melon.SONG_META).write_text('[{"song_gn_gnr_basket": ["GN0200"]}]')
    refused(runner.invoke(app, pre(bad, out)), "entry 0 has no integer id")
    args = [a for a in pre(ds, out) if a not in ("--metadata-dir", str(ds.metadata_dir))]
    refused(runner.invoke(app, args), "--metadata-dir")
    refused(runner.invoke(app, pre(ds, out, "--folds", "5")), "Melon has no folds")
    assert not out.exists()


def test_split_file(ds, cache, tmp_path):
    """--split-file assigns the splits it lists and skips the songs it does not; a bad
    split name is refused in one line."""
    tracks = pd.read_csv(cache / "tracks.csv")
    chosen = tracks.iloc[:12].assign(split=["train"] * 8 + ["valid"] * 2 + ["test"] * 2)
    chosen[["track_id", "split"]].to_csv(tmp_path / "split.csv", index=False)
    out = tmp_path / "c"
    r = runner.invoke(app, pre(ds, out, "--split-file", str(tmp_path / "split.csv")))
    assert r.exit_code == 0, r.output
    got = pd.read_csv(out / "tracks.csv").set_index("track_id")["split"]
    want = chosen.set_index("track_id")["split"].map(
        {"train": "training", "valid": "validation", "test": "test"}
    )
    pd.testing.assert_series_equal(got.sort_index(), want.sort_index(), check_names=False)
    m = json.loads((out / "manifest.json").read_text())
    assert m["skipped"]["not_in_split_file"] == len(tracks) - 12
    chosen.assign(split="dev")[["track_id", "split"]].to_csv(tmp_path / "bad.csv", index=False)
    refused(
        runner.invoke(app, pre(ds, tmp_path / "d", "--split-file", str(tmp_path / "bad.csv"))),
        "unknown split 'dev'",
    )


def test_melon_model_scores_caches_and_refuses_audio(ds, cache, tmp_path):
    """A model trained on Melon's mels evaluates on the cache; predict on an audio file
    refuses it in one line (mrnet cannot compute Melon's mels from audio)."""
    run, rep = tmp_path / "run", tmp_path / "rep"
    r = cli_train(cache, run)
    assert r.exit_code == 0, r.output
    r = cli_evaluate(run / "best.pt", cache, rep)
    assert r.exit_code == 0, r.output
    assert json.loads((rep / "report.json").read_text())["n_tracks"] > 0
    wav = tmp_path / "a.wav"
    import soundfile

    soundfile.write(wav, np.zeros(16000, np.float32), 16000)
    r = runner.invoke(app, ["predict", "--checkpoint", str(run / "best.pt"), str(wav)])
    refused(r, "precomputed features", "melon-log", "mrnet evaluate")


def test_read_selection_refuses_single_genre(ds, tmp_path):
    """Fewer than two genres left: one line naming the fix."""
    meta = json.loads((ds.metadata_dir / melon.SONG_META).read_text())
    only = [s for s in meta if s["song_gn_gnr_basket"] == ["GN0200"]]
    (tmp_path / melon.SONG_META).write_text(json.dumps(only))
    shutil.copy(ds.metadata_dir / melon.GENRE_NAMES, tmp_path)
    with pytest.raises(BadInput, match="needs two or more"):
        melon.read_selection(ds.audio_dir, tmp_path)
