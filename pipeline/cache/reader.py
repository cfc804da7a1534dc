"""Reading a cache: open and validate it, index a split, read frames through memmaps.

    open_cache   manifest + tracks.csv + every shard's small arrays, checked (`Cache`)
    split_index  where every track of one split lies: shard, first frame, length, label
    FrameStore   float16 frames of those shards, memmapped lazily per process

`open_cache` refuses, with a one-line `BadInput`, a cache that is missing, unfinished,
or damaged in a way visible without reading the frames: absent or truncated shards,
shard paths outside the cache, shards whose header, checksum record or labels disagree
with the manifest. `pipeline.cache.verify` reads the frames too.

Shards are opened with h5py once, in the opening process, to read their index; frames
are only ever read through numpy memmaps, opened lazily in each process (no h5py
handle crosses a fork).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.cache.layout import (
    MANIFEST,
    REPAIR_FIX,
    TRACKS,
    Manifest,
    shard_path,
    track_columns,
    tracks_fingerprint,
)
from pipeline.cache.shards import ShardError, ShardIndex, read_shard
from pipeline.errors import BadInput


@dataclass
class Cache:
    """An opened, validated cache: manifest, per-track table, shard indexes by name."""

    root: Path
    manifest: Manifest
    tracks: pd.DataFrame  # tracks.csv
    shards: dict[str, ShardIndex]

    @property
    def labels(self) -> list[str]:
        """The label names, in the order of the model's outputs (the manifest's)."""
        return self.manifest.labels

    @property
    def feature_config(self) -> dict:
        """The feature settings the frames were computed with (the manifest's)."""
        return self.manifest.feature_config

    @property
    def fingerprint(self) -> str:
        """The tracks' fingerprint: the manifest's, else computed from tracks.csv."""
        return self.manifest.tracks_fingerprint or tracks_fingerprint(self.tracks)

    def split(self, name: str) -> pd.DataFrame:
        """The rows of tracks.csv in split ``name`` (maybe none)."""
        return self.tracks[self.tracks["split"] == name]


def open_cache(path: str | os.PathLike, *, check_shards: bool = True) -> Cache:
    """Open a finished cache for reading; BadInput naming the fix when it is not usable."""
    root = Path(path)
    if not root.is_dir():
        raise BadInput(
            f"cache {root} does not exist; create it with `mrnet preprocess --out {root}`"
        )
    if not (root / MANIFEST).is_file():
        raise BadInput(
            f"{root} has no {MANIFEST}: not a finished cache; run `mrnet preprocess --out {root}`"
        )
    manifest = Manifest.read(root)
    if manifest.status != "complete":
        raise BadInput(
            f"cache {root} is unfinished; rerun the same `mrnet preprocess` command to complete it"
        )
    tracks = _read_tracks(root, manifest)
    names = [s["name"] for s in manifest.shards]
    for name in names:
        shard_path(root, name, f"{root / MANIFEST}")
    stray = sorted(set(tracks["shard"]) - set(names))
    if stray:
        shard_path(root, stray[0], f"{root / TRACKS}")  # outside the cache: says so
        raise BadInput(
            f"{root / TRACKS} names shard {stray[0]!r}, which {MANIFEST} does not list; "
            "rerun the same `mrnet preprocess` command"
        )
    shards: dict[str, ShardIndex] = {}
    if check_shards:
        fix = REPAIR_FIX.format(root=root)
        for s in manifest.shards:
            try:
                idx = read_shard(root / s["name"])
            except ShardError as e:
                raise BadInput(f"{e}; {fix}") from e
            problem = shard_header_problem(idx, s, manifest)
            if problem:
                raise BadInput(f"shard {root / s['name']} {problem}; {fix}")
            shards[s["name"]] = idx
    return Cache(root=root, manifest=manifest, tracks=tracks, shards=shards)


INTEGER_IDS = ("fma", "melon")  # datasets whose track ids are integers; the rest: names


def _read_tracks(root: Path, manifest: Manifest) -> pd.DataFrame:
    id_type = "int64" if manifest.dataset in INTEGER_IDS else str
    dtypes = {
        "track_id": id_type,
        "split": str,
        "shard": str,
        "genre": str,
        "labels": str,
        "artist": str,
        "title": str,
    }
    try:
        tracks = pd.read_csv(root / TRACKS, dtype=dtypes, keep_default_na=False)
    except (OSError, ValueError) as e:
        raise BadInput(f"{root / TRACKS} is unreadable ({e}); rerun `mrnet preprocess`") from e
    missing = [c for c in track_columns(manifest.task) if c not in tracks.columns]
    if missing:
        raise BadInput(
            f"{root / TRACKS} lacks columns {', '.join(missing)}; rerun `mrnet preprocess`"
        )
    return tracks


def shard_header_problem(idx: ShardIndex, entry: dict, manifest: Manifest) -> str | None:
    """What is wrong with a shard's small arrays and attributes given its manifest entry
    (None when nothing is): feature config, split, checksum record, label range."""
    if idx.feature_config != manifest.feature_config:
        return "was made with other features than its cache"
    if idx.split != entry.get("split"):
        return f"holds split {idx.split!r}, not {entry.get('split')!r}"
    if entry.get("checksum") and idx.checksum != entry["checksum"]:
        return "is not the file its cache recorded (checksum record differs)"
    n = len(manifest.labels)
    if idx.multi != manifest.multi_label:
        kind = "multi" if idx.multi else "single"
        return f"holds {kind}-label labels in a {manifest.task}-label cache"
    if idx.multi:
        if idx.label.shape[1] != n or (len(idx.label) and idx.label.max() > 1):
            return f"holds a label matrix that is not 0/1 over {n} labels"
    elif len(idx.label) and (int(np.min(idx.label)) < 0 or int(np.max(idx.label)) >= n):
        return f"holds labels outside 0..{n - 1}"
    return None


@dataclass(frozen=True)
class SplitIndex:
    """The tracks of one split, in tracks.csv order. Arrays are [n] unless noted."""

    shards: tuple[ShardIndex, ...]
    shard: np.ndarray  # int64: index into ``shards``
    start: np.ndarray  # int64: first frame of the track in its shard's ``mel``
    length: np.ndarray  # int64: frames (> 0)
    label: np.ndarray  # int64 label index; multi-label: uint8 [n, n_labels] 0/1
    track_id: np.ndarray  # the tracks' ids: int64 (FMA), or str (object) for names
    n_mels: int
    row: np.ndarray | None = None  # int64: the track's row in its shard's small arrays

    def __len__(self) -> int:
        return len(self.track_id)

    def subset(self, rows: np.ndarray) -> SplitIndex:
        """The tracks ``rows`` (int64 [k], positions in this index), same shards."""
        return dataclasses.replace(
            self,
            shard=self.shard[rows],
            start=self.start[rows],
            length=self.length[rows],
            label=self.label[rows],
            track_id=self.track_id[rows],
            row=None if self.row is None else self.row[rows],
        )

    def share(self, rank: int, world: int) -> SplitIndex:
        """Rank ``rank``'s disjoint share of ``world`` (tracks rank, rank + world, ...);
        the shares of ranks 0 .. world-1 together hold every track once."""
        return self.subset(np.arange(rank, len(self), world, dtype=np.int64))


def split_index(cache: Cache, split: str) -> SplitIndex:
    """Index ``split`` of an opened cache; labels and lengths come from the shards, and
    must agree with tracks.csv."""
    rows = cache.split(split)
    names = sorted(set(rows["shard"]))
    shards = tuple(cache.shards[n] for n in names)
    pos = {n: i for i, n in enumerate(names)}
    shard = rows["shard"].map(pos).to_numpy(np.int64)
    row = rows["row"].to_numpy(np.int64)
    start = np.zeros(len(rows), np.int64)
    end = np.zeros(len(rows), np.int64)
    multi = cache.manifest.multi_label
    n_labels = len(cache.labels)
    label = np.zeros((len(rows), n_labels), np.uint8) if multi else np.zeros(len(rows), np.int64)
    names = any(s.track_id.dtype == object for s in shards)
    track_id = np.empty(len(rows), object) if names else np.zeros(len(rows), np.int64)
    for k, s in enumerate(shards):
        sel = shard == k
        if len(row[sel]) and row[sel].max() >= len(s):
            raise BadInput(f"tracks.csv points past the end of {s.path}; rerun `mrnet preprocess`")
        start[sel] = s.offsets[row[sel]]
        end[sel] = s.offsets[row[sel] + 1]
        label[sel] = s.label[row[sel]]
        track_id[sel] = s.track_id[row[sel]]
    listed = rows["track_id"].to_numpy(object if names else np.int64)
    same_labels = np.array_equal(label, _listed_labels(rows, cache))
    if not np.array_equal(track_id, listed) or not same_labels:
        raise BadInput(
            f"tracks.csv of {cache.root} disagrees with its shards; run `mrnet verify "
            f"{cache.root}` and rerun the same `mrnet preprocess` command"
        )
    return SplitIndex(
        shards=shards,
        shard=shard,
        start=start,
        length=end - start,
        label=label,
        track_id=track_id,
        n_mels=int(cache.feature_config["n_mels"]),
        row=row,
    )


def _listed_labels(rows: pd.DataFrame, cache: Cache) -> np.ndarray:
    """The labels tracks.csv gives ``rows``: int64 [n], or uint8 [n, n_labels] for the
    "|"-joined names of a multi-label cache."""
    if not cache.manifest.multi_label:
        return rows["label"].to_numpy(np.int64)
    dummies = rows["labels"].fillna("").astype(str).str.get_dummies("|")
    unknown = sorted(set(dummies.columns) - set(cache.labels))
    if unknown:
        raise BadInput(
            f"tracks.csv of {cache.root} names label {unknown[0]!r}, which its "
            "manifest does not list; rerun `mrnet preprocess`"
        )
    return dummies.reindex(columns=list(cache.labels), fill_value=0).to_numpy(np.uint8)


class FrameStore:
    """Read-only float16 [frames, n_mels] arrays of a split's shards, memmapped lazily.

    The maps are (re)opened on first use in each process, so a store can be pickled
    into DataLoader workers; no h5py handle is ever involved.
    """

    def __init__(self, shards: tuple[ShardIndex, ...]) -> None:
        self.shards = shards
        self._pid: int | None = None
        self._mels: list[np.ndarray] = []

    def __getstate__(self) -> dict:
        return {"shards": self.shards, "_pid": None, "_mels": []}

    def mels(self) -> list[np.ndarray]:
        """Each shard's float16 [frames, n_mels] memmap, (re)opened once per process."""
        if self._pid != os.getpid():
            # plain ndarray views: slicing a np.memmap subclass costs microseconds per item
            self._mels = [s.memmap().view(np.ndarray) for s in self.shards]
            self._pid = os.getpid()
        return self._mels

    def track(self, index: SplitIndex, t: int) -> np.ndarray:
        """Float16 [frames, n_mels]: all frames of track ``t`` of ``index`` (a copy)."""
        a, n = int(index.start[t]), int(index.length[t])
        return np.array(self.mels()[index.shard[t]][a : a + n])

    def read(
        self, index: SplitIndex, tracks: np.ndarray, starts: np.ndarray, frames: int
    ) -> np.ndarray:
        """Float16 [len(tracks), frames, n_mels]: each track's frames from its start on.

        A crop that runs past a track's end wraps around to its start.

        Args:
            index: the split the tracks belong to.
            tracks: int [b]: track positions in ``index``.
            starts: int [b]: each crop's first frame within its track.
            frames: crop length (frames).

        Returns:
            Float16 [b, frames, n_mels], a copy.
        """
        mels = self.mels()
        out = np.empty((len(tracks), frames, index.n_mels), np.float16)
        for i, (t, s) in enumerate(zip(tracks.tolist(), starts.tolist())):
            mel = mels[index.shard[t]]
            a, n = int(index.start[t]), int(index.length[t])
            if s + frames <= n:
                out[i] = mel[a + s : a + s + frames]
            else:
                out[i] = mel[a + (s + np.arange(frames)) % n]
        return out
