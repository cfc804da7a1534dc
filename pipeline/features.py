"""The log-mel definition: one place, used by `preprocess` and `predict` alike.

A clip of mono float32 audio at ``sample_rate`` becomes ``log(mel_power + eps)``,
float32 [frames, n_mels] (time-major, the layout of the shards). It is torchaudio's
``MelSpectrogram(n_fft, hop_length, f_min, f_max, n_mels, norm="slaney",
mel_scale="slaney")`` (centered periodic-Hann STFT, power 2, Slaney filters as librosa's)
followed by a log; tests check equality with torchaudio to 1e-4.

It is written with numpy/scipy rather than torch because preprocess workers must stay
small: importing torch alone costs a process ~480 MB of RSS. Two costs are avoided on
the way: |X|^2 is taken as re^2 + im^2 on separate planes (a reduction along a trailing
axis of length 2 is ~7x slower), and the mel product is sparse (each FFT bin feeds at
most two filters: ~1,000 non-zeros instead of a dense 513 x 128 product).
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import numpy as np

from pipeline.errors import TrackFailed
from pipeline.settings import Registry

FEATURE_KINDS = Registry(
    "feature kind",
    {
        "logmel": "mrnet's log-mel, computed from audio (`log_mel`)",
        "melon-log": "Melon's precomputed mels, already logarithmic: stored as they are",
        "melon-linear": "Melon's precomputed mels on a linear scale: stored as log(x + eps)",
        "wavlm": "hidden states of a frozen WavLM (--ssl-model), computed from audio at "
        "16 kHz: float16 [frames, layers x dim] at 50 frames/s (pipeline.ssl)",
        "wave": "the 16-kHz waveform itself, for a front-end inside the model (`train "
        "--frontend wavlm`): float16 [frames, channels x 320], one frame per WavLM frame",
    },
)
SSL_RATE, SSL_HOP = 16000, 320  # WavLM's input rate and frame hop (50 frames/s)
CLIPS = Registry(
    "clip",
    {
        "middle": "the --max-seconds around a track's middle (as FMA cut its 30-s clips)",
        "start": "a track's first --max-seconds",
    },
)


@dataclass(frozen=True)
class FeatureConfig:
    """Log-mel parameters. Frame rate = sample_rate / hop_length (50 frames/s by default,
    the frame rate of the WavLM features the MRNet authors used). ``max_seconds``: the
    length of the clip taken from each track (0: the whole track), from its ``clip``
    ("start" or "middle"; caches of mrnet 0.1 recorded no clip and took the start).
    ``kind``: what the frames are (FEATURE_KINDS); only "logmel" can be computed from
    audio without another model, so only it serves `mrnet predict` on new files. It is
    recorded only when it is not "logmel", so the records of caches written before it
    existed compare equal. Kind "wavlm": ``n_mels`` is the frame width (layers x dim),
    ``ssl_sha256`` and ``ssl_layers`` say which model and which of its hidden states (both
    recorded), ``ssl_path`` where the model folder is on this machine and ``ssl_device``
    where the workers run it, "cpu" or "cuda" (neither recorded: a cache does not depend
    on them); the mel settings do not apply. Kind "wave": frame t
    holds samples [t * hop_length, (t + 1) * hop_length) of each channel, channel after
    channel (``n_mels`` = channels x hop_length; `wave_frames`), so that crops, windows
    and every rule of the cache work in frames as for the other kinds."""

    sample_rate: int = 16000
    n_fft: int = 1024
    hop_length: int = 320
    n_mels: int = 128
    f_min: float = 0.0
    f_max: float = 8000.0
    log_eps: float = 1e-6
    max_seconds: float = 30.0
    clip: str = "middle"
    kind: str = "logmel"
    ssl_sha256: str = ""
    ssl_layers: tuple[int, ...] = ()
    ssl_path: str = dataclasses.field(default="", compare=False)
    ssl_device: str = dataclasses.field(default="cpu", compare=False)

    def __post_init__(self) -> None:
        if self.kind not in FEATURE_KINDS:
            raise ValueError(f"kind must be one of {', '.join(FEATURE_KINDS)} (got {self.kind!r})")
        if self.kind == "wavlm":
            self._check_ssl()
            return
        if self.kind == "wave":
            self._check_wave()
            return
        for name in ("sample_rate", "n_fft", "hop_length", "n_mels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive (got {getattr(self, name)})")
        if self.n_fft < 16:
            raise ValueError(f"n_fft {self.n_fft} is too small; use 256 or more")
        if not self.max_seconds >= 0:
            raise ValueError(
                f"max_seconds must be 0 (whole tracks) or more (got {self.max_seconds})"
            )
        if self.clip not in CLIPS:
            raise ValueError(f"clip must be one of {', '.join(CLIPS)} (got {self.clip!r})")
        if self.f_max > self.sample_rate / 2:
            raise ValueError(f"f_max {self.f_max} Hz is above Nyquist ({self.sample_rate / 2} Hz)")
        if not 0 <= self.f_min < self.f_max:
            raise ValueError("f_min must be >= 0 and below f_max")
        empty = int((mel_filterbank(self).max(axis=0) == 0).sum())
        if empty:
            raise ValueError(
                f"{empty} of {self.n_mels} mel filters cover no FFT bin; "
                "use fewer mels or a larger n_fft"
            )

    def _check_ssl(self) -> None:
        if (self.sample_rate, self.hop_length) != (SSL_RATE, SSL_HOP):
            raise ValueError(
                f"WavLM features are {SSL_RATE} Hz audio at a hop of {SSL_HOP} samples "
                f"(got {self.sample_rate} Hz, hop {self.hop_length})"
            )
        if not self.ssl_sha256 or not self.ssl_layers:
            raise ValueError("WavLM features need the model's SHA-256 and the layers they keep")
        if self.n_mels % len(self.ssl_layers):
            n = len(self.ssl_layers)
            raise ValueError(f"{self.n_mels} features do not split into {n} layers")
        if not self.max_seconds > 0:
            raise ValueError(
                "WavLM features are computed on clips (its attention grows with the square of "
                "a track's length): set max_seconds above 0, e.g. 30"
            )

    def _check_wave(self) -> None:
        if (self.sample_rate, self.hop_length) != (SSL_RATE, SSL_HOP):
            raise ValueError(
                f"a waveform cache is {SSL_RATE} Hz audio in frames of {SSL_HOP} samples "
                f"(got {self.sample_rate} Hz, hop {self.hop_length})"
            )
        if self.n_mels not in (SSL_HOP, 2 * SSL_HOP):
            raise ValueError(f"a waveform frame holds 1 or 2 channels of {SSL_HOP} samples")
        if not self.max_seconds > 0:
            raise ValueError(
                "a waveform cache holds clips (a WavLM's attention grows with the square of "
                "a track's length): set max_seconds above 0, e.g. 30"
            )

    @property
    def channels(self) -> int:
        """Audio channels of a waveform cache (kind "wave"): 1 or 2; 1 for other kinds."""
        return self.n_mels // self.hop_length if self.kind == "wave" else 1

    @property
    def frames_per_second(self) -> float:
        """Frames per second: sample_rate / hop_length (50 by default)."""
        return self.sample_rate / self.hop_length

    def n_frames(self, n_samples: int) -> int:
        """Frames produced for a clip of ``n_samples`` (centered STFT; kind "wave": the
        samples in whole frames, the last one zero-padded)."""
        if self.kind == "wave":
            return -(-n_samples // self.hop_length)
        return n_samples // self.hop_length + 1

    def to_dict(self) -> dict:
        """The settings as a plain dict (what manifests and checkpoints record)."""
        d = dataclasses.asdict(self)
        del d["ssl_path"], d["ssl_device"]
        if self.kind != "wavlm":
            del d["ssl_sha256"], d["ssl_layers"]
        else:
            d["ssl_layers"] = list(self.ssl_layers)
        if d["kind"] == "logmel":
            del d["kind"]
        return d

    @property
    def from_audio(self) -> bool:
        """Whether these frames are computed from audio (so new files can be featurised)."""
        return self.kind in ("logmel", "wave")

    @property
    def whole(self) -> bool:
        """Whole tracks (max_seconds 0), decoded and featurised as a stream."""
        return self.max_seconds == 0

    @classmethod
    def from_dict(cls, d: dict) -> FeatureConfig:
        """The settings a dict records; unknown keys dropped, clip "start" when missing."""
        names = {f.name for f in dataclasses.fields(cls)}
        d = {"clip": "start", **d}  # recorded before clips could be taken from the middle
        if "ssl_layers" in d:
            d["ssl_layers"] = tuple(int(i) for i in d["ssl_layers"])
        return cls(**{k: v for k, v in d.items() if k in names})


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney mel scale: linear below 1 kHz (3 mels per 200 Hz), logarithmic above."""
    f = np.asarray(f, dtype=np.float64)
    log_part = 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(f >= 1000.0, log_part, 3.0 * f / 200.0)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    return np.where(m >= 15.0, 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0)), 200.0 * m / 3.0)


