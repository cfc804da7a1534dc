"""FMA metadata rules: subset nesting, official splits, genre_top labels, paths, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.errors import BadInput
from pipeline.sources import fma

# (track_id, subset, split, genre_top): small ⊂ medium ⊂ large, some without genre_top.
ROWS = [
    (2, "small", "training", "Hip-Hop"),
    (3, "medium", "training", "Hip-Hop"),
    (5, "small", "test", "Rock"),
    (10, "small", "validation", "Pop"),
    (20, "large", "training", None),
    (26, "medium", "validation", "Jazz"),
    (30, "large", "test", "Classical"),
    (46, "small", "training", "Electronic"),
    (48, "medium", "test", None),
    (134, "small", "training", "Pop"),
    (1000, "large", "validation", None),
    (155320, "large", "training", "Blues"),
]


def write_tracks_csv(folder: Path, rows=ROWS, shuffle_seed: int | None = None) -> Path:
    """A tracks.csv in FMA's layout (two-level header, track_id line, extra columns)."""
    folder.mkdir(parents=True, exist_ok=True)
    cols = pd.MultiIndex.from_tuples(
        [
            ("album", "title"),
            ("artist", "bio"),
            ("artist", "name"),
            ("set", "split"),
            ("set", "subset"),
            ("track", "genre_top"),
            ("track", "genres"),
            ("track", "title"),
        ]
    )
    data = [
        ["An album", "line one,\nline two", f"artist {t}", sp, su, g, "[21]", f"t{t}"]
        for t, su, sp, g in rows
    ]
    frame = pd.DataFrame(data, columns=cols, index=pd.Index([r[0] for r in rows], name="track_id"))
    if shuffle_seed is not None:
        frame = frame.sample(frac=1.0, random_state=shuffle_seed)
    frame.to_csv(folder / "tracks.csv")
    return folder


@pytest.fixture
def meta(tmp_path: Path) -> Path:
    return write_tracks_csv(tmp_path / "fma_metadata")


def expected(subset: str) -> list[tuple[int, str, str]]:
    level = fma.SUBSETS.names().index(subset)
    order = fma.SUBSETS.names()
    return [(t, sp, g) for t, su, sp, g in ROWS if order.index(su) <= level and g is not None]


def test_load_tracks_reads_fma_layout(meta):
    t = fma.load_tracks(meta)
    assert t.index.name == "track_id" and t.index.dtype == np.int64
    assert list(t.index) == [r[0] for r in ROWS]
    assert list(t.columns) == list(fma.REQUIRED_COLUMNS)
    assert t[("set", "subset")].dtype == fma.SUBSET_DTYPE
    assert bool((t[("set", "subset")] <= "medium").sum() == 8)
    more = fma.load_tracks(meta, columns=(("artist", "name"), ("track", "title")))
    assert more.loc[155320, ("track", "title")] == "t155320"
    assert more.loc[2, ("artist", "name")] == "artist 2"


@pytest.mark.parametrize("subset", fma.SUBSETS.names())
def test_select_follows_fma_rules(meta, subset):
    sel = fma.select(fma.load_tracks(meta), subset)
    want = expected(subset)
    got = list(sel.tracks[["track_id", "split", "genre"]].itertuples(index=False, name=None))
    order = {s: i for i, s in enumerate(fma.SPLITS)}
    assert got == sorted(want, key=lambda r: (order[r[1]], r[0]))
    assert sel.labels == sorted({g for _, _, g in want})
    assert list(sel.tracks["label"]) == [sel.labels.index(g) for g in sel.tracks["genre"]]
    level = fma.SUBSETS.names().index(subset)
    no_genre = [t for t, su, _, g in ROWS if fma.SUBSETS.names().index(su) <= level and g is None]
    assert sel.skipped["no_genre"] == len(no_genre)
    assert sel.subset == subset and len(sel) == len(want)
    assert sel.tracks["track_id"].dtype == np.int64 and sel.tracks["label"].dtype == np.int64
    assert list(sel.tracks.index) == list(range(len(want)))
    counts = sel.counts()
    assert list(counts.index) == sel.labels and list(counts.columns) == list(fma.SPLITS)
    assert int(counts.to_numpy().sum()) == len(want)


def test_subsets_nest(meta):
    t = fma.load_tracks(meta)
    ids = {s: set(fma.select(t, s).tracks["track_id"]) for s in fma.SUBSETS}
    assert ids["small"] < ids["medium"] < ids["large"]
    assert {2, 5, 10, 46, 134} == ids["small"]


