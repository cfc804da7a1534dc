"""CSV manifests (`--dataset csv --manifest FILE`): through `mrnet preprocess` on a few
short synthetic WAVs, and `read_selection` on larger manifests of paths that need not
exist (it reads the manifest only)."""

from __future__ import annotations

import csv
import functools
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile
from helpers import one_line_error
from typer.testing import CliRunner

from cli import app
from pipeline.errors import BadInput
from pipeline.sources.manifest_csv import read_selection
from pipeline.synth.sound import render

runner = CliRunner()
refused = functools.partial(one_line_error, alone=True)  # the only line printed
RECIPES = {"rock": "Rock", "jazz": "Electronic", "fólk": "Folk"}
N_PER_LABEL = 4
SPLIT_OF = ("train", "train", "Valid", "TEST")  # the i-th track of each label


def write_manifest(path: Path, header, rows, bom: bool = False, crlf: bool = False) -> Path:
    """A CSV (csv.writer's quoting), LF or CRLF line ends, optionally with a UTF-8 BOM."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n" if crlf else "\n")
    w.writerow(header)
    w.writerows(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + buf.getvalue().encode())
    return path


def pre(manifest: Path, out: Path, *extra: str) -> list[str]:
    return [
        "preprocess",
        "--dataset",
        "csv",
        "--manifest",
        str(manifest),
        "--out",
        str(out),
        "--jobs",
        "1",
        "--min-seconds",
        "0.5",
        "--no-progress",
        *extra,
    ]


@pytest.fixture(scope="module")
def audio(tmp_path_factory) -> Path:
    """``data/<label>/track <i>.wav``: 1-s mono 16 kHz clips, N_PER_LABEL per label
    (Unicode label names and spaces in file names), and one .m4a no decoder reads."""
    root = tmp_path_factory.mktemp("csv") / "data"
    for k, (label, recipe) in enumerate(RECIPES.items()):
        (root / label).mkdir(parents=True)
        for i in range(N_PER_LABEL):
            x = render(recipe, 1.0, 16000, 1, 100 * k + i)
            soundfile.write(root / label / f"track {i}.wav", x, 16000, subtype="PCM_16")
    (root / "rock" / "phone.m4a").write_bytes(b"\0" * 64)
    return root


def rel_rows() -> list[list[str]]:
    """path,label rows of every clip, paths relative to the data folder."""
    return [[f"{label}/track {i}.wav", label] for label in RECIPES for i in range(N_PER_LABEL)]


def read_tracks(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "tracks.csv", dtype=str, keep_default_na=False)


def manifest_json(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


# ---------------------------------------------------------------- through the CLI


def test_split_column_bom_crlf_absolute_and_missing_files(audio, tmp_path):
    """A spreadsheet's export: BOM, CRLF, header in any case, a blank row, artist and
    title; relative and absolute paths; a file that is not there becomes a failure row,
    an .m4a is skipped and said once."""
    rows = [
        [
            str(audio / label / f"track {i}.wav") if i == 1 else f"{label}/track {i}.wav",
            label,
            SPLIT_OF[i],
            f"artist {label}",
            f"title {i}",
        ]
        for label in RECIPES
        for i in range(N_PER_LABEL)
    ]
    rows += [
        ["", "", "", "", ""],
        ["rock/gone.wav", "rock", "training", "", ""],
        ["rock/phone.m4a", "rock", "test", "", ""],
    ]
    manifest = write_manifest(
        audio / "list.csv", [" Path", "LABEL", "Split", "artist", "title"], rows, True, True
    )
    out = tmp_path / "cache"
    r = runner.invoke(app, pre(manifest, out))
    assert r.exit_code == 0, r.output
    assert "skipped 1 files of formats no decoder here reads" in r.output
    assert "phone.m4a" in r.output

    t = read_tracks(out).set_index("track_id")
    expected = {
        (f"{audio}/{label}/track 1" if i == 1 else f"{label}/track {i}"): (label, i)
        for label in RECIPES
        for i in range(N_PER_LABEL)
    }
    assert set(t.index) == set(expected)  # the path as written, without suffix
    names = {"train": "training", "Valid": "validation", "TEST": "test"}
    for tid, (label, i) in expected.items():
        assert t.loc[tid, "split"] == names[SPLIT_OF[i]]
        assert t.loc[tid, "genre"] == label
        assert (t.loc[tid, "artist"], t.loc[tid, "title"]) == (f"artist {label}", f"title {i}")
    fails = pd.read_csv(out / "failures.csv", dtype=str)
    assert fails[["track_id", "reason"]].values.tolist() == [["rock/gone", "missing"]]
    assert fails["path"].iloc[0] == str(audio / "rock" / "gone.wav")
    m = manifest_json(out)
    assert m["dataset"] == "csv" and m["task"] == "single"
    assert m["split_scheme"] == "manifest column 'split'"
    assert m["labels"] == sorted(RECIPES)
    assert m["source"] == {"manifest": str(manifest)}
    assert m["skipped"] == {"unsupported_format": 1}


def test_seeded_split_with_audio_dir_elsewhere(audio, tmp_path):
    """A manifest kept away from the audio: relative paths resolve against --audio-dir;
    no split column: stratified 80/10/10, the same as read_selection's for the seed."""
    manifest = write_manifest(tmp_path / "lists" / "m.csv", ["path", "label"], rel_rows())
    out = tmp_path / "cache"
    r = runner.invoke(app, pre(manifest, out, "--audio-dir", str(audio), "--seed", "3"))
    assert r.exit_code == 0, r.output
    t = read_tracks(out)
    assert len(t) == len(RECIPES) * N_PER_LABEL
    assert len(pd.read_csv(out / "failures.csv")) == 0
    expected = read_selection(manifest, audio, seed=3).tracks
    assert dict(zip(t["track_id"], t["split"])) == dict(
        zip(expected["track_id"], expected["split"])
    )
    counts = t.groupby(["genre", "split"]).size().unstack(fill_value=0)
    assert (counts["validation"] == 1).all() and (counts["test"] == 1).all()
    m = manifest_json(out)
    assert m["split_scheme"] == "stratified 80/10/10, seed 3"
    assert m["source"] == {"manifest": str(manifest), "audio_dir": str(audio)}


