"""Where tracks come from: each source turns a dataset on disk into a `Selection`.

    fma     FMA: tracks.csv / genres.csv, subsets, official splits, genre_top labels
    gtzan   GTZAN in either download layout: the filtered split or k-fold
    folder  any folder of label folders, with or without train/ valid/ test/
    melon   Melon Playlist Dataset: precomputed mel arrays, song_meta.json, artist-grouped split
    jamendo MTG-Jamendo autotagging_genre: split TSVs, genre tags, full-length MP3s
    manifest_csv  any CSV manifest (--dataset csv): path, label(s), split, group
    split   split assignments (stratified k-fold, 80/10/10, grouped), pure functions of a seed

`DATASETS` names them for the CLI; `selection` turns preprocess's options into a
`Selection` through the dataset's module.

A `Selection` is all that preprocess needs from a source: one row per example track
(id, split, label, audio path, and what reports show), the label names, and how many
tracks were left out and why. Everything after the cache works the same for every
source.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.errors import BadInput
from pipeline.settings import Registry

if TYPE_CHECKING:
    import pandas as pd

    from pipeline.features import FeatureConfig
    from pipeline.options import PreprocessOptions

SPLITS = ("training", "validation", "test")
# each dataset is one module here with ``selection(opts: PreprocessOptions) -> Selection``
DATASETS = Registry(
    "dataset",
    {
        "fma": "FMA: tracks.csv / genres.csv, subsets, the official split",
        "gtzan": "GTZAN in either download layout: the filtered split, or k-fold",
        "folder": "one sub-folder of audio per label, any nesting",
        "melon": "Melon Playlist Dataset: arena_mel/ arrays (no audio), song_meta.json",
        "jamendo": "MTG-Jamendo autotagging_genre: full-length MP3s, split TSVs (multi-label)",
        "csv": "any CSV manifest: path, label(s), optional split and group",
    },
    {
        name: f"pipeline.sources.{name}:selection"
        for name in ("fma", "gtzan", "folder", "melon", "jamendo")
    }
    | {"csv": "pipeline.sources.manifest_csv:selection"},
)
ARRAY_SCALES = Registry(
    "array scale",
    {
        "auto": "decided from the data (negative values or a narrow range: logarithmic)",
        "log": "already logarithmic (dB or log-compressed): stored as they are",
        "linear": "power or amplitude: stored as log(x + 1e-6), mrnet's log scale",
    },
)
SUBSETS = Registry("FMA subset", {"small": "8,000 tracks", "medium": "25,000", "large": "106,574"})
LABEL_SCHEMES = Registry(
    "label scheme",
    {
        "top": "one top-level genre per track (single-label)",
        "top-multi": "every top-level genre of a track (multi-label)",
        "all": "every genre of a track, by title (multi-label)",
    },
)


@dataclass
class Selection:
    """The example tracks of a dataset, in a deterministic order.

    ``tracks``: track_id, split (one of SPLITS), path (str, the audio file), the labels
    (``task`` "single": label, an int64 index into ``labels``, and genre, its name;
    "multi": labels, a sorted tuple of indices), and optionally artist / title; rows
    sorted by (SPLITS order, track_id). ``labels``: label names in label order.
    ``skipped``: tracks that are not examples, by reason (e.g. no_genre, no_split).
    ``dropped_labels``: names left out for having too few training tracks.
    """

    tracks: pd.DataFrame
    labels: list[str]
    dataset: str
    subset: str = ""
    split_scheme: str = "official"
    task: str = "single"
    skipped: dict[str, int] = field(default_factory=dict)
    dropped_labels: list[str] = field(default_factory=list)
    source: dict[str, str] = field(default_factory=dict)  # paths, for people
    warnings: list[str] = field(default_factory=list)  # odd but usable input, said once
    features: FeatureConfig | None = None  # precomputed frames (Melon): what they are

    def __len__(self) -> int:
        return len(self.tracks)

    @property
    def multi_label(self) -> bool:
        """Whether a track has a set of labels (task "multi") rather than one."""
        return self.task == "multi"

    def counts(self) -> pd.DataFrame:
        """Tracks per label (rows, label order) and split (columns, SPLITS order); a
        multi-label track counts once for each of its labels."""
        import pandas as pd

        if self.multi_label:
            rows = self.tracks[["split", "labels"]].explode("labels")
            names, splits = rows["labels"].map(self.labels.__getitem__), rows["split"]
        else:
            names = pd.Series(self.labels, dtype=str).iloc[self.tracks["label"]]
            splits = self.tracks["split"]
        table = pd.crosstab(names.to_numpy(), splits.to_numpy())
        return table.reindex(index=self.labels, columns=list(SPLITS), fill_value=0).astype("int64")

    def missing_labels(self) -> str | None:
        """Which labels have no track in which (non-empty) split, in one line; None when
        every label is in every split that has tracks."""
        counts = self.counts()
        parts = [
            f"{split}: {', '.join(counts.index[counts[split] == 0])}"
            for split in SPLITS
            if counts[split].sum() and (counts[split] == 0).any()
        ]
        return "labels without tracks in a split (" + "; ".join(parts) + ")" if parts else None


def sort_tracks(tracks: pd.DataFrame) -> pd.DataFrame:
    """Rows in plan order: SPLITS order, then track id."""
    import pandas as pd

    rank = tracks["split"].map({s: i for i, s in enumerate(SPLITS)})
    order = pd.DataFrame({"rank": rank, "id": tracks["track_id"]}).sort_values(["rank", "id"])
    return tracks.loc[order.index].reset_index(drop=True)


def unique_ids(tracks: pd.DataFrame, what: str = "track") -> pd.DataFrame:
    """``tracks`` sorted by track_id; BadInput naming two files that give one id."""
    twice = tracks["track_id"][tracks["track_id"].duplicated()]
    if len(twice):
        dup = tracks[tracks["track_id"] == twice.iloc[0]]["path"].tolist()
        raise BadInput(f"two files for {what} {twice.iloc[0]} ({', '.join(dup)}); keep one")
    return tracks.sort_values("track_id").reset_index(drop=True)


def selection(opts: PreprocessOptions) -> Selection:
    """The selection of ``opts.dataset`` (its module checks the options it reads), with
    the splits of ``opts.split_file`` when one is given."""
    chosen = DATASETS.get(opts.dataset, "--dataset")(opts)
    return apply_split_file(chosen, opts.split_file) if opts.split_file else chosen


SPLIT_NAMES = {"train": "training", "valid": "validation", "val": "validation"} | {
    s: s for s in SPLITS
}


def apply_split_file(chosen: Selection, path: Path) -> Selection:
    """``chosen`` with the splits a CSV (columns track_id, split) assigns; tracks it does
    not list are skipped (``not_in_split_file``). BadInput for an unreadable file, a
    missing column, an unknown split name or a track listed twice."""
    import pandas as pd

    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise BadInput(
            f"cannot read --split-file {path} ({e}); pass a CSV with columns track_id,split"
        ) from None
    missing = [c for c in ("track_id", "split") if c not in table]
    if missing:
        raise BadInput(
            f"--split-file {path} has no column {', '.join(missing)}; it needs track_id,split"
        )
    twice = table["track_id"][table["track_id"].duplicated()]
    if len(twice):
        raise BadInput(f"--split-file {path} lists track {twice.iloc[0]} twice; keep one row")
    names = table["split"].str.strip().str.lower().map(SPLIT_NAMES)
    if names.isna().any():
        bad = table["split"][names.isna()].iloc[0]
        raise BadInput(
            f"--split-file {path}: unknown split {bad!r}; use training, validation or test"
        )
    split_of = dict(zip(table["track_id"].str.strip(), names))
    keys = chosen.tracks["track_id"].astype(str)
    listed = keys.isin(split_of)
    tracks = chosen.tracks[listed].copy()
    tracks["split"] = keys[listed].map(split_of).to_numpy()
    skipped = dict(chosen.skipped)
    if (~listed).sum():
        skipped["not_in_split_file"] = int((~listed).sum())
    unknown = len(split_of) - int(listed.sum())
    warnings = list(chosen.warnings)
    if unknown:
        warnings.append(f"{unknown} track ids of --split-file {path} are not in the dataset")
    if not len(tracks):
        raise BadInput(
            f"--split-file {path} lists none of the dataset's track ids; check "
            "that its track_id column uses the ids of tracks.csv"
        )
    return dataclasses.replace(
        chosen,
        tracks=sort_tracks(tracks),
        split_scheme=f"split file {path}",
        skipped=skipped,
        warnings=warnings,
    )


def single_label_only(opts: PreprocessOptions) -> None:
    """Refuse a multi-label scheme for a dataset with one label per track."""
    if opts.labels != "top":
        raise BadInput(
            f"--labels {opts.labels} is for datasets with several genres per track (fma); "
            f"{opts.dataset} datasets have one label per track"
        )


def no_folds(opts: PreprocessOptions, why: str) -> None:
    """Refuse --folds/--fold (BadInput ending with ``why``) for a dataset without folds."""
    if opts.folds is not None or opts.fold is not None:
        raise BadInput(f"--folds/--fold are for gtzan and folder datasets; {why}")
