"""The synthetic FMA: real MP3s, FMA's CSV layout, broken files, determinism."""

from __future__ import annotations

import filecmp
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile

from pipeline.sources import fma
from pipeline.synth import RECIPES, SMALL_GENRES, TRACK_COLUMNS, generate, render


def test_healthy_mp3s_decode_with_the_planned_format(synth):
    t = synth.tracks.set_index("track_id")
    formats = set()
    for tid in synth.ids(healthy=True):
        spec = t.loc[tid]
        info = soundfile.info(str(fma.audio_path(synth.audio_dir, tid)))
        assert info.format == "MP3"
        assert (info.samplerate, info.channels) == (spec["sample_rate"], spec["channels"])
        # LAME adds its encoder delay and padding: at most ~2 frames of 1152 samples
        assert spec["seconds"] <= info.duration <= spec["seconds"] + 0.12, tid
        formats.add((info.samplerate, info.channels))
    assert {(44100, 2), (48000, 2), (44100, 1)} <= formats


def test_audio_is_music_like_not_silence(synth):
    tid = synth.ids("small", healthy=True)[0]
    x, sr = soundfile.read(str(fma.audio_path(synth.audio_dir, tid)), dtype="float32")
    assert x.ndim == 2 and np.abs(x).max() <= 1.0
    assert float(np.sqrt(np.mean(x**2))) > 0.01


def test_broken_tracks_are_broken_as_declared(synth):
    assert set(synth.broken.values()) == {"missing", "empty_file", "undecodable", "too_short"}
    small = set(synth.ids("small"))
    for tid, kind in synth.broken.items():
        assert tid in small
        path = fma.audio_path(synth.audio_dir, tid)
        if kind == "missing":
            assert not path.exists()
        elif kind == "empty_file":
            assert path.stat().st_size == 0
        elif kind == "undecodable":
            assert path.stat().st_size > 0
            with pytest.raises(soundfile.LibsndfileError):
                soundfile.read(str(path))
        else:
            assert soundfile.info(str(path)).duration < 0.5


def test_tracks_csv_has_fmas_layout(synth):
    path = synth.metadata_dir / "tracks.csv"
    lines = path.read_text().splitlines()
    assert lines[0].startswith(",album,") and lines[1].startswith(",comments,")
    assert lines[2].startswith("track_id,,")
    t = pd.read_csv(path, index_col=0, header=[0, 1])
    assert list(t.columns) == list(TRACK_COLUMNS)
    assert set(t.columns.get_level_values(0)) == {"album", "artist", "set", "track"}
    assert t.index.name == "track_id" and t.index.is_unique and t.index.is_monotonic_increasing
    assert list(t.index) == synth.track_ids
    expected = synth.tracks.set_index("track_id")
    assert (t[("set", "subset")] == expected["subset"]).all()
    assert (t[("set", "split")] == expected["split"]).all()
    pd.testing.assert_series_equal(
        t[("track", "genre_top")], expected["genre_top"], check_names=False, check_dtype=False
    )
    assert set(t[("track", "bit_rate")]) >= {320000}
    # a bio with a comma, quotes and a newline survives the round trip
    assert "\n" in t[("artist", "bio")].iloc[0]


def test_genre_top_agrees_with_genres_csv(synth):
    t = pd.read_csv(synth.metadata_dir / "tracks.csv", index_col=0, header=[0, 1])
    g = fma.load_genres(synth.metadata_dir)
    for genre_top, genres_all in zip(t[("track", "genre_top")], t[("track", "genres_all")]):
        ids = json.loads(genres_all)
        tops = {int(g.loc[i, "top_level"]) for i in ids}
        if isinstance(genre_top, str):
            assert tops == {int(g.index[g["title"] == genre_top][0])}
        else:  # FMA leaves genre_top empty without genres or across top-level genres
            assert len(tops) != 1


