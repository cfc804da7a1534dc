"""Shared fixtures: one synthetic FMA-format dataset per test session."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from helpers import args
from typer.testing import CliRunner

from pipeline.synth import SynthDataset, generate


@pytest.fixture(scope="session")
def synth(tmp_path_factory: pytest.TempPathFactory) -> SynthDataset:
    """A miniature FMA (see pipeline/synth.py): 5 healthy tracks per fma_small genre
    (3 training, 1 validation, 1 test) plus 4 broken small tracks, medium and large
    extras; 4-s clips, 44.1 kHz stereo 320 kbit/s MP3s (two healthy small tracks in
    other formats). About 3 s to generate on 2 cores. Treat it as read-only."""
    return generate(tmp_path_factory.mktemp("fma"), n_per_genre=5, seconds=4.0, jobs=2)


@pytest.fixture(scope="session")
def cache(synth, tmp_path_factory) -> Path:
    """The synthetic small subset preprocessed locally (2 jobs, 8-track shards)."""
    from cli import app

    out = tmp_path_factory.mktemp("pre") / "cache"
    r = CliRunner().invoke(app, args(synth, out, "--jobs", "2", "--shard-size", "8"))
    assert r.exit_code == 0, r.output
    return out


@pytest.fixture
def small_disk(tmp_path):
    """A real 1 MiB tmpfs (needs the right to mount: root in CI and here)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, text=True
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
