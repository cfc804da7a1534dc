"""Decode one audio file to mono float32 at a target sample rate, or say why not.

Decoder: miniaudio (dr_mp3/dr_flac/dr_wav, in-process, no stderr chatter), chosen by
`benchmarks/bench_decoders.py`: on a 30-s 44.1 kHz stereo 320 kbps MP3 it decodes
as fast as libsndfile and faster than PyAV or librosa. libsndfile (soundfile) is the
fallback for files miniaudio refuses (it also reads OGG/AIFF...). Resampling: soxr.

Every failure is a `DecodeError` with a `reason` from `REASONS`, never a crash.
For MP3 content (judged by the bytes, not the suffix: see pipeline.mp3), a decoded length
is checked against the audio bytes, tags excluded: an MP3 cannot carry more than
320 kbit/s, so a decode implying more stopped early; and a libsndfile decode must cover
the duration the MP3's frame headers add up to (it stops early on some VBR files that
lack a Xing header). Otherwise the other decoder is tried, else "truncated_decode".
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import miniaudio
import numpy as np
import soundfile
import soxr

from pipeline import mp3
from pipeline.errors import FAILURE_REASONS, TrackFailed

REASONS = FAILURE_REASONS  # kept for callers that classify decode failures
MAX_KBPS = 450.0  # MPEG-1 Layer III tops out at 320 kbit/s; margin for tags and headers


class DecodeError(TrackFailed):
    """A file that could not be turned into audio; ``reason`` is one of REASONS."""


@dataclass(frozen=True)
class Decoded:
    """Interleaved float32 samples [frames * channels] at the file's own rate."""

    samples: np.ndarray
    sample_rate: int
    channels: int

    @property
    def seconds(self) -> float:
        return len(self.samples) / self.channels / self.sample_rate


def _decode_miniaudio(path: Path, max_seconds: float | None, mono: bool) -> Decoded:
    # miniaudio converts to 44.1 kHz stereo unless told the native format: ask for it.
    # Its own down-mix (a channel average) is ~6 ms cheaper per 30-s track than numpy's.
    info = miniaudio.get_file_info(str(path))
    channels = 1 if mono else info.nchannels
    fmt = dict(
        output_format=miniaudio.SampleFormat.FLOAT32,
        nchannels=channels,
        sample_rate=info.sample_rate,
    )
    if max_seconds is None or info.duration <= 2 * max_seconds:
        d = miniaudio.decode_file(str(path), **fmt)
        return Decoded(np.frombuffer(d.samples, dtype=np.float32), d.sample_rate, d.nchannels)
    # A long file (a full song): stream and stop once max_seconds are decoded.
    want = int(max_seconds * info.sample_rate) * channels
    chunks, got = [], 0
    for chunk in miniaudio.stream_file(str(path), frames_to_read=16384, **fmt):
        chunks.append(np.frombuffer(chunk, dtype=np.float32))
        got += len(chunks[-1])
        if got >= want:
            break
    return Decoded(np.concatenate(chunks)[:want], info.sample_rate, channels)


def _decode_soundfile(path: Path, max_seconds: float | None, mono: bool) -> Decoded:
    with _quiet_stderr(), soundfile.SoundFile(str(path)) as f:
        frames = -1 if max_seconds is None else int(max_seconds * f.samplerate)
        x = f.read(frames=frames, dtype="float32", always_2d=True)
        d = Decoded(x.reshape(-1), f.samplerate, f.channels)
    return Decoded(to_mono(d), d.sample_rate, 1) if mono else d


class _quiet_stderr:
    """Silence fd 2 (libmpg123 prints warnings straight to it) for a block."""

    def __enter__(self) -> None:
        self._saved = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)

    def __exit__(self, *exc: object) -> None:
        os.dup2(self._saved, 2)
        os.close(self._saved)


