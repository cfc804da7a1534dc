"""Randomness of a training run: per-epoch seeds and the RNG states a checkpoint keeps.

Every epoch reseeds torch / numpy / random from (seed, epoch, rank), so an epoch's
randomness does not depend on how the run got there: a resumed (or replayed) epoch
draws what the unbroken run drew.
"""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_all(seed: int) -> None:
    """Seed torch, numpy (``seed`` mod 2**32) and python's random with ``seed``."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """A 63-bit seed that is a pure function of (seed, epoch, rank)."""
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1, np.uint64)[0] >> 1)


def rng_state() -> dict:
    """torch (CPU, CUDA), numpy and python RNG states as tensors and plain types."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, state, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "python": [version, list(state), gauss],
    }


def set_rng_state(s: dict) -> None:
    """Restore the states `rng_state` returned (CUDA's only with as many devices as then)."""
    torch.set_rng_state(s["torch"])
    if s["cuda"] and torch.cuda.is_available() and len(s["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(s["cuda"])
    kind, keys, pos, has_gauss, cached = s["numpy"]
    np.random.set_state((kind, np.array(keys, np.uint32), pos, has_gauss, cached))
    version, state, gauss = s["python"]
    random.setstate((version, tuple(state), gauss))
