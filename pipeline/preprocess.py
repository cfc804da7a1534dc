"""`mrnet preprocess`: plan shard jobs, run them in parallel, resume, lock.

Data flow::

    source ─select─▶ Selection ─plan_shards─▶ [ShardJob] ─build_shard × workers─▶ shards/*.h5
        ─CacheWriter.finish─▶ tracks.csv, failures.csv, manifest.json (complete)

The plan is deterministic (per split, tracks in selection order, cut into shards of
``shard_size``), so a rerun builds exactly the missing shards: a shard file that exists
is final (written under a temporary name, renamed when complete). A rerun with other
settings into the same cache is refused; a rerun on a complete cache writes nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import stat
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from pipeline.atomic import is_temp, remove_temps
from pipeline.cache.layout import MANIFEST, SHARDS_DIR, Manifest
from pipeline.cache.shards import FORMAT_VERSION, ShardError, read_shard
from pipeline.cache.writer import CacheWriter
from pipeline.errors import BadInput
from pipeline.extract import Owner, ShardJob, build_shard
from pipeline.features import FeatureConfig
from pipeline.options import PreprocessOptions
from pipeline.settings import check_choices
from pipeline.sources import SPLITS, Selection, checksums, selection
from pipeline.workers import run_jobs

MIN_SHARD, MAX_SHARD = 8, 128


def auto_shard_size(n_tracks: int) -> int:
    """Tracks per shard when --shard-size is not given: about 64 shards for a small run
    (so every worker stays busy to the end: one shard is one job), 128 tracks at most.
    A pure function of the selection, so that resuming with other --jobs or on a dask
    cluster plans the same shards."""
    return min(MAX_SHARD, max(MIN_SHARD, math.ceil(n_tracks / 64)))


def plan_shards(selection: Selection, shard_size: int) -> list[ShardJob]:
    """Deterministic plan: per split (SPLITS order), tracks in selection order, cut every
    ``shard_size``. A ``sha1`` column, when the selection has one, goes with the jobs."""
    jobs = []
    multi = selection.multi_label
    n_labels = len(selection.labels) if multi else None
    for split in SPLITS:
        part = selection.tracks[selection.tracks["split"] == split]
        ids = part["track_id"].tolist()
        labels = [tuple(x) for x in part["labels"]] if multi else [int(x) for x in part["label"]]
        paths = part["path"].tolist()
        sums = [x if isinstance(x, str) else None for x in part["sha1"]] if "sha1" in part else None
        for k, a in enumerate(range(0, len(ids), shard_size)):
            b = a + shard_size
            name = f"{SHARDS_DIR}/{split}-{k:05d}.h5"
            jobs.append(
                ShardJob(
                    name,
                    split,
                    tuple(ids[a:b]),
                    tuple(labels[a:b]),
                    tuple(paths[a:b]),
                    n_labels,
                    tuple(sums[a:b]) if sums else None,
                )
            )
    return jobs


def _fingerprint(jobs: list[ShardJob]) -> str:
    """Hash of the plan's content: which track (and file name), with which label, lands
    in which shard. A changed tracks.csv or audio folder changes it."""
    rows = [
        [j.name, list(j.track_ids), list(j.labels), [Path(p).name for p in j.paths]] for j in jobs
    ]
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:16]


def _plan(
    opts: PreprocessOptions, cfg: FeatureConfig, selection: Selection, shard_size: int
) -> tuple[list[ShardJob], dict]:
    """The shard jobs, and every argument that decides the cache's content."""
    jobs = plan_shards(selection, shard_size)
    plan = {
        "labels": list(selection.labels),
        "task": selection.task,
        "label_mode": opts.labels,
        "min_label_tracks": opts.min_label_tracks
        if opts.labels == "all" and selection.dataset in ("fma", "melon")
        else None,
        "tracks_sha256": _fingerprint(jobs),
        "feature_config": cfg.to_dict(),
        "dataset": selection.dataset,
        "subset": selection.subset,
        "split_scheme": selection.split_scheme,
        "shard_size": shard_size,
        "min_seconds": opts.min_seconds,
        "verify_checksums": opts.verify_checksums,
        "format_version": FORMAT_VERSION,
    }
    return jobs, plan


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
            parts.append("the selected tracks (tracks.csv or the audio folder changed?)")
        else:
            parts.append(f"{k}: {a} -> {b}")
    return ", ".join(parts)


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