@functools.lru_cache(maxsize=8)
def mel_filterbank(cfg: FeatureConfig) -> np.ndarray:
    """Float32 [n_fft // 2 + 1, n_mels] triangular filters, Slaney scale and area norm
    (the matrix of torchaudio's ``melscale_fbanks(..., norm="slaney", mel_scale="slaney")``)."""
    freqs = np.linspace(0, cfg.sample_rate / 2, cfg.n_fft // 2 + 1)
    mels = np.linspace(_hz_to_mel(cfg.f_min), _hz_to_mel(cfg.f_max), cfg.n_mels + 2)
    edges = _mel_to_hz(mels)  # [n_mels + 2]
    width = np.diff(edges)  # [n_mels + 1]
    slopes = edges[None, :] - freqs[:, None]  # [n_freqs, n_mels + 2]
    down = -slopes[:, :-2] / width[:-1]
    up = slopes[:, 2:] / width[1:]
    fb = np.maximum(0.0, np.minimum(down, up))
    fb *= 2.0 / (edges[2:] - edges[:-2])  # equal area per filter
    return fb.astype(np.float32)


@functools.lru_cache(maxsize=8)
def _sparse_filterbank(cfg: FeatureConfig) -> scipy.sparse.csr_matrix:  # noqa: F821
    """The filterbank transposed, [n_mels, n_freqs], as CSR."""
    import scipy.sparse  # here: the main process of preprocess never needs scipy

    return scipy.sparse.csr_matrix(mel_filterbank(cfg).T)


@functools.lru_cache(maxsize=8)
def _window(n_fft: int) -> np.ndarray:
    """Periodic Hann window (torch.hann_window's default)."""
    return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)


