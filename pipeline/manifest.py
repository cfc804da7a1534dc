"""The cache directory as data: manifest.json, tracks.csv, failures.csv, shards/.

    cache/<name>/
      manifest.json   what was computed and where it lives (see `Manifest`)
      tracks.csv      track_id, split, genre, label, shard, row, n_frames
      failures.csv    track_id, path, reason
      shards/<split>-00000.h5 ...
      .lock           held while a run writes

`open_cache` is what every reader (train, evaluate, info) calls: it refuses, with a
`BadInput`, a cache that is missing, unfinished or whose shards are absent/truncated.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from pipeline.errors import BadInput
from pipeline.shards import ShardError, ShardIndex, read_shard

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
TRACKS = "tracks.csv"
FAILURES = "failures.csv"
SHARDS_DIR = "shards"
TRACK_COLUMNS = ["track_id", "split", "genre", "label", "shard", "row", "n_frames"]
FAILURE_COLUMNS = ["track_id", "path", "reason"]


@dataclass
class Manifest:
    """manifest.json. ``status`` is "in_progress" from a run's start, "complete" at its end.

    ``plan`` holds every argument that decides the cache's content (feature config,
    subset, shard size, ...); a rerun with a different plan into the same cache is refused.
    """

    feature_config: dict
    subset: str
    genres: list[str]  # label order
    plan: dict
    source: dict  # audio_dir, metadata_dir
    status: str = "in_progress"
    splits: dict = field(default_factory=dict)  # split -> {tracks, failed, shards, frames}
    shards: list[dict] = field(default_factory=list)  # {name, split, tracks, failed, frames}
    skipped_no_genre: int = 0
    summary: dict = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    tool_version: str = ""

    def write(self, cache_dir: Path) -> None:
        write_atomic(cache_dir / MANIFEST, json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def read(cls, cache_dir: Path) -> Manifest:
        path = cache_dir / MANIFEST
        try:
            d = json.loads(path.read_text())
            return cls(**d)
        except (OSError, ValueError, TypeError) as e:
            raise BadInput(
                f"{path} is unreadable ({e}); rerun `mrnet preprocess` into a new --out"
            ) from e


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def dir_bytes(path: Path) -> int:
    """Bytes of all files under ``path``."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


@dataclass
class Cache:
    """An opened, validated cache: manifest, per-track table, shard indexes by name."""

    root: Path
    manifest: Manifest
    tracks: pd.DataFrame  # TRACK_COLUMNS
    shards: dict[str, ShardIndex]

    @property
    def genres(self) -> list[str]:
        return self.manifest.genres

    @property
    def feature_config(self) -> dict:
        return self.manifest.feature_config

    def split(self, name: str) -> pd.DataFrame:
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
    try:
        tracks = pd.read_csv(root / TRACKS, dtype={"genre": str, "split": str, "shard": str})
    except (OSError, ValueError) as e:
        raise BadInput(f"{root / TRACKS} is unreadable ({e}); rerun `mrnet preprocess`") from e
    if list(tracks.columns) != TRACK_COLUMNS:
        raise BadInput(f"{root / TRACKS} has unexpected columns; rerun `mrnet preprocess`")
    shards: dict[str, ShardIndex] = {}
    if check_shards:
        for s in manifest.shards:
            try:
                shards[s["name"]] = read_shard(root / s["name"])
            except ShardError as e:
                raise BadInput(
                    f"{e}; rerun the same `mrnet preprocess` command to rebuild it"
                ) from e
    return Cache(root=root, manifest=manifest, tracks=tracks, shards=shards)
