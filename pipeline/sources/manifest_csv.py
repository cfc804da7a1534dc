"""Any dataset listed in a CSV manifest: one row per track, a path and its label(s).

The file: comma-separated, UTF-8 (a BOM is accepted, as Excel's "CSV UTF-8" writes it),
LF or CRLF line ends, a header row. Column names are matched without case or
surrounding spaces; other columns are ignored.

    path      required: the audio file. A relative path resolves against --audio-dir,
              which defaults to the manifest's folder (so a manifest beside its audio
              needs no --audio-dir, and one kept elsewhere takes --audio-dir pointing at
              the audio); an absolute path is used as it is.
    label     one label per track (single-label), or
    labels    several, names joined by "|" (multi-label: ``rock|jazz``); exactly one of
              the two. Labels are sorted by name.
    split     optional: training/validation/test (also train, valid, val; any case), on
              every row. Without it the split is seeded 80/10/10: stratified by label, and
              when ``group`` is present grouped, so that no group is in two splits.
    group     optional: the artist or album; a row with an empty group is its own group.
    track_id  optional: the track's id; by default the path as written, without suffix,
              "/"-separated (``audio/rock/a.wav`` -> ``audio/rock/a``).
    artist, title   optional: carried into the cache's tracks.csv.

Rows are counted as a spreadsheet shows them (the header is row 1); blank rows are
ignored. Paths of formats no decoder here reads (.m4a, ...) are counted as skipped, not
selected; files that do not exist are preprocess's failures ("missing"), not errors here.
"""

from __future__ import annotations

import codecs
import csv
import io
import os
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import pandas as pd

from pipeline.audio import AUDIO_SUFFIXES, unsupported_note
from pipeline.errors import BadInput
from pipeline.sources import SPLIT_NAMES, SPLITS, Selection, no_folds, sort_tracks, unique_ids
from pipeline.sources.split import grouped_splits, ratio_splits

if TYPE_CHECKING:
    from pipeline.options import PreprocessOptions

COLUMNS = ("path", "label", "labels", "split", "group", "track_id", "artist", "title")
LABEL_SEPARATOR = "|"


def _text(manifest: Path) -> str:
    """The manifest's text; BadInput when it is missing, not a file, empty or not UTF-8."""
    if not manifest.exists():
        raise BadInput(f"manifest {manifest} does not exist; pass --manifest pointing at the CSV")
    if not manifest.is_file():
        raise BadInput(f"manifest {manifest} is not a file; pass --manifest pointing at the CSV")
    data = manifest.read_bytes()
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise BadInput(f"manifest {manifest} is UTF-16 text; save it as CSV UTF-8")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise BadInput(
            f"manifest {manifest} is not UTF-8 text (line {line}); save it as CSV UTF-8"
        ) from None
    if "\0" in text:
        raise BadInput(f"manifest {manifest} holds NUL bytes, so it is not a CSV; pass the CSV")
    if not text.strip():
        raise BadInput(f"manifest {manifest} is empty; write a header row (path,label) and rows")
    return text


