"""torchaudio, imported where a run needs it, with a one-line error when it cannot load.

In pipeline/ because both sides use it: `mrnet train` (SpecAugment masks) and the WavLM
feature kind of `mrnet preprocess` (pipeline.ssl).

A torchaudio wheel loads only beside the exact torch release it was built for and does
not declare that pin, so a later torchaudio next to an older torch fails deep inside its
import (an OSError from its compiled library). mrnet imports torchaudio only where it is
used (SpecAugment masks in `mrnet train`, on by default; `--no-specaugment` runs without
it; WavLM features); log-mel preprocess, evaluate and predict never load it.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from types import ModuleType

import torch

from pipeline.errors import BadInput


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"


def pinned_pair() -> str:
    """The pip arguments that install the torch/torchaudio pair mrnet pins (setup.cfg),
    e.g. ``'torch==2.11.0' 'torchaudio==2.11.0'``."""
    try:
        wanted = importlib.metadata.requires("mrnet") or []
    except importlib.metadata.PackageNotFoundError:
        wanted = []
    pins = {r.split("==")[0].strip(): r.split(";")[0].strip() for r in wanted if "==" in r}
    if {"torch", "torchaudio"} <= set(pins):
        return f"'{pins['torch']}' '{pins['torchaudio']}'"
    base = torch.__version__.split("+")[0]  # not installed as a package: torch's own release
    return f"'torch=={base}' 'torchaudio=={base}'"


def load_torchaudio(module: str = "torchaudio") -> ModuleType:
    """Import ``module`` (torchaudio or one of its submodules). BadInput naming both
    versions and the command that installs a matching pair when it does not load."""
    try:
        return importlib.import_module(module)
    except (OSError, ImportError, RuntimeError, AttributeError) as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:100]
        raise BadInput(
            f"torchaudio {_version('torchaudio')} does not load with torch {torch.__version__} "
            f"(a torchaudio wheel works only with the torch release it was built for: "
            f"{reason}); install the pair mrnet pins: pip install {pinned_pair()}"
        ) from None
