"""FMA metadata: read tracks.csv / genres.csv, pick a subset and its official split.

Facts relied on (github.com/mdeff/fma, ``utils.load`` and ``creation.ipynb``):

- ``fma_metadata/tracks.csv`` has a two-level column header (``album``, ``artist``,
  ``set``, ``track`` groups, columns sorted) plus an index-name line ``track_id``; it
  reads with ``pd.read_csv(path, index_col=0, header=[0, 1])``.
- ``('set', 'subset')`` is small/medium/large and the subsets nest, small ⊂ medium ⊂
  large, so it is an ordered categorical and ``subset <= 'medium'`` selects medium.
- ``('set', 'split')`` is the official training/validation/test split (by artist).
- ``('track', 'genre_top')`` is the label; it is empty for about half of the tracks
  (no genre, or genres under several top-level genres). Those are skipped and counted.
- Audio of track 2 is ``AUDIO_DIR/000/000002.mp3``; any audio folder (fma_small/ ...
  fma_large/) works, a larger one serves the smaller subsets too.
"""

from __future__ import annotations

import csv
import itertools
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from pipeline.errors import BadInput
from pipeline.sources import SPLITS, SUBSETS, Selection, no_folds

if TYPE_CHECKING:
    from pipeline.options import PreprocessOptions

SUBSET_DTYPE = pd.CategoricalDtype(categories=list(SUBSETS.names()), ordered=True)
REQUIRED_COLUMNS = (("set", "subset"), ("set", "split"), ("track", "genre_top"))
TRACKS_CSV = "tracks.csv"
GENRES_CSV = "genres.csv"

_FIX = "pass --metadata-dir pointing at fma_metadata/ (from fma_metadata.zip)"


def audio_path(audio_dir: Path, track_id: int) -> Path:
    """``audio_dir/{tid:06d}[:3]/{tid:06d}.mp3``: track 2 -> ``000/000002.mp3``."""
    tid = int(track_id)
    if tid < 0:
        raise ValueError(f"track id must be >= 0, got {tid}")
    name = f"{tid:06d}"
    return Path(audio_dir) / name[:3] / f"{name}.mp3"


def audio_paths(audio_dir: Path, track_ids: pd.Series) -> np.ndarray:
    """`audio_path` of many tracks at once, as str (one vectorised step for 100,000)."""
    names = pd.Series(track_ids, dtype="int64").astype(str).str.zfill(6)
    return (f"{Path(audio_dir)}/" + names.str[:3] + "/" + names + ".mp3").to_numpy(object)


def _tracks_csv(metadata_dir: Path) -> Path:
    metadata_dir = Path(metadata_dir)
    if not metadata_dir.exists():
        raise BadInput(f"metadata dir {metadata_dir} does not exist; {_FIX}")
    if not metadata_dir.is_dir():
        fix = f"pass --metadata-dir {metadata_dir.parent}" if metadata_dir.suffix else _FIX
        raise BadInput(f"metadata dir {metadata_dir} is a file, not a folder; {fix}")
    path = metadata_dir / TRACKS_CSV
    if not path.is_file():
        nested = metadata_dir / "fma_metadata" / TRACKS_CSV
        hint = f"pass --metadata-dir {nested.parent}" if nested.is_file() else _FIX
        raise BadInput(f"no {TRACKS_CSV} in metadata dir {metadata_dir}; {hint}")
    return path


def _read_header(path: Path) -> tuple[list[tuple[str, str]], int]:
    """Column pairs (group, name) of a two-level CSV header, and the header line count.

    The third line is FMA's index-name line (``track_id,,,...``) when it holds a
    non-numeric first field and nothing else; pandas writes it, hand-made files may not.
    """
    try:
        with open(path, encoding="utf-8", newline="") as f:
            lines = list(itertools.islice(csv.reader(f), 3))
    except (UnicodeDecodeError, csv.Error, OSError) as e:
        raise BadInput(f"{path} is not a readable CSV ({type(e).__name__}); {_FIX}") from None
    if len(lines) < 2 or len(lines[0]) != len(lines[1]) or len(lines[0]) < 2:
        return [], 0
    pairs = list(zip(lines[0][1:], lines[1][1:]))
    n_header = 2
    if len(lines) == 3:
        first, *rest = lines[2]
        if first.strip() and not first.strip().lstrip("-").isdigit() and not any(rest):
            n_header = 3
    return pairs, n_header


