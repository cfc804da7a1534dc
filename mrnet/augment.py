"""Training-time augmentation, on the device, in the input's units: log-mel values, or
waveform samples for a run with a front-end (`train --frontend`, which refuses
SpecAugment); torchaudio only for SpecAugment."""

from __future__ import annotations

import torch
from torch import nn

from mrnet.options import TrainConfig
from pipeline.deps import load_torchaudio


class Augment(nn.Module):
    """Augments x float32 [B, n_mels, T] -> [B, n_mels, T].

    Additive Gaussian noise per crop with probability ``noise_prob`` (mean and std drawn
    uniformly from the given ranges, as the MRNet authors train); then, if
    ``specaugment``, 2 frequency masks (up to ``freq_mask`` bands) and 2 time masks (up to
    ``time_mask`` frames) per crop, filled with the crop's mean.

    >>> Augment(1.0, (-0.03, 0.03), (0.05, 0.1), True, 16, 30)(torch.zeros(2, 40, 100)).shape
    torch.Size([2, 40, 100])
    """

    def __init__(
        self,
        noise_prob: float,
        noise_mean: tuple[float, float],
        noise_std: tuple[float, float],
        specaugment: bool = False,
        freq_mask: int = 0,
        time_mask: int = 0,
    ) -> None:
        super().__init__()
        self.p, self.mean, self.std = noise_prob, tuple(noise_mean), tuple(noise_std)
        masks = []
        if specaugment:  # torchaudio's masks: loaded only when asked for
            at = load_torchaudio("torchaudio.transforms")
            masks = [at.FrequencyMasking(freq_mask, iid_masks=True)] * 2
            masks += [at.TimeMasking(time_mask, iid_masks=True)] * 2
        self.masks = nn.ModuleList(masks)

    @classmethod
    def from_config(cls, cfg: TrainConfig) -> Augment:
        """The augmentation a run's settings describe."""
        return cls(
            cfg.noise_prob,
            cfg.noise_mean,
            cfg.noise_std,
            cfg.specaugment,
            cfg.freq_mask,
            cfg.time_mask,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Augment a batch x [B, n_mels, frames]: additive noise, then SpecAugment masks."""
        if self.p > 0:
            u = torch.rand(x.shape[0], 3, 1, 1, device=x.device)  # apply?, mean, std
            on = (u[:, 0] < self.p).to(x.dtype)
            mean = self.mean[0] + (self.mean[1] - self.mean[0]) * u[:, 1]
            std = self.std[0] + (self.std[1] - self.std[0]) * u[:, 2]
            x = x + on * (mean + std * torch.randn_like(x))
        if len(self.masks):
            mu = x.mean(dim=(1, 2), keepdim=True)
            x = x - mu
            for mask in self.masks:
                x = mask(x)
            x = x + mu
        return x


def mixup(
    x: torch.Tensor, y: torch.Tensor, alpha: float
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """mixup (Zhang et al., 2018) of one batch: x [B, ...] becomes ``lam * x + (1 - lam) *
    x[perm]`` for a random pairing ``perm`` and ``lam ~ Beta(alpha, alpha)`` (one per
    batch, from torch's global RNG). Returns (mixed x, the partners' targets y[perm],
    lam): the loss is ``lam * loss(y) + (1 - lam) * loss(y[perm])``.

    >>> x, y = torch.arange(4.0)[:, None], torch.arange(4)
    >>> mixed, partner, lam = mixup(x, y, 0.4)
    >>> bool(torch.allclose(mixed[:, 0], lam * x[:, 0] + (1 - lam) * partner.float()))
    True
    """
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    perm = torch.randperm(x.shape[0], device=x.device)
    return lam * x + (1 - lam) * x[perm], y[perm], lam
