"""An exclusive, crash-safe lock on a directory (``<dir>/.lock``): one writer at a time.

flock(2) is released by the kernel when the holder dies, so a lock left by a killed
run is simply taken over; the text inside (pid and a per-run token) is for the message
and for workers to check that the run they work for still owns the directory.

The file is removed when the holder leaves. A second run may have opened the old file
just before that; after taking the flock it checks that the path still names the file
it locked (same inode), and starts over if not, so two runs never both hold the lock.

A flock is shared by every descriptor of its open file, and fork copies descriptors:
a forked child (a DataLoader worker) would keep the lock of a killed run alive until it
noticed the death. Forked children therefore close their copies at once.
"""

from __future__ import annotations

import fcntl
import os
import uuid
from pathlib import Path

from pipeline.atomic import write_error
from pipeline.errors import BadInput

LOCK_NAME = ".lock"
_held: set[int] = set()  # descriptors of the locks this process holds


def _close_in_child() -> None:
    for fd in _held:
        try:
            os.close(fd)
        except OSError:
            pass
    _held.clear()


os.register_at_fork(after_in_child=_close_in_child)


class DirLock:
    """``with DirLock(dir, "cache"):`` holds ``dir/.lock`` or raises BadInput naming the
    holder; ``what`` names the directory in that message ("cache", "run")."""

    def __init__(
        self, folder: Path, what: str = "cache", fix: str = "choose another --out"
    ) -> None:
        self.path = Path(folder) / LOCK_NAME
        self.what, self.fix = what, fix
        self.token = f"{os.getpid()} {uuid.uuid4().hex}"
        self._fd: int | None = None
        self.stale_pid: int | None = None  # pid of a dead run whose lock we took over

    def __enter__(self) -> DirLock:
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 128).decode(errors="replace").split() or ["?"]
                os.close(fd)
                raise BadInput(
                    f"{self.what} {self.path.parent} is being written by another run "
                    f"(pid {holder[0]}); wait for it to finish or {self.fix}"
                ) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # the holder removed the file as we opened it: lock the new one
        old = os.read(fd, 128).decode(errors="replace").split()
        if old and old[0].isdigit() and int(old[0]) != os.getpid():
            self.stale_pid = int(old[0])
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{self.token}\n".encode(), 0)
        except OSError as e:
            os.close(fd)
            self.path.unlink(missing_ok=True)
            raise write_error(self.path, e) from e
        self._fd = fd
        _held.add(fd)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            self.path.unlink(missing_ok=True)
            _held.discard(self._fd)
            os.close(self._fd)  # closing releases the flock
            self._fd = None


def lock_token(folder: Path) -> str | None:
    """The token written by the run holding (or last holding) ``folder``'s lock."""
    try:
        return (Path(folder) / LOCK_NAME).read_text().strip() or None
    except OSError:
        return None
