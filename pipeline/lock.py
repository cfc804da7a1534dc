"""An exclusive, crash-safe lock on a cache directory (``<cache>/.lock``).

flock(2) is released by the kernel when the holder dies, so a lock left by a killed
run is simply taken over; the pid written inside is only for the message.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from pipeline.errors import BadInput


class CacheLock:
    """``with CacheLock(dir):`` holds ``dir/.lock`` or raises BadInput naming the holder."""

    def __init__(self, cache_dir: Path) -> None:
        self.path = cache_dir / ".lock"
        self._fd: int | None = None
        self.stale_pid: int | None = None  # pid of a dead run whose lock we took over

    def __enter__(self) -> CacheLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise BadInput(
                f"cache {self.path.parent} is being written by another run (pid {holder}); "
                "wait for it to finish or choose another --out"
            ) from None
        old = os.read(fd, 64).decode(errors="replace").strip()
        if old.isdigit() and int(old) != os.getpid():
            self.stale_pid = int(old)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            self.path.unlink(missing_ok=True)
            os.close(self._fd)  # closing releases the flock
            self._fd = None
