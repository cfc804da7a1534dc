"""HDF5 shard schema: write a shard atomically, validate it, open it as a numpy memmap.

One shard file holds the log-mels of up to ``shard_size`` tracks of one split:

    mel       float16 [total_frames, n_mels]  contiguous, unfiltered (memmap-able)
    offsets   int64   [n + 1]   track i is mel[offsets[i]:offsets[i+1]]
    track_id  int64   [n]
    label     int16   [n]
    seconds   float32 [n]       decoded audio duration
    failed_track_id int64 [m], failed_reason str [m]   tracks of this shard not cached
    attrs: feature_config (JSON), split, format_version, complete=1 (written last)

A shard is written to ``<name>.partial-<pid>-<rand>`` and renamed into place once complete, so a
file at the final name is always whole. Readers open, read the small arrays and
close; the frames are then read through ``numpy.memmap`` (no h5py handle is shared
across processes).
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

FORMAT_VERSION = 1
PARTIAL_SUFFIX = ".partial"


class ShardError(Exception):
    """A shard file that is absent, truncated, incomplete or not of this schema."""


@dataclass
class ShardWriter:
    """Collects tracks in memory, then writes one shard atomically on ``commit``.

    Memory: the shard's float16 frames (shard_size * ~384 KB for 30-s clips at
    the default 50 frames/s x 128 mels).
    """

    path: Path
    feature_config: dict
    split: str
    _mels: list[np.ndarray] = field(default_factory=list)
    _ids: list[int] = field(default_factory=list)
    _labels: list[int] = field(default_factory=list)
    _seconds: list[float] = field(default_factory=list)
    _failed: list[tuple[int, str]] = field(default_factory=list)

    def add(self, track_id: int, label: int, mel: np.ndarray, seconds: float) -> None:
        """mel: [frames, n_mels], any float dtype; stored as float16."""
        n_mels = self.feature_config["n_mels"]
        if mel.ndim != 2 or mel.shape[1] != n_mels or mel.shape[0] == 0:
            raise ValueError(f"mel must be [frames>0, {n_mels}], got {mel.shape}")
        self._mels.append(mel.astype(np.float16))
        self._ids.append(int(track_id))
        self._labels.append(int(label))
        self._seconds.append(float(seconds))

    def fail(self, track_id: int, reason: str) -> None:
        self._failed.append((int(track_id), reason))

    def commit(self) -> None:
        """Write ``path.partial``, fsync, rename to ``path``."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Unique per writer: an orphaned worker of a killed run may still be writing.
        tag = f"{PARTIAL_SUFFIX}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp = self.path.with_name(self.path.name + tag)
        n_mels = self.feature_config["n_mels"]
        lengths = np.array([m.shape[0] for m in self._mels], dtype=np.int64)
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        with h5py.File(tmp, "w", libver="latest", track_order=False) as f:
            mel = f.create_dataset(
                "mel", shape=(int(offsets[-1]), n_mels), dtype=np.float16, track_times=False
            )
            for i, m in enumerate(self._mels):
                mel[offsets[i] : offsets[i + 1]] = m
            f.create_dataset("offsets", data=offsets, track_times=False)
            f.create_dataset("track_id", data=np.array(self._ids, np.int64), track_times=False)
            f.create_dataset("label", data=np.array(self._labels, np.int16), track_times=False)
            f.create_dataset("seconds", data=np.array(self._seconds, np.float32), track_times=False)
            f.create_dataset(
                "failed_track_id",
                data=np.array([t for t, _ in self._failed], np.int64),
                track_times=False,
            )
            f.create_dataset(
                "failed_reason",
                data=np.array([r for _, r in self._failed], dtype=h5py.string_dtype()),
                dtype=h5py.string_dtype(),
                track_times=False,
            )
            f.attrs["feature_config"] = json.dumps(self.feature_config, sort_keys=True)
            f.attrs["split"] = self.split
            f.attrs["format_version"] = FORMAT_VERSION
            f.flush()
            f.attrs["complete"] = 1
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)


@dataclass(frozen=True)
class ShardIndex:
    """The small arrays of a shard plus where its ``mel`` bytes lie in the file."""

    path: Path
    offsets: np.ndarray  # int64 [n + 1]
    track_id: np.ndarray  # int64 [n]
    label: np.ndarray  # int16 [n]
    seconds: np.ndarray  # float32 [n]
    failed_track_id: np.ndarray  # int64 [m]
    failed_reason: list[str]
    feature_config: dict
    split: str
    mel_shape: tuple[int, int]
    mel_offset: int | None  # byte offset of `mel` in the file; None when it has no frames

    def __len__(self) -> int:
        return len(self.track_id)

    def memmap(self) -> np.ndarray:
        """Read-only zero-copy float16 [total_frames, n_mels] view of the frames."""
        if self.mel_offset is None:
            return np.zeros(self.mel_shape, dtype=np.float16)
        return np.memmap(
            self.path, dtype=np.float16, mode="r", offset=self.mel_offset, shape=self.mel_shape
        )

    def track(self, i: int, mel: np.ndarray | None = None) -> np.ndarray:
        """Frames of the i-th track of this shard, float16 [frames, n_mels]."""
        mel = self.memmap() if mel is None else mel
        return mel[self.offsets[i] : self.offsets[i + 1]]


def read_shard(path: str | os.PathLike) -> ShardIndex:
    """Open, check and index a shard; raise ShardError if it is not whole."""
    path = Path(path)
    if not path.is_file():
        raise ShardError(f"shard {path} is missing")
    try:
        with h5py.File(path, "r") as f:
            if int(f.attrs.get("complete", 0)) != 1:
                raise ShardError(f"shard {path} is incomplete")
            mel = f["mel"]
            if mel.chunks is not None or mel.compression is not None:
                raise ShardError(f"shard {path}: mel is not contiguous")
            offsets = f["offsets"][()]
            index = ShardIndex(
                path=path,
                offsets=offsets,
                track_id=f["track_id"][()],
                label=f["label"][()],
                seconds=f["seconds"][()],
                failed_track_id=f["failed_track_id"][()],
                failed_reason=[
                    r.decode() if isinstance(r, bytes) else r for r in f["failed_reason"][()]
                ],
                feature_config=json.loads(f.attrs["feature_config"]),
                split=str(f.attrs["split"]),
                mel_shape=tuple(int(s) for s in mel.shape),
                mel_offset=mel.id.get_offset(),
            )
    except ShardError:
        raise
    except (OSError, KeyError, ValueError) as e:
        raise ShardError(f"shard {path} is unreadable ({e})") from e
    n = len(index.track_id)
    if len(offsets) != n + 1 or offsets[-1] != index.mel_shape[0] or len(index.label) != n:
        raise ShardError(f"shard {path}: inconsistent offsets")
    if index.mel_offset is None and index.mel_shape[0] > 0:
        raise ShardError(f"shard {path}: mel has no storage")
    if index.mel_offset is not None:
        end = index.mel_offset + index.mel_shape[0] * index.mel_shape[1] * 2
        if end > path.stat().st_size:
            raise ShardError(f"shard {path} is truncated")
    return index


def is_complete(path: str | os.PathLike) -> bool:
    """True when ``path`` is a whole, readable shard."""
    try:
        read_shard(path)
    except ShardError:
        return False
    return True
