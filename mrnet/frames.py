"""Cached frames as model input: the one layout change between the cache and a model."""

from __future__ import annotations

import numpy as np
import torch


def to_model_layout(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Float16 [b, frames, n_mels] (the shards' layout) -> contiguous float32
    [b, n_mels, frames] (the models'), in one pass."""
    x = torch.as_tensor(frames)
    out = torch.empty((x.shape[0], x.shape[2], x.shape[1]), dtype=torch.float32, device=x.device)
    return out.copy_(x.transpose(1, 2))