def load_tracks(
    metadata_dir: Path,
    columns: tuple[tuple[str, str], ...] = REQUIRED_COLUMNS,
) -> pd.DataFrame:
    """Read ``metadata_dir/tracks.csv``, only ``columns`` (REQUIRED_COLUMNS are always read).

    Returns a frame indexed by ``track_id`` (int64) with two-level columns as in FMA;
    ``('set', 'subset')`` is an ordered categorical small < medium < large, other
    columns are strings as stored (no date or list parsing). Only the wanted columns
    are converted: a 250 MB, 106,574-track file loads in about 0.5 s (vs 1 s and more
    for a full ``read_csv``).
    Raises BadInput (one line) when the folder or file is missing or not FMA's.
    """
    path = _tracks_csv(metadata_dir)
    pairs, n_header = _read_header(path)
    wanted = list(dict.fromkeys([*REQUIRED_COLUMNS, *columns]))
    missing = [c for c in wanted if c not in pairs]
    if missing:
        names = ", ".join(".".join(c) for c in missing)
        raise BadInput(f"{path} is not FMA's tracks.csv (missing columns {names}); {_FIX}")
    positions = [1 + pairs.index(c) for c in wanted]  # first occurrence; 0 is track_id
    last = len(pairs)  # the last column: NaN in the last row when that row was cut short
    usecols = sorted({0, *positions, last})
    try:
        raw = pd.read_csv(
            path,
            header=None,
            skiprows=n_header,
            usecols=usecols,
            dtype={p: "str" for p in usecols if p},
            encoding="utf-8",
            engine="c",
        )
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError, OSError) as e:
        if "EOF inside string" in str(e):
            raise BadInput(_truncated(path)) from None
        reason = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
        raise BadInput(f"{path} is not a readable FMA tracks.csv ({reason}); {_FIX}") from None
    if len(raw) and pd.isna(raw[last].iloc[-1]) and not _ends_with_newline(path):
        raise BadInput(_truncated(path))
    ids = pd.to_numeric(raw[0], errors="coerce")
    if ids.isna().any() or (ids % 1 != 0).any() or (ids < 0).any():
        raise BadInput(f"{path} has track ids that are not integers; {_FIX}")
    frame = raw[positions]
    frame.columns = pd.MultiIndex.from_tuples(wanted)
    frame.index = pd.Index(ids.astype("int64"), name="track_id")
    if not frame.index.is_unique:
        raise BadInput(f"{path} lists some track ids twice; {_FIX}")
    _check_values(path, frame[("set", "subset")], SUBSETS.names(), "set.subset")
    frame[("set", "subset")] = frame[("set", "subset")].astype(SUBSET_DTYPE)
    return frame


def _truncated(path: Path) -> str:
    return (
        f"{path.name} ends mid-row: truncated download? ({path}); download fma_metadata.zip "
        "again and unzip it over the old folder"
    )


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() == 0:
            return True
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def _check_values(path: Path, column: pd.Series, allowed: tuple[str, ...], name: str) -> None:
    bad = sorted(set(column.dropna().unique()) - set(allowed))
    if bad:
        shown = ", ".join(repr(b) for b in bad[:3])
        raise BadInput(
            f"{path} has {name} values {shown} outside {'/'.join(allowed)}; "
            f"it is not FMA's tracks.csv, {_FIX}"
        )


