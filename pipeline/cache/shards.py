"""HDF5 shard schema: write a shard atomically, validate it, open it as a numpy memmap.

One shard file holds the log-mels of up to ``shard_size`` tracks of one split:

    mel       float16 [total_frames, n_mels]  contiguous, unfiltered (memmap-able), finite
    offsets   int64   [n + 1]   track i is mel[offsets[i]:offsets[i+1]]
    track_id  int64   [n]       (UTF-8 strings for datasets whose ids are names)
    label     int16   [n]       single-label caches; multi-label: labels uint8 [n, n_labels]
    seconds   float32 [n]       decoded audio duration
    stats     float32 [n, d]    per-track statistics of the frames (pipeline.features.TrackStats;
                                of their log-mel in a waveform cache; none in mrnet 0.2's)
    failed_track_id int64/str [m], failed_reason str [m]   tracks of this shard not cached
    attrs: feature_config (JSON), split, format_version, checksum + checksum_algo (of the
           datasets' bytes, see `checksum`), complete=1

A shard is built under a temporary name and renamed into place once complete, so a
file at the final name is always whole. Readers open, read the small arrays and
close; the frames are then read through ``numpy.memmap`` (no h5py handle is shared
across processes).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from pipeline.atomic import temp_path, writing
from pipeline.features import STATS_FEATURES, STATS_VERSION, TrackStats, stats_dim, wave_log_mel

FORMAT_VERSION = 2
CHECKSUM_ALGO = "sha256"
# the small datasets, in the order the checksum reads them (after `mel`); "label" is
# "labels" in a multi-label shard
INDEX_DATASETS = (
    "offsets",
    "track_id",
    "label",
    "seconds",
    "failed_track_id",
    "failed_reason",
    "stats",
)
OPTIONAL_DATASETS = ("stats",)  # absent from older shards: then not part of the checksum
_COPY_CHUNK = 64 * 2**20


class ShardError(Exception):
    """A shard file that is absent, truncated, incomplete or not of this schema."""


def _digest_array(h, name: str, a: np.ndarray) -> None:
    """Feed one index dataset to the checksum: its name, shape and bytes (strings as
    length-prefixed UTF-8, so that h5py's bytes and Python's str hash alike)."""
    h.update(f"{name}{list(a.shape)}".encode())
    if a.dtype.kind in "OSU":
        for s in a.tolist():
            b = s if isinstance(s, bytes) else str(s).encode()
            h.update(len(b).to_bytes(8, "little") + b)
    else:
        h.update(np.ascontiguousarray(a).tobytes())


class ShardWriter:
    """Streams the tracks of one shard to disk; `commit` writes the HDF5 file atomically.

    Frames go to a temporary spill file beside the shard as they arrive, so memory holds
    one track (or one chunk of a track) at a time whatever the lengths; `commit` lays out
    the HDF5 file with a contiguous `mel` dataset, copies the frames into it in the
    kernel (copy_file_range), adds the index arrays, checksum and ``complete=1``, fsyncs
    and renames. It never creates folders. A disk fault becomes a one-line BadInput.
    """

    def __init__(
        self, path: Path, feature_config: dict, split: str, n_labels: int | None = None
    ) -> None:
        """``n_labels``: multi-label shard (a track's label is a set of label indices)."""
        self.path = Path(path)
        self.feature_config, self.split, self.n_labels = feature_config, split, n_labels
        self.n_mels = int(feature_config["n_mels"])
        self._spill_path = temp_path(self.path, ".mel")
        self._tmp = temp_path(self.path)  # the HDF5 file, until renamed into place
        self._spill = None
        self._mel_hash = hashlib.sha256()
        self._lengths: list[int] = []
        self._ids: list[int | str] = []
        self._labels: list = []
        self._seconds: list[float] = []
        self._stats: list[np.ndarray] = []
        # a waveform's statistics are those of its log-mel (the baseline's input)
        self._wave = feature_config.get("kind") == "wave"
        self._stats_bands = STATS_FEATURES.n_mels if self._wave else self.n_mels
        self._track_stats = TrackStats(self._stats_bands)
        self._failed: list[tuple[int | str, str]] = []
        self._frames = 0  # frames of the track being added
        self._track_start = (self._mel_hash.copy(), 0)  # to take the track back

    def append(self, mel: np.ndarray) -> None:
        """Frames of the current track, [frames, n_mels], finite, any float dtype."""
        m = np.ascontiguousarray(mel, dtype=np.float16)
        if m.ndim != 2 or m.shape[1] != self.n_mels:
            raise ValueError(f"mel must be [frames, {self.n_mels}], got {m.shape}")
        if ((m.view(np.uint16) & 0x7C00) == 0x7C00).any():  # exponent all ones: inf or NaN
            raise ValueError("mel holds NaN or infinity; the cache stores finite values only")
        if self._frames == 0:
            self._track_start = (self._mel_hash.copy(), sum(self._lengths))
        with writing(self.path, self._spill_path):
            if self._spill is None:
                self._spill = open(self._spill_path, "wb", buffering=8 * 2**20)
            self._spill.write(memoryview(m).cast("B"))
        self._mel_hash.update(memoryview(m).cast("B"))
        self._track_stats.push(wave_log_mel(m) if self._wave else m)
        self._frames += len(m)

    def cancel_track(self) -> None:
        """Take back the frames of the current track (it failed after some arrived)."""
        if self._frames == 0:
            return
        self._mel_hash, frames = self._track_start
        self._track_stats = TrackStats(self._stats_bands)
        with writing(self.path, self._spill_path):
            self._spill.flush()
            self._spill.seek(frames * self.n_mels * 2)
            self._spill.truncate()
        self._frames = 0

    def end_track(self, track_id: int | str, label: int | tuple[int, ...], seconds: float) -> None:
        """Close the current track (its frames came through `append`)."""
        if self._frames == 0:
            raise ValueError(f"track {track_id} has no frames")
        self._lengths.append(self._frames)
        self._ids.append(_track_id(track_id))
        self._labels.append(tuple(int(x) for x in label) if self.n_labels else int(label))
        self._seconds.append(float(seconds))
        self._stats.append(self._track_stats.value())
        self._track_stats = TrackStats(self._stats_bands)
        self._frames = 0

    def add(
        self, track_id: int | str, label: int | tuple[int, ...], mel: np.ndarray, seconds: float
    ) -> None:
        """Add a whole track: `append` its frames, then `end_track`.

        Args:
            track_id: the track's id (int, or str for datasets whose ids are names).
            label: its label index, or the set of label indices in a multi-label shard.
            mel: its frames, [frames > 0, n_mels], finite (stored as float16).
            seconds: its decoded audio duration (s).
        """
        self.append(mel)
        self.end_track(track_id, label, seconds)

    def fail(self, track_id: int | str, reason: str) -> None:
        """Record a track of this shard that could not be cached, and why."""
        self._failed.append((_track_id(track_id), reason))

    def _index(self) -> dict[str, np.ndarray]:
        offsets = np.zeros(len(self._lengths) + 1, dtype=np.int64)
        np.cumsum(np.array(self._lengths, np.int64), out=offsets[1:])
        if self.n_labels:
            label = np.zeros((len(self._labels), self.n_labels), np.uint8)
            for i, members in enumerate(self._labels):
                label[i, list(members)] = 1
        else:
            label = np.array(self._labels, np.int16)
        return {
            "offsets": offsets,
            "track_id": _id_array(self._ids),
            "label": label,
            "seconds": np.array(self._seconds, np.float32),
            "failed_track_id": _id_array([t for t, _ in self._failed]),
            "failed_reason": np.array([r for _, r in self._failed], dtype=object),
            "stats": np.array(self._stats, np.float32).reshape(-1, stats_dim(self._stats_bands)),
        }

    def discard(self) -> None:
        """Drop everything written so far (temporary files included)."""
        if self._spill is not None:
            self._spill.close()
            self._spill = None
        self.remove_temps()

    def remove_temps(self) -> None:
        """Unlink this writer's temporary files (safe from another thread, e.g. a worker's
        watchdog about to end the process)."""
        for path in (self._spill_path, self._tmp):
            try:
                path.unlink(missing_ok=True)
            except OSError:
                pass

    def commit(self, still_wanted: Callable[[], bool] = lambda: True) -> bool:
        """Write the shard; returns False (and writes nothing) when ``still_wanted()``
        turns False just before the rename (the run this worker served has died)."""
        index = self._index()
        total = int(index["offsets"][-1])
        h = self._mel_hash.copy()
        for name in INDEX_DATASETS:
            _digest_array(h, name, index[name])
        tmp = self._tmp
        with writing(self.path, tmp, self._spill_path):
            if self._spill is not None:
                self._spill.close()
                self._spill = None
            mel_offset = self._write_hdf5(tmp, index, total, h.hexdigest())
            if total:
                _copy_range(self._spill_path, tmp, total * self.n_mels * 2, mel_offset)
            self._spill_path.unlink(missing_ok=True)
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            if not still_wanted():
                tmp.unlink(missing_ok=True)
                return False
            os.replace(tmp, self.path)
        return True

    def _write_hdf5(self, tmp: Path, index: dict, total: int, checksum: str) -> int | None:
        """The whole file but the frames; returns the byte offset reserved for them."""
        with h5py.File(tmp, "w", libver="latest", track_order=False) as f:
            dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
            dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)  # storage placed now
            dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)  # the frames are copied in below
            space = h5py.h5s.create_simple((total, self.n_mels))
            mel = h5py.h5d.create(f.id, b"mel", h5py.h5t.IEEE_F16LE, space, dcpl=dcpl)
            offset = mel.get_offset() if total else None
            for name in INDEX_DATASETS:
                a = index[name]
                if name == "label" and self.n_labels:
                    name = "labels"
                if a.dtype == object:  # names: variable-length UTF-8
                    data = [str(x) for x in a] if len(a) else np.array([], "S1")
                    f.create_dataset(name, data=data, dtype=h5py.string_dtype(), track_times=False)
                else:
                    f.create_dataset(name, data=a, track_times=False)
            f.attrs["feature_config"] = json.dumps(self.feature_config, sort_keys=True)
            f.attrs["split"] = self.split
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["checksum"] = checksum
            f.attrs["checksum_algo"] = CHECKSUM_ALGO
            f.attrs["stats_version"] = STATS_VERSION
            f.attrs["complete"] = 1  # the file is only trusted once renamed into place
        return offset


