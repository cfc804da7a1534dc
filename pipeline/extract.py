"""One shard job: decode and featurise its tracks (or read their precomputed arrays) into
one shard file (in a worker).

This is all a preprocess worker runs, so it imports only what that needs (numpy, scipy's
FFT, h5py, the decoders; no pandas, no torch): a fresh worker starts in ~0.2 s and stays
small. Workers run single-threaded numpy/scipy (loky's inner_max_num_threads=1): n
busy workers on n cores, no oversubscription.

A job knows the run it serves (`Owner`). A loky worker, a child of that run's process,
stops within a fraction of a second of its death (a watchdog thread, and a check before
every write), and no worker renames a shard into place once the cache's lock holds
another run's token (or is gone): a killed run's workers write nothing more.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.arrays import convert, read_array
from pipeline.audio import DecodeError, load_audio, stream_audio
from pipeline.cache.shards import ShardWriter
from pipeline.errors import TrackFailed
from pipeline.features import (
    FeatureConfig,
    LogMelStream,
    cached_log_mel,
    finite_float16,
    wave_frames,
)
from pipeline.lock import lock_token


@dataclass(frozen=True)
class ShardJob:
    """One unit of parallel work: the tracks of one shard file, in order."""

    name: str  # relative to the cache root, e.g. "shards/training-00000.h5"
    split: str
    track_ids: tuple[int, ...]
    labels: tuple  # per track: a label index, or a tuple of them (multi-label)
    paths: tuple[str, ...]  # the audio file of each track
    n_labels: int | None = None  # multi-label: how many labels there are
    sha1s: tuple[str | None, ...] | None = None  # expected SHA-1 of each file, if checked


@dataclass(frozen=True)
class Owner:
    """The run a shard job serves: its process, its lock token, and whether its workers
    are its own child processes (loky) rather than a cluster's (dask)."""

    pid: int
    token: str
    children: bool


@dataclass
class ShardResult:
    name: str
    tracks: int
    failed: int
    seconds_audio: float
    failures: Counter = field(default_factory=Counter)


def build_shard(
    job: ShardJob,
    cache_dir: Path,
    cfg: FeatureConfig,
    min_seconds: float,
    owner: Owner | None = None,
) -> ShardResult | None:
    """Write ``cache_dir / job.name``: every track that decodes into finite features,
    the others as failures with their reason.

    A worker whose run has died exits (the run's own child processes watch it).

    Args:
        job: the shard's tracks, in order.
        cache_dir: the cache folder.
        cfg: the feature settings.
        min_seconds: shorter tracks fail as too short.
        owner: the run the job serves (None: no ownership checks, e.g. in-process).

    Returns:
        The shard's counts and failures, or None (writing nothing) when the run it
        serves has died or lost the cache (its lock token changed).
    """
    local = owner is not None and owner.children and os.getpid() != owner.pid

    def orphaned() -> bool:
        """Whether this is the run's own worker and the run (its parent) is gone."""
        return local and os.getppid() != owner.pid

    if orphaned():  # a job handed out just before the run died
        _abandon()
    if local:
        _watch_parent(owner.pid)
    _keep_freed_memory()

    def still_wanted() -> bool:
        """Whether the run is alive and still holds the cache's lock (commit checks)."""
        return not orphaned() and (owner is None or lock_token(cache_dir) == owner.token)

    if cfg.kind == "wavlm":
        # load the model before any track: loky takes a worker's memory after its first
        # job as the reference, and a model loaded in a later job (the first had no
        # readable track) would look like a 300-MB leak and restart the worker
        from pipeline.ssl import cached_model  # one thread a worker, as numpy (loky)

        cached_model(cfg.ssl_path, cfg.ssl_sha256)
    global _writer
    writer = _writer = ShardWriter(cache_dir / job.name, cfg.to_dict(), job.split, job.n_labels)
    result = ShardResult(job.name, 0, 0, 0.0)
    sha1s = job.sha1s or (None,) * len(job.track_ids)
    try:
        for tid, label, path, sha1 in zip(job.track_ids, job.labels, job.paths, sha1s):
            track = track_frames(path, cfg, min_seconds, sha1)
            try:
                for frames in track:
                    if orphaned():  # checked before every write, between the watchdog's looks
                        _abandon()
                    writer.append(frames)
            except TrackFailed as e:
                writer.cancel_track()
                writer.fail(tid, e.reason)
                result.failures[e.reason] += 1
                continue
            seconds = track.seconds
            writer.end_track(tid, label, seconds)
            result.seconds_audio += seconds
        if not writer.commit(still_wanted):
            return None
    finally:
        writer.discard()
        _writer = None
    result.failed = sum(result.failures.values())
    result.tracks = len(job.track_ids) - result.failed
    return result


def track_frames(
    path: str, cfg: FeatureConfig, min_seconds: float, sha1: str | None
) -> TrackFeatures:
    """The reader of one track's frames (``cfg.kind``): audio for log-mels and waveforms,
    audio and a WavLM for its features, the array for precomputed features."""
    readers = {"logmel": TrackFeatures, "wavlm": SSLFeatures, "wave": WaveFeatures}
    reader = readers.get(cfg.kind, ArrayFeatures)
    return reader(path, cfg, min_seconds, sha1)


