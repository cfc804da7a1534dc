"""The install: the torch/torchaudio pair is pinned exactly, and a mismatched pair already
in a user's environment is one line (exit 2) from the command that needs torchaudio,
while preprocess, train without SpecAugment, evaluate and predict never load it."""

from __future__ import annotations

import configparser
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from helpers import ROOT, make_cache, tiny_args

BROKEN_VERSION = "2.11.1"  # the release that broke fresh installs (built for a later torch)


def requirements() -> dict[str, str]:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    lines = [ln.strip() for ln in cfg["options"]["install_requires"].splitlines()]
    reqs = [ln for ln in lines if ln and not ln.startswith("#")]
    return {r.split("=")[0].split(">")[0].split("<")[0].strip(): r for r in reqs}


def test_torch_and_torchaudio_pinned_to_one_release():
    reqs = requirements()
    torch_pin, ta_pin = reqs["torch"], reqs["torchaudio"]
    assert torch_pin.startswith("torch==") and ta_pin.startswith("torchaudio==")
    assert "*" not in torch_pin + ta_pin
    assert torch_pin.split("==")[1] == ta_pin.split("==")[1]
    assert "<3" in reqs["numpy"]  # compiled packages are built against one numpy ABI


@pytest.fixture(scope="module")
def broken_site(tmp_path_factory) -> Path:
    """A site folder that shadows the installed torchaudio with a copy whose compiled
    library does not load (as torchaudio 2.11.1's does not beside torch 2.11.0) and
    whose metadata says 2.11.1."""
    site = tmp_path_factory.mktemp("site")
    real = Path(importlib.util.find_spec("torchaudio").submodule_search_locations[0])
    shutil.copytree(real, site / "torchaudio", ignore=shutil.ignore_patterns("__pycache__"))
    for so in (site / "torchaudio" / "lib").glob("*.so"):
        so.write_bytes(b"built for another torch\n")  # dlopen fails: OSError, as then
    info = site / f"torchaudio-{BROKEN_VERSION}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: torchaudio\nVersion: {BROKEN_VERSION}\n"
    )
    return site


def mrnet(site: Path, *argv: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)]),
        "OMP_NUM_THREADS": "1",
    }
    return subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), *argv],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_the_broken_copy_really_fails_to_import(broken_site):
    p = subprocess.run(
        [sys.executable, "-c", "import torchaudio"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(broken_site)},
    )
    assert p.returncode != 0 and "OSError" in p.stderr


def test_mismatched_torchaudio_is_one_line_and_only_where_needed(tmp_path, broken_site):
    cache = make_cache(tmp_path / "cache", n_per_class=(4, 1, 1))
    common = [
        "--cache",
        str(cache),
        "--device",
        "cpu",
        *tiny_args(),
    ]

    # SpecAugment (on by default) needs torchaudio: refused before anything is written
    p = mrnet(broken_site, "train", *common, "--out", str(tmp_path / "aug"))
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert p.returncode == 2 and len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    pair = f"pip install '{requirements()['torch']}' '{requirements()['torchaudio']}'"
    for words in (f"torchaudio {BROKEN_VERSION}", f"torch {torch.__version__}", pair):
        assert words in lines[0], (words, lines[0])
    assert not (tmp_path / "aug").exists()

    # everything else runs with the broken torchaudio in place
    run = tmp_path / "run"
    p = mrnet(broken_site, "train", *common, "--out", str(run), "--no-specaugment")
    assert p.returncode == 0, p.stderr
    p = mrnet(
        broken_site,
        "evaluate",
        "--checkpoint",
        str(run / "best.pt"),
        "--cache",
        str(cache),
        "--out",
        str(tmp_path / "rep"),
        "--device",
        "cpu",
        "--no-progress",
    )
    assert p.returncode == 0, p.stderr
    rng = np.random.default_rng(0)
    for genre in ("a", "b"):
        for i in range(5):
            (tmp_path / "music" / genre).mkdir(parents=True, exist_ok=True)
            x = rng.standard_normal(16000 * 2).astype(np.float32) * 0.1
            soundfile.write(tmp_path / "music" / genre / f"{i}.wav", x, 16000)
    p = mrnet(
        broken_site,
        "preprocess",
        "--dataset",
        "folder",
        "--audio-dir",
        str(tmp_path / "music"),
        "--out",
        str(tmp_path / "c2"),
        "--jobs",
        "1",
        "--no-progress",
    )
    assert p.returncode == 0, p.stderr
    p = mrnet(
        broken_site,
        "predict",
        "--checkpoint",
        str(run / "best.pt"),
        "--json",
        str(tmp_path / "music" / "a" / "0.wav"),
    )
    assert p.returncode == 0, p.stderr
