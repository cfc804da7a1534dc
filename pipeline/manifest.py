"""The cache directory as data: manifest.json, tracks.csv, failures.csv, shards/.

    cache/<name>/
      manifest.json   what was computed and where it lives (see `Manifest`)
      tracks.csv      track_id, split, genre, label, shard, row, n_frames
      failures.csv    track_id, path, reason
      shards/<split>-00000.h5 ...
      .lock           held while a run writes

`open_cache` is what every reader (train, evaluate, info) calls: it refuses, with a
`BadInput`, a cache that is missing, unfinished, or damaged in a way visible without
reading the frames: absent or truncated shards, shard paths outside the cache, shards
whose header, checksum record or labels disagree with the manifest. `mrnet verify`
(pipeline.verify) reads the frames too.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.atomic import write_atomic
from pipeline.errors import BadInput
from pipeline.shards import FORMAT_VERSION, ShardError, ShardIndex, read_shard

MANIFEST = "manifest.json"
TRACKS = "tracks.csv"
FAILURES = "failures.csv"
SHARDS_DIR = "shards"
TRACK_COLUMNS = ["track_id", "split", "genre", "label", "shard", "row", "n_frames"]
FAILURE_COLUMNS = ["track_id", "path", "reason"]
REPAIR_FIX = "run `mrnet verify {root} --repair`, then rerun the same `mrnet preprocess` command"


@dataclass
class Manifest:
    """manifest.json. ``status`` is "in_progress" from a run's start, "complete" at its end.

    ``plan`` holds every argument that decides the cache's content (feature config,
    subset, shard size, ...); a rerun with a different plan into the same cache is refused.
    ``shards``: {name, split, tracks, failed, frames, checksum} per shard file.
    ``skipped``: tracks of the subset that are not examples, by reason (no_genre, no_split).
    ``tracks_fingerprint``: `tracks_fingerprint` of tracks.csv (which tracks, labels, lengths).
    """

    feature_config: dict
    subset: str
    genres: list[str]  # label order
    plan: dict
    source: dict  # audio_dir, metadata_dir
    status: str = "in_progress"
    splits: dict = field(default_factory=dict)  # split -> {tracks, failed, shards, frames}
    shards: list[dict] = field(default_factory=list)
    skipped: dict = field(default_factory=dict)
    tracks_fingerprint: str = ""
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
            if not isinstance(d, dict):
                raise ValueError("not a JSON object")
            if "skipped_no_genre" in d:  # format 1
                d.setdefault("skipped", {"no_genre": d.pop("skipped_no_genre")})
            known = {f.name for f in fields(cls)}
            return cls(**{k: v for k, v in d.items() if k in known})
        except (OSError, ValueError, TypeError) as e:
            raise BadInput(
                f"{path} is unreadable ({str(e)[:80]}); rerun `mrnet preprocess` into a new --out"
            ) from e


def dir_bytes(path: Path) -> int:
    """Bytes of all files under ``path``."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def tracks_fingerprint(tracks: pd.DataFrame) -> str:
    """Hash of which tracks a cache holds, in which split, with which label and length
    (16 hex digits). Checkpoints record it: `--resume` refuses a cache rebuilt with others."""
    cols = tracks[["track_id", "split", "label", "n_frames"]]
    return hashlib.sha256(cols.to_csv(index=False).encode()).hexdigest()[:16]


def shard_path(root: Path, name: str, where: str) -> Path:
    """``root / name`` when it lies inside the cache (symlinks resolved), else BadInput."""
    base = root.resolve()
    p = (root / str(name)).resolve()
    if not p.is_relative_to(base / SHARDS_DIR):
        raise BadInput(
            f"{where} names shard {name!r}, which lies outside cache {root}/{SHARDS_DIR}: the "
            "cache is damaged or was edited; rebuild it with `mrnet preprocess` into a new --out"
        )
    return p


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

    @property
    def fingerprint(self) -> str:
        return self.manifest.tracks_fingerprint or tracks_fingerprint(self.tracks)

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


def shard_header_problem(idx: ShardIndex, entry: dict, manifest: Manifest) -> str | None:
    """What is wrong with a shard's small arrays and attributes given its manifest entry
    (None when nothing is): feature config, split, checksum record, label range."""
    if idx.feature_config != manifest.feature_config:
        return "was made with other features than its cache"
    if idx.split != entry.get("split"):
        return f"holds split {idx.split!r}, not {entry.get('split')!r}"
    if entry.get("checksum") and idx.checksum != entry["checksum"]:
        return "is not the file its cache recorded (checksum record differs)"
    n = len(manifest.genres)
    if len(idx.label) and (int(np.min(idx.label)) < 0 or int(np.max(idx.label)) >= n):
        return f"holds labels outside 0..{n - 1}"
    return None
