"""The learned side of the WavLM input: layer weights over WavLM's hidden states, and the
on-the-fly front-end (frozen WavLM, then the weights) for a waveform input.

    LayerWeights        (L', B, T, D) -> (B, T, D), one learned scalar per layer
    WavLMFrontEnd       (B, C, S) waveform -> (B, C * D, T) features for MRNet

The model folder is read by pipeline.ssl (also used by `mrnet preprocess --features wavlm`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from pipeline.errors import BadInput
from pipeline.ssl import SSLModel, hidden_states


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


class WavLMFrontEnd(nn.Module):
    """Frozen WavLM, then learned layer weights: (B, C, S) waveform -> (B, C * D, T).

    Each channel goes through WavLM on its own and the channels' features are
    concatenated (the authors' stereo: C=2, D=768 gives 1536). A mono input to a stereo
    front-end is duplicated. No gradient reaches WavLM, which always stays in eval mode
    (no dropout, no layer drop); on a GPU it runs in bf16.

    Args:
        ssl: the loaded model (`load_wavlm`).
        layers: indices into the L + 1 hidden states to combine (default: all).
        channels: 1 (mono) or 2 (stereo).
    """

    def __init__(self, ssl: SSLModel, layers: Sequence[int] | None = None, channels: int = 1):
        super().__init__()
        n = ssl.n_states
        self.layers = list(range(n)) if layers is None else [int(i) for i in layers]
        if not self.layers or any(not 0 <= i < n for i in self.layers):
            raise BadInput(f"--layers must pick among the model's hidden states 0..{n - 1}")
        if channels not in (1, 2):
            raise BadInput(f"channels must be 1 or 2, not {channels}")
        self.wavlm = ssl.model
        self.channels = channels
        self.out_dim = channels * ssl.dim
        self.weights = LayerWeights(len(self.layers))

    def train(self, mode: bool = True) -> WavLMFrontEnd:
        super().train(mode)
        self.wavlm.eval()
        return self

    def forward(self, wave: Tensor) -> Tensor:
        b, c, s = wave.shape
        if c == 1 and self.channels == 2:
            wave = wave.expand(b, 2, s)
        elif c != self.channels:
            raise ValueError(f"a {self.channels}-channel front-end got {c} channels")
        with torch.no_grad(), torch.autocast("cuda", torch.bfloat16, enabled=wave.is_cuda):
            states = hidden_states(self.wavlm, wave.reshape(b * self.channels, s).float())
        states = states[self.layers].float()  # (L', B*C, T, D)
        x = self.weights(states)  # (B*C, T, D)
        t, d = x.shape[1:]
        return x.reshape(b, self.channels, t, d).permute(0, 1, 3, 2).reshape(b, -1, t)
