"""The log-mel definition: one place, used by `preprocess` and `predict` alike.

A clip of mono float32 audio at ``sample_rate`` becomes ``log(mel_power + eps)``,
float32 [frames, n_mels] (time-major, the layout of the shards). The filterbank is
torchaudio's (``melscale_fbanks``, Slaney scale and norm, as librosa); the product
with the power spectrogram is done sparsely since each FFT bin feeds at most two
filters, which makes it ~20x cheaper than torchaudio's dense ``MelScale`` on CPU.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import dataclass

import numpy as np
import scipy.sparse
import torch
import torchaudio.functional as AF


@dataclass(frozen=True)
class FeatureConfig:
    """Log-mel parameters. Frame rate = sample_rate / hop_length (50 frames/s by default,
    the frame rate of the WavLM features the MRNet authors used)."""

    sample_rate: int = 16000
    n_fft: int = 1024
    hop_length: int = 320
    n_mels: int = 128
    f_min: float = 0.0
    f_max: float = 8000.0
    log_eps: float = 1e-6
    max_seconds: float = 30.0

    def __post_init__(self) -> None:
        if self.f_max > self.sample_rate / 2:
            raise ValueError(f"f_max {self.f_max} Hz is above Nyquist ({self.sample_rate / 2} Hz)")
        if not 0 <= self.f_min < self.f_max:
            raise ValueError("f_min must be >= 0 and below f_max")

    @property
    def frames_per_second(self) -> float:
        return self.sample_rate / self.hop_length

    def n_frames(self, n_samples: int) -> int:
        """Frames produced for a clip of ``n_samples`` (centered STFT)."""
        return n_samples // self.hop_length + 1

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> FeatureConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@functools.lru_cache(maxsize=8)
def mel_filterbank(cfg: FeatureConfig) -> torch.Tensor:
    """Float32 [n_fft // 2 + 1, n_mels] triangular filters (Slaney scale and area norm)."""
    return AF.melscale_fbanks(
        n_freqs=cfg.n_fft // 2 + 1,
        f_min=cfg.f_min,
        f_max=cfg.f_max,
        n_mels=cfg.n_mels,
        sample_rate=cfg.sample_rate,
        norm="slaney",
        mel_scale="slaney",
    )


@functools.lru_cache(maxsize=8)
def _sparse_filterbank(cfg: FeatureConfig) -> scipy.sparse.csr_matrix:
    """The filterbank transposed, [n_mels, n_freqs], as CSR."""
    return scipy.sparse.csr_matrix(mel_filterbank(cfg).numpy().T)


@functools.lru_cache(maxsize=8)
def _window(n_fft: int) -> torch.Tensor:
    return torch.hann_window(n_fft)


def log_mel(audio: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """Log-mel of one clip.

    audio: float32 [samples], mono, at ``cfg.sample_rate``; longer clips are cut to
    ``cfg.max_seconds``. Returns float32 [cfg.n_frames(samples), cfg.n_mels].
    """
    limit = int(cfg.max_seconds * cfg.sample_rate)
    x = torch.from_numpy(np.ascontiguousarray(audio[:limit], dtype=np.float32))
    spec = torch.stft(
        x,
        n_fft=cfg.n_fft,
        hop_length=cfg.hop_length,
        window=_window(cfg.n_fft),
        center=True,
        pad_mode="reflect" if x.numel() > cfg.n_fft // 2 else "constant",
        return_complex=True,
    )  # [n_freqs, frames]
    # re² + im² on the planes: reducing a trailing axis of length 2 is ~7x slower.
    power = (spec.real.square() + spec.imag.square()).numpy()  # [n_freqs, frames]
    mel = _sparse_filterbank(cfg) @ power  # [n_mels, frames]
    np.log(mel + np.float32(cfg.log_eps), out=mel)
    return mel.T  # a [frames, n_mels] view