def test_multi_label_with_groups(audio, tmp_path):
    """A ``labels`` column ("a|b"): a multi-label cache; a ``group`` column without a
    split column: grouped 80/10/10, no group in two splits."""
    others = {"rock": "jazz", "jazz": "", "fólk": "rock"}
    rows = []
    for label in RECIPES:
        for i in range(N_PER_LABEL):
            names = [others[label], label] if others[label] and i % 2 else [label]
            group = f"band {i}" if i >= 2 else ""  # bands 2 and 3 play every label
            rows.append([f"{label}/track {i}.wav", " | ".join(names), group])
    manifest = write_manifest(audio / "multi.csv", ["path", "labels", "group"], rows)
    out = tmp_path / "cache"
    r = runner.invoke(app, pre(manifest, out))
    assert r.exit_code == 0, r.output
    m = manifest_json(out)
    assert m["task"] == "multi" and m["labels"] == sorted(RECIPES)
    assert m["split_scheme"] == "grouped 80/10/10 by 'group', seed 0"
    t = read_tracks(out).set_index("track_id")
    assert t.loc["rock/track 1", "labels"] == "jazz|rock"  # sorted by name, "|"-joined
    assert t.loc["fólk/track 3", "labels"] == "fólk|rock"
    assert t.loc["jazz/track 1", "labels"] == "jazz"
    bands = t[t.index.str[-1] >= "2"]  # groups "band 2", "band 3": one split each
    assert (bands.groupby(bands.index.str[-1])["split"].nunique() == 1).all()
    assert t["split"].nunique() > 1


