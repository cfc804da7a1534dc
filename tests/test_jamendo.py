"""MTG-Jamendo autotagging_genre through `mrnet preprocess` (single- and multi-label), the
split TSVs read directly (CRLF, odd rows, bad input), and a multi-label evaluate where a
tag has no test positive."""

from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from helpers import cli_evaluate, cli_train, one_line_error
from typer.testing import CliRunner

from cli import app
from pipeline.errors import BadInput
from pipeline.sources import jamendo
from pipeline.synth import jamendo as synth

runner = CliRunner()
refused = functools.partial(one_line_error, alone=True)  # the only line printed
HEADER = "\t".join(jamendo.COLUMNS)


def pre(ds: synth.JamendoDataset, out: Path, *extra: str, splits: Path | None = None) -> list:
    return [
        "preprocess",
        "--dataset",
        "jamendo",
        "--audio-dir",
        str(ds.audio_dir),
        "--splits-dir",
        str(splits or ds.splits_dir),
        "--out",
        str(out),
        "--jobs",
        "1",
        "--no-progress",
        *extra,
    ]


@pytest.fixture(scope="module")
def ds(tmp_path_factory) -> synth.JamendoDataset:
    """34 tracks of 4 s, split-0 and split-1."""
    return synth.generate(tmp_path_factory.mktemp("jamendo") / "ds", n_splits=2)


