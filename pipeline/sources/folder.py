"""A folder of label folders: ``DIR/<label>/**/*.{mp3,wav,flac,ogg,au,aiff}``.

- Labels are the sub-folder names (any Unicode), sorted; nested folders below a label
  folder are allowed. Track ids are the paths relative to DIR without suffix,
  '/'-separated (``techno/set1/track07``).
- If DIR holds ``train/``, ``valid/`` (or ``validation/``) and ``test/``, each holding
  label folders, those are the splits (and the track ids start with them); otherwise a
  stratified 80/10/10 split, a pure function of the sorted relative paths and the seed.
- Files of formats no decoder here reads (.m4a, ...) and files directly in a folder that
  is not a label folder are counted as skipped, not selected.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from pipeline.audio import AUDIO_SUFFIXES, audio_files, unsupported_note
from pipeline.errors import BadInput
from pipeline.sources import SPLITS, Selection, single_label_only, sort_tracks, unique_ids
from pipeline.sources.split import fold_splits, ratio_splits, stratified_folds

if TYPE_CHECKING:
    from pipeline.options import PreprocessOptions

SPLIT_FOLDERS = {
    "train": "training",
    "valid": "validation",
    "validation": "validation",
    "test": "test",
}


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _loose_files(folder: Path) -> int:
    return sum(1 for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def split_layout(audio_dir: Path) -> dict[str, Path] | None:
    """split -> folder when ``audio_dir`` holds train/, valid/ (or validation/) and test/;
    None when it holds none of them; BadInput for a partial layout."""
    present = {p.name: p for p in _subfolders(audio_dir) if p.name in SPLIT_FOLDERS}
    if not present:
        return None
    layout = {SPLIT_FOLDERS[name]: p for name, p in sorted(present.items())}
    missing = [s for s in SPLITS if s not in layout]
    if missing:
        names = {"training": "train/", "validation": "valid/", "test": "test/"}
        raise BadInput(
            f"{audio_dir} has split folders {', '.join(sorted(present))} but no "
            f"{', '.join(names[s] for s in missing)}; add them (each holding label folders) "
            "or move the label folders up for an automatic 80/10/10 split"
        )
    return layout


def read_selection(
    audio_dir: Path, seed: int = 0, folds: int | None = None, fold: int | None = None
) -> Selection:
    """The tracks of the label folders under ``audio_dir`` (see the module docstring).

    Args:
        audio_dir: the folder of label folders (or of train/ valid/ test/ folders).
        seed: the seed of the stratified split (80/10/10 or folds).
        folds: stratified cross-validation with this many folds instead of 80/10/10;
            not used when ``audio_dir`` has split folders.
        fold: the test fold (with ``folds``); the next one is the validation split.

    Returns:
        A single-label Selection (track_id, split, genre, label, path), labels sorted.
    """
    audio_dir = Path(audio_dir)
    layout = split_layout(audio_dir)
    parts = layout.items() if layout else [(None, audio_dir)]
    rows, skipped, labels_by_split, unreadable = [], {}, {}, []
    for split, base in parts:
        skipped["no_label"] = skipped.get("no_label", 0) + _loose_files(base)
        folders = _subfolders(base)
        labels_by_split[split] = {f.name for f in folders}
        for folder in folders:
            files, unsupported = audio_files(folder)
            skipped["unsupported_format"] = skipped.get("unsupported_format", 0) + len(unsupported)
            unreadable += unsupported
            if not files:
                raise BadInput(
                    f"label folder {folder} holds no audio files ({', '.join(AUDIO_SUFFIXES)}); "
                    "add some or remove the folder"
                )
            for p in files:
                track_id = p.relative_to(audio_dir).with_suffix("").as_posix()
                rows.append((track_id, split, folder.name, str(p)))
    labels = sorted({r[2] for r in rows})
    where = f"{audio_dir} (or its train/ valid/ test/)" if layout else str(audio_dir)
    if len(labels) < 2:
        raise BadInput(
            f"{where} holds {len(labels)} label folder(s); a classifier needs two or more, "
            "one folder of audio files per label"
        )
    tracks = pd.DataFrame(rows, columns=["track_id", "split", "genre", "path"])
    tracks = unique_ids(tracks, "track")
    label_of = {g: i for i, g in enumerate(labels)}
    tracks["label"] = tracks["genre"].map(label_of).astype("int64")
    warnings = []
    if layout:
        scheme = "folders (train/ valid/ test/)"
        for label in sorted(labels_by_split["training"]):
            if label not in labels_by_split["validation"] | labels_by_split["test"]:
                warnings.append(
                    f"label {label!r} has tracks in train/ but none in valid/ or test/: it "
                    "is trained but never validated or tested"
                )
    elif folds is not None:
        fold_of = stratified_folds(tracks["label"].tolist(), folds, seed)
        tracks["split"] = fold_splits(fold_of, fold, folds)
        scheme = f"{folds}-fold cross-validation, fold {fold}, seed {seed}"
    else:
        tracks["split"] = ratio_splits(tracks["label"].tolist(), seed)
        scheme = f"stratified 80/10/10, seed {seed}"
    return Selection(
        tracks=sort_tracks(tracks[["track_id", "split", "genre", "label", "path"]]),
        labels=labels,
        dataset="folder",
        split_scheme=scheme,
        skipped={k: v for k, v in skipped.items() if v},
        source={"audio_dir": str(audio_dir)},
        warnings=warnings + ([unsupported_note(unreadable)] if unreadable else []),
    )


def selection(opts: PreprocessOptions) -> Selection:
    """`read_selection` for preprocess's options."""
    single_label_only(opts)
    if opts.folds and split_layout(opts.audio_dir):
        raise BadInput(
            f"{opts.audio_dir} has train/ valid/ test/ folders, which are its split; "
            "drop --folds or move the label folders up"
        )
    fold = (opts.fold or 0) if opts.folds else None
    return read_selection(opts.audio_dir, opts.seed, opts.folds, fold)