def test_selection_on_the_synthetic_dataset(synth):
    tracks = fma.load_tracks(synth.metadata_dir)
    small = fma.select(tracks, "small")
    assert small.labels == sorted(synth.genres) == sorted(SMALL_GENRES)
    assert small.skipped["no_genre"] == 0
    assert set(small.tracks["track_id"]) == set(synth.ids("small"))
    assert set(synth.broken) <= set(small.tracks["track_id"])
    assert (small.counts() >= 1).all().all()  # every genre in every split
    medium, large = fma.select(tracks, "medium"), fma.select(tracks, "large")
    assert {"Jazz", "Classical"} <= set(medium.labels) and len(medium) > len(small)
    assert large.skipped["no_genre"] > 0 and len(large) > len(medium)
    # artists never straddle splits (FMA splits by artist)
    per_artist = synth.tracks.groupby("artist_id")["split"].nunique()
    assert (per_artist == 1).all()


def test_ids_are_spread_like_fmas(synth):
    ids = np.array(synth.track_ids)
    assert (np.diff(ids) > 1).any()
    assert len({f"{t:06d}"[:3] for t in ids}) >= 2
    labels = synth.tracks.sort_values("track_id")["genre_top"].fillna("").to_numpy()
    assert (labels[1:] != labels[:-1]).mean() > 0.5  # genres interleave in id order


def test_generation_is_deterministic_and_independent_of_jobs(tmp_path):
    a = generate(tmp_path / "a", n_per_genre=3, seconds=0.5, jobs=1, seed=7)
    b = generate(tmp_path / "b", n_per_genre=3, seconds=0.5, jobs=2, seed=7)
    c = generate(tmp_path / "c", n_per_genre=3, seconds=0.5, jobs=1, seed=8)
    files = sorted(p.relative_to(a.root) for p in a.root.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b.root) for p in b.root.rglob("*") if p.is_file())
    match, mismatch, errors = filecmp.cmpfiles(a.root, b.root, files, shallow=False)
    assert not mismatch and not errors and len(match) == len(files)
    assert a.broken == b.broken and a.track_ids == b.track_ids
    assert a.track_ids != c.track_ids
    tid = a.ids("small", healthy=True)[0]
    one = fma.audio_path(a.audio_dir, tid).read_bytes()
    assert one != fma.audio_path(c.audio_dir, c.ids("small", healthy=True)[0]).read_bytes()


def test_reuse_skips_a_finished_generation(tmp_path):
    a = generate(tmp_path / "a", n_per_genre=3, seconds=0.5)
    mp3 = fma.audio_path(a.audio_dir, a.ids("small", healthy=True)[0])
    before = mp3.stat().st_mtime_ns
    again = generate(tmp_path / "a", n_per_genre=3, seconds=0.5, reuse=True)
    assert mp3.stat().st_mtime_ns == before and again.track_ids == a.track_ids
    generate(tmp_path / "a", n_per_genre=3, seconds=0.6, reuse=True)  # other params
    assert mp3.stat().st_mtime_ns != before


def test_render_is_deterministic_and_bounded():
    for recipe in RECIPES:
        x = render(recipe, 0.5, 22050, 2, seed=1)
        assert x.shape == (11025, 2) and x.dtype == np.float32
        assert np.abs(x).max() <= 1.0 and np.abs(x).max() > 0.1
        np.testing.assert_array_equal(x, render(recipe, 0.5, 22050, 2, seed=1))
    assert not np.array_equal(render("Rock", 0.5, 22050, 1, 1), render("Rock", 0.5, 22050, 1, 2))


def test_command_line(tmp_path):
    from typer.testing import CliRunner

    from pipeline.synth.__main__ import app

    r = CliRunner().invoke(app, [str(tmp_path / "out"), "--n-per-genre", "3", "--seconds", "0.5"])
    assert r.exit_code == 0 and "wrote" in r.output, r.output
    assert (tmp_path / "out" / "fma_metadata" / "tracks.csv").is_file()
    assert Path(tmp_path / "out" / "synth.json").is_file()