def test_a_labels_column_makes_a_multi_label_selection(tmp_path):
    """One name per row in a ``labels`` column is a multi-label manifest all the same."""
    manifest = write_manifest(tmp_path / "m.csv", ["path", "labels"], rel_rows())
    sel = read_selection(manifest)
    assert sel.task == "multi" and sel.labels == sorted(RECIPES)
    assert set(sel.tracks["labels"]) == {(0,), (1,), (2,)}


# ---------------------------------------------------------------- bad input


OK = [["a.wav", "rock"], ["b.wav", "jazz"]]
# case -> (the manifest: CSV header and rows, or raw bytes; extra arguments; words the
# error line holds)
BAD_MANIFESTS = {
    "empty file": (b"", [], ["empty"]),
    "blank lines only": (b"\r\n\r\n  \n", [], ["empty"]),
    "empty cells only": (b",,\n,,\n", [], ["empty"]),
    "header only": ((["path", "label"], []), [], ["no rows"]),
    "bad quoting": (b'path,label\na.wav,"rock"x\nb.wav,jazz\n', [], ["not a readable CSV"]),
    "not UTF-8": ("path,label\nfólk.wav,fólk\n".encode("latin-1"), [], ["not UTF-8"]),
    "UTF-16": ("path,label\na.wav,rock\n".encode("utf-16"), [], ["UTF-16"]),
    "too many fields": (
        b"path,label\na.wav,rock\nb, c.wav,jazz\n",
        [],
        ["row 3", "3 fields", "quote"],
    ),
    "no path column": ((["file", "label"], OK), [], ["no 'path' column"]),
    "semicolons": (b"path;label\na.wav;rock\n", [], ["semicolon-separated"]),
    "no header": ((["a.wav", "rock"], OK), [], ["add a header row"]),
    "no label column": ((["path", "genre"], OK), [], ["no 'label' or 'labels'"]),
    "both label columns": (
        (["path", "label", "labels"], [[*r, r[1]] for r in OK]),
        [],
        ["both 'label' and 'labels'"],
    ),
    "empty label": (
        b"path,label\na.wav,rock\n\nc.wav, \nd.wav,jazz\n",  # row 3 is blank
        [],
        ["row 4", "no label"],
    ),
    "empty labels": ((["path", "labels"], [*OK, ["c.wav", " | "]]), [], ["row 4", "no labels"]),
    "empty path": ((["path", "label"], [*OK, ["", "rock"]]), [], ["row 4", "no path"]),
    "unknown split": (
        (["path", "label", "split"], [["a.wav", "rock", "train"], ["b.wav", "jazz", "dev"]]),
        [],
        ["row 3", "'dev'", "training, validation or test"],
    ),
    "split not on every row": (
        (["path", "label", "split"], [["a.wav", "rock", "test"], ["b.wav", "jazz", ""]]),
        [],
        ["row 3", "no split", "every row"],
    ),
    "same file twice": (
        (["path", "label"], [*OK, ["./a.wav", "jazz"]]),
        [],
        ["rows 2 and 4", "same file"],
    ),
    "same track id twice": (
        (["path", "label"], [*OK, ["a.flac", "jazz"]]),
        [],
        ["a.flac", "a.wav", "track_id"],
    ),
    "same track_id column value": (
        (["path", "label", "track_id"], [["a.wav", "rock", "7"], ["b.wav", "jazz", "7"]]),
        [],
        ["track id 7"],
    ),
    "empty track_id": (
        (["path", "label", "track_id"], [["a.wav", "rock", "7"], ["b.wav", "jazz", ""]]),
        [],
        ["row 3", "no track_id"],
    ),
    "one label": ((["path", "label"], [["a.wav", "rock"], ["b.wav", "rock"]]), [], ["1 label"]),
    "folds": ((["path", "label"], OK), ["--folds", "3", "--fold", "0"], ["--folds"]),
    "top-multi with a label column": (
        (["path", "label"], OK),
        ["--labels", "top-multi"],
        ["--labels top-multi", "'labels'", "'|'"],
    ),
    "all with a labels column": (
        (["path", "labels"], OK),
        ["--labels", "all"],
        ["--labels all", "drop --labels"],
    ),
}