def _file_presence(paths: list[str]) -> tuple[int, int]:
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


def _existing_shard_size(out: Path) -> int | None:
    """The shard size of the cache already in ``out`` (so that a rerun without
    --shard-size resumes it whatever `auto_shard_size` would pick)."""
    try:
        return int(json.loads((out / MANIFEST).read_text())["plan"]["shard_size"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _check_files(opts: PreprocessOptions, selection: Selection) -> tuple[int, int]:
    """Refuse a run that would find (almost) no audio; with --verify-checksums, put each
    file's expected SHA-1 in the selection's ``sha1`` column. Returns (regular files,
    absent paths) among the selected tracks."""
    paths = selection.tracks["path"].tolist()
    present, absent = _file_presence(paths)
    if present == 0:
        if opts.dataset == "fma":
            raise BadInput(
                f"no audio of subset {opts.subset} found under {opts.audio_dir}; pass "
                f"--audio-dir pointing at fma_{opts.subset}/ or fma_large/"
            )
        raise BadInput(
            f"none of the {len(paths)} selected files exists under {opts.audio_dir}; pass "
            f"the --audio-dir that holds them (see mrnet preprocess --help, --dataset "
            f"{opts.dataset})"
        )
    if present < 0.01 * len(paths) and not opts.allow_missing:
        raise BadInput(
            f"only {present} of the {len(paths)} selected tracks have a file under "
            f"{opts.audio_dir} (fewer than 1%): wrong --audio-dir or --subset? pass "
            "--allow-missing to cache those few anyway"
        )
    if opts.verify_checksums:
        where = opts.checksums or opts.audio_dir / checksums.DEFAULT_NAME
        sums = checksums.read_checksums(where)
        expected = checksums.expected_sha1s(paths, opts.audio_dir, sums, where)
        selection.tracks["sha1"] = expected
        unlisted = sum(x is None for x in expected)
        if unlisted:
            selection.warnings.append(
                f"{unlisted} of the {len(paths)} selected tracks are not listed in {where}; "
                "their files are not checked"
            )
    return present, absent


@dataclass
class Preprocessed:
    """What `run` built: the cache's final manifest."""

    manifest: Manifest

    def summary(self) -> str:
        """`format_summary` of the cache's manifest."""
        return format_summary(self.manifest)


def run(opts: PreprocessOptions) -> Preprocessed:
    """Build (or resume) the cache described by ``opts``. BadInput when not one track
    could be cached (the cache, and failures.csv saying why, are kept)."""
    check_choices(opts)
    opts.check()
    manifest = _build(opts)
    if manifest.summary.get("cached", 0) == 0:
        reasons = ", ".join(f"{k} {v}" for k, v in manifest.summary["failed_by_reason"].items())
        raise BadInput(
            f"not one track could be cached in {opts.out} (failed: {reasons or 'none'}); see "
            f"{opts.out / 'failures.csv'} and fix the audio or the settings"
        )
    return Preprocessed(manifest)


def _build(opts: PreprocessOptions) -> Manifest:
    t0 = time.perf_counter()
    # Absolute paths: dask workers may run elsewhere, with another working directory.
    opts = dataclasses.replace(
        opts,
        audio_dir=opts.audio_dir.absolute(),
        out=opts.out.absolute(),
        metadata_dir=opts.metadata_dir.absolute() if opts.metadata_dir else None,
        manifest=opts.manifest.absolute() if opts.manifest else None,
        splits_dir=opts.splits_dir.absolute() if opts.splits_dir else None,
        split_file=opts.split_file.absolute() if opts.split_file else None,
    )
    chosen = selection(opts)
    cfg = chosen.features or opts.feature_config()
    paths = chosen.tracks["path"].tolist()
    present, absent = _check_files(opts, chosen)
    missing = chosen.missing_labels()
    for warning in chosen.warnings + ([missing] if missing else []):
        _note(f"warning: {warning}")
    shard_size = opts.shard_size or _existing_shard_size(opts.out) or auto_shard_size(len(paths))
    jobs, plan = _plan(opts, cfg, chosen, shard_size)
    old = _check_out_dir(opts.out, plan)
    if old is not None and old.status == "complete" and _intact(opts.out, jobs):
        _note(f"cache {opts.out} is complete and up to date; nothing to do")
        # untouched on disk (readers never see it unfinished); this run's figures in memory
        last = {
            "tracks_processed": 0,
            "seconds": round(time.perf_counter() - t0, 2),
            "tracks_per_s": 0.0,
        }
        return dataclasses.replace(old, summary={**old.summary, "last_run": last})
    if present < len(paths):
        others = len(paths) - present - absent
        _note(
            f"warning: {len(paths) - present} of {len(paths)} tracks have no regular file "
            f"under {opts.audio_dir} ({absent} absent, {others} not regular files); each is "
            "recorded in failures.csv with its reason and the run goes on"
        )
    manifest = Manifest(
        feature_config=cfg.to_dict(),
        labels=list(chosen.labels),
        plan=plan,
        source=chosen.source,
        dataset=chosen.dataset,
        subset=chosen.subset,
        split_scheme=chosen.split_scheme,
        task=chosen.task,
        dropped_labels=list(chosen.dropped_labels),
        skipped=dict(chosen.skipped),
    )
    with CacheWriter(opts.out, manifest) as writer:
        writer.started = t0
        if writer.stale_pid is not None:
            _note(f"taking over the lock of an interrupted run (pid {writer.stale_pid})")
        todo = [j for j in jobs if not _is_done(opts.out / j.name)]
        if len(todo) < len(jobs):
            _note(f"resuming: {len(jobs) - len(todo)} of {len(jobs)} shards already done")
        owner = Owner(os.getpid(), writer.token, children=opts.backend == "loky")
        processed = _run(todo, jobs, opts, cfg, owner)
        tracks = chosen.tracks.set_index("track_id")
        extra = tracks[[c for c in ("artist", "title") if c in tracks]]
        return writer.finish(
            [j.name for j in jobs],
            paths=tracks["path"].to_dict(),
            extra=extra,
            processed=processed,
        )


def _intact(out: Path, jobs: list[ShardJob]) -> bool:
    """Every planned shard is whole and both CSVs are there (a no-op rerun)."""
    if not ((out / "tracks.csv").is_file() and (out / "failures.csv").is_file()):
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


def _run(
    todo: list[ShardJob],
    jobs: list[ShardJob],
    opts: PreprocessOptions,
    cfg: FeatureConfig,
    owner: Owner,
) -> int:
    """Run the shard jobs; the progress bar counts tracks. Returns tracks processed."""
    done = {j.name for j in jobs} - {j.name for j in todo}
    bar = tqdm(
        total=sum(len(j.track_ids) for j in jobs),
        initial=sum(len(j.track_ids) for j in jobs if j.name in done),
        unit="track",
        desc="preprocess",
        disable=not opts.progress,
        dynamic_ncols=True,
        smoothing=0.1,
    )
    processed = 0
    args = (opts.out, cfg, opts.min_seconds, owner)
    # WavLM on a GPU: one worker unless --jobs says otherwise (each holds a copy of it)
    n_jobs = opts.jobs if opts.jobs is not None or cfg.ssl_device != "cuda" else 1
    results = run_jobs(build_shard, todo, args, opts.backend, n_jobs, opts.scheduler)
    try:
        for r in results:
            if r is None:  # cannot happen while this process holds the lock
                raise BadInput(f"cache {opts.out} was taken over by another run; rerun")
            processed += r.tracks + r.failed
            bar.update(r.tracks + r.failed)
    except BaseException:
        results.close()  # joblib stops the workers
        # this run still holds the lock: the workers' half-written shards go
        remove_temps(opts.out / SHARDS_DIR)
        raise
    finally:
        bar.close()
    return processed


def format_summary(m: Manifest) -> str:
    """Two lines on a finished cache: tracks cached, failed, skipped; size and this run's speed."""
    s = m.summary
    reasons = ", ".join(f"{k} {v}" for k, v in s["failed_by_reason"].items()) or "none"
    skipped = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in m.skipped.items()) or "none"
    run = s["last_run"]
    return (
        f"cached {s['cached']} tracks ({s['hours_of_audio']:.2f} h of audio), "
        f"failed {s['failed']} ({reasons}), skipped {skipped}\n"
        f"cache size {s['cache_bytes'] / 2**20:.1f} MiB; this run: {run['tracks_processed']} "
        f"tracks in {run['seconds']:.1f} s ({run['tracks_per_s']:.1f} tracks/s)"
    )


def _note(msg: str) -> None:
    """Notes and warnings go to stderr whether or not a progress bar is shown."""
    print(msg, file=sys.stderr, flush=True)
