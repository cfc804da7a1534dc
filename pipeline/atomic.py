"""Whole-or-nothing file writes, and disk faults as one-line errors.

Every file mrnet writes (manifest, CSVs, shards, checkpoints, reports) goes through a
temporary name in the same folder, is flushed and fsynced, then renamed over its final
name: a reader, or a crash, sees the old file or the new one, never a part. Temporary
names all look like ``<name>.tmp-<pid>-<hex>`` so that leftovers of a killed run are
recognised (`is_temp`), never taken for data and never block a rerun.

An OSError while writing (ENOSPC above all; HDF5 reports it as RuntimeError) becomes a
`BadInput` naming the path and the fix, after the temporary file is removed.
"""

from __future__ import annotations

import errno
import os
import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from pipeline.errors import BadInput

_TEMP = re.compile(r"\.(tmp|partial)-\d+(-[0-9a-f]+)?(\.[a-z]+)?$")


def temp_path(path: Path, suffix: str = "") -> Path:
    """A fresh temporary name next to ``path`` (unique per process and call)."""
    return path.with_name(f"{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}{suffix}")


def is_temp(name: str) -> bool:
    """True for the temporary names of `temp_path` (and of mrnet 0.1's shard partials)."""
    return bool(_TEMP.search(name)) or name.endswith(".tmp")


def remove_temps(folder: Path) -> int:
    """Delete leftover temporary files in ``folder`` (not recursive); returns how many."""
    n = 0
    if folder.is_dir():
        for p in folder.iterdir():
            if p.is_file() and is_temp(p.name):
                p.unlink(missing_ok=True)
                n += 1
    return n


def _is_disk_full(e: BaseException) -> bool:
    while e is not None:
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(e)
        if "No space left" in text or "errno = 28" in text or "Disk quota" in text:
            return True
        e = e.__cause__ or e.__context__
    return False


RERUN = "rerun the same command to resume"  # the end of a fix, for what resumes
AGAIN = "rerun the same command"  # ... and for a result written whole or not at all


def write_error(path: Path, e: BaseException, rerun: str = RERUN) -> BadInput:
    """The one-line BadInput for a failed write of ``path``; ``rerun`` ends the fix."""
    if _is_disk_full(e):
        return BadInput(f"no space left on device writing {path}; free space and {rerun}")
    reason = getattr(e, "strerror", None) or str(e).splitlines()[0][:120] or type(e).__name__
    return BadInput(f"cannot write {path} ({reason}); fix that and {rerun}")


_ACCESS = (errno.EACCES, errno.EPERM, errno.EROFS)


def environment_error(e: OSError, rerun: str = "rerun") -> BadInput | None:
    """The one-line BadInput for an OSError the user fixes outside mrnet (a full disk, a
    read-only or forbidden path); None for any other OSError."""
    path = Path(e.filename) if e.filename else None
    if _is_disk_full(e):
        return write_error(path or Path("?"), e, rerun)
    if e.errno in _ACCESS:
        return BadInput(
            f"{path or 'a file'}: {e.strerror}; choose a path you may write (e.g. another "
            f"--out) or fix its permissions, then {rerun}"
        )
    return None


def _unlink(*paths: Path) -> None:
    for t in paths:
        try:
            t.unlink(missing_ok=True)
        except OSError:
            pass


@contextmanager
def writing(path: Path, *temps: Path, rerun: str = RERUN) -> Iterator[None]:
    """Turn an OSError (or HDF5's RuntimeError) in the block into `write_error`,
    removing the given temporary files first; they also go when the block is
    interrupted (Ctrl-C, SIGTERM), which then propagates as it is."""
    try:
        yield
    except (OSError, RuntimeError) as e:
        _unlink(*temps)
        raise write_error(path, e, rerun) from e
    except BaseException:
        _unlink(*temps)
        raise


def remove_dead_temps(folder: Path) -> int:
    """Delete the temporary files in ``folder`` left by processes that no longer run (a
    writer killed with SIGKILL cannot clean up); another live writer's are kept."""
    n = 0
    if not folder.is_dir():
        return 0
    for p in folder.iterdir():
        m = _TEMP.search(p.name)
        if m is None or not p.is_file():
            continue
        pid = int(re.search(r"-(\d+)", m.group(0)).group(1))
        try:
            os.kill(pid, 0)
            continue  # its writer lives
        except ProcessLookupError:
            pass
        except PermissionError:
            continue  # another user's live process
        _unlink(p)
        n += 1
    return n


def fsync_path(path: Path) -> None:
    """Flush the file at ``path`` to disk (fsync; it must be writable)."""
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


Data = str | bytes | Callable[[BinaryIO], None]


def _write_temp(path: Path, data: Data, rerun: str) -> Path:
    """``data`` (text, bytes, or a function writing to a binary file) in a fsynced
    temporary file next to ``path``; BadInput on a disk fault, the temporary removed."""
    tmp = temp_path(path)
    with writing(path, tmp, rerun=rerun):
        with open(tmp, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
    return tmp


def write_atomic(path: Path, data: Data, rerun: str = RERUN) -> None:
    """Write ``data`` to ``path`` through a temporary file, fsync and rename. Raises
    BadInput on a disk fault; the old ``path`` is then untouched."""
    path = Path(path)
    tmp = _write_temp(path, data, rerun)
    with writing(path, tmp, rerun=rerun):
        os.replace(tmp, path)


def write_together(
    files: list[tuple[Path, Data]], stale: tuple[Path, ...] = (), rerun: str = RERUN
) -> None:
    """Replace several files that make one result, the last of ``files`` marking it
    complete. Every file is first written whole under a temporary name: a disk fault
    there leaves the old result as it was. Then the old marker and ``stale`` files go,
    and the files are renamed into place in order, the marker last: a kill in between
    leaves no marker, never a marker beside files of another result."""
    remove_dead_temps(Path(files[-1][0]).parent)
    temps: list[Path] = []
    try:
        for path, data in files:
            temps.append(_write_temp(Path(path), data, rerun))
    except BaseException:  # a disk fault or an interrupt: nothing of this result stays
        _unlink(*temps)
        raise
    marker = Path(files[-1][0])
    with writing(marker, *temps, rerun=rerun):
        for path in (marker, *stale):
            path.unlink(missing_ok=True)
        for (path, _), tmp in zip(files, temps):
            os.replace(tmp, path)