def _track_id(t: object) -> int | str:
    """A track id as stored: an integer (FMA) or a name (GTZAN, folders)."""
    return str(t) if isinstance(t, str) else int(t)


def _id_array(ids: list) -> np.ndarray:
    """int64 [n] for integer ids, an object array of str for names (empty: int64)."""
    if any(isinstance(t, str) for t in ids):
        return np.array([str(t) for t in ids], dtype=object)
    return np.array(ids, np.int64)


def _names(a: np.ndarray) -> np.ndarray:
    """h5py's bytes back to str (numbers stay as they are)."""
    if a.dtype.kind in "OS":
        return np.array([x.decode() if isinstance(x, bytes) else str(x) for x in a], dtype=object)
    return a


def _copy_range(src: Path, dst: Path, n: int, offset: int) -> None:
    """Copy the first ``n`` bytes of ``src`` to byte ``offset`` of ``dst`` (in the kernel
    where it can, else through a buffer)."""
    with open(src, "rb") as a, open(dst, "rb+") as b:
        done = 0
        try:
            while done < n:
                got = os.copy_file_range(a.fileno(), b.fileno(), n - done, done, offset + done)
                if got == 0:
                    break
                done += got
        except OSError as e:
            if e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                raise
        while done < n:
            a.seek(done)
            chunk = a.read(min(_COPY_CHUNK, n - done))
            if not chunk:
                raise OSError(f"spill file {src} is shorter than its frames")
            os.pwrite(b.fileno(), chunk, offset + done)
            done += len(chunk)


