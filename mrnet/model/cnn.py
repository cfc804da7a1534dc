"""The `cnn` baseline: the 128x128 mel-image CNN of the second reference project."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mrnet.model import ModelConfig


class CNNBaseline(nn.Module):
    """128x128 mel-image CNN (the reference project's model). [B, n_mels, T] -> [B, n_classes].

    The input is resized on the fly to 128 mel bins x 128 frames (bilinear).
    Five 3x3 conv -> BN -> ReLU -> 2x2 max-pool stages (8, 16, 32, 64, 64
    channels; 128 -> 4), then FC 1024 -> 192 -> BN -> ReLU -> dropout -> FC.
    The reference's fifth stage is a 2x2 stride-2 conv without pooling; we use
    a 3x3 conv + pool like the other four (same output size).

    >>> net = CNNBaseline(ModelConfig("cnn", n_mels=40, n_classes=8)).eval()
    >>> net(torch.randn(2, 40, 300)).shape
    torch.Size([2, 8])
    """

    size = 128
    widths = (8, 16, 32, 64, 64)
    hidden = 192

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        widths, hidden, n_classes = self.widths, self.hidden, cfg.n_classes
        layers: list[nn.Module] = []
        c_in = 1
        for c in widths:
            layers += [
                nn.Conv2d(c_in, c, 3, padding=1),
                nn.BatchNorm2d(c),
                nn.ReLU(),
                nn.MaxPool2d(2),
            ]
            c_in = c
        self.features = nn.Sequential(*layers)
        side = self.size // 2 ** len(widths)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c_in * side * side, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(hidden, n_classes),
        )

    def embedding(self, x: torch.Tensor) -> torch.Tensor:
        """[B, n_mels, T] -> [B, hidden]: the penultimate layer (after its ReLU)."""
        x = x.unsqueeze(1)  # [B, 1, n_mels, T]
        if x.shape[-2:] != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return self.classifier[:4](self.features(x))  # Flatten, Linear, BN, ReLU

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier[4:](self.embedding(x))  # Dropout, Linear
