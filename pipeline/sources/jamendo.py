"""MTG-Jamendo autotagging_genre: full-length MP3s and the split TSVs of one of its splits.

Facts relied on (github.com/MTG/mtg-jamendo-dataset, ``data/splits/``):

- ``SPLITS_DIR/split-{0..4}/autotagging_genre-{train,validation,test}.tsv`` are the
  training, validation and test tracks of split K (each split keeps an artist on one
  side). Tab-separated, a header ``TRACK_ID ARTIST_ID ALBUM_ID PATH DURATION TAGS``, then
  one row per track whose tags are the TAGS field and every further field
  (``track_0000214  artist_000014  album_000031  14/214.mp3  124.6  genre---punkrock
  genre---rock``). CRLF line ends (some copies) and a UTF-8 BOM are accepted.
- Only tags starting with ``genre---`` count; the label is the rest (``punkrock``). A
  track without one is skipped as ``no_genre``.
- The audio of a row is ``AUDIO_DIR/PATH`` (``14/214.mp3``); where only the
  low-quality download is there (``14/214.low.mp3``) that file is taken. A PATH that is
  absolute or leads out of AUDIO_DIR (``..``) is refused (BadInput naming the row): the
  real TSVs hold none, so such a row means an edited or foreign file.
- Track ids are the TRACK_ID strings; ARTIST_ID goes into tracks.csv's artist column.

Labels: ``--labels top-multi`` or ``all`` is the benchmark's multi-label task on every
genre tag (87 in the full release; ``all`` keeps every tag too, --min-label-tracks is
not applied). ``--labels top`` (the default) is single-label on the tracks with exactly
one genre tag; the others are skipped as ``several_genres``, with a warning. A genre
with no track in some split stays a label (preprocess warns; its figures there are
undefined, never a crash).

Tracks are full-length: preprocess's --max-seconds / --clip apply as for any source
(default 30 s from the middle; --max-seconds 0 keeps every track whole, in chunks).
"""

from __future__ import annotations

import os
import posixpath
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from pipeline.errors import BadInput
from pipeline.sources import Selection, no_folds, sort_tracks

if TYPE_CHECKING:
    from pipeline.options import PreprocessOptions

N_SPLITS = 5  # split-0 .. split-4
FILES = {"training": "train", "validation": "validation", "test": "test"}  # split -> file part
COLUMNS = ("TRACK_ID", "ARTIST_ID", "ALBUM_ID", "PATH", "DURATION", "TAGS")
GENRE_PREFIX = "genre---"

_FIX = "download the splits again (mtg-jamendo-dataset's data/splits/)"


def tsv_path(splits_dir: Path, split: int, name: str) -> Path:
    """``splits_dir/split-K/autotagging_genre-{name}.tsv`` (``name``: a value of FILES)."""
    return Path(splits_dir) / f"split-{split}" / f"autotagging_genre-{name}.tsv"


def _present_splits(splits_dir: Path) -> list[str]:
    return sorted(
        p.name for p in splits_dir.iterdir() if p.is_dir() and p.name.startswith("split-")
    )


def _split_dir(splits_dir: Path, split: int) -> Path:
    """The folder of split ``split``; BadInput when the splits folder or it is not there."""
    if not 0 <= split < N_SPLITS:
        raise BadInput(
            f"--split must be in 0..{N_SPLITS - 1} (MTG-Jamendo has split-0 .. "
            f"split-{N_SPLITS - 1}); got {split}"
        )
    splits_dir = Path(splits_dir)
    if not splits_dir.exists():
        raise BadInput(
            f"splits dir {splits_dir} does not exist; pass --splits-dir pointing at "
            "mtg-jamendo-dataset's data/splits/ (holding split-0/ .. split-4/)"
        )
    if not splits_dir.is_dir():
        raise BadInput(
            f"splits dir {splits_dir} is a file, not a folder; pass --splits-dir pointing at "
            "the folder holding split-0/ .. split-4/"
        )
    folder = splits_dir / f"split-{split}"
    if folder.is_dir():
        return folder
    present = _present_splits(splits_dir)
    if present:
        raise BadInput(
            f"no split-{split}/ in splits dir {splits_dir} (it holds {', '.join(present)}); "
            f"pass one of those with --split or {_FIX}"
        )
    nested = [splits_dir / "splits", splits_dir / "data" / "splits"]
    hint = next((f"pass --splits-dir {p}" for p in nested if (p / folder.name).is_dir()), _FIX)
    raise BadInput(f"no split-K/ folders in splits dir {splits_dir}; {hint}")