@dataclass(frozen=True)
class ShardIndex:
    """The small arrays of a shard plus where its ``mel`` bytes lie in the file."""

    path: Path
    offsets: np.ndarray  # int64 [n + 1]
    track_id: np.ndarray  # int64 [n], or str (object) [n]
    label: np.ndarray  # int16 [n]; multi-label: uint8 [n, n_labels] (dataset "labels")
    seconds: np.ndarray  # float32 [n]
    failed_track_id: np.ndarray  # int64 [m], or str (object) [m]
    failed_reason: list[str]
    feature_config: dict
    split: str
    mel_shape: tuple[int, int]
    mel_offset: int | None  # byte offset of `mel` in the file; None when it has no frames
    checksum: str | None = None  # recorded when written (None: a format-1 shard)
    stats: np.ndarray | None = None  # float32 [n, d]; None in shards of mrnet 0.2
    stats_version: int = 0  # the TrackStats definition they were computed with

    def __len__(self) -> int:
        return len(self.track_id)

    @property
    def multi(self) -> bool:
        """A multi-label shard (labels uint8 [n, n_labels])."""
        return self.label.ndim == 2

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

    def index_arrays(self) -> dict[str, np.ndarray]:
        """The shard's small datasets by name (everything but ``mel``), as the file holds them."""
        return {
            "offsets": self.offsets,
            "track_id": self.track_id,
            "label": self.label,
            "seconds": self.seconds,
            "failed_track_id": self.failed_track_id,
            "failed_reason": np.array(self.failed_reason, dtype=object),
            "stats": self.stats,
        }


