"""`mrnet verify`: re-read every shard of a cache and check it against what was recorded.

Per shard: the header (whole, contiguous, offsets), the checksum of its datasets
recomputed from the bytes on disk against the one in its attributes and in
manifest.json, that every frame is finite, that labels lie in the label range and that
tracks.csv agrees with the shard's track ids. ``repair`` deletes the damaged shards and
marks the cache unfinished, so that rerunning the same `mrnet preprocess` command
rebuilds exactly them (and nothing reads the cache in between).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pipeline.cache.layout import MANIFEST, REPAIR_FIX, Manifest, shard_path
from pipeline.cache.reader import open_cache, shard_header_problem
from pipeline.cache.shards import ShardError, ShardIndex, read_shard, scan
from pipeline.errors import BadInput
from pipeline.lock import DirLock


@dataclass
class VerifyReport:
    """What `verify_cache` found: shards checked, bytes read, problems per damaged shard."""

    root: Path
    shards: int = 0
    tracks: int = 0
    bytes: int = 0
    seconds: float = 0.0
    damaged: dict[str, list[str]] = field(default_factory=dict)
    unchecked: int = 0  # shards without a recorded checksum (cache format 1)
    repaired: bool = False

    @property
    def ok(self) -> bool:
        """Whether no shard is damaged."""
        return not self.damaged

    def summary(self) -> str:
        """The lines `mrnet verify` prints (`format_report`)."""
        return format_report(self)

    def failure(self) -> str | None:
        """Why `mrnet verify` exits 2: damaged shards that were not repaired."""
        return None if self.ok or self.repaired else str(damaged_error(self))


def check_shard(
    root: Path, entry: dict, manifest: Manifest, expected_ids: np.ndarray | None
) -> tuple[list[str], int, bool]:
    """Check one manifest shard entry: header, checksum, finite frames, track ids.

    Args:
        root: the cache folder.
        entry: the manifest's entry for the shard (its "name" and recorded settings).
        manifest: the cache's manifest.
        expected_ids: the shard's track ids as tracks.csv lists them (in row order);
            None: not compared.

    Returns:
        (problems, in words (empty when sound); bytes of frames read (0 when the shard
        cannot be opened); whether it had a checksum (True when it cannot be opened)).
    """
    path = shard_path(root, entry["name"], str(root / MANIFEST))
    try:
        idx = read_shard(path)
    except ShardError as e:
        return [str(e).replace(f"shard {path} ", "").replace(f"shard {path}: ", "")], 0, True
    problems = []
    header = shard_header_problem(idx, entry, manifest)
    if header:
        problems.append(header)
    recomputed, bad = scan(idx)
    if idx.checksum is not None and recomputed != idx.checksum:
        problems.append("checksum mismatch: its bytes changed after it was written")
    if bad:
        problems.append(f"{bad} frames hold NaN or infinity")
    if expected_ids is not None and not np.array_equal(idx.track_id, expected_ids):
        problems.append("its track ids disagree with tracks.csv")
    return problems, idx.mel_shape[0] * idx.mel_shape[1] * 2, idx.checksum is not None


def verify_cache(root: Path, repair: bool = False, progress: bool = True) -> VerifyReport:
    """Check every shard of the cache at ``root``; with ``repair``, delete damaged ones.

    Repairing marks the cache unfinished first (under its lock), so readers refuse it
    and preprocess rebuilds the deleted shards.

    Args:
        root: the cache folder.
        repair: delete the damaged shards.
        progress: show a progress bar (shards).

    Returns:
        The VerifyReport: counts, seconds taken, the damaged shards' problems.
    """
    t0 = time.perf_counter()
    cache = open_cache(root, check_shards=False)
    report = VerifyReport(root=Path(root))
    rows = cache.tracks.sort_values(["shard", "row"])
    # track ids are integers (FMA) or names (GTZAN, folders): compared as tracks.csv holds them
    ids_of = {name: g["track_id"].to_numpy() for name, g in rows.groupby("shard")}
    bar = tqdm(cache.manifest.shards, unit="shard", desc="verify", disable=not progress)
    for entry in bar:
        expected = ids_of.get(entry["name"], np.zeros(0, np.int64))
        problems, n_bytes, had_sum = check_shard(cache.root, entry, cache.manifest, expected)
        report.shards += 1
        report.tracks += int(entry.get("tracks", 0))
        report.bytes += n_bytes
        report.unchecked += not had_sum
        if problems:
            report.damaged[entry["name"]] = problems
    bar.close()
    if repair and report.damaged:
        _repair(cache.root, cache.manifest, sorted(report.damaged))
        report.repaired = True
    report.seconds = time.perf_counter() - t0
    return report


def _repair(root: Path, manifest: Manifest, names: list[str]) -> None:
    """Mark the cache unfinished, then delete ``names`` (in that order: a crash in
    between leaves a cache that readers refuse and preprocess completes)."""
    with DirLock(root, "cache", fix="wait for it to finish"):
        manifest.status = "in_progress"
        manifest.write(root)
        for name in names:
            shard_path(root, name, str(root / MANIFEST)).unlink(missing_ok=True)


def format_report(r: VerifyReport) -> str:
    """The lines `mrnet verify` prints (the summary last)."""
    lines = [f"{name}: {'; '.join(p)}" for name, p in sorted(r.damaged.items())]
    size = f"{r.bytes / 2**20:.1f} MiB of frames"
    head = f"verified {r.shards} shards ({r.tracks} tracks, {size}) of {r.root}"
    head += f" in {r.seconds:.1f} s"
    if r.unchecked:
        head += f"; {r.unchecked} shards carry no checksum (made by mrnet 0.1): not checksummed"
    if r.ok:
        lines.append(f"{head}: all sound")
    elif r.repaired:
        lines.append(
            f"{head}: deleted {len(r.damaged)} damaged shards; rerun the same `mrnet preprocess` "
            "command to rebuild them"
        )
    else:
        lines.append(f"{head}: {len(r.damaged)} damaged")
    return "\n".join(lines)


def damaged_error(r: VerifyReport) -> BadInput:
    """The BadInput for damaged shards: how many, and the commands that repair them."""
    return BadInput(
        f"{len(r.damaged)} of {r.shards} shards of {r.root} are damaged; run `mrnet verify "
        f"{r.root} --repair`, then rerun the same `mrnet preprocess` command to rebuild them"
    )


_sound: set[tuple] = set()  # shards this process checked: path, checksum, file state


def _key(s: ShardIndex) -> tuple:
    st = s.path.stat()
    return (str(s.path), s.checksum, st.st_ino, st.st_size, st.st_mtime_ns)


def check_checksums(root: Path, shards: Iterable[ShardIndex], progress: bool = False) -> None:
    """Recompute the checksum of every shard in ``shards`` from its bytes on disk (one
    streaming pass each; once per process while the file is unchanged) before a command
    trusts figures
    computed from them; BadInput naming the first damaged shard and the repair. Shards
    without a recorded checksum (mrnet 0.1) are checked for finite frames only."""
    todo = [s for s in shards if _key(s) not in _sound]
    total = sum(s.mel_shape[0] * s.mel_shape[1] * 2 for s in todo)
    bar = tqdm(
        total=total,
        unit="B",
        unit_scale=True,
        desc="checksums",
        leave=False,
        disable=not progress or not todo,
    )
    with bar:
        for s in todo:
            recomputed, bad = scan(s)
            if s.checksum is not None and recomputed != s.checksum:
                problem = "no longer matches its checksum (its bytes changed after it was written)"
            elif bad:
                problem = f"holds NaN or infinity in {bad} frames"
            else:
                _sound.add(_key(s))
                bar.update(s.mel_shape[0] * s.mel_shape[1] * 2)
                continue
            raise BadInput(f"shard {s.path} {problem}; {REPAIR_FIX.format(root=root)}")
