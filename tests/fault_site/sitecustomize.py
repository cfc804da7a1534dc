"""Fault injection for tests/test_fault_matrix.py, by monkeypatch in the child processes
(every Python process started with this folder on PYTHONPATH, workers included; nothing
in the library knows of it). MRNET_TEST_HOLD="POINT:MARK" makes the first call at POINT
create the file MARK and sleep, so that a test can signal the run at that moment:

    fsync   os.fsync, inside every whole-or-nothing write (a temporary file exists)
    shard   ShardWriter.append in a preprocess worker (a shard's spill file exists)

Ctrl-C's default handler is restored first: a shell that starts the tests in the
background hands them SIGINT ignored, and a terminal would not.
"""

import os
import signal
import time

_spec = os.environ.get("MRNET_TEST_HOLD")
if _spec:
    _point, _mark = _spec.split(":", 1)
    signal.signal(signal.SIGINT, signal.default_int_handler)

    def _hold() -> None:
        if not os.path.exists(_mark):
            with open(_mark, "w") as f:
                f.write(str(os.getpid()))
            time.sleep(120)

    if _point == "fsync":
        _fsync = os.fsync

        def _held_fsync(fd: int) -> None:
            _hold()
            _fsync(fd)

        os.fsync = _held_fsync
    elif _point == "shard":
        from pipeline.cache import shards

        _append = shards.ShardWriter.append

        def _held_append(self, mel) -> None:
            _append(self, mel)
            _hold()

        shards.ShardWriter.append = _held_append