def _audio_path(audio_dir: Path, rel: str, where: str) -> str:
    """``audio_dir/rel`` (or its ``.low.mp3`` twin when only that exists); BadInput
    naming ``where`` for a path that is absolute or leaves ``audio_dir``."""
    norm = posixpath.normpath(rel.replace("\\", "/"))
    if not rel or posixpath.isabs(norm) or norm == ".." or norm.startswith("../"):
        what = (
            "is empty"
            if not rel
            else "is absolute"
            if posixpath.isabs(norm)
            else "leads out of the audio folder"
        )
        raise BadInput(
            f"{where}: PATH {rel!r} {what}; PATH must be relative to --audio-dir (like "
            f"14/214.mp3): fix the row or {_FIX}"
        )
    path = os.path.join(audio_dir, norm)
    if norm.endswith(".mp3") and not os.path.exists(path):
        low = path[: -len(".mp3")] + ".low.mp3"  # the low-quality download's names
        if os.path.exists(low):
            return low
    return path


def read_tsv(path: Path, audio_dir: Path) -> list[tuple[str, str, str, tuple[str, ...]]]:
    """The rows of one autotagging_genre TSV.

    Args:
        path: the TSV file.
        audio_dir: the folder its PATH column is relative to.

    Returns:
        (track id, artist id, audio path, genre names in file order without repeats) per
        row, in file order; BadInput (naming file and line) for a missing file, a header
        without a required column, a row short of the header's fixed columns or a PATH
        outside ``audio_dir``.
    """
    if not path.is_file():
        raise BadInput(f"no {path.name} in {path.parent}; {_FIX}")
    try:
        with open(path, encoding="utf-8-sig") as f:  # universal newlines: CRLF is fine
            lines = f.read().split("\n")
    except (UnicodeDecodeError, OSError) as e:
        raise BadInput(f"{path} is not a readable TSV ({type(e).__name__}); {_FIX}") from None
    if not any(line.strip() for line in lines):
        raise BadInput(f"{path} is empty: a cut download? {_FIX}")
    header = [c.strip() for c in lines[0].split("\t")]
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise BadInput(
            f"{path} is not an MTG-Jamendo split TSV: its header has no {', '.join(missing)} "
            f"column (expected {' '.join(COLUMNS)}); {_FIX}"
        )
    at = {c: header.index(c) for c in COLUMNS}
    fixed = 1 + max(i for c, i in at.items() if c != "TAGS")
    rows = []
    for n, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = [x.strip() for x in line.split("\t")]
        if len(fields) < fixed:
            raise BadInput(
                f"{path} line {n} has {len(fields)} field(s), fewer than the {fixed} before "
                f"TAGS (a cut or edited row?); {_FIX}"
            )
        tags = [x for i, x in enumerate(fields) if i == at["TAGS"] or i >= len(header)]
        genres = [t[len(GENRE_PREFIX) :] for t in tags if t.startswith(GENRE_PREFIX)]
        where = f"{path} line {n}"
        audio = _audio_path(audio_dir, fields[at["PATH"]], where)
        rows.append(
            (fields[at["TRACK_ID"]], fields[at["ARTIST_ID"]], audio, tuple(dict.fromkeys(genres)))
        )
    if not rows:
        raise BadInput(f"{path} lists no tracks (only a header): a cut download? {_FIX}")
    return rows


