"""The cache directory's layout and its manifest: names, columns, path rules, fingerprint.

cache/<name>/
  manifest.json   what was computed and where it lives (`Manifest`)
  tracks.csv      track_id, split, genre, label (single-label) or labels (multi-label),
                  shard, row, n_frames, + artist, title when the source has them
  failures.csv    FAILURE_COLUMNS: one row per track that could not be cached
  shards/<split>-00000.h5 ...   see pipeline.cache.shards
  .lock           held while a run writes
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import pandas as pd

from pipeline.atomic import write_atomic
from pipeline.cache.shards import FORMAT_VERSION
from pipeline.errors import BadInput

MANIFEST = "manifest.json"
TRACKS = "tracks.csv"
FAILURES = "failures.csv"
SHARDS_DIR = "shards"
# tracks.csv: the label columns of the task follow "split"; artist and title may follow all
LABEL_COLUMNS = {"single": ["genre", "label"], "multi": ["labels"]}
PLACE_COLUMNS = ["shard", "row", "n_frames"]
EXTRA_COLUMNS = ["artist", "title"]  # when the source has them (FMA)
FAILURE_COLUMNS = ["track_id", "path", "reason"]
REPAIR_FIX = "run `mrnet verify {root} --repair`, then rerun the same `mrnet preprocess` command"


@dataclass
class Manifest:
    """manifest.json. ``status`` is "in_progress" from a run's start, "complete" at its end.

    ``plan`` holds every argument that decides the cache's content (feature config,
    selection, shard size, ...); a rerun with a different plan into the same cache is
    refused. ``shards``: {name, split, tracks, failed, frames, checksum} per shard file.
    ``skipped``: tracks of the source that are not examples, by reason (no_genre, ...).
    ``tracks_fingerprint``: `tracks_fingerprint` of tracks.csv (which tracks, labels, lengths).
    """

    feature_config: dict
    labels: list[str]  # label names, in label order
    plan: dict
    source: dict  # where the audio and metadata came from (paths), for people
    dataset: str = "fma"
    subset: str = ""  # FMA's subset; "" for other datasets
    split_scheme: str = "official"
    task: str = "single"  # single: one label per track; multi: a set of labels
    dropped_labels: list[str] = field(default_factory=list)  # too few training tracks
    status: str = "in_progress"
    splits: dict = field(default_factory=dict)  # split -> {tracks, failed, shards, frames}
    shards: list[dict] = field(default_factory=list)
    skipped: dict = field(default_factory=dict)
    tracks_fingerprint: str = ""
    summary: dict = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    tool_version: str = ""

    @property
    def multi_label(self) -> bool:
        """Labels are stored as 0/1 rows (uint8 [n, L]) rather than indices (int64 [n])."""
        return self.task == "multi"

    def write(self, cache_dir: Path) -> None:
        """Write CACHE/manifest.json atomically."""
        write_atomic(cache_dir / MANIFEST, json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def read(cls, cache_dir: Path) -> Manifest:
        """Read CACHE/manifest.json (format 1 upgraded, unknown keys dropped); BadInput if bad."""
        path = Path(cache_dir) / MANIFEST
        try:
            d = json.loads(path.read_text())
            if not isinstance(d, dict):
                raise ValueError("not a JSON object")
            if d.get("format_version", 1) == 1:  # mrnet 0.1
                d["labels"] = d.pop("genres")
                d["skipped"] = {"no_genre": d.pop("skipped_no_genre", 0)}
            known = {f.name for f in fields(cls)}
            return cls(**{k: v for k, v in d.items() if k in known})
        except (OSError, ValueError, TypeError, KeyError) as e:
            raise BadInput(
                f"{path} is unreadable ({str(e)[:80]}); rerun `mrnet preprocess` into a new --out"
            ) from e


def track_columns(task: str) -> list[str]:
    """The columns of tracks.csv every cache of ``task`` has, in order."""
    return ["track_id", "split", *LABEL_COLUMNS[task], *PLACE_COLUMNS]


def dir_bytes(path: Path) -> int:
    """Bytes of all files under ``path``."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def tracks_fingerprint(tracks: pd.DataFrame) -> str:
    """Hash of which tracks a cache holds, in which split, with which labels and length
    (16 hex digits). Checkpoints record it: `--resume` refuses a cache rebuilt with others."""
    labels = "label" if "label" in tracks.columns else "labels"
    cols = tracks[["track_id", "split", labels, "n_frames"]]
    return hashlib.sha256(cols.to_csv(index=False).encode()).hexdigest()[:16]


def shard_path(root: Path, name: str, where: str) -> Path:
    """``root / name`` when it lies inside the cache's shards/ (symlinks resolved), else
    BadInput: a manifest or tracks.csv is never followed outside the cache."""
    base = Path(root).resolve()
    p = (Path(root) / str(name)).resolve()
    if not p.is_relative_to(base / SHARDS_DIR):
        raise BadInput(
            f"{where} names shard {name!r}, which lies outside cache {root}/{SHARDS_DIR}: the "
            "cache is damaged or was edited; rebuild it with `mrnet preprocess` into a new --out"
        )
    return p