def select(tracks: pd.DataFrame, subset: str) -> Selection:
    """Labelled tracks of ``subset`` (nested: medium includes small) with official splits.

    ``tracks`` is ``load_tracks``'s frame or the full ``pd.read_csv(path, index_col=0,
    header=[0, 1])``. Returns tracks with columns track_id (int64), split, genre, label;
    tracks without ``genre_top`` (no_genre) or without a known split (no_split) are
    skipped and counted.
    """
    SUBSETS.check(subset, "--subset")
    missing = [c for c in REQUIRED_COLUMNS if c not in tracks.columns]
    if missing:
        names = ", ".join(".".join(c) for c in missing)
        raise BadInput(f"track table is not FMA's (missing columns {names}); {_FIX}")
    level = tracks[("set", "subset")]
    if not (isinstance(level.dtype, pd.CategoricalDtype) and level.dtype == SUBSET_DTYPE):
        level = level.astype("object").astype(SUBSET_DTYPE)
    part = tracks.loc[(level <= subset).to_numpy(dtype=bool)]

    genre = part[("track", "genre_top")].astype("object")
    genre = genre.where(genre.notna(), "").astype(str).str.strip()
    has_genre = (genre != "").to_numpy()
    split = part[("set", "split")].astype("object")
    has_split = split.isin(SPLITS).to_numpy()
    keep = has_genre & has_split

    genres = sorted(set(genre[keep]))
    label_of = {g: i for i, g in enumerate(genres)}
    order = {s: i for i, s in enumerate(SPLITS)}
    out = pd.DataFrame(
        {
            "track_id": part.index.to_numpy()[keep].astype(np.int64),
            "split": split[keep].astype(str).to_numpy(),
            "genre": genre[keep].to_numpy(),
        }
    )
    out["split"] = out["split"].astype(str)
    out["genre"] = out["genre"].astype(str)
    out["label"] = out["genre"].map(label_of).astype(np.int64)
    rank = out["split"].map(order).to_numpy()
    idx = np.lexsort((out["track_id"].to_numpy(), rank))
    out = out.iloc[idx].reset_index(drop=True)
    skipped = {"no_genre": int((~has_genre).sum()), "no_split": int((has_genre & ~has_split).sum())}
    return Selection(tracks=out, labels=genres, dataset="fma", subset=subset, skipped=skipped)


def load_genres(metadata_dir: Path) -> pd.DataFrame | None:
    """``genres.csv`` indexed by genre_id: #tracks, parent (0: root), title, top_level.

    Returns None when the file is absent (it is optional); BadInput when it is not FMA's.
    """
    path = Path(metadata_dir) / GENRES_CSV
    if not path.is_file():
        return None
    try:
        genres = pd.read_csv(path, index_col=0)
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError, OSError) as e:
        raise BadInput(f"{path} is not a readable CSV ({type(e).__name__}); {_FIX}") from None
    missing = [c for c in ("parent", "title", "top_level") if c not in genres.columns]
    if missing or genres.index.name != "genre_id":
        raise BadInput(
            f"{path} is not FMA's genres.csv (no column {missing or 'genre_id'}); {_FIX}"
        )
    return genres


def check_genre_titles(tracks: pd.DataFrame, genres: pd.DataFrame, path: Path) -> None:
    """Every ``genre_top`` of ``tracks`` must be a title of genres.csv: a value that is not
    one (a name cut by a truncated download, "Fol") would become a class of its own."""
    used = tracks[("track", "genre_top")].dropna().astype(str).str.strip()
    unknown = sorted(set(used[used != ""]) - set(genres["title"].astype(str)))
    if unknown:
        shown = ", ".join(repr(u) for u in unknown[:3])
        raise BadInput(
            f"{path} has genre_top {shown} that genres.csv does not list: a damaged or "
            "edited tracks.csv? download fma_metadata.zip again"
        )


_LIST = r"\[\s*(?:\d+\s*(?:,\s*\d+\s*)*)?\]"  # a list literal of genre ids: "[21, 811]"