@pytest.fixture(scope="module")
def single(ds, tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("single") / "cache"
    r = runner.invoke(app, pre(ds, out))
    assert r.exit_code == 0, r.output
    return out, r.output


@pytest.fixture(scope="module")
def multi(ds, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("multi") / "cache"
    r = runner.invoke(app, pre(ds, out, "--labels", "top-multi", "--split", "1"))
    assert r.exit_code == 0, r.output
    assert "warning: labels without tracks in a split" in r.output  # experimental
    return out


def tsv_rows(splits_dir: Path, k: int) -> pd.DataFrame:
    """track_id, split, artist, genres (sorted names) of every row of split ``k``."""
    rows = []
    for split, name in jamendo.FILES.items():
        lines = jamendo.tsv_path(splits_dir, k, name).read_text().splitlines()[1:]
        for line in lines:
            f = line.split("\t")
            genres = sorted(t.removeprefix("genre---") for t in f[5:] if t)
            rows.append((f[0], split, f[1], genres))
    return pd.DataFrame(rows, columns=["track_id", "split", "artist", "genres"])


# ---------------------------------------------------------------- the synthetic dataset


def test_synthetic_layout(ds):
    """Real layout (audio/NN/ID.mp3 with NN = ID mod 100), each artist on one side of each
    split, one or two tags a track, the splits differ."""
    for k in (0, 1):
        rows = tsv_rows(ds.splits_dir, k)
        assert len(rows) == len(ds.tracks) == 34
        assert (rows.groupby("artist")["split"].nunique() == 1).all()
        assert set(rows["split"]) == {"training", "validation", "test"}
        assert rows["genres"].map(len).isin([1, 2]).all()
    for tid, path in ds.tracks["path"].items():
        number = int(tid.removeprefix("track_"))
        assert path == f"{number % 100:02d}/{number}.mp3" and (ds.audio_dir / path).is_file()
    assert (ds.split(0) != ds.split(1)).any()
    with pytest.raises(ValueError, match="at least 26"):
        synth.plan(20)


# ---------------------------------------------------------------- through the CLI


def test_single_label_keeps_tracks_with_one_genre(ds, single):
    out, output = single
    rows = tsv_rows(ds.splits_dir, 0)
    one = rows[rows["genres"].map(len) == 1]
    n_left = len(rows) - len(one)
    assert f"warning: --labels top leaves out the {n_left} tracks with several genre tags" in output
    assert "--labels top-multi" in output
    m = json.loads((out / "manifest.json").read_text())
    assert m["dataset"] == "jamendo" and m["task"] == "single"
    assert m["split_scheme"] == "MTG-Jamendo split-0"
    assert m["skipped"] == {"several_genres": n_left}
    assert m["labels"] == sorted({g[0] for g in one["genres"]})
    assert m["source"]["splits_dir"].endswith("split-0")
    t = pd.read_csv(out / "tracks.csv", dtype=str)
    want = one.assign(genre=one["genres"].str[0]).set_index("track_id").sort_index()
    got = t.set_index("track_id").sort_index()
    assert got.index.tolist() == want.index.tolist()
    assert (got["genre"] == want["genre"]).all() and (got["split"] == want["split"]).all()
    assert (got["artist"] == want["artist"]).all()
    assert (got["label"].astype(int) == got["genre"].map(m["labels"].index)).all()
    assert {s: v["tracks"] for s, v in m["splits"].items()} == one["split"].value_counts().to_dict()


def test_multi_label_has_every_genre_tag(ds, multi):
    rows = tsv_rows(ds.splits_dir, 1).set_index("track_id").sort_index()
    m = json.loads((multi / "manifest.json").read_text())
    assert m["task"] == "multi" and m["split_scheme"] == "MTG-Jamendo split-1"
    assert m["labels"] == sorted({g for gs in rows["genres"] for g in gs})
    assert m["skipped"] == {} and m["summary"]["cached"] == len(rows)
    t = pd.read_csv(multi / "tracks.csv", dtype=str).set_index("track_id").sort_index()
    assert t.index.tolist() == rows.index.tolist()
    assert (t["labels"] == rows["genres"].map("|".join)).all()
    assert (t["split"] == rows["split"]).all() and (t["artist"] == rows["artist"]).all()
    assert {s: v["tracks"] for s, v in m["splits"].items()} == rows[
        "split"
    ].value_counts().to_dict()


def test_tag_without_test_positives_is_null_in_the_report(multi, tmp_path):
    """ "experimental" is only in training: evaluate reports null for its test figures."""
    run, rep = tmp_path / "run", tmp_path / "rep"
    r = cli_train(multi, run)
    assert r.exit_code == 0, r.output
    r = cli_evaluate(run / "best.pt", multi, rep, "--device", "cpu", "--no-progress")
    assert r.exit_code == 0, r.output
    report = json.loads((rep / "report.json").read_text())
    rare = report["per_label"]["experimental"]
    assert rare["support"] == 0
    assert rare["roc_auc"] is None and rare["average_precision"] is None and rare["f1"] is None
    rock = report["per_label"]["rock"]
    assert rock["support"] > 0 and rock["roc_auc"] is not None
    assert report["macro_roc_auc"] is not None


# ---------------------------------------------------------------- read_selection


def test_crlf_splits_give_the_same_selection(ds, tmp_path):
    crlf = synth.generate(tmp_path / "crlf", n_splits=2, crlf=True, audio=False)
    assert b"\r\n" in jamendo.tsv_path(crlf.splits_dir, 1, "test").read_bytes()
    for labels in ("top", "top-multi"):
        for k in (0, 1):
            a = jamendo.read_selection(ds.splits_dir, k, ds.audio_dir, labels)
            b = jamendo.read_selection(crlf.splits_dir, k, ds.audio_dir, labels)
            pd.testing.assert_frame_equal(a.tracks, b.tracks)
            assert (a.labels, a.skipped, a.warnings) == (b.labels, b.skipped, b.warnings)


def test_all_is_top_multi(ds):
    a = jamendo.read_selection(ds.splits_dir, 0, ds.audio_dir, "all")
    b = jamendo.read_selection(ds.splits_dir, 0, ds.audio_dir, "top-multi")
    pd.testing.assert_frame_equal(a.tracks, b.tracks)
    assert a.labels == b.labels and a.task == b.task == "multi"


def write_split(root: Path, train: list[str], validation=(), test=(), k: int = 0) -> Path:
    """A splits folder whose split-``k`` TSVs hold these rows (after HEADER)."""
    for name, rows in (("train", train), ("validation", validation), ("test", test)):
        path = jamendo.tsv_path(root, k, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join([HEADER, *rows]) + "\n")
    return root


def row(n: int, *tags: str, path: str | None = None, artist: int = 1) -> str:
    return "\t".join(
        [f"track_{n:07d}", f"artist_{artist:06d}", "album_000001", path or f"{n % 100:02d}/{n}.mp3"]
        + ["200.5", *tags]
    )


def test_tags_rows_and_low_quality_files(tmp_path):
    """Only genre--- tags count (repeats once); a row without one is no_genre; blank lines
    and trailing tabs are fine; a missing X.mp3 whose X.low.mp3 exists is taken."""
    audio = tmp_path / "audio"
    (audio / "02").mkdir(parents=True)
    (audio / "02" / "102.low.mp3").write_bytes(b"")
    splits = write_split(
        tmp_path / "splits",
        [
            row(101, "genre---rock", "mood/theme---happy", "genre---rock", ""),
            row(102, "genre---pop", "genre---rock"),
            row(103, "instrument---guitar"),
            "",
            row(104),
        ],
        [row(105, "genre---pop", artist=2)],
        [row(106, "genre---rock", artist=3)],
    )
    sel = jamendo.read_selection(splits, 0, audio)
    assert sel.labels == ["pop", "rock"] and sel.skipped == {"no_genre": 2}
    t = sel.tracks.set_index("track_id")
    assert t["labels"].to_dict() == {
        "track_0000101": (1,),
        "track_0000102": (0, 1),
        "track_0000105": (0,),
        "track_0000106": (1,),
    }
    assert t.loc["track_0000102", "path"] == str(audio / "02" / "102.low.mp3")
    assert t.loc["track_0000101", "path"] == str(audio / "01" / "101.mp3")
    assert t.loc["track_0000105", "artist"] == "artist_000002"
    top = jamendo.read_selection(splits, 0, audio, "top")
    assert top.skipped == {"no_genre": 2, "several_genres": 1}
    assert top.tracks["genre"].tolist() == ["rock", "pop", "rock"]  # training, val., test
    assert "leaves out the 1 tracks with several genre tags" in top.warnings[0]


def test_no_single_genre_training_track_is_refused(tmp_path):
    splits = write_split(
        tmp_path / "s",
        [row(1, "genre---pop", "genre---rock")],
        [row(2, "genre---pop", artist=2)],
        [row(3, "genre---rock", artist=3)],
    )
    with pytest.raises(BadInput, match="no training track with exactly one genre tag"):
        jamendo.read_selection(splits, 0, tmp_path, "top")
    assert len(jamendo.read_selection(splits, 0, tmp_path)) == 3


def test_one_genre_or_an_empty_file_is_refused(tmp_path):
    splits = write_split(
        tmp_path / "s",
        [row(1, "genre---pop"), row(2, "genre---pop", "genre---rock")],
        [row(3, "genre---pop", artist=2)],
        [row(4, "genre---pop", artist=3)],
    )
    with pytest.raises(BadInput, match=r"1 genre\(s\) on single-genre tracks \(pop\).*top-multi"):
        jamendo.read_selection(splits, 0, tmp_path, "top")
    assert jamendo.read_selection(splits, 0, tmp_path).labels == ["pop", "rock"]
    jamendo.tsv_path(splits, 0, "test").write_bytes(b"")
    with pytest.raises(BadInput, match="autotagging_genre-test.tsv is empty"):
        jamendo.read_selection(splits, 0, tmp_path)


# ---------------------------------------------------------------- bad input


def _edit(ds, tmp_path: Path, name: str, change) -> Path:
    """A copy of the synthetic splits with ``split-0/autotagging_genre-{name}.tsv``
    replaced by ``change(its lines)`` (None: removed)."""
    splits = tmp_path / "splits"
    shutil.copytree(ds.splits_dir, splits)
    path = jamendo.tsv_path(splits, 0, name)
    lines = path.read_text().splitlines()
    new = change(lines)
    if new is None:
        path.unlink()
    else:
        path.write_text("\n".join(new) + "\n")
    return splits


def _swap_path(lines: list[str], path: str) -> list[str]:
    f = lines[2].split("\t")
    f[3] = path
    return [*lines[:2], "\t".join(f), *lines[3:]]


def _bad_cases(ds, tmp: Path) -> dict:
    """case -> a function giving (preprocess arguments, words of the error line)."""
    o = tmp / "o"
    a_file = tmp / "file.tsv"
    a_file.write_text("x\n")
    no_splits = pre(ds, o)
    at = no_splits.index("--splits-dir")
    del no_splits[at : at + 2]
    test_tsv = jamendo.tsv_path(ds.splits_dir, 0, "test")

    def edited(name, change):
        return pre(ds, o, splits=_edit(ds, tmp, name, change))

    return {
        "no --splits-dir": lambda: (no_splits, ["--splits-dir", "data/splits/"]),
        "splits dir missing": lambda: (
            pre(ds, o, splits=tmp / "nowhere"),
            ["does not exist", "--splits-dir"],
        ),
        "splits dir is a file": lambda: (
            pre(ds, o, splits=a_file),
            ["is a file", "--splits-dir"],
        ),
        "split not present": lambda: (
            pre(ds, o, "--split", "3"),
            ["no split-3/", "split-0, split-1"],
        ),
        "splits one level up": lambda: (
            pre(ds, o, splits=ds.root),
            [f"--splits-dir {ds.splits_dir}"],
        ),
        "split above 4": lambda: (pre(ds, o, "--split", "5"), ["--split must be in 0..4", "5"]),
        "split below 0": lambda: (pre(ds, o, "--split", "-1"), ["--split must be in 0..4"]),
        "folds": lambda: (pre(ds, o, "--folds", "5", "--fold", "1"), ["--folds/--fold", "--split"]),
        "tsv missing": lambda: (
            edited("validation", lambda lines: None),
            ["no autotagging_genre-validation.tsv", "split-0"],
        ),
        "header without PATH": lambda: (
            edited("test", lambda ls: [ls[0].replace("PATH", "FILE"), *ls[1:]]),
            ["autotagging_genre-test.tsv", "no PATH column"],
        ),
        "short row": lambda: (
            edited("train", lambda ls: [*ls[:3], "track_1\tartist_1", *ls[3:]]),
            ["autotagging_genre-train.tsv line 4", "2 field(s)"],
        ),
        "empty training tsv": lambda: (
            edited("train", lambda ls: ls[:1]),
            ["autotagging_genre-train.tsv lists no tracks"],
        ),
        "path outside": lambda: (
            edited("train", lambda ls: _swap_path(ls, "../x/1.mp3")),
            ["train.tsv line 3", "'../x/1.mp3' leads out of the audio folder"],
        ),
        "absolute path": lambda: (
            edited("test", lambda ls: _swap_path(ls, "/etc/1.mp3")),
            ["test.tsv line 3", "'/etc/1.mp3' is absolute"],
        ),
        "track in two splits": lambda: (
            edited("train", lambda ls: [*ls, test_tsv.read_text().splitlines()[1]]),
            ["listed twice", "autotagging_genre-train.tsv and autotagging_genre-test.tsv"],
        ),
    }


BAD = [
    "no --splits-dir",
    "splits dir missing",
    "splits dir is a file",
    "split not present",
    "splits one level up",
    "split above 4",
    "split below 0",
    "folds",
    "tsv missing",
    "header without PATH",
    "short row",
    "empty training tsv",
    "path outside",
    "absolute path",
    "track in two splits",
]


@pytest.mark.parametrize("case", BAD)
def test_bad_input(ds, tmp_path, case):
    argv, words = _bad_cases(ds, tmp_path)[case]()
    refused(runner.invoke(app, argv), *words)
    assert not (tmp_path / "o").exists(), "bad input wrote something"
