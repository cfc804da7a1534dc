"""Writing a cache: the one way a cache comes to be (preprocess, tests and benchmarks).

    with CacheWriter(root, manifest) as w:      # lock, manifest "in_progress", shards/
        w.shard(name, split).add(...) / commit  # here, or workers write root/name alike
        w.finish(names, paths=..., extra=...)   # tracks.csv, failures.csv, manifest "complete"

A shard file that exists is final (pipeline.cache.shards); `finish` indexes the shards
into tracks.csv and failures.csv and completes the manifest last, so a reader sees a
cache either unfinished (refused) or whole. `write_cache` builds a whole cache from
in-memory tracks (tests, benchmarks).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline import __version__
from pipeline.atomic import remove_temps, write_atomic, writing
from pipeline.cache.layout import (
    EXTRA_COLUMNS,
    FAILURE_COLUMNS,
    FAILURES,
    SHARDS_DIR,
    TRACKS,
    Manifest,
    dir_bytes,
    track_columns,
    tracks_fingerprint,
)
from pipeline.cache.shards import ShardWriter, read_shard
from pipeline.lock import DirLock


class CacheWriter:
    """Holds ``root``'s lock while a run writes the cache described by ``manifest``."""

    def __init__(self, root: Path, manifest: Manifest) -> None:
        self.root, self.manifest = Path(root), manifest
        self._lock = DirLock(self.root, "cache")
        self.started = time.perf_counter()

    @property
    def token(self) -> str:
        """The lock's token: workers check it before they rename a shard into place."""
        return self._lock.token

    @property
    def stale_pid(self) -> int | None:
        """The pid of an interrupted run whose lock this one took over."""
        return self._lock.stale_pid

    def __enter__(self) -> CacheWriter:
        with writing(self.root / SHARDS_DIR):
            (self.root / SHARDS_DIR).mkdir(parents=True, exist_ok=True)
        self._lock.__enter__()
        try:
            self.manifest.status = "in_progress"
            self.manifest.tool_version = __version__
            self.manifest.write(self.root)
            remove_temps(self.root)  # left by a killed run: never trusted
            remove_temps(self.root / SHARDS_DIR)
        except BaseException:
            self._lock.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._lock.__exit__(*exc)

    def shard(self, name: str, split: str) -> ShardWriter:
        """A writer for shard ``name`` (relative to the cache) of ``split``."""
        m = self.manifest
        n_labels = len(m.labels) if m.multi_label else None
        return ShardWriter(self.root / name, m.feature_config, split, n_labels)

    def finish(
        self,
        names: list[str],
        paths: dict | None = None,
        extra: pd.DataFrame | None = None,
        processed: int = 0,
    ) -> Manifest:
        """Index the shards ``names`` into tracks.csv and failures.csv; complete the manifest.

        The manifest (status "complete") is written last: the cache is whole from then on.

        Args:
            names: the shards (relative to the cache), in plan order.
            paths: track id -> audio path (failures.csv's path column).
            extra: columns of EXTRA_COLUMNS (artist, title) indexed by track id.
            processed: tracks this run decoded (for its tracks/s).

        Returns:
            The completed manifest (splits, shards, fingerprint, summary).
        """
        m = self.manifest
        parts, failed, shard_rows, hours = [], [], [], 0.0
        splits: dict[str, dict] = {}
        label_names = np.array(m.labels, dtype=object)
        for name in names:
            idx = read_shard(self.root / name)
            part = {"track_id": idx.track_id, "split": idx.split}
            if idx.multi:  # the names of the track's labels, "|"-joined
                part["labels"] = _joined(label_names, idx.label)
            else:
                part["genre"], part["label"] = label_names[idx.label], idx.label.astype(int)
            part.update(shard=name, row=np.arange(len(idx)), n_frames=np.diff(idx.offsets))
            parts.append(pd.DataFrame(part))
            failed.append(
                pd.DataFrame({"track_id": idx.failed_track_id, "reason": idx.failed_reason})
            )
            hours += float(idx.seconds.sum()) / 3600
            shard_rows.append(
                {
                    "name": name,
                    "split": idx.split,
                    "tracks": len(idx),
                    "failed": len(idx.failed_track_id),
                    "frames": int(idx.mel_shape[0]),
                    "checksum": idx.checksum,
                }
            )
            s = splits.setdefault(idx.split, {"tracks": 0, "failed": 0, "shards": 0, "frames": 0})
            s["tracks"] += len(idx)
            s["failed"] += len(idx.failed_track_id)
            s["shards"] += 1
            s["frames"] += int(idx.mel_shape[0])
        columns = track_columns(m.task)
        tracks = (
            pd.concat(parts, ignore_index=True)[columns] if parts else pd.DataFrame(columns=columns)
        )
        if extra is not None:
            tracks = tracks.join(extra[[c for c in EXTRA_COLUMNS if c in extra]], on="track_id")
        fails = (
            pd.concat(failed, ignore_index=True)
            if failed
            else pd.DataFrame(columns=["track_id", "reason"])
        )
        where = pd.Series(paths or {}, dtype=object)
        fails["path"] = where.reindex(fails["track_id"]).fillna("").astype(str).to_numpy()
        fails = fails[FAILURE_COLUMNS].sort_values("track_id", kind="stable")
        write_atomic(self.root / TRACKS, tracks.to_csv(index=False))
        write_atomic(self.root / FAILURES, fails.to_csv(index=False))
        elapsed = time.perf_counter() - self.started
        m.splits, m.shards = splits, shard_rows
        m.tracks_fingerprint = tracks_fingerprint(tracks)
        m.summary = {
            "cached": len(tracks),
            "failed": len(fails),
            "failed_by_reason": dict(sorted(Counter(fails["reason"]).items())),
            "skipped": dict(m.skipped),
            "hours_of_audio": round(hours, 4),
            "cache_bytes": dir_bytes(self.root),
            "last_run": {
                "tracks_processed": processed,
                "seconds": round(elapsed, 2),
                "tracks_per_s": round(processed / elapsed, 2) if elapsed > 0 else 0.0,
            },
        }
        m.status = "complete"  # written last: the cache is whole from here on
        m.write(self.root)
        return m