class TrackFeatures:
    """One track's log-mel frames as the cache stores them, float16 [k, n_mels] chunks:
    the clip that ``cfg`` describes in one chunk or, for whole tracks (``cfg.whole``),
    the track decoded, resampled and featurised as a stream (memory does not grow with
    its length). ``seconds``: the audio's length once iteration has ended. TrackFailed
    (unreadable, too short, non-finite) may come after some chunks: drop them then.

    Preprocess workers and `mrnet predict` both read tracks through this, so a file gives
    the same features in either."""

    def __init__(
        self,
        path: str | os.PathLike,
        cfg: FeatureConfig,
        min_seconds: float = 0.0,
        sha1: str | None = None,
    ) -> None:
        self.path, self.cfg, self.min_seconds, self.sha1 = path, cfg, min_seconds, sha1
        self.seconds = 0.0

    def __iter__(self) -> Iterator[np.ndarray]:
        cfg = self.cfg
        if not cfg.whole:
            x = load_audio(
                self.path, cfg.sample_rate, cfg.max_seconds, self.min_seconds, cfg.clip, self.sha1
            )
            mel = cached_log_mel(x, cfg)
            self.seconds = len(x) / cfg.sample_rate
            yield mel
            return
        stream, samples = LogMelStream(cfg), 0
        for chunk in stream_audio(self.path, cfg.sample_rate, sha1=self.sha1):
            samples += len(chunk)
            frames = finite_float16(stream.push(chunk))
            if len(frames):
                yield frames
        last = finite_float16(stream.finish())
        self.seconds = samples / cfg.sample_rate
        if self.seconds < self.min_seconds:
            raise DecodeError("too_short", f"{self.seconds:.2f} s < {self.min_seconds} s")
        yield last


class ArrayFeatures(TrackFeatures):
    """One precomputed feature array (Melon's mels) as the cache stores it, read as
    TrackFeatures reads audio: one float16 [frames, n_mels] chunk (`pipeline.arrays`);
    ``seconds`` is its length at the array's frame rate."""

    def __iter__(self) -> Iterator[np.ndarray]:
        a = read_array(self.path, self.cfg.n_mels, self.sha1)
        self.seconds = len(a) / self.cfg.frames_per_second
        if self.seconds < self.min_seconds or not len(a):
            raise TrackFailed("too_short", f"{self.seconds:.2f} s < {self.min_seconds} s")
        yield convert(a, self.cfg)


class SSLFeatures(TrackFeatures):
    """One track's WavLM features (kind "wavlm") as the cache stores them: the clip that
    ``cfg`` describes, decoded at 16 kHz, through the frozen model of ``cfg.ssl_path`` (on
    ``cfg.ssl_device``)
    (loaded once per worker; torch is imported only here), one float16
    [frames, layers x dim] chunk."""

    def __iter__(self) -> Iterator[np.ndarray]:
        from pipeline.ssl import ssl_frames  # torch: only workers of this kind load it

        cfg = self.cfg
        x = load_audio(
            self.path, cfg.sample_rate, cfg.max_seconds, self.min_seconds, cfg.clip, self.sha1
        )
        self.seconds = len(x) / cfg.sample_rate
        states = ssl_frames(x, cfg.ssl_path, cfg.ssl_sha256, cfg.ssl_layers, cfg.ssl_device)
        yield finite_float16(states)


class WaveFeatures(TrackFeatures):
    """One track's waveform (kind "wave") as the cache stores it: the clip that ``cfg``
    describes, decoded at 16 kHz in ``cfg.channels`` channels, one float16
    [frames, channels x 320] chunk (`wave_frames`)."""

    def __iter__(self) -> Iterator[np.ndarray]:
        cfg = self.cfg
        x = load_audio(
            self.path,
            cfg.sample_rate,
            cfg.max_seconds,
            self.min_seconds,
            cfg.clip,
            self.sha1,
            cfg.channels,
        )
        self.seconds = len(x) / cfg.sample_rate
        yield wave_frames(x, cfg)


_tuned = False


def _keep_freed_memory() -> None:
    """Let glibc reuse freed blocks for the multi-MB arrays of every track (decoded audio,
    STFT frames) instead of mapping fresh pages and faulting them in each time: ~10% of a
    track's time. Raises the mmap threshold to 32 MB and the trim threshold to 128 MB,
    so a worker's memory stays near its peak working set (tens of MB)."""
    global _tuned
    if _tuned:
        return
    _tuned = True
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    if libc is not None and hasattr(libc, "mallopt"):
        m_trim_threshold, m_mmap_threshold = -1, -3
        libc.mallopt(m_mmap_threshold, 32 * 2**20)
        libc.mallopt(m_trim_threshold, 128 * 2**20)


_watching: int | None = None
_writer: ShardWriter | None = None  # the shard this worker is writing, if any


def _abandon() -> None:
    """End this worker now (its run is gone), leaving no temporary file behind."""
    writer = _writer
    if writer is not None:
        writer.remove_temps()
    os._exit(1)


def _watch_parent(parent: int, interval: float = 0.2) -> None:
    """Exit this worker process once ``parent`` is gone (it is then re-parented): loky
    would otherwise keep a killed run's workers alive, finishing their jobs."""
    global _watching
    if _watching == parent:
        return
    _watching = parent

    def watch() -> None:
        """Poll the parent every ``interval`` s; abandon the job once it is gone."""
        while os.getppid() == parent:
            time.sleep(interval)
        _abandon()

    threading.Thread(target=watch, name="mrnet-parent-watchdog", daemon=True).start()