def read_shard(path: str | os.PathLike) -> ShardIndex:
    """Open, check and index a shard; raise ShardError if it is not whole or not sane."""
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
            if mel.dtype != np.float16 or mel.ndim != 2:
                raise ShardError(f"shard {path}: mel is not float16 [frames, n_mels]")
            offsets = f["offsets"][()]
            checksum = f.attrs.get("checksum")
            index = ShardIndex(
                path=path,
                offsets=offsets,
                track_id=_names(f["track_id"][()]),
                label=f["label"][()] if "label" in f else f["labels"][()],
                seconds=f["seconds"][()],
                failed_track_id=_names(f["failed_track_id"][()]),
                failed_reason=[
                    r.decode() if isinstance(r, bytes) else r for r in f["failed_reason"][()]
                ],
                feature_config=json.loads(f.attrs["feature_config"]),
                split=str(f.attrs["split"]),
                mel_shape=tuple(int(s) for s in mel.shape),
                mel_offset=mel.id.get_offset(),
                checksum=str(checksum) if checksum is not None else None,
                stats=f["stats"][()] if "stats" in f else None,
                stats_version=int(f.attrs.get("stats_version", 0)),
            )
    except ShardError:
        raise
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as e:
        raise ShardError(f"shard {path} is unreadable ({str(e).splitlines()[0][:100]})") from e
    n = len(index.track_id)
    if (
        len(offsets) != n + 1
        or offsets[0] != 0
        or (np.diff(offsets) <= 0).any()
        or offsets[-1] != index.mel_shape[0]
        or len(index.label) != n
        or len(index.seconds) != n
    ):
        raise ShardError(f"shard {path}: inconsistent offsets")
    if index.mel_shape[1] != int(index.feature_config.get("n_mels", -1)):
        raise ShardError(f"shard {path}: mel width differs from its feature config")
    if index.mel_offset is None and index.mel_shape[0] > 0:
        raise ShardError(f"shard {path}: mel has no storage")
    if index.mel_offset is not None:
        end = index.mel_offset + index.mel_shape[0] * index.mel_shape[1] * 2
        if end > path.stat().st_size:
            raise ShardError(f"shard {path} is truncated")
    return index


def scan(index: ShardIndex, chunk_frames: int = 1 << 14) -> tuple[str, int]:
    """(checksum recomputed from the bytes on disk, frames holding NaN or infinity), in one
    pass over the memmapped frames (chunks small enough to stay in cache for both)."""
    h = hashlib.sha256()
    mel, bad = index.memmap(), 0
    for a in range(0, index.mel_shape[0], chunk_frames):
        block = np.ascontiguousarray(mel[a : a + chunk_frames])
        h.update(block.data)
        # float16 NaN/inf: all five exponent bits set
        bits = block.view(np.uint16)
        bad += int(((bits & 0x7C00) == 0x7C00).any(axis=1).sum())
    arrays = index.index_arrays()
    for name in INDEX_DATASETS:
        if arrays[name] is not None:
            _digest_array(h, name, arrays[name])
    return h.hexdigest(), bad


def checksum(index: ShardIndex) -> str:
    """Recompute a shard's checksum from its bytes on disk, as `ShardWriter.commit` did."""
    return scan(index)[0]


def is_complete(path: str | os.PathLike) -> bool:
    """True when ``path`` is a whole, readable shard."""
    try:
        read_shard(path)
    except ShardError:
        return False
    return True
