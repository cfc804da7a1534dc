"""Fault injection for the tests, by monkeypatch in child processes: every Python process
started with this folder on PYTHONPATH (tests/helpers.py: fault_env), workers included.
Nothing in the library knows of it. Each variable turns one patch on:

    MRNET_TEST_HOLD="POINT:MARK"   the first call at POINT creates the file MARK and sleeps,
                                   so a test can signal the run at that moment:
                                   fsync (inside every whole-or-nothing write: a temporary
                                   file exists) or shard (a preprocess worker has started a
                                   shard's spill file)
    MRNET_TEST_STEP_DELAY=S        each optimiser step sleeps S seconds after it
    MRNET_TEST_TRACK_DELAY=S       each track a shard job finishes sleeps S seconds after it
    MRNET_TEST_KILL_AFTER="NAME:N" SIGKILL right after the N-th whole-file write of a file
                                   called NAME (best.pt, last.pt, metrics.csv, ...)

Ctrl-C's default handler is restored first: a shell that starts the tests in the
background hands them SIGINT ignored, and a terminal would not.
"""

import os
import signal
import time

if any(k.startswith("MRNET_TEST_") for k in os.environ):
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _after(owner, name: str, then) -> None:
    original = getattr(owner, name)

    def patched(*args, **kwargs):
        out = original(*args, **kwargs)
        then(*args)
        return out

    setattr(owner, name, patched)


_hold = os.environ.get("MRNET_TEST_HOLD")
if _hold:
    _point, _mark = _hold.split(":", 1)

    def _wait(*_) -> None:
        if not os.path.exists(_mark):
            with open(_mark, "w") as f:
                f.write(str(os.getpid()))
            time.sleep(120)

    if _point == "fsync":
        _fsync = os.fsync

        def _held_fsync(fd: int) -> None:
            _wait()
            _fsync(fd)

        os.fsync = _held_fsync
    elif _point == "shard":
        from pipeline.cache import shards

        _after(shards.ShardWriter, "append", _wait)

_step = float(os.environ.get("MRNET_TEST_STEP_DELAY", "0") or 0)
if _step:
    import torch

    _after(torch.optim.AdamW, "step", lambda *_: time.sleep(_step))

_track = float(os.environ.get("MRNET_TEST_TRACK_DELAY", "0") or 0)
if _track:
    from pipeline.cache import shards

    _after(shards.ShardWriter, "end_track", lambda *_: time.sleep(_track))

_kill = os.environ.get("MRNET_TEST_KILL_AFTER")
if _kill:
    from pathlib import Path

    from pipeline import atomic

    _name, _nth = _kill.split(":")
    _written = []

    def _count(path, *_) -> None:
        if Path(path).name == _name:
            _written.append(path)
            if len(_written) == int(_nth):
                os.kill(os.getpid(), signal.SIGKILL)

    _after(atomic, "write_atomic", _count)
