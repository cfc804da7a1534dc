"""`mrnet preprocess`: plan shard jobs, run them in parallel, resume, write the manifest.

Data flow::

    tracks.csv ─select─▶ Selection ─plan_shards─▶ [ShardJob]
        ─build_shard × jobs─▶ shards/*.h5 ─finish─▶ manifest.json, tracks.csv, failures.csv

The plan is deterministic (tracks sorted by id within each split, cut into shards of
``shard_size``), so a rerun builds exactly the missing shards: a shard file that
exists is final (written under a unique temporary name, renamed when complete).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import stat
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from pipeline import __version__, fma
from pipeline.atomic import is_temp, remove_temps, write_atomic, writing
from pipeline.errors import BadInput
from pipeline.extract import Owner, ShardJob, build_shard
from pipeline.features import FeatureConfig
from pipeline.lock import DirLock
from pipeline.manifest import (
    FAILURE_COLUMNS,
    FAILURES,
    MANIFEST,
    SHARDS_DIR,
    TRACK_COLUMNS,
    TRACKS,
    Manifest,
    dir_bytes,
    tracks_fingerprint,
)
from pipeline.shards import FORMAT_VERSION, ShardError, read_shard


@dataclass
class PreprocessOptions:
    """Arguments of `mrnet preprocess` (see its --help)."""

    audio_dir: Path
    metadata_dir: Path
    out: Path
    subset: str = "small"
    jobs: int | None = None  # None: all cores
    sample_rate: int = 16000
    n_mels: int = 128
    n_fft: int = 1024
    hop_length: int = 320
    f_max: float = 0.0  # 0: Nyquist
    max_seconds: float = 30.0
    min_seconds: float = 1.0
    shard_size: int | None = None  # None: from the number of tracks (`auto_shard_size`)
    backend: str = "loky"  # "loky": local processes; "dask": a dask.distributed cluster
    scheduler: str | None = None  # dask scheduler address, e.g. tcp://host:8786
    progress: bool = True

    def feature_config(self) -> FeatureConfig:
        try:
            return FeatureConfig(
                sample_rate=self.sample_rate,
                n_fft=self.n_fft,
                hop_length=self.hop_length,
                n_mels=self.n_mels,
                f_max=self.f_max or self.sample_rate / 2,
                max_seconds=self.max_seconds,
            )
        except ValueError as e:
            raise BadInput(f"invalid feature settings: {e}") from e


BACKENDS = ("loky", "dask")
MIN_SHARD, MAX_SHARD = 8, 128


def auto_shard_size(n_tracks: int) -> int:
    """Tracks per shard when --shard-size is not given: about 64 shards for a small run
    (so every worker stays busy to the end: one shard is one job), 128 tracks at most.
    A pure function of the selection, so that resuming with other --jobs or on a dask
    cluster plans the same shards."""
    return min(MAX_SHARD, max(MIN_SHARD, math.ceil(n_tracks / 64)))


def plan_shards(selection: fma.Selection, shard_size: int, audio_dir: Path) -> list[ShardJob]:
    """Deterministic plan: per split (FMA order), tracks sorted by id, cut every shard_size."""
    jobs = []
    for split in fma.SPLITS:
        part = selection.tracks[selection.tracks["split"] == split].sort_values("track_id")
        ids = [int(t) for t in part["track_id"]]
        labels = [int(x) for x in part["label"]]
        paths = [str(fma.audio_path(audio_dir, t)) for t in ids]
        for k, a in enumerate(range(0, len(ids), shard_size)):
            b = a + shard_size
            name = f"{SHARDS_DIR}/{split}-{k:05d}.h5"
            jobs.append(ShardJob(name, split, tuple(ids[a:b]), tuple(labels[a:b]),
                                 tuple(paths[a:b])))  # fmt: skip
    return jobs


def _check_out_dir(out: Path, plan: dict) -> Manifest | None:
    """Refuse an --out that is a file, a foreign folder, or a cache of other settings;
    returns the manifest already there (None for a new cache). mrnet's own leftovers
    (temporary files, the lock, an empty shards/) never make a folder foreign."""
    if out.exists() and not out.is_dir():
        raise BadInput(f"--out {out} is a file; pass a directory path for the cache")
    if not out.is_dir():
        return None
    if not (out / MANIFEST).exists():
        shards = out / SHARDS_DIR
        visible = [
            p
            for p in out.iterdir()
            if not p.name.startswith(".")
            and not is_temp(p.name)
            and not (
                p.name == SHARDS_DIR
                and p.is_dir()
                and all(is_temp(q.name) for q in shards.iterdir())
            )
        ]
        if visible:
            raise BadInput(
                f"--out {out} is a non-empty folder that is not an mrnet cache; "
                "choose a new or empty folder"
            )
        return None
    old = Manifest.read(out)
    if old.plan != plan:
        raise BadInput(
            f"cache {out} was built with other settings ({_plan_diff(old.plan, plan)}); "
            "rerun with the original settings and metadata or choose another --out"
        )
    return old


def _plan_diff(old: dict, new: dict) -> str:
    """'key: old -> new' for what differs, one level into nested dicts."""
    parts = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            parts += [
                f"{k2}: {a.get(k2)} -> {b.get(k2)}"
                for k2 in sorted(set(a) | set(b))
                if a.get(k2) != b.get(k2)
            ]
        elif k == "tracks_sha256":
            parts.append("the selected tracks (tracks.csv changed?)")
        else:
            parts.append(f"{k}: {a} -> {b}")
    return ", ".join(parts)


def _fingerprint(jobs: list[ShardJob]) -> str:
    """Hash of the plan's content: which track, with which label, lands in which shard."""
    rows = [[j.name, list(j.track_ids), list(j.labels)] for j in jobs]
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:16]