@pytest.mark.parametrize("case", list(BAD_MANIFESTS))
def test_bad_manifest(tmp_path, case):
    content, extra, words = BAD_MANIFESTS[case]
    m = tmp_path / "m.csv"
    if isinstance(content, bytes):
        m.write_bytes(content)
    else:
        write_manifest(m, *content)
    refused(runner.invoke(app, pre(m, tmp_path / "o", *extra)), *words)
    assert not (tmp_path / "o").exists(), "bad input wrote something"


@pytest.mark.parametrize("case", ["no --manifest", "manifest missing", "manifest is a folder"])
def test_bad_manifest_argument(tmp_path, case):
    out = ["--out", str(tmp_path / "o")]
    argv, words = {
        "no --manifest": (
            ["preprocess", "--dataset", "csv", "--audio-dir", str(tmp_path), *out],
            ["--manifest FILE"],
        ),
        "manifest missing": (pre(tmp_path / "nope.csv", tmp_path / "o"), ["does not exist"]),
        "manifest is a folder": (
            pre(tmp_path, tmp_path / "o", "--audio-dir", str(tmp_path)),
            ["not a file"],
        ),
    }[case]
    refused(runner.invoke(app, argv), *words)
    assert not (tmp_path / "o").exists(), "bad input wrote something"


# ---------------------------------------------------------------- read_selection