def power_spectrogram(x: np.ndarray, n_fft: int, hop_length: int) -> np.ndarray:
    """|STFT|^2 of float32 [samples], centered with reflect padding (as torch.stft):
    float32 [n_fft // 2 + 1, samples // hop_length + 1] (a transposed view)."""
    import scipy.fft

    pad = n_fft // 2
    mode = "reflect" if len(x) > pad else "constant"
    padded = np.pad(x, pad, mode=mode)
    n_frames = len(x) // hop_length + 1
    frames = np.lib.stride_tricks.as_strided(
        padded,
        shape=(n_frames, n_fft),
        strides=(padded.strides[0] * hop_length, padded.strides[0]),
        writeable=False,
    )
    spec = scipy.fft.rfft(frames * _window(n_fft), axis=1, workers=1)  # [frames, n_freqs]
    return _power(spec)


def _power(spec: np.ndarray) -> np.ndarray:
    """|spec|^2 transposed: [n_freqs, frames]. Audio of absurd amplitude overflows to inf
    silently: `stored` then refuses the track as non_finite (no numpy warning on stderr)."""
    with np.errstate(over="ignore", invalid="ignore"):
        power = spec.real * spec.real
        power += spec.imag * spec.imag
    return power.T


def cached_log_mel(audio: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """``log_mel`` as the cache stores it: float16 [frames, n_mels], every value finite
    (see `stored`)."""
    return finite_float16(log_mel(audio, cfg))


FLOAT16_LIMIT = 65520.0  # the smallest magnitude float16 rounds to infinity


def finite_float16(mel: np.ndarray) -> np.ndarray:
    """Log-mel frames as the cache stores them: float16 [frames, n_mels], every value
    finite. Raises TrackFailed("non_finite") otherwise (NaN or infinite samples in the
    audio, or a power so large that float16 cannot hold its log): such a track is a
    failure, never a row of the cache."""
    # one pass over the float32 values (NaN fails the comparison; float16 rounds 65520
    # and above to infinity), ~15x cheaper than testing the float16 result
    if len(mel) and not max(mel.max(), -mel.min()) < FLOAT16_LIMIT:
        bad = int((~(np.abs(mel) < FLOAT16_LIMIT)).any(axis=1).sum())
        raise TrackFailed("non_finite", f"{bad} of {len(mel)} frames hold NaN or infinity")
    return mel.astype(np.float16, order="C")


def wave_frames(audio: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """A clip as a waveform cache stores it (kind "wave").

    audio: float32 [samples] (mono) or [samples, channels] at ``cfg.sample_rate``.
    Returns float16 [cfg.n_frames(samples), channels x hop_length]: frame t holds samples
    t * hop .. (t + 1) * hop - 1 of channel 0, then of channel 1; the last frame is
    zero-padded. TrackFailed("non_finite") when a sample is not finite.
    """
    x = np.asarray(audio, np.float32).reshape(len(audio), -1)
    hop = cfg.hop_length
    frames = np.zeros((cfg.n_frames(len(x)) * hop, x.shape[1]), np.float32)
    frames[: len(x)] = x
    return finite_float16(
        frames.reshape(-1, hop, x.shape[1]).transpose(0, 2, 1).reshape(len(frames) // hop, -1)
    )


def wave_log_mel(frames: np.ndarray) -> np.ndarray:
    """The log-mel (the default FeatureConfig's bands, whole clip) of waveform frames
    [frames, channels x 320] (`wave_frames`; channels averaged): what the baseline's
    statistics of a waveform cache are computed from. Float32 [frames', 128]."""
    x = np.asarray(frames, np.float32)
    x = x.reshape(len(x), -1, SSL_HOP).mean(axis=1).reshape(-1)
    return log_mel(x, STATS_FEATURES)


def log_mel(audio: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """Log-mel of one clip.

    audio: float32 [samples], mono, at ``cfg.sample_rate``; longer clips are cut to
    ``cfg.max_seconds`` (unless 0). Returns float32 [cfg.n_frames(samples), cfg.n_mels].
    """
    limit = int(cfg.max_seconds * cfg.sample_rate) or None
    x = np.ascontiguousarray(audio[:limit], dtype=np.float32)
    power = power_spectrogram(x, cfg.n_fft, cfg.hop_length)  # [n_freqs, frames]
    return _mel_of_power(power, cfg)


def _mel_of_power(power: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """[n_freqs, frames] power -> float32 [frames, n_mels] log-mel (a view)."""
    with np.errstate(over="ignore", invalid="ignore"):
        mel = _sparse_filterbank(cfg) @ power  # [n_mels, frames]
        np.log(mel + np.float32(cfg.log_eps), out=mel)
    return mel.T


class LogMelStream:
    """The log-mel of a long signal fed in chunks: `push` returns the frames that the
    samples so far complete, `finish` the rest. Together they equal `log_mel` of the
    whole signal (the same centered, reflect-padded STFT, frame by frame), while memory
    holds one chunk.

    >>> cfg = FeatureConfig(max_seconds=0)
    >>> x = np.random.default_rng(0).standard_normal(48000).astype(np.float32)
    >>> s = LogMelStream(cfg)
    >>> parts = [s.push(x[:20000]), s.push(x[20000:]), s.finish()]
    >>> bool(np.allclose(np.concatenate(parts), log_mel(x, cfg), atol=1e-5))
    True
    """

    def __init__(self, cfg: FeatureConfig) -> None:
        self.cfg, self.half = cfg, cfg.n_fft // 2
        self.head: np.ndarray | None = None  # the first samples, until reflection is known
        self.buf = np.zeros(0, np.float32)  # padded samples from the next frame's start
        self.frames = 0  # frames returned so far
        self.samples = 0  # samples pushed so far

    def push(self, x: np.ndarray) -> np.ndarray:
        """Add samples x [n]; return the float32 [frames, n_mels] frames they complete."""
        x = np.asarray(x, dtype=np.float32)
        self.samples += len(x)
        if self.head is not None or self.frames == 0 and len(self.buf) == 0:
            # the start needs half + 1 samples to reflect: gather them first
            self.head = x if self.head is None else np.concatenate([self.head, x])
            if len(self.head) <= self.half:
                return np.zeros((0, self.cfg.n_mels), np.float32)
            x, self.head = np.concatenate([self.head[self.half : 0 : -1], self.head]), None
        self.buf = np.concatenate([self.buf, x])
        return self._frames(len(self.buf))

    def _frames(self, available: int) -> np.ndarray:
        """The frames whose whole window lies in the buffer; keep what the next needs."""
        n_fft, hop = self.cfg.n_fft, self.cfg.hop_length
        k = max(0, (available - n_fft) // hop + 1)
        if k == 0:
            return np.zeros((0, self.cfg.n_mels), np.float32)
        power = _frames_power(self.buf[: (k - 1) * hop + n_fft], n_fft, hop, k)
        self.buf = self.buf[k * hop :]
        self.frames += k
        return _mel_of_power(power, self.cfg)

    def finish(self) -> np.ndarray:
        """The last frames, with the end reflected as `log_mel` pads it."""
        if self.head is not None:  # a signal too short to stream: compute it at once
            out = log_mel(self.head, FeatureConfig(**{**self.cfg.to_dict(), "max_seconds": 0}))
            self.head = None
            return out
        total = self.cfg.n_frames(self.samples)
        tail = self.buf[-self.half - 1 : -1][::-1]  # reflection of the last samples
        self.buf = np.concatenate([self.buf, tail])
        out = self._frames(len(self.buf))
        return out[: max(0, total - (self.frames - len(out)))]


def _frames_power(x: np.ndarray, n_fft: int, hop: int, k: int) -> np.ndarray:
    """|STFT|^2 of ``k`` frames of already padded samples: [n_fft // 2 + 1, k]."""
    import scipy.fft

    frames = np.lib.stride_tricks.as_strided(
        x, shape=(k, n_fft), strides=(x.strides[0] * hop, x.strides[0]), writeable=False
    )
    spec = scipy.fft.rfft(frames * _window(n_fft), axis=1, workers=1)
    return _power(spec)


STATS_VERSION = 1
N_MFCC = 20
STATS_FEATURES = FeatureConfig(max_seconds=0)  # the log-mel a waveform's statistics are of


def stats_dim(n_mels: int) -> int:
    """Length of `TrackStats`' vector: 2 * n_mels + 4 * min(20, n_mels)."""
    return 2 * n_mels + 4 * min(N_MFCC, n_mels)


def stats_names(n_mels: int) -> list[str]:
    """The names of `TrackStats`' values, in order (what the baseline's inputs are)."""
    k = min(N_MFCC, n_mels)
    return [
        f"{stat}_{kind}{i}"
        for kind, n in (("band", n_mels), ("mfcc", k), ("dmfcc", k))
        for stat in ("mean", "std")
        for i in range(n)
    ]


@functools.lru_cache(maxsize=8)
def _dct_matrix(n: int, k: int) -> np.ndarray:
    """Float32 [n, k]: the first ``k`` coefficients of the orthonormal DCT-II of a length-
    ``n`` vector as a product (scipy.fft.dct(x, type=2, norm="ortho")[:k] to float32
    precision; a product with 20 columns costs a fraction of the full transform)."""
    i = np.arange(n)[:, None]
    j = np.arange(k)[None, :]
    m = np.cos(np.pi * (2 * i + 1) * j / (2 * n)) * np.sqrt(2.0 / n)
    m[:, 0] /= np.sqrt(2.0)
    m = m.astype(np.float32)
    m.setflags(write=False)
    return m


class TrackStats:
    """Per-track statistics of log-mel frames fed in chunks, for the baseline classifier:
    the mean and std over time of each mel band, of the first 20 MFCCs (the orthonormal
    DCT-II of each log-mel frame) and of their first differences over time. float32 [d],
    d = 2 * n_mels + 4 * min(20, n_mels) (336 for 128 mels). Equal whether a track
    arrives whole or in chunks (float64 sums; the difference across a chunk boundary is
    kept).

    >>> x = np.random.default_rng(0).normal(-4, 1, (300, 16)).astype(np.float16)
    >>> a, b = TrackStats(16), TrackStats(16)
    >>> a.push(x); b.push(x[:100]); b.push(x[100:])
    >>> bool(np.allclose(a.value(), b.value(), atol=1e-6)), a.value().shape
    (True, (96,))
    """

    def __init__(self, n_mels: int) -> None:
        self.n_mels, self.k = n_mels, min(N_MFCC, n_mels)
        self.sums = np.zeros((3, 2, max(n_mels, self.k)), np.float64)  # kind, (x, x^2), value
        self.counts = np.zeros(3, np.int64)
        self.prev: np.ndarray | None = None  # the last MFCC frame pushed

    def push(self, frames: np.ndarray) -> None:
        """Frames [k, n_mels] of the track, in order."""
        x = np.asarray(frames, np.float32)
        if not len(x):
            return
        mfcc = x @ _dct_matrix(self.n_mels, self.k)
        head = mfcc if self.prev is None else np.concatenate([self.prev[None], mfcc])
        delta = np.diff(head, axis=0)
        self.prev = mfcc[-1]
        for kind, v in enumerate((x, mfcc, delta)):
            n = v.shape[1]
            self.sums[kind, 0, :n] += v.sum(axis=0, dtype=np.float64)
            self.sums[kind, 1, :n] += np.einsum("ij,ij->j", v, v, dtype=np.float64)
            self.counts[kind] += len(v)

    def value(self) -> np.ndarray:
        """Float32 [d]: the statistics of the frames pushed so far (0 means before any)."""
        out = []
        for kind, n in enumerate((self.n_mels, self.k, self.k)):
            count = max(int(self.counts[kind]), 1)
            mean = self.sums[kind, 0, :n] / count
            std = np.sqrt(np.maximum(self.sums[kind, 1, :n] / count - mean**2, 0.0))
            out += [mean, std]
        return np.concatenate(out).astype(np.float32)