def _plausible_mp3(
    d: Decoded, f: BinaryIO, size: int, max_seconds: float | None, counted: bool
) -> bool:
    """Decoded duration consistent with the MP3 in open file ``f``: under the bit-rate
    ceiling for its audio bytes (tags excluded), and, when ``counted``, covering the
    duration its frame headers add up to."""
    if max_seconds is not None and d.seconds >= max_seconds - 0.05:
        return True  # we stopped it ourselves
    for thorough in (False, True):  # the thorough pass looks for a large appended tag
        start, end = mp3.audio_region(f, size, thorough)
        if (end - start) * 8 / 1000 / max(d.seconds, 1e-3) <= MAX_KBPS:
            break
    else:
        return False
    return not counted or d.seconds >= 0.95 * mp3.frame_seconds(f, start, end) - 0.1


def decode(
    path: str | os.PathLike, max_seconds: float | None = None, mono: bool = False
) -> Decoded:
    """Decode ``path`` at its own rate and channel count, or down-mixed when ``mono``
    (about ``max_seconds`` at most: long files are cut while decoding).

    Raises DecodeError(reason) for missing, empty, unreadable or implausible files.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise DecodeError("missing", str(path)) from None
    if size == 0:
        raise DecodeError("empty_file", str(path))
    try:
        f = open(path, "rb")
    except OSError as e:  # a directory, no permission, ...
        raise DecodeError("undecodable", f"{path}: {e.strerror}") from None
    with f:
        return _decode_checked(path, f, size, max_seconds, mono)


def _decode_checked(
    path: Path, f: BinaryIO, size: int, max_seconds: float | None, mono: bool
) -> Decoded:
    """Try each decoder; keep the first plausible result (MP3 rules only for MP3 content)."""
    is_mp3 = mp3.is_mp3(f)
    errors, best = [], None
    for decoder in (_decode_miniaudio, _decode_soundfile):
        try:
            d = decoder(path, max_seconds, mono)
        # libsndfile raises ValueError/RuntimeError besides its own error on odd files.
        except (
            miniaudio.MiniaudioError,
            soundfile.LibsndfileError,
            RuntimeError,
            ValueError,
            OSError,
        ) as e:
            errors.append(f"{decoder.__name__[8:]}: {e}".replace("\n", " "))
            continue
        if d.samples.size == 0:
            errors.append(f"{decoder.__name__[8:]}: 0 samples")
            continue
        # Frame counting is only needed for libsndfile (miniaudio reads every frame).
        counted = decoder is _decode_soundfile
        if not is_mp3 or _plausible_mp3(d, f, size, max_seconds, counted):
            return d
        best = d if best is None or d.samples.size > best.samples.size else best
        errors.append(f"{decoder.__name__[8:]}: stopped at {d.seconds:.1f} s")
    if best is not None:
        raise DecodeError("truncated_decode", "; ".join(errors))
    if all("0 samples" in e for e in errors):
        raise DecodeError("no_audio", str(path))
    raise DecodeError("undecodable", "; ".join(errors))


def to_mono(d: Decoded) -> np.ndarray:
    """Average channels: float32 [frames]. Strided adds, not a reduction along a
    short trailing axis (which numpy does ~10x slower)."""
    if d.channels == 1:
        return d.samples
    x = d.samples[0 :: d.channels].copy()
    for c in range(1, d.channels):
        x += d.samples[c :: d.channels]
    x *= np.float32(1.0 / d.channels)
    return x


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """float32 [n] at sr_in → float32 [≈ n * sr_out / sr_in] at sr_out (soxr HQ)."""
    if sr_in == sr_out:
        return x
    return soxr.resample(x, sr_in, sr_out, quality="HQ").astype(np.float32, copy=False)


def load_audio(
    path: str | os.PathLike,
    sample_rate: int,
    max_seconds: float | None = None,
    min_seconds: float = 0.0,
) -> np.ndarray:
    """Mono float32 [samples] at ``sample_rate``, at most ``max_seconds`` long.

    Raises DecodeError, including reason "too_short" below ``min_seconds``.
    """
    d = decode(path, max_seconds, mono=True)
    if d.seconds < min_seconds:
        raise DecodeError("too_short", f"{d.seconds:.2f} s < {min_seconds} s")
    x = resample(to_mono(d), d.sample_rate, sample_rate)
    if max_seconds is not None:
        x = x[: int(max_seconds * sample_rate)]
    return x