def _records(manifest: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The header (names stripped, lower case) and the non-blank rows with their row
    numbers (the header is row 1); BadInput when the text is not a CSV."""
    reader = csv.reader(io.StringIO(_text(manifest), newline=""), strict=True)
    try:
        records = list(reader)
    except csv.Error as e:
        raise BadInput(
            f"manifest {manifest} is not a readable CSV (line {reader.line_num}: {e}); "
            "fix the quoting there"
        ) from None
    numbered = [(n, r) for n, r in enumerate(records, 1) if any(c.strip() for c in r)]
    if not numbered:  # only empty cells (",,,")
        raise BadInput(f"manifest {manifest} is empty; write a header row (path,label) and rows")
    (_, header), rows = numbered[0], numbered[1:]
    names = [h.strip().lower() for h in header]
    twice = sorted({h for h in names if h in COLUMNS and names.count(h) > 1})
    if twice:
        raise BadInput(f"manifest {manifest} has two {twice[0]!r} columns; keep one")
    width = len(header)
    for n, r in rows:
        if len(r) > width and any(c.strip() for c in r[width:]):
            raise BadInput(
                f"row {n} of manifest {manifest} has {len(r)} fields but the header has "
                f'{width}; quote values that hold commas ("a, b.wav")'
            )
    return names, [(n, [*r[:width], *[""] * (width - len(r))]) for n, r in rows]


def _check_header(manifest: Path, names: list[str]) -> str:
    """The label column ("label" or "labels"); BadInput when path or it is missing."""
    if "path" not in names:
        shown = ", ".join(repr(h) for h in names[:5]) + (", ..." if len(names) > 5 else "")
        hint = "add a header row: path,label (or labels), optionally split, group"
        for sep, what in ((";", "semicolon"), ("\t", "tab")):
            if len(names) == 1 and sep in names[0]:
                hint = f"it looks {what}-separated: save it comma-separated"
        if any(PurePosixPath(h).suffix in AUDIO_SUFFIXES for h in names):
            hint = "its first row looks like a track: add a header row path,label above it"
        raise BadInput(f"manifest {manifest} has no 'path' column (header: {shown}); {hint}")
    present = [c for c in ("label", "labels") if c in names]
    if len(present) != 1:
        what = "both 'label' and 'labels' columns" if present else "no 'label' or 'labels' column"
        raise BadInput(
            f"manifest {manifest} has {what}; give one: label (one per track) or labels "
            f"(several, joined by {LABEL_SEPARATOR!r})"
        )
    return present[0]


def _split(value: str, n: int, manifest: Path) -> str:
    if not value:
        raise BadInput(
            f"row {n} of manifest {manifest} has no split; fill it in on every row, or drop "
            "the split column for a seeded 80/10/10 split"
        )
    split = SPLIT_NAMES.get(value.lower())
    if split is None:
        raise BadInput(
            f"row {n} of manifest {manifest} has split {value!r}; use training, validation "
            "or test (or train, valid, val)"
        )
    return split


def _tracks(
    manifest: Path, base: Path, names: list[str], records: list[tuple[int, list[str]]]
) -> tuple[pd.DataFrame, list[Path]]:
    """One row per readable track (track_id, split ("" without a split column), names
    (a label, or a sorted tuple of them), path, group, row, artist/title when present),
    and the paths of formats no decoder reads; BadInput naming the row of a bad value."""
    multi = "labels" in names
    label_column = "labels" if multi else "label"
    col = {name: i for i, name in reversed(list(enumerate(names)))}
    extra = [c for c in ("artist", "title") if c in col]
    rows, unreadable = [], []
    for n, r in records:

        def cell(name: str, r: list[str] = r) -> str:
            return r[col[name]].strip() if name in col else ""

        written = cell("path")
        if not written:
            raise BadInput(
                f"row {n} of manifest {manifest} has no path; fill it in or drop the row"
            )
        if multi:
            value = tuple(sorted({x.strip() for x in cell("labels").split(LABEL_SEPARATOR)} - {""}))
        else:
            value = cell("label")
        if not value:
            raise BadInput(
                f"row {n} of manifest {manifest} has no {label_column}; fill it in or drop the row"
            )
        split = _split(cell("split"), n, manifest) if "split" in col else ""
        track_id = cell("track_id")
        if "track_id" in col and not track_id:
            raise BadInput(
                f"row {n} of manifest {manifest} has no track_id; fill it in on every row, "
                "or drop the column (ids then come from the paths)"
            )
        path = Path(written) if Path(written).is_absolute() else base / written
        if PurePosixPath(written).suffix.lower() not in AUDIO_SUFFIXES:
            unreadable.append(path)
            continue
        track_id = track_id or PurePosixPath(written).with_suffix("").as_posix()
        rows.append((track_id, split, value, str(path), cell("group"), n, *map(cell, extra)))
    columns = ["track_id", "split", "names", "path", "group", "row", *extra]
    return pd.DataFrame(rows, columns=columns), unreadable


def _unique(tracks: pd.DataFrame, manifest: Path, has_ids: bool) -> pd.DataFrame:
    """``tracks`` sorted by track_id; BadInput when two rows name one file or one id."""
    same = pd.Series([os.path.normpath(p) for p in tracks["path"]])
    if same.duplicated().any():
        rows = tracks["row"][same == same[same.duplicated()].iloc[0]].tolist()
        raise BadInput(
            f"rows {rows[0]} and {rows[1]} of manifest {manifest} name the same file "
            f"({tracks['path'][same.duplicated()].iloc[0]}); keep one"
        )
    try:
        return unique_ids(tracks, "track id")
    except BadInput as e:
        if has_ids:
            raise
        raise BadInput(f"{e}, or give each row its own track_id in a track_id column") from None


def _assign_splits(
    tracks: pd.DataFrame, names: list[str], multi: bool, seed: int
) -> tuple[str, list[str]]:
    """Fill ``tracks["split"]`` when the manifest has no split column (see the module
    docstring); returns the split scheme and warnings about the split."""
    warnings = []
    if "split" in names:
        scheme = "manifest column 'split'"
        if "group" in names:
            named = tracks[tracks["group"] != ""]
            crossing = named.groupby("group")["split"].nunique()
            crossing = crossing[crossing > 1]
            if len(crossing):
                warnings.append(
                    f"{len(crossing)} group(s) of the manifest have tracks in more than one "
                    f"split (e.g. {crossing.index[0]!r}); its split column decides, so a test "
                    "track may share its group with training tracks"
                )
    elif "group" in names or multi:
        # an empty group: the track is a group of its own ("\0" keeps it apart from names)
        keys = tracks["group"].where(tracks["group"] != "", "\0" + tracks["track_id"])
        as_tuples = tracks["labels"] if multi else tracks["label"].map(lambda x: (x,))
        tracks["split"] = grouped_splits(as_tuples.tolist(), keys.tolist(), seed)
        scheme = (
            f"grouped 80/10/10 by 'group', seed {seed}"
            if "group" in names
            else f"stratified 80/10/10, seed {seed}"
        )
    else:
        tracks["split"] = ratio_splits(tracks["label"].tolist(), seed)
        scheme = f"stratified 80/10/10, seed {seed}"
    empty = ", ".join(s for s in SPLITS if not (tracks["split"] == s).any())
    if empty and "split" in names:
        warnings.append(f"the manifest's split column puts no track in {empty}")
    elif empty:
        warnings.append(
            f"the {scheme} split puts no track in {empty}: too few tracks or groups for "
            "80/10/10; add a split column"
        )
    return scheme, warnings


def read_selection(manifest: Path, audio_dir: Path | None = None, seed: int = 0) -> Selection:
    """The tracks a CSV manifest lists (see the module docstring). Reads the manifest
    only: whether the audio files exist is preprocess's business.

    Args:
        manifest: the CSV file.
        audio_dir: where relative paths resolve; default: the manifest's folder.
        seed: the seed of the 80/10/10 split when there is no split column.

    Returns:
        A Selection, dataset "csv": single-label (track_id, split, genre, label, path)
        with a ``label`` column, multi-label (track_id, split, labels, path; labels a
        sorted tuple of indices) with a ``labels`` column; artist and title when the
        manifest has them. Labels sorted by name.
    """
    manifest = Path(manifest)
    base = Path(audio_dir if audio_dir is not None else manifest.parent).absolute()
    names, records = _records(manifest)
    multi = _check_header(manifest, names) == "labels"
    if not records:
        raise BadInput(f"manifest {manifest} has a header but no rows; add one row per track")
    tracks, unreadable = _tracks(manifest, base, names, records)
    tracks = _unique(tracks, manifest, "track_id" in names)
    labels = sorted({x for v in tracks["names"] for x in (v if multi else (v,))})
    if len(labels) < 2:
        shown = f" ({labels[0]})" if labels else ""
        skipped = f", after skipping {len(unreadable)} unreadable files" if unreadable else ""
        raise BadInput(
            f"manifest {manifest} names {len(labels)} label(s){shown}{skipped}; a classifier "
            "needs two or more"
        )
    index = {name: i for i, name in enumerate(labels)}
    if multi:
        tracks["labels"] = tracks["names"].map(lambda v: tuple(index[x] for x in v))
    else:
        tracks["genre"] = tracks["names"]
        tracks["label"] = tracks["genre"].map(index).astype("int64")
    scheme, warnings = _assign_splits(tracks, names, multi, seed)
    source = {"manifest": str(manifest)}
    if base != manifest.parent.absolute():
        source["audio_dir"] = str(base)
    columns = ["labels"] if multi else ["genre", "label"]
    extra = [c for c in ("artist", "title") if c in tracks]
    return Selection(
        tracks=sort_tracks(tracks[["track_id", "split", *columns, "path", *extra]]),
        labels=labels,
        dataset="csv",
        split_scheme=scheme,
        task="multi" if multi else "single",
        skipped={"unsupported_format": len(unreadable)} if unreadable else {},
        source=source,
        warnings=warnings + ([unsupported_note(unreadable)] if unreadable else []),
    )


def selection(opts: PreprocessOptions) -> Selection:
    """`read_selection` for preprocess's options: relative paths resolve against
    --audio-dir (the manifest's folder unless given); the label column decides the task."""
    if opts.manifest is None:
        raise BadInput(
            "--dataset csv needs --manifest FILE: a CSV with columns path and label (or labels)"
        )
    no_folds(opts, "a manifest has its split column or a seeded 80/10/10 split")
    sel = read_selection(opts.manifest, opts.audio_dir, opts.seed)
    if not sel.multi_label and opts.labels != "top":
        raise BadInput(
            f"--labels {opts.labels} is for several labels per track, but manifest "
            f"{opts.manifest} has a 'label' column (one per track); for multi-label, name the "
            f"column 'labels' and join each track's names with {LABEL_SEPARATOR!r}"
        )
    if sel.multi_label and opts.labels == "all":
        raise BadInput(
            "--labels all picks FMA genres (with --min-label-tracks); a manifest's 'labels' "
            "column is used as it is: drop --labels"
        )
    return sel
