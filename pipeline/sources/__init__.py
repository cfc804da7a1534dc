"""Where tracks come from: each source turns a dataset on disk into a `Selection`.

    fma     FMA: tracks.csv / genres.csv, subsets, official splits, genre_top labels

A `Selection` is all that preprocess needs from a source: one row per example track
(id, split, label, audio path, and what reports show), the label names, and how many
tracks were left out and why. Everything after the cache works the same for every
source.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

SPLITS = ("training", "validation", "test")


@dataclass
class Selection:
    """The example tracks of a dataset, in a deterministic order.

    ``tracks``: track_id, split (one of SPLITS), label (int64 index into ``labels``),
    path (str, the audio file), and optionally genre / artist / title; rows sorted by
    (SPLITS order, track_id). ``labels``: label names in label order. ``skipped``: tracks
    that are not examples, by reason (e.g. no_genre, no_split).
    """

    tracks: pd.DataFrame
    labels: list[str]
    dataset: str
    subset: str = ""
    split_scheme: str = "official"
    skipped: dict[str, int] = field(default_factory=dict)
    source: dict[str, str] = field(default_factory=dict)  # paths, for people

    def __len__(self) -> int:
        return len(self.tracks)

    def counts(self) -> pd.DataFrame:
        """Tracks per label (rows, label order) and split (columns, SPLITS order)."""
        names = pd.Series(self.labels, dtype=str).iloc[self.tracks["label"]].to_numpy()
        table = pd.crosstab(names, self.tracks["split"].to_numpy())
        return table.reindex(index=self.labels, columns=list(SPLITS), fill_value=0).astype(
            "int64"
        )
