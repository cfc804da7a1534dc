"""The WavLM input inside the model: learned layer weights over WavLM's hidden states, and
the on-the-fly front-end (`train --frontend wavlm`) that computes those states from a
waveform cache's frames in each step.

    LayerWeights        (L', B, T, D) -> (B, T, D), one learned scalar per layer
    WaveFrontEnd        (B, C x 320, T) waveform frames -> (B, L' x C x D, T - 1) states,
                        frozen (what MRNet with input_layers = L' reads, as cached states)
    WithFrontEnd        front-end then MRNet: what a --frontend run trains and saves
    frontend_ssl        the WavLM a checkpoint's front-end needs, from --ssl-model DIR

The model folder is read by pipeline.ssl (also used by `mrnet preprocess --features wavlm`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from pipeline.errors import BadInput
from pipeline.features import SSL_HOP
from pipeline.ssl import WHERE_FROM, SSLModel, cached_model, hidden_states, torchaudio_args


class LayerWeights(nn.Module):
    """Learned weighted sum of stacked hidden states over axis ``dim``: e.g. (L, B, T, D)
    -> (B, T, D) with dim 0, (B, L, D, T) -> (B, D, T) with dim 1.

    One scalar per layer, initialised to 1 and used as is (no softmax), as the authors do.
    """

    def __init__(self, n_layers: int, dim: int = 0) -> None:
        super().__init__()
        self.dim = dim
        self.weight = nn.Parameter(torch.ones(n_layers))

    def forward(self, states: Tensor) -> Tensor:
        w = self.weight.to(states.dtype).view(-1, *([1] * (states.dim() - self.dim - 1)))
        return (states * w).sum(self.dim)


class WaveFrontEnd(nn.Module):
    """Frozen WavLM on waveform frames: (B, C x 320, T) -> (B, L' x C x D, T - 1) float32.

    The frames are a waveform cache's (pipeline.features.wave_frames: frame t holds 320
    samples of each channel), so crops and windows are cut in WavLM frames. Each channel
    goes through WavLM on its own (the authors' stereo); the output stacks, for each of
    the L' chosen hidden states, the channels' D features one after the other: MRNet's
    learned layer weights (input_layers = L') then give each channel the same weights,
    the authors' 2 x 768 = 1536 features for stereo base-plus. A waveform of T frames
    gives T - 1 WavLM frames (its first convolution spans 400 samples).

    WavLM is held outside the module's parameters and state dict (a checkpoint records
    its SHA-256, not its weights), follows ``.to()``, stays in eval mode without
    gradients, and runs in bf16 on a GPU.

    Args:
        ssl: the loaded model (`pipeline.ssl.load_wavlm`).
        layers: indices into its L + 1 hidden states (all when None).
    """

    def __init__(self, ssl: SSLModel, layers: Sequence[int] | None = None) -> None:
        super().__init__()
        n = ssl.n_states
        self.layers = list(range(n)) if layers is None else [int(i) for i in layers]
        if not self.layers or any(not 0 <= i < n for i in self.layers):
            raise BadInput(f"WavLM layers must lie among its hidden states 0..{n - 1}")
        self.ssl = ssl  # a plain attribute: not a submodule, so not in the state dict

    def _apply(self, fn, recurse: bool = True):
        self.ssl.model._apply(fn)
        return super()._apply(fn, recurse)

    def forward(self, frames: Tensor) -> Tensor:
        b, width, t = frames.shape
        c = width // SSL_HOP
        wave = frames.unflatten(1, (c, SSL_HOP)).transpose(2, 3).reshape(b * c, t * SSL_HOP)
        with torch.no_grad(), torch.autocast("cuda", torch.bfloat16, enabled=wave.is_cuda):
            states = hidden_states(self.ssl.model, wave.float())[self.layers]  # (L', B*C, T', D)
        states = states.float().unflatten(1, (b, c))  # (L', B, C, T', D)
        return states.permute(1, 0, 2, 4, 3).reshape(b, -1, states.shape[3])


class WithFrontEnd(nn.Module):
    """A front-end, then the model: (B, C x 320, T) waveform frames -> logits (B, K).
    The weights (state dict) are the model's, under ``net.``."""

    def __init__(self, front: WaveFrontEnd, net: nn.Module) -> None:
        super().__init__()
        self.front, self.net = front, net

    def embedding(self, frames: Tensor) -> Tensor:
        """(B, C x 320, T) -> (B, embed_dim)."""
        return self.net.embedding(self.front(frames))

    def forward(self, frames: Tensor) -> Tensor:
        return self.net(self.front(frames))


def frontend_ssl(sha256: str, config: dict, path: Path | str | None) -> SSLModel:
    """The WavLM a front-end was built with, from ``path`` (--ssl-model DIR), loaded once
    per process; BadInput in one line when no folder is given, or another model's: other
    weights (``sha256``), or a config.json (``config``, as recorded) that builds another
    network from the same tensors (e.g. another layer-norm placement)."""
    if path is None:
        raise BadInput(
            f"this model computes WavLM features inside (trained with --frontend wavlm): "
            f"pass --ssl-model DIR, the WavLM it was trained with (weights SHA-256 "
            f"{sha256[:12]}), {WHERE_FROM}"
        )
    ssl = cached_model(str(Path(path).absolute()), sha256)
    wanted, got = torchaudio_args(config) if config else {}, torchaudio_args(ssl.config)
    differ = sorted(k for k in wanted if wanted[k] != got.get(k))
    if differ:
        raise BadInput(
            f"--ssl-model {path}: its config.json differs from the one this model was "
            f"trained with (in {', '.join(differ)}); pass the folder it was trained with"
        )
    return ssl