def genre_lists(column: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """(list of int genre ids per track, bool mask of malformed literals) for a
    ``track.genres`` / ``track.genres_all`` column of list literals like "[21, 811]"."""
    text = column.astype("object").where(column.notna(), "").astype(str).str.strip()
    ok = text.str.fullmatch(_LIST).to_numpy(dtype=bool)
    ids = text.where(ok, "[]").str.findall(r"\d+").map(lambda xs: [int(x) for x in xs])
    return ids, ~ok


def select_multi(
    tracks: pd.DataFrame, subset: str, genres: pd.DataFrame, mode: str, min_label_tracks: int = 50
) -> Selection:
    """Multi-label tracks of ``subset`` from ``track.genres_all`` and genres.csv.

    ``top-multi``: a track's labels are the top-level genres of its genres_all (the
    titles of their ``top_level``). ``all``: every genre of genres_all, by title; labels
    with fewer than ``min_label_tracks`` training tracks are dropped (listed in
    ``Selection.dropped_labels``). Tracks with an empty genres_all (no_genre), a
    malformed one (malformed_genres), an id genres.csv does not know (unknown_genre), no
    label left (no_label_left) or no known split (no_split) are skipped and counted.

    Args:
        tracks: FMA's tracks.csv (two-level columns), indexed by track id.
        subset: "small", "medium", "large" or "full"; the tracks of it and smaller ones.
        genres: genres.csv, indexed by genre id (title, top_level).
        mode: "top-multi" or "all".
        min_label_tracks: ``all``: fewest training tracks a label needs to be kept.

    Returns:
        A multi-label Selection: tracks with columns track_id, split, labels (sorted
        tuple of label indices), in split then track id order; labels sorted by name.
    """
    level = tracks[("set", "subset")]
    if not (isinstance(level.dtype, pd.CategoricalDtype) and level.dtype == SUBSET_DTYPE):
        level = level.astype("object").astype(SUBSET_DTYPE)
    part = tracks.loc[(level <= subset).to_numpy(dtype=bool)]
    ids, malformed = genre_lists(part[("track", "genres_all")])
    if len(part) and malformed.all():
        raise BadInput(
            f"every track.genres_all of subset {subset} in tracks.csv is malformed (not a list "
            "of genre ids like [21, 811]): a damaged tracks.csv? download fma_metadata.zip again"
        )
    split = part[("set", "split")].astype("object")
    has_split = split.isin(SPLITS).to_numpy()
    known = set(genres.index.astype(int))
    unknown = ids.map(lambda xs: any(x not in known for x in xs)).to_numpy(dtype=bool)
    empty = ids.map(len).to_numpy() == 0
    if mode == "top-multi":
        top = genres["top_level"].astype(int).to_dict()
        names = genres["title"].astype(str).to_dict()
        sets = ids.map(lambda xs: {names[top[x]] for x in xs if x in known})
    else:
        names = _unique_titles(genres)
        sets = ids.map(lambda xs: {names[x] for x in xs if x in known})
    usable = ~malformed & ~empty & ~unknown
    keep = usable & has_split
    skipped = {
        "malformed_genres": int(malformed.sum()),
        "no_genre": int((~malformed & empty).sum()),
        "unknown_genre": int((~malformed & ~empty & unknown).sum()),
        "no_split": int((usable & ~has_split).sum()),
    }
    out = pd.DataFrame(
        {
            "track_id": part.index.to_numpy()[keep].astype(np.int64),
            "split": split[keep].astype(str).to_numpy(),
            "names": sets[keep].to_numpy(),
        }
    )
    dropped: list[str] = []
    if mode == "all":
        training = out[out["split"] == "training"]["names"]
        counts = pd.Series([n for s in training for n in s]).value_counts()
        all_names = {n for s in out["names"] for n in s}
        dropped = sorted(n for n in all_names if counts.get(n, 0) < min_label_tracks)
        out["names"] = out["names"].map(lambda s: s - set(dropped))
        left = out["names"].map(len) > 0
        skipped["no_label_left"] = int((~left).sum())
        out = out[left]
    labels = sorted({n for s in out["names"] for n in s})
    if mode == "all" and len(labels) < 2:
        raise BadInput(
            f"--labels all with --min-label-tracks {min_label_tracks} leaves {len(labels)} "
            f"label(s) of subset {subset}; a classifier needs two or more: lower "
            "--min-label-tracks"
        )
    index = {n: i for i, n in enumerate(labels)}
    out = out.assign(labels=out["names"].map(lambda s: tuple(sorted(index[n] for n in s))))
    rank = out["split"].map({s: i for i, s in enumerate(SPLITS)}).to_numpy()
    out = out.iloc[np.lexsort((out["track_id"].to_numpy(), rank))].reset_index(drop=True)
    return Selection(
        tracks=out[["track_id", "split", "labels"]],
        labels=labels,
        dataset="fma",
        subset=subset,
        task="multi",
        skipped={k: v for k, v in skipped.items() if v},
        dropped_labels=dropped,
    )


def _unique_titles(genres: pd.DataFrame) -> dict[int, str]:
    """genre id -> title, with "title (id)" for titles that several genres share."""
    titles = genres["title"].astype(str)
    shared = set(titles[titles.duplicated(keep=False)])
    return {int(i): f"{t} ({i})" if t in shared else t for i, t in titles.items()}


def read_selection(
    metadata_dir: Path,
    subset: str,
    audio_dir: Path | None = None,
    labels: str = "top",
    min_label_tracks: int = 50,
) -> Selection:
    """The selection of ``subset`` for ``labels``, read from FMA's metadata.

    Args:
        metadata_dir: the fma_metadata folder (tracks.csv, genres.csv).
        subset: "small", "medium", "large" or "full".
        audio_dir: when given, each track's audio path and its artist and title (shown in
            reports) are added.
        labels: "top": `select`, single-label on genre_top, checked against genres.csv
            when that file is present; "top-multi" or "all": `select_multi`, which needs
            genres.csv.
        min_label_tracks: ``all``: fewest training tracks a label needs to be kept.

    Returns:
        The Selection.
    """
    columns = (("artist", "name"), ("track", "title")) if audio_dir is not None else ()
    if labels != "top":
        columns = (*columns, ("track", "genres_all"))
    tracks = load_tracks(metadata_dir, columns=(*REQUIRED_COLUMNS, *columns))
    genres = load_genres(metadata_dir)
    if labels == "top":
        if genres is not None:
            check_genre_titles(tracks, genres, Path(metadata_dir) / TRACKS_CSV)
        sel = select(tracks, subset)
    elif genres is None:
        raise BadInput(
            f"--labels {labels} needs {Path(metadata_dir) / GENRES_CSV} (the genre hierarchy); "
            "unzip all of fma_metadata.zip there"
        )
    else:
        sel = select_multi(tracks, subset, genres, labels, min_label_tracks)
    if audio_dir is not None:
        ids = sel.tracks["track_id"]
        sel.tracks["path"] = audio_paths(audio_dir, ids)
        sel.tracks["artist"] = tracks[("artist", "name")].reindex(ids).fillna("").to_numpy()
        sel.tracks["title"] = tracks[("track", "title")].reindex(ids).fillna("").to_numpy()
        sel.source = {"audio_dir": str(audio_dir), "metadata_dir": str(metadata_dir)}
    return sel


def selection(opts: PreprocessOptions) -> Selection:
    """`read_selection` for preprocess's options (FMA needs --metadata-dir, has its
    official split and no folds)."""
    if opts.metadata_dir is None:
        raise BadInput(
            "--dataset fma needs --metadata-dir pointing at fma_metadata/ (from fma_metadata.zip)"
        )
    no_folds(opts, "FMA has its official split")
    sel = read_selection(
        opts.metadata_dir, opts.subset, opts.audio_dir, opts.labels, opts.min_label_tracks
    )
    if sel.tracks.empty:
        skipped = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in sel.skipped.items())
        raise BadInput(
            f"subset {opts.subset} has no labelled tracks with an official split in "
            f"{opts.metadata_dir} (skipped: {skipped})"
        )
    return sel