def _validate(opts: PreprocessOptions) -> None:
    if opts.jobs is not None and opts.jobs < 1:
        raise BadInput(f"--jobs must be at least 1 (got {opts.jobs}); omit it to use all cores")
    if opts.min_seconds < 0:
        raise BadInput(f"--min-seconds must be 0 or more (got {opts.min_seconds})")
    if opts.shard_size is not None and opts.shard_size < 1:
        raise BadInput(f"--shard-size must be at least 1 (got {opts.shard_size})")
    if not opts.audio_dir.is_dir():
        raise BadInput(
            f"audio dir {opts.audio_dir} does not exist; pass --audio-dir pointing at fma_small/ "
            "or fma_large/"
        )
    if opts.backend not in BACKENDS:
        raise BadInput(f"unknown --backend {opts.backend!r}; use one of {', '.join(BACKENDS)}")
    if opts.backend == "dask" and not opts.scheduler:
        raise BadInput(
            "--backend dask needs --scheduler tcp://HOST:8786 (a running dask scheduler)"
        )
    if opts.subset not in fma.SUBSETS:
        raise BadInput(f"unknown subset {opts.subset!r}; use one of {', '.join(fma.SUBSETS)}")


def _file_presence(paths: list[Path]) -> tuple[int, int]:
    """(regular files, absent paths) among ``paths``; the rest exist but are not regular
    files (folders, FIFOs, ...)."""
    regular = absent = 0
    for p in paths:
        try:
            regular += stat.S_ISREG(os.stat(p).st_mode)
        except FileNotFoundError:
            absent += 1
        except OSError:
            pass
    return regular, absent


def _make_plan(opts: PreprocessOptions, cfg: FeatureConfig, selection: fma.Selection,
               shard_size: int) -> tuple[list[ShardJob], dict]:  # fmt: skip
    jobs = plan_shards(selection, shard_size, opts.audio_dir)
    plan = {
        "genres": list(selection.genres),
        "tracks_sha256": _fingerprint(jobs),
        "feature_config": cfg.to_dict(),
        "subset": opts.subset,
        "shard_size": shard_size,
        "min_seconds": opts.min_seconds,
        "format_version": FORMAT_VERSION,
    }
    return jobs, plan