def big_manifest(path: Path, n: int = 200, groups: bool = True, multi: bool = False) -> Path:
    """``n`` rows over 4 labels and 37 groups of uneven size; paths need not exist."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        label = "abcd"[i % 4]
        value = f"{label}|{'abcd'[(i // 4) % 4]}" if multi and i % 3 == 0 else label
        group = [f"artist {int(rng.integers(37)) ** 2 % 37}"] if groups else []
        rows.append([f"x/{i:03d}.mp3", value, *group])
    header = ["path", "labels" if multi else "label", *(["group"] if groups else [])]
    return write_manifest(path, header, rows)


def splits_of(sel) -> dict[str, str]:
    return dict(zip(sel.tracks["track_id"], sel.tracks["split"]))


def test_seeded_split_is_a_pure_function_of_rows_and_seed(tmp_path):
    m = big_manifest(tmp_path / "m.csv", groups=False)
    a = read_selection(m, seed=0)
    pd.testing.assert_frame_equal(a.tracks, read_selection(m, seed=0).tracks)
    assert splits_of(a) != splits_of(read_selection(m, seed=1))
    text = m.read_text().splitlines()
    shuffled = [text[0], *np.random.default_rng(5).permutation(text[1:])]
    (tmp_path / "s.csv").write_text("\n".join(shuffled) + "\n")
    assert splits_of(read_selection(tmp_path / "s.csv", tmp_path, seed=0)) == splits_of(a)
    counts = a.counts()  # 50 per label: 40 / 5 / 5
    assert (counts["validation"] == 5).all() and (counts["test"] == 5).all()
    assert a.split_scheme == "stratified 80/10/10, seed 0"
    assert a.tracks["split"].tolist() == sorted(
        a.tracks["split"], key=["training", "validation", "test"].index
    )


@pytest.mark.parametrize("multi", [False, True], ids=["single", "multi"])
def test_no_group_in_two_splits(tmp_path, multi):
    m = big_manifest(tmp_path / "m.csv", multi=multi)
    rows = pd.read_csv(m)
    group = dict(zip(rows["path"].str[:-4], rows["group"]))
    for seed in (0, 1, 2):
        sel = read_selection(m, seed=seed)
        assert sel.split_scheme == f"grouped 80/10/10 by 'group', seed {seed}"
        t = sel.tracks.assign(group=lambda d: d["track_id"].map(group))
        assert (t.groupby("group")["split"].nunique() == 1).all()
        share = t["split"].value_counts(normalize=True)
        assert 0.6 < share["training"] < 0.9 and share["validation"] > 0.03
        assert share["test"] > 0.03
    assert splits_of(read_selection(m, seed=0)) == splits_of(read_selection(m, seed=0))
    assert splits_of(read_selection(m, seed=0)) != splits_of(read_selection(m, seed=1))


def test_multi_label_without_groups_each_track_is_its_own_group(tmp_path):
    m = big_manifest(tmp_path / "m.csv", groups=False, multi=True)
    sel = read_selection(m, seed=0)
    assert sel.task == "multi" and sel.labels == ["a", "b", "c", "d"]
    assert sel.split_scheme == "stratified 80/10/10, seed 0"
    counts = sel.counts()
    assert (counts["validation"] > 0).all() and (counts["test"] > 0).all()
    row = sel.tracks.set_index("track_id").loc["x/003"]
    assert row["labels"] == (0, 3)  # "d|a": indices sorted


def test_fields_paths_and_ids(tmp_path):
    """Split aliases, the track_id column, artist/title, empty groups, ids from paths,
    paths relative to audio_dir, absolute paths kept."""
    rows = [
        ["./sub/one.WAV", "rock", "Train", "", "A", "T1"],
        ["two.flac", "jazz", "val", "g", "", ""],
        ["/abs/three.ogg", "rock", "validation", "g", "B", ""],
        ["four.mp3", "jazz", "Test", "", "", "T4"],
    ]
    header = ["path", "label", "split", "group", "artist", "title"]
    m = write_manifest(tmp_path / "m.csv", header, rows)
    sel = read_selection(m, tmp_path / "audio")
    t = sel.tracks.set_index("track_id")
    assert t["split"].to_dict() == {
        "sub/one": "training",
        "two": "validation",
        "/abs/three": "validation",
        "four": "test",
    }
    assert t.loc["sub/one", "path"] == str(tmp_path / "audio" / "sub" / "one.WAV")
    assert t.loc["/abs/three", "path"] == "/abs/three.ogg"
    assert t["artist"].to_dict()["sub/one"] == "A" and t.loc["four", "title"] == "T4"
    assert sel.labels == ["jazz", "rock"] and t.loc["two", "label"] == 0
    assert sel.warnings == []  # group g is in one split; empty groups are their own
    rows[1][2] = "test"
    sel = read_selection(write_manifest(tmp_path / "m.csv", header, rows), tmp_path)
    assert any("group(s)" in w and "'g'" in w for w in sel.warnings)

    ids = [["a.wav", "rock", "id-1"], ["b.wav", "jazz", "id-2"], ["c.wav", "jazz", "id-3"]]
    sel = read_selection(write_manifest(tmp_path / "i.csv", ["path", "label", "track_id"], ids))
    assert sel.tracks["track_id"].tolist() == ["id-1", "id-2", "id-3"]


def test_odd_but_usable_splits_are_warned_about(tmp_path):
    """Two groups cannot make three splits: the empty one is named; a manifest's own
    split column that leaves one empty is said too; only unreadable files: refused."""
    rows = [[f"{g}{i}.wav", "ab"[i % 2], g] for g in "wx" for i in range(3)]
    sel = read_selection(write_manifest(tmp_path / "g.csv", ["path", "label", "group"], rows))
    assert any("puts no track in" in w and "add a split column" in w for w in sel.warnings)
    rows = [["a.wav", "a", "train"], ["b.wav", "b", "test"]]
    sel = read_selection(write_manifest(tmp_path / "s.csv", ["path", "label", "split"], rows))
    assert sel.warnings == ["the manifest's split column puts no track in validation"]
    rows = [["a.m4a", "a"], ["b.wma", "b"]]
    with pytest.raises(BadInput, match="0 label.*after skipping 2 unreadable"):
        read_selection(write_manifest(tmp_path / "u.csv", ["path", "label"], rows))