@dataclass(frozen=True)
class Track:
    """One track to put in a cache built by `write_cache`: mel float [frames, n_mels]."""

    track_id: int | str
    split: str
    label: int | tuple[int, ...]  # a tuple of label indices in a multi-label cache
    mel: np.ndarray
    seconds: float = 0.0


def write_cache(
    root: Path,
    feature_config: dict,
    labels: list[str],
    tracks: Iterable[Track],
    shard_size: int = 128,
    **manifest: object,
) -> Manifest:
    """A complete cache at ``root`` from in-memory tracks (tests, benchmarks).

    Each split's tracks go, in the order given, into shards of ``shard_size`` tracks
    (SHARDS_DIR/<split>-00000.h5, ...).

    Args:
        root: the cache folder.
        feature_config: the feature settings recorded in the manifest.
        labels: the label names (indices in ``Track.label`` refer to them).
        tracks: the tracks, each with its split.
        shard_size: tracks per shard.
        manifest: further Manifest fields (e.g. the task).

    Returns:
        The completed manifest.
    """
    m = Manifest(feature_config=feature_config, labels=list(labels), plan={}, source={}, **manifest)
    names: list[str] = []
    with CacheWriter(root, m) as w:
        open_writers: dict[str, tuple[ShardWriter, int]] = {}
        counts: Counter = Counter()
        for t in tracks:
            sw, n = open_writers.get(t.split, (None, 0))
            if sw is None or n == shard_size:
                if sw is not None:
                    sw.commit()
                name = f"{SHARDS_DIR}/{t.split}-{counts[t.split]:05d}.h5"
                counts[t.split] += 1
                names.append(name)
                sw, n = w.shard(name, t.split), 0
            sw.add(t.track_id, t.label, t.mel, t.seconds)
            open_writers[t.split] = (sw, n + 1)
        for sw, _ in open_writers.values():
            sw.commit()
        return w.finish(names)


def _joined(names: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per row of a 0/1 matrix [n, L], the names of its labels "|"-joined (a loop over
    the L labels, not the n tracks)."""
    out = np.full(len(labels), "", dtype=object)
    for j, name in enumerate(names):
        on = labels[:, j].astype(bool)
        out[on] = np.where(out[on] == "", name, out[on] + "|" + name)
    return out
