"""Shared fixtures: one synthetic FMA-format dataset per test session."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import pytest
from typer.testing import CliRunner

from pipeline.synth import SynthDataset, generate


@pytest.fixture(scope="session")
def synth(tmp_path_factory: pytest.TempPathFactory) -> SynthDataset:
    """A miniature FMA (see pipeline/synth.py): 5 healthy tracks per fma_small genre
    (3 training, 1 validation, 1 test) plus 4 broken small tracks, medium and large
    extras; 4-s clips, 44.1 kHz stereo 320 kbit/s MP3s (two healthy small tracks in
    other formats). About 3 s to generate on 2 cores. Treat it as read-only."""
    return generate(tmp_path_factory.mktemp("fma"), n_per_genre=5, seconds=4.0, jobs=2)


def args(synth, out, *extra) -> list[str]:
    """`mrnet preprocess` arguments for the synthetic small subset into ``out``."""
    return [
        "preprocess",
        "--audio-dir",
        str(synth.audio_dir),
        "--metadata-dir",
        str(synth.metadata_dir),
        "--subset",
        "small",
        "--out",
        str(out),
        *extra,
    ]


@pytest.fixture(scope="session")
def cache(synth, tmp_path_factory) -> Path:
    """The synthetic small subset preprocessed locally (2 jobs, 8-track shards)."""
    from cli import app

    out = tmp_path_factory.mktemp("pre") / "cache"
    r = CliRunner().invoke(app, args(synth, out, "--jobs", "2", "--shard-size", "8"))
    assert r.exit_code == 0, r.output
    return out


def cache_content(root: Path) -> dict:
    """Everything a reader sees, minus timings: shard arrays and attrs, CSVs, manifest."""
    m = json.loads((root / "manifest.json").read_text())
    m["summary"].pop("last_run")
    m["summary"].pop("cache_bytes")
    m.pop("source")
    content = {
        "manifest": m,
        "tracks": (root / "tracks.csv").read_text(),
        "failures": (root / "failures.csv").read_text().replace(str(root), ""),
    }
    for p in sorted((root / "shards").iterdir()):
        with h5py.File(p, "r") as f:
            arrays = {k: f[k][()] for k in f}
            content[p.name] = {
                k: a.tolist() if a.dtype == object else a.tobytes() for k, a in arrays.items()
            } | dict(f.attrs)
    return content


ROOT = Path(__file__).resolve().parents[1]

# One job runs in-process, so slowing decoding there makes a kill land mid-run.
# decoding slowed to 0.08 s a track, and to 1 s a track once the shards the test waits
# for (8 tracks each) and one more are written: a test process that is starved for a
# few seconds on a busy machine still signals a run that is not finished. Ctrl-C as in a
# terminal: a shell that starts the tests in the background hands them SIGINT ignored.
_SLOW_PREPROCESS = (
    "import os, signal, sys, time, pipeline.audio as a\n"
    "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
    "orig, calls = a.load_audio, []\n"
    "fast = 8 * (int(os.environ['MRNET_TEST_MIN_SHARDS']) + 1)\n"
    "def slow(*x, **k):\n"
    "    calls.append(1)\n"
    "    time.sleep(0.08 if len(calls) <= fast else 1.0)\n"
    "    return orig(*x, **k)\n"
    "a.load_audio = slow\n"
    "from cli import app\n"
    "sys.argv[0] = 'mrnet'\n"
    "app()\n"
)


def interrupt_mid_run(synth, out: Path, sig: int, min_shards: int = 2,
                      *extra: str) -> tuple[int, str]:  # fmt: skip
    """Start `mrnet preprocess` (1 job, 8-track shards, decoding slowed, ``extra``
    arguments) into ``out``, send ``sig`` once ``min_shards`` shards are written;
    returns (exit code, stderr)."""
    argv = [
        sys.executable,
        "-c",
        _SLOW_PREPROCESS,
        *args(synth, out, "--jobs", "1", "--shard-size", "8", *extra),
    ]
    env = {**os.environ, "MRNET_TEST_MIN_SHARDS": str(min_shards)}
    proc = subprocess.Popen(
        argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env
    )
    deadline = time.time() + 60
    while time.time() < deadline and len(list((out / "shards").glob("*.h5"))) < min_shards:
        time.sleep(0.02)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    return proc.returncode, err


def kill_mid_run(synth, out: Path, min_shards: int = 2, *extra: str) -> None:
    """SIGKILL a preprocess run into ``out`` once ``min_shards`` shards are written."""
    interrupt_mid_run(synth, out, signal.SIGKILL, min_shards, *extra)


@pytest.fixture
def small_disk(tmp_path):
    """A real 1 MiB tmpfs (needs the right to mount: root in CI and here)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                       capture_output=True, text=True)  # fmt: skip
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def fill(disk: Path, leave: int) -> Path:
    """A file taking all but ``leave`` bytes of ``disk``."""
    free = shutil.disk_usage(disk).free
    filler = disk / "filler"
    with open(filler, "wb") as f:
        f.write(b"\0" * max(0, free - leave))
    return filler
