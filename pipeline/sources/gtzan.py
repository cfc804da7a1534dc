"""GTZAN: 1,000 clips of 30 s, 10 genres x 100, in either download layout.

- Original archive: ``genres/<genre>/<genre>.000NN.au`` (22,050 Hz mono 16-bit Sun .au);
  Kaggle's copy: ``Data/genres_original/<genre>/<genre>.000NN.wav`` (its jazz.00054.wav
  does not decode: it becomes a failure like any such file). --audio-dir may name the
  genre folders' parent or the folder above it.
- Labels are the genre folders' names (sorted); track ids are the file stems
  (``blues.00029``).
- Default split: the fault-filtered split of the literature (443 training / 197
  validation / 290 test), read from the lists torchaudio ships
  (``torchaudio.datasets.gtzan.filtered_train/valid/test``); files outside them are not
  selected and are counted as ``not_in_filtered_split``. ``folds``/``fold``: stratified
  cross-validation over every file instead (pipeline.sources.split).
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from pipeline.audio import audio_files, unsupported_note
from pipeline.errors import BadInput
from pipeline.sources import Selection, single_label_only, sort_tracks, unique_ids
from pipeline.sources.split import fold_splits, stratified_folds

if TYPE_CHECKING:
    from pipeline.options import PreprocessOptions

GENRES = (
    "blues",
    "classical",
    "country",
    "disco",
    "hiphop",
    "jazz",
    "metal",
    "pop",
    "reggae",
    "rock",
)
LAYOUTS = (".", "genres", "genres_original", "Data/genres_original")
_FIX = "pass --audio-dir pointing at genres/ (original archive) or Data/genres_original/ (Kaggle)"


def find_root(audio_dir: Path) -> Path:
    """The folder holding the genre folders: ``audio_dir`` itself, or its genres/,
    genres_original/ or Data/genres_original/."""
    for rel in LAYOUTS:
        root = Path(audio_dir) / rel
        found = [g for g in GENRES if (root / g).is_dir()]
        if len(found) >= 2:
            return root
        if len(found) == 1:
            raise BadInput(
                f"GTZAN folder {root} holds only one genre folder ({found[0]}); a classifier "
                f"needs two or more of {', '.join(GENRES)}"
            )
    raise BadInput(f"no GTZAN genre folders ({', '.join(GENRES[:3])}, ...) in {audio_dir}; {_FIX}")


def filtered_split() -> dict[str, str]:
    """Track id -> split of the fault-filtered split, from torchaudio's lists. The module
    is parsed, not imported: importing it would load torch into this process."""
    spec = importlib.util.find_spec("torchaudio")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "gtzan.py"
    names = {"filtered_train": "training", "filtered_valid": "validation", "filtered_test": "test"}
    split: dict[str, str] = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = getattr(node.targets[0], "id", None)
            if target in names:
                split.update(dict.fromkeys(ast.literal_eval(node.value), names[target]))
    if len(split) != 930:
        raise RuntimeError(f"torchaudio's GTZAN lists in {path} have {len(split)} names, not 930")
    return split


def read_selection(
    audio_dir: Path, folds: int | None = None, fold: int | None = None, seed: int = 0
) -> Selection:
    """The GTZAN tracks under ``audio_dir`` with the filtered split, or a fold of
    stratified cross-validation.

    Args:
        audio_dir: the folder holding the genre folders, or one of `find_root`'s parents.
        folds: stratified cross-validation with this many folds instead of the filtered
            split (which skips the tracks it does not list).
        fold: the test fold (with ``folds``); the next one is the validation split.
        seed: the seed of the folds (with ``folds``).

    Returns:
        A single-label Selection (track_id, split, genre, label, path).
    """
    root = find_root(audio_dir)
    labels = sorted(g for g in GENRES if (root / g).is_dir())
    rows, skipped, unreadable = [], {}, []
    for label, genre in enumerate(labels):
        files, unsupported = audio_files(root / genre, recursive=False)
        if unsupported:
            skipped["unsupported_format"] = skipped.get("unsupported_format", 0) + len(unsupported)
            unreadable += unsupported
        if not files:
            raise BadInput(f"GTZAN genre folder {root / genre} holds no audio files; {_FIX}")
        rows += [(p.stem, genre, label, str(p)) for p in files]
    tracks = pd.DataFrame(rows, columns=["track_id", "genre", "label", "path"])
    tracks = unique_ids(tracks, "GTZAN track")
    if folds is not None:
        fold_of = stratified_folds(tracks["label"].tolist(), folds, seed)
        tracks["split"] = fold_splits(fold_of, fold, folds)
        scheme = f"{folds}-fold cross-validation, fold {fold}, seed {seed}"
    else:
        listed = filtered_split()
        tracks["split"] = tracks["track_id"].map(listed)
        outside = int(tracks["split"].isna().sum())
        if outside:
            skipped["not_in_filtered_split"] = outside
        tracks = tracks[tracks["split"].notna()]
        scheme = "filtered (torchaudio's lists)"
    return Selection(
        tracks=sort_tracks(tracks[["track_id", "split", "genre", "label", "path"]]),
        labels=labels,
        dataset="gtzan",
        split_scheme=scheme,
        skipped=skipped,
        source={"audio_dir": str(root)},
        warnings=[unsupported_note(unreadable)] if unreadable else [],
    )


def selection(opts: PreprocessOptions) -> Selection:
    """`read_selection` for preprocess's options."""
    single_label_only(opts)
    fold = (opts.fold or 0) if opts.folds else None
    return read_selection(opts.audio_dir, opts.folds, fold, opts.seed)