def read_selection(
    splits_dir: Path, split: int, audio_dir: Path, labels: str = "top-multi"
) -> Selection:
    """The tracks of MTG-Jamendo split ``split`` (see the module docstring).

    Args:
        splits_dir: the folder holding split-0/ .. split-4/.
        split: which split, 0..4.
        audio_dir: the audio folder (holding 00/ .. 99/) the TSVs' PATH is relative to.
        labels: "top-multi" or "all": multi-label on every genre tag; "top":
            single-label on the tracks with exactly one genre tag.

    Returns:
        The Selection: track_id, split, path, artist and labels (a sorted tuple of
        indices; multi) or genre and label (single); labels sorted by name.
    """
    folder = _split_dir(splits_dir, split)
    audio_dir = Path(audio_dir)
    rows, first_seen = [], {}
    for part, name in FILES.items():
        path = tsv_path(splits_dir, split, name)
        for track_id, artist, audio, genres in read_tsv(path, audio_dir):
            if track_id in first_seen:
                raise BadInput(
                    f"track {track_id} is listed twice (in {first_seen[track_id]} and "
                    f"{path.name}); {_FIX}"
                )
            first_seen[track_id] = path.name
            rows.append((track_id, part, audio, artist, genres))
    tracks = pd.DataFrame(rows, columns=["track_id", "split", "path", "artist", "genres"])
    n_genres = tracks["genres"].map(len)
    skipped = {"no_genre": int((n_genres == 0).sum())}
    multi = labels != "top"
    warnings = []
    if multi:
        tracks = tracks[n_genres > 0]
    else:
        several = int((n_genres > 1).sum())
        skipped["several_genres"] = several
        tracks = tracks[n_genres == 1]
        if several:
            warnings.append(
                f"--labels top leaves out the {several} tracks with several genre tags "
                f"(keeps {len(tracks)} with exactly one); --labels top-multi gives the "
                "benchmark's multi-label task on every track"
            )
    names = sorted({g for gs in tracks["genres"] for g in gs})
    where = f"split-{split} of {splits_dir}"
    if not (tracks["split"] == "training").any():
        what, fix = (
            ("a genre--- tag", _FIX)
            if multi
            else ("exactly one genre tag", "pass --labels top-multi")
        )
        raise BadInput(f"{where} has no training track with {what}; {fix}")
    if len(names) < 2:
        fix = "pass --splits-dir of the full splits" if multi else "pass --labels top-multi"
        raise BadInput(
            f"{where} has {len(names)} genre(s) {'' if multi else 'on single-genre tracks '}"
            f"({', '.join(names)}); a classifier needs two or more: {fix}"
        )
    index = {g: i for i, g in enumerate(names)}
    if multi:
        tracks = tracks.assign(
            labels=tracks["genres"].map(lambda gs: tuple(sorted(index[g] for g in gs)))
        )
        columns = ["track_id", "split", "labels", "path", "artist"]
    else:
        genre = tracks["genres"].str[0]
        tracks = tracks.assign(genre=genre, label=genre.map(index).astype("int64"))
        columns = ["track_id", "split", "genre", "label", "path", "artist"]
    return Selection(
        tracks=sort_tracks(tracks[columns].reset_index(drop=True)),
        labels=names,
        dataset="jamendo",
        split_scheme=f"MTG-Jamendo split-{split}",
        task="multi" if multi else "single",
        skipped={k: v for k, v in skipped.items() if v},
        source={"audio_dir": str(audio_dir), "splits_dir": str(folder)},
        warnings=warnings,
    )


def selection(opts: PreprocessOptions) -> Selection:
    """`read_selection` for preprocess's options (--splits-dir, --split; no folds)."""
    if opts.splits_dir is None:
        raise BadInput(
            "--dataset jamendo needs --splits-dir pointing at mtg-jamendo-dataset's "
            "data/splits/ (holding split-0/ .. split-4/)"
        )
    no_folds(opts, "MTG-Jamendo has its own splits: choose one with --split 0..4")
    return read_selection(opts.splits_dir, opts.split, opts.audio_dir, opts.labels)