def _existing_shard_size(out: Path) -> int | None:
    """The shard size of the cache already in ``out`` (so that a rerun without
    --shard-size resumes it whatever `auto_shard_size` would pick)."""
    try:
        return int(json.loads((out / MANIFEST).read_text())["plan"]["shard_size"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def run_preprocess(opts: PreprocessOptions) -> Manifest:
    """Build (or resume) the cache described by ``opts``; returns the final manifest."""
    t0 = time.perf_counter()
    _validate(opts)
    # Absolute paths: dask workers may run elsewhere, with another working directory.
    opts = dataclasses.replace(
        opts,
        audio_dir=opts.audio_dir.absolute(),
        out=opts.out.absolute(),
        metadata_dir=opts.metadata_dir.absolute(),
    )
    cfg = opts.feature_config()
    selection = fma.read_selection(opts.metadata_dir, opts.subset)
    if selection.tracks.empty:
        raise BadInput(
            f"subset {opts.subset} has no labelled tracks with an official split in "
            f"{opts.metadata_dir} ({selection.skipped_no_genre} without genre_top, "
            f"{selection.skipped_no_split} without a known split)"
        )
    paths = [fma.audio_path(opts.audio_dir, t) for t in selection.tracks["track_id"]]
    present, absent = _file_presence(paths)
    if present == 0:
        raise BadInput(
            f"no audio of subset {opts.subset} found under {opts.audio_dir}; pass --audio-dir "
            f"pointing at fma_{opts.subset}/ or fma_large/"
        )
    shard_size = opts.shard_size or _existing_shard_size(opts.out) or auto_shard_size(len(paths))
    jobs, plan = _make_plan(opts, cfg, selection, shard_size)
    old = _check_out_dir(opts.out, plan)
    log = _log(opts.progress)
    if old is not None and old.status == "complete" and _intact(opts.out, jobs):
        log(f"cache {opts.out} is complete and up to date; nothing to do")
        # untouched on disk (readers never see it unfinished); this run's figures in memory
        last = {"tracks_processed": 0, "seconds": round(time.perf_counter() - t0, 2),
                "tracks_per_s": 0.0}  # fmt: skip
        return dataclasses.replace(old, summary={**old.summary, "last_run": last})
    if present < len(paths):
        others = len(paths) - present - absent
        log(
            f"warning: {len(paths) - present} of {len(paths)} tracks have no regular file "
            f"under {opts.audio_dir} ({absent} absent, {others} not regular files); each is "
            "recorded in failures.csv with its reason and the run goes on"
        )
    with writing(opts.out / SHARDS_DIR):
        (opts.out / SHARDS_DIR).mkdir(parents=True, exist_ok=True)
    with DirLock(opts.out, "cache") as lock:
        if lock.stale_pid is not None:
            log(f"taking over the lock of an interrupted run (pid {lock.stale_pid})")
        manifest = Manifest(
            feature_config=cfg.to_dict(),
            subset=opts.subset,
            genres=list(selection.genres),
            plan=plan,
            source={"audio_dir": str(opts.audio_dir), "metadata_dir": str(opts.metadata_dir)},
            skipped=_skipped(selection),
            tool_version=__version__,
        )
        manifest.write(opts.out)
        # left by a killed run: never trusted
        remove_temps(opts.out)
        remove_temps(opts.out / SHARDS_DIR)
        todo = [j for j in jobs if not _is_done(opts.out / j.name)]
        todo_names = {j.name for j in todo}
        done_tracks = sum(len(j.track_ids) for j in jobs if j.name not in todo_names)
        if len(todo) < len(jobs):
            log(f"resuming: {len(jobs) - len(todo)} of {len(jobs)} shards already done")
        owner = Owner(os.getpid(), lock.token, children=opts.backend == "loky")
        total = sum(len(j.track_ids) for j in jobs)
        new_tracks = _run_jobs(todo, opts, cfg, owner, done_tracks, total)
        elapsed = time.perf_counter() - t0
        manifest = _finish(opts, manifest, jobs, selection, new_tracks, elapsed)
    return manifest


def _skipped(selection: fma.Selection) -> dict[str, int]:
    return {"no_genre": selection.skipped_no_genre, "no_split": selection.skipped_no_split}


def _intact(out: Path, jobs: list[ShardJob]) -> bool:
    """Every planned shard is whole and both CSVs are there (a no-op rerun)."""
    if not ((out / TRACKS).is_file() and (out / FAILURES).is_file()):
        return False
    try:
        for j in jobs:
            read_shard(out / j.name)
    except ShardError:
        return False
    return True


def _is_done(path: Path) -> bool:
    """A whole shard is at ``path`` (a shard file that exists is final: it was renamed
    into place complete; one that does not read is deleted and rebuilt)."""
    if not path.exists():
        return False
    try:
        read_shard(path)
        return True
    except ShardError:
        path.unlink()
        return False


def _run_jobs(
    todo: list[ShardJob],
    opts: PreprocessOptions,
    cfg: FeatureConfig,
    owner: Owner,
    done_tracks: int,
    total_tracks: int,
) -> int:
    """Run shard jobs with joblib; progress counts tracks. Returns tracks processed."""
    from joblib import Parallel, delayed

    bar = tqdm(
        total=total_tracks,
        initial=done_tracks,
        unit="track",
        desc="preprocess",
        disable=not opts.progress,
        dynamic_ncols=True,
        smoothing=0.1,
    )
    processed = 0
    args = (opts.out, cfg, opts.min_seconds, owner)
    try:
        with _executor(opts):
            # loky: all local cores by default; dask: all of the cluster's workers (-1)
            n_jobs = opts.jobs or (len(os.sched_getaffinity(0)) if opts.backend == "loky" else -1)
            if n_jobs > 0:
                n_jobs = min(n_jobs, max(len(todo), 1))
            results = Parallel(n_jobs=n_jobs, return_as="generator_unordered")(
                delayed(build_shard)(job, *args) for job in todo
            )
            for r in results:
                if r is None:  # cannot happen while this process holds the lock
                    raise BadInput(f"cache {opts.out} was taken over by another run; rerun")
                n_done = r.tracks + r.failed
                processed += n_done
                bar.update(n_done)
    finally:
        bar.close()
    return processed


@contextlib.contextmanager
def _executor(opts: PreprocessOptions) -> Iterator[None]:
    """joblib backend for the shard jobs: local loky processes or a dask cluster.

    With dask, the workers write shards straight into the cache directory, which
    must be on storage they all see; manifest and CSVs are written here, by the client.
    """
    from joblib import parallel_config

    if opts.backend == "loky":
        with parallel_config(backend="loky", inner_max_num_threads=1):
            yield
        return
    try:
        from dask.distributed import Client
    except ImportError:
        raise BadInput(
            "--backend dask needs dask and distributed; install them with "
            "pip install 'mrnet[cluster]'"
        ) from None
    try:
        client = Client(opts.scheduler, timeout="10s")
    except (OSError, TimeoutError, ValueError) as e:
        raise BadInput(
            f"cannot reach the dask scheduler at {opts.scheduler} ({type(e).__name__}); "
            "start one with `dask scheduler` or fix --scheduler"
        ) from None
    try:
        with parallel_config(backend="dask", client=client):
            yield
    finally:
        client.close()


def _finish(
    opts: PreprocessOptions,
    manifest: Manifest,
    jobs: list[ShardJob],
    selection: fma.Selection,
    new_tracks: int,
    elapsed: float,
) -> Manifest:
    """Index every shard into tracks.csv / failures.csv and complete the manifest."""
    genre_of = dict(zip(selection.tracks["track_id"], selection.tracks["genre"]))
    rows, failures, shards = [], [], []
    splits: dict[str, dict] = {
        s: {"tracks": 0, "failed": 0, "shards": 0, "frames": 0} for s in fma.SPLITS
    }
    hours = 0.0
    for job in jobs:
        idx = read_shard(opts.out / job.name)
        n_frames = np.diff(idx.offsets)
        for row, (tid, label) in enumerate(zip(idx.track_id, idx.label)):
            rows.append(
                (
                    int(tid),
                    job.split,
                    genre_of[int(tid)],
                    int(label),
                    job.name,
                    row,
                    int(n_frames[row]),
                )
            )
        for tid, reason in zip(idx.failed_track_id, idx.failed_reason):
            failures.append((int(tid), str(fma.audio_path(opts.audio_dir, int(tid))), reason))
        hours += float(idx.seconds.sum()) / 3600
        shards.append(
            {
                "name": job.name,
                "split": job.split,
                "tracks": len(idx),
                "failed": len(idx.failed_track_id),
                "frames": int(idx.mel_shape[0]),
                "checksum": idx.checksum,
            }
        )
        s = splits[job.split]
        s["tracks"] += len(idx)
        s["failed"] += len(idx.failed_track_id)
        s["shards"] += 1
        s["frames"] += int(idx.mel_shape[0])
    tracks = pd.DataFrame(rows, columns=TRACK_COLUMNS)
    fails = pd.DataFrame(failures, columns=FAILURE_COLUMNS).sort_values("track_id")
    write_atomic(opts.out / TRACKS, tracks.to_csv(index=False))
    write_atomic(opts.out / FAILURES, fails.to_csv(index=False))
    size = dir_bytes(opts.out)
    manifest.splits = splits
    manifest.shards = shards
    manifest.tracks_fingerprint = tracks_fingerprint(tracks)
    manifest.summary = {
        "cached": len(tracks),
        "failed": len(fails),
        "failed_by_reason": dict(sorted(Counter(fails["reason"]).items())),
        "skipped_no_genre": selection.skipped_no_genre,
        "skipped_no_split": selection.skipped_no_split,
        "hours_of_audio": round(hours, 4),
        "cache_bytes": size,
        "last_run": {
            "tracks_processed": new_tracks,
            "seconds": round(elapsed, 2),
            "tracks_per_s": round(new_tracks / elapsed, 2) if elapsed > 0 else 0.0,
        },
    }
    manifest.status = "complete"
    manifest.write(opts.out)
    return manifest


def format_summary(m: Manifest) -> str:
    s = m.summary
    reasons = ", ".join(f"{k} {v}" for k, v in s["failed_by_reason"].items()) or "none"
    run = s["last_run"]
    return (
        f"cached {s['cached']} tracks ({s['hours_of_audio']:.2f} h of audio), "
        f"failed {s['failed']} ({reasons}), skipped without genre {s['skipped_no_genre']}, "
        f"without a known split {s.get('skipped_no_split', 0)}\n"
        f"cache size {s['cache_bytes'] / 2**20:.1f} MiB; this run: {run['tracks_processed']} "
        f"tracks in {run['seconds']:.1f} s ({run['tracks_per_s']:.1f} tracks/s)"
    )


def _log(enabled: bool):
    def log(msg: str) -> None:
        if enabled:
            print(msg, file=sys.stderr, flush=True)

    return log