def test_label_order_does_not_depend_on_row_order(tmp_path, meta):
    shuffled = write_tracks_csv(tmp_path / "shuffled", shuffle_seed=3)
    for subset in fma.SUBSETS:
        a = fma.select(fma.load_tracks(meta), subset)
        b = fma.select(fma.load_tracks(shuffled), subset)
        assert a.labels == b.labels
        pd.testing.assert_frame_equal(a.tracks, b.tracks)


def test_select_accepts_the_full_read_csv_frame(meta):
    full = pd.read_csv(meta / "tracks.csv", index_col=0, header=[0, 1])
    for subset in fma.SUBSETS:
        a = fma.select(full, subset)
        b = fma.select(fma.load_tracks(meta), subset)
        pd.testing.assert_frame_equal(a.tracks, b.tracks)
        assert a.skipped["no_genre"] == b.skipped["no_genre"]


def test_empty_genre_top_string_counts_as_missing(tmp_path):
    rows = [(2, "small", "training", "Rock"), (3, "small", "training", "  ")]
    sel = fma.select(fma.load_tracks(write_tracks_csv(tmp_path / "m", rows)), "small")
    assert list(sel.tracks["track_id"]) == [2] and sel.skipped["no_genre"] == 1


def test_audio_path_formatting(tmp_path):
    assert fma.audio_path(Path("fma_small"), 2) == Path("fma_small/000/000002.mp3")
    assert fma.audio_path(tmp_path, np.int64(1482)) == tmp_path / "001" / "001482.mp3"
    assert fma.audio_path(tmp_path, 155320) == tmp_path / "155" / "155320.mp3"
    with pytest.raises(ValueError):
        fma.audio_path(tmp_path, -1)


def _not_fma(tmp_path: Path, content: bytes) -> Path:
    d = tmp_path / "meta"
    d.mkdir()
    (d / "tracks.csv").write_bytes(content)
    return d


def _bad_values(tmp_path: Path, rows) -> Path:
    return write_tracks_csv(tmp_path / "meta", rows)


BAD = {
    "missing dir": (lambda p: p / "nope", "does not exist"),
    "a file": (lambda p: _not_fma(p, b"x") / "tracks.csv", "is a file"),
    "no tracks.csv": (lambda p: (p / "empty").mkdir() or p / "empty", "no tracks.csv"),
    "other csv": (lambda p: _not_fma(p, b"a,b\n1,2\n"), "not FMA's"),
    "empty csv": (lambda p: _not_fma(p, b""), "not FMA's"),
    "binary": (lambda p: _not_fma(p, bytes(range(256)) * 40), "not a readable CSV"),
    "one-level header": (
        lambda p: _not_fma(p, b"track_id,subset,split,genre_top\n2,small,training,Rock\n"),
        "not FMA's",
    ),
    "bad subset value": (
        lambda p: _bad_values(p, [(2, "tiny", "training", "Rock")]),
        "set.subset values",
    ),
    "duplicate ids": (
        lambda p: _bad_values(p, [(2, "small", "training", "Rock")] * 2),
        "twice",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_metadata_is_one_line_bad_input(tmp_path, case):
    make, phrase = BAD[case]
    with pytest.raises(BadInput) as e:
        fma.load_tracks(make(tmp_path))
    msg = str(e.value)
    assert "\n" not in msg and phrase in msg, msg
    assert "--metadata-dir" in msg, msg


def test_nested_fma_metadata_is_suggested(tmp_path):
    write_tracks_csv(tmp_path / "download" / "fma_metadata")
    with pytest.raises(BadInput, match=r"--metadata-dir .*fma_metadata"):
        fma.load_tracks(tmp_path / "download")


def test_non_integer_track_ids_are_refused(tmp_path):
    d = write_tracks_csv(tmp_path / "meta")
    text = (d / "tracks.csv").read_text().replace("\n134,", "\nabc,")
    (d / "tracks.csv").write_text(text)
    with pytest.raises(BadInput, match="not integers"):
        fma.load_tracks(d)


def test_unknown_subset_lists_valid_ones(meta):
    with pytest.raises(BadInput) as e:
        fma.select(fma.load_tracks(meta), "tiny")
    msg = str(e.value)
    assert "\n" not in msg and "'tiny'" in msg and "small, medium, large" in msg


def test_load_genres(tmp_path, synth):
    g = fma.load_genres(synth.metadata_dir)
    assert g.index.name == "genre_id"
    assert {"#tracks", "parent", "title", "top_level"} <= set(g.columns)
    assert g.loc[21, "title"] == "Hip-Hop" and g.loc[21, "parent"] == 0
    assert fma.load_genres(tmp_path) is None
    (tmp_path / "genres.csv").write_text("a,b\n1,2\n")
    with pytest.raises(BadInput, match="not FMA's genres.csv"):
        fma.load_genres(tmp_path)
