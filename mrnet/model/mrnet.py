"""MRNet (Multi-Route Neural Network), built from a `ModelConfig`.

MRNet is from Heo et al., "Multi-Route Neural Network for music genre
classification", J. Acoust. Soc. Korea 44(5), 2025. This is a re-implementation
of the authors' public code (github.com/Jungwoo4021/MRNet,
scripts/egg_exp/model/music_information_retrieval/mlfanet.py, class `MLFANet`,
plus the `CCE` classifier head from scripts/egg_exp/loss/classification.py).

Input differs from the paper: the official code feeds frozen WavLM-base-plus
hidden states (13 layers mixed by a learnable weighted sum, stereo, so
2 x 768 = 1536 input channels). We feed a log-mel spectrogram
[batch, n_mels, frames] straight into the first convolution, so the layer
weights `w` of the original are dropped and the stem takes `n_mels` channels.

Data flow (C = `channels`):

    log-mel [B, n_mels, T] -> InstanceNorm -> Dropout -> Conv1d(k=5) -> ReLU -> BN   [B, C, T]
        (input_norm="batch": a BatchNorm over mel bands instead of the InstanceNorm)
    3 x MRBlock (dilation 2, 3, 4), each output [B, 3C, T] = (s_i | l_i | r_i)
        next block input = block input + l_i
    l = Conv1x1(cat(l_1, l_2, l_3))                   long-term route     [B, C, T]
    g = Conv1x1(cat(l_1, l_2, l_3))                   global context      [B, C, T]
    r_i' = Conv1x1(cat(r_i, g))                       reprocessed routes  [B, C, T]
    7 routes (s_1..3, l, r_1..3) -> AttentiveStatsPool -> [B, 7, 2C]
    x learnable route weight -> flatten -> BN -> Linear(14C -> 128) -> BN   embedding
    -> Linear(128 -> n_classes) -> BN                                       logits
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mrnet.model import ModelConfig
from mrnet.model.wavlm import LayerWeights


class ConvReluBN(nn.Sequential):
    """Conv1d -> ReLU -> BatchNorm1d, "same" length. [B, c_in, T] -> [B, c_out, T].

    The authors put ReLU *before* BN everywhere; we keep that order.

    >>> ConvReluBN(16, 32, kernel_size=3, dilation=2)(torch.randn(2, 16, 50)).shape
    torch.Size([2, 32, 50])
    """

    def __init__(self, c_in: int, c_out: int, kernel_size: int = 1, dilation: int = 1) -> None:
        pad = dilation * (kernel_size // 2)
        super().__init__(
            nn.Conv1d(c_in, c_out, kernel_size, dilation=dilation, padding=pad),
            nn.ReLU(),
            nn.BatchNorm1d(c_out),
        )


class GroupedSE(nn.Module):
    """Squeeze-excitation applied independently to `groups` channel groups.

    [B, C, T] -> [B, C, T]. Each group (one route of an MRBlock) gets its own
    squeeze MLP C/g -> bottleneck/g -> C/g. The authors loop over g separate SE
    modules; a grouped 1x1 conv is the same function with the same parameters.

    >>> GroupedSE(96, 6, groups=3)(torch.randn(2, 96, 50)).shape
    torch.Size([2, 96, 50])
    """

    def __init__(self, channels: int, bottleneck: int, groups: int) -> None:
        super().__init__()
        hidden = max(1, bottleneck // groups) * groups
        self.squeeze = nn.Conv1d(channels, hidden, 1, groups=groups)
        self.excite = nn.Conv1d(hidden, channels, 1, groups=groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean(dim=2, keepdim=True)  # [B, C, 1]
        s = torch.sigmoid(self.excite(F.relu(self.squeeze(s))))
        return x * s


class Res2Conv(nn.Module):
    """Res2Net hierarchical convolution. [B, scale*w, T] -> [B, scale*w, T].

    The input is split into `scale` chunks of width w; chunk i (i < scale-1) is
    added to the previous chunk's output and passed through a dilated conv
    (ReLU, BN). As in the authors' (ECAPA-TDNN style) code, the *first* chunk is
    convolved and the *last* chunk is passed through unchanged.

    >>> Res2Conv(width=4, scale=8, kernel_size=3, dilation=2)(torch.randn(2, 32, 50)).shape
    torch.Size([2, 32, 50])
    """

    def __init__(self, width: int, scale: int, kernel_size: int, dilation: int) -> None:
        super().__init__()
        self.width = width
        self.convs = nn.ModuleList(
            ConvReluBN(width, width, kernel_size, dilation) for _ in range(scale - 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        chunks = torch.split(x, self.width, dim=1)
        out, sp = [], None
        for conv, chunk in zip(self.convs, chunks, strict=False):
            sp = conv(chunk if sp is None else sp + chunk)
            out.append(sp)
        out.append(chunks[-1])
        return torch.cat(out, dim=1)


class MRBlock(nn.Module):
    """Multi-route Res2Net block. [B, C, T] -> [B, routes*C, T].

    1x1 conv C -> 3C, Res2Conv (scale 8, kernel 3, given dilation), 1x1 conv,
    SE per route group, plus a 1x1-projected residual of the input. The output
    is read by MRNet as `routes` equal slices (short, long, reprocess).

    >>> MRBlock(32, dilation=3)(torch.randn(2, 32, 50)).shape
    torch.Size([2, 96, 50])
    """

    def __init__(
        self,
        channels: int,
        dilation: int,
        routes: int = 3,
        scale: int = 8,
        kernel_size: int = 3,
        se_reduction: int = 16,
    ) -> None:
        super().__init__()
        out = routes * channels
        width = out // scale
        self.expand = ConvReluBN(channels, width * scale)
        self.res2 = Res2Conv(width, scale, kernel_size, dilation)
        self.merge = ConvReluBN(width * scale, out)
        self.se = GroupedSE(out, out // se_reduction, groups=routes)
        self.shortcut = nn.Conv1d(channels, out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.se(self.merge(self.res2(self.expand(x))))
        return y + self.shortcut(x)


class AttentiveStatsPool(nn.Module):
    """Attentive statistics pooling. [B, C, T] -> [B, 2C] (weighted mean | std).

    Per-channel attention over time: Conv1x1 C -> C/r, ReLU, BN, tanh,
    Conv1x1 -> C, softmax over T (the authors' ASPLayer, no global context).
    The statistics are computed in float32 with a centered variance and a
    clamp, even under autocast: the authors' E[x^2] - mu^2 form cancels
    catastrophically in bf16/fp16 and yields NaN (SpeechBrain #2544).

    >>> AttentiveStatsPool(32)(torch.randn(2, 32, 50)).shape
    torch.Size([2, 64])
    """

    def __init__(self, channels: int, reduction: int = 16, eps: float = 1e-4) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.attention = nn.Sequential(
            nn.Conv1d(channels, hidden, 1),
            nn.ReLU(),
            nn.BatchNorm1d(hidden),
            nn.Tanh(),
            nn.Conv1d(hidden, channels, 1),
        )
        self.eps = eps  # variance floor, as the authors' clamp(min=1e-4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.attention(x)
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = x.float()
            w = torch.softmax(logits.float(), dim=2)
            mu = (x * w).sum(dim=2)
            var = ((x - mu.unsqueeze(2)).square() * w).sum(dim=2)
            sigma = var.clamp(min=self.eps).sqrt()
        return torch.cat((mu, sigma), dim=1)


class MRNet(nn.Module):
    """Multi-Route Neural Network. [B, n_mels, T] float -> logits [B, n_classes].

    With n_mels=128, channels=512, embed_dim=128 and the authors' instance input norm
    it has 19,111,559 + 131 * n_classes parameters: 19,112,607 for 8 classes
    (fma_small), 19,113,655 for 16. That is exactly the authors' MLFANet with a
    128-channel input, minus its one WavLM layer weight, plus their CCE head (checked
    by loading their weights into this module: same outputs to ~1e-7). The batch input
    norm (the default) adds 2 * n_mels.
    Works for any T (>= ~20 frames is sensible); training mode needs B >= 2
    because of the BatchNorm1d layers after pooling.

    >>> net = MRNet(ModelConfig("mrnet", n_mels=40, n_classes=8, channels=32)).eval()
    >>> x = torch.randn(3, 40, 300)  # 6 s of log-mel at 50 frames/s
    >>> net(x).shape, net.embedding(x).shape
    (torch.Size([3, 8]), torch.Size([3, 128]))
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        c, n_mels = cfg.channels, cfg.n_mels
        self.channels = c
        # WavLM features: the stacked hidden states summed with learned weights (authors')
        self.layers = cfg.input_layers
        if self.layers:
            self.layer_weights = LayerWeights(self.layers, dim=1)
            n_mels //= self.layers
        # instance (the authors'): each track's bands to zero mean, unit variance over
        # time, which removes its long-term spectrum; batch: bands normalised with
        # statistics over the training set, which keeps it
        batch = cfg.input_norm == "batch"
        self.norm = nn.BatchNorm1d(n_mels) if batch else nn.InstanceNorm1d(n_mels)
        self.dropout = nn.Dropout(cfg.dropout)  # authors: nn.Dropout() i.e. p=0.5
        self.stem = ConvReluBN(n_mels, c, kernel_size=5)
        self.blocks = nn.ModuleList(MRBlock(c, d, routes=3, scale=cfg.scale) for d in cfg.dilations)
        n = len(cfg.dilations)
        self.long = ConvReluBN(n * c, c)
        self.context = ConvReluBN(n * c, c)
        self.reprocess = nn.ModuleList(ConvReluBN(2 * c, c) for _ in range(n))
        n_routes = 2 * n + 1  # s_1..n, l, r_1..n
        self.pools = nn.ModuleList(AttentiveStatsPool(c) for _ in range(n_routes))
        self.route_weight = nn.Parameter(torch.ones(1, n_routes, 1))
        self.pool_bn = nn.BatchNorm1d(n_routes * 2 * c)
        self.embed = nn.Linear(n_routes * 2 * c, cfg.embed_dim)
        self.embed_bn = nn.BatchNorm1d(cfg.embed_dim)
        # classifier: the authors keep it in their CCE loss (fc1 + bn1)
        self.head = nn.Linear(cfg.embed_dim, cfg.n_classes)
        self.head_bn = nn.BatchNorm1d(cfg.n_classes)

    def embedding(self, x: torch.Tensor) -> torch.Tensor:
        """[B, n_mels, T] -> [B, embed_dim]."""
        c = self.channels
        if self.layers:  # [B, L * D, T] -> [B, D, T]
            x = self.layer_weights(x.unflatten(1, (self.layers, -1)))
        x = self.stem(self.dropout(self.norm(x)))
        shorts, longs, rests = [], [], []
        for block in self.blocks:
            # authors' code: dropout also before every block; the block's own
            # shortcut sees the dropped-out input, the outer residual does not
            y = block(self.dropout(x))
            short, long, rest = y[:, :c], y[:, c : 2 * c], y[:, 2 * c :]
            shorts.append(short)
            longs.append(long)
            rests.append(rest)
            x = x + long
        lcat = torch.cat(longs, dim=1)
        ctx = self.context(lcat)
        routes = [
            *shorts,
            self.long(lcat),
            *(f(torch.cat((r, ctx), dim=1)) for f, r in zip(self.reprocess, rests, strict=True)),
        ]
        stats = torch.stack([p(r) for p, r in zip(self.pools, routes, strict=True)], dim=1)
        stats = (stats * self.route_weight).flatten(1)  # [B, 7*2C]
        return self.embed_bn(self.embed(self.pool_bn(stats)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head_bn(self.head(self.embedding(x)))
