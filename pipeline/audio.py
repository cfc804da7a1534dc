"""Decode one audio file to mono float32 at a target sample rate, or say why not.

    load_audio    a clip: the first or the middle ``max_seconds`` (or all) of a file
    stream_audio  a whole track in chunks (memory does not grow with its length)

Decoder: miniaudio (dr_mp3/dr_flac/dr_wav, in-process, no stderr chatter), chosen by
`benchmarks/bench_decoders.py`: on a 30-s 44.1 kHz stereo 320 kbps MP3 it decodes
as fast as libsndfile and faster than PyAV or librosa. libsndfile (soundfile) is the
fallback for files miniaudio refuses (it also reads OGG/AIFF/AU...). Resampling: soxr.

A file is read once: its bytes are hashed (when a SHA-1 is expected) and decoded from
memory (files above IN_MEMORY_LIMIT are read in chunks instead). A middle clip of a long
MP3 decodes only its middle frames: the frame table (pipeline.mp3) says where they lie,
and a few frames before them are decoded and dropped (the bit reservoir).

Every failure is a `DecodeError` with a `reason` from `REASONS`, never a crash.
For MP3 content (judged by the bytes, not the suffix: see pipeline.mp3), a decoded length
is checked against the audio bytes, tags excluded: an MP3 cannot carry more than
320 kbit/s, so a decode implying more stopped early; and a libsndfile decode must cover
the duration the MP3's frame headers add up to (it stops early on some VBR files that
lack a Xing header). Otherwise the other decoder is tried, else "truncated_decode".
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
from collections.abc import Iterator
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
IN_MEMORY_LIMIT = 256 * 2**20  # larger files (hours of audio) are read in chunks
WARMUP_FRAMES = 8  # MP3 frames decoded and dropped before a middle clip (bit reservoir)
_CHUNK = 8 * 2**20
_F32 = miniaudio.SampleFormat.FLOAT32


def _readable_suffixes() -> tuple[str, ...]:
    """The file suffixes some decoder here reads: miniaudio's (MP3, FLAC, WAV, Ogg Vorbis)
    and those of the formats this libsndfile build lists (Opus when it has the codec)."""
    by_format = {
        "WAV": (".wav",),
        "WAVEX": (".wav",),
        "AIFF": (".aiff", ".aif", ".aifc"),
        "AU": (".au", ".snd"),
        "FLAC": (".flac",),
        "OGG": (".ogg", ".oga"),
        "MP3": (".mp3",),
        "CAF": (".caf",),
        "W64": (".w64",),
        "RF64": (".rf64",),
    }
    formats = soundfile.available_formats()
    found = {".mp3", ".flac", ".wav", ".ogg"}  # miniaudio
    found.update(x for name, suffixes in by_format.items() if name in formats for x in suffixes)
    if "OGG" in formats and "OPUS" in soundfile.available_subtypes("OGG"):
        found.add(".opus")
    return tuple(sorted(found))


AUDIO_SUFFIXES = _readable_suffixes()
# audio that no decoder here reads (no AAC/WMA/APE codec): counted and named, never decoded
UNSUPPORTED_SUFFIXES = tuple(
    x for x in (".m4a", ".aac", ".mp4", ".wma", ".ape", ".opus") if x not in AUDIO_SUFFIXES
)


def audio_files(folder: Path, recursive: bool = True) -> tuple[list[Path], list[Path]]:
    """The audio files under ``folder`` (by suffix, any case; hidden files skipped), and
    the audio files of formats no decoder here reads; both sorted by path."""
    found, unsupported = [], []
    for p in folder.rglob("*") if recursive else folder.iterdir():
        if p.name.startswith(".") or not p.is_file():
            continue
        suffix = p.suffix.lower()
        if suffix in AUDIO_SUFFIXES:
            found.append(p)
        elif suffix in UNSUPPORTED_SUFFIXES:
            unsupported.append(p)
    return sorted(found), sorted(unsupported)


def unsupported_note(files: list[Path]) -> str:
    """One line naming skipped files of unreadable formats (the first five)."""
    shown = ", ".join(str(p) for p in files[:5]) + (", ..." if len(files) > 5 else "")
    return (
        f"skipped {len(files)} files of formats no decoder here reads ({shown}); convert them "
        "to FLAC, WAV, MP3 or Ogg to use them"
    )


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
        """Duration (s)."""
        return len(self.samples) / self.channels / self.sample_rate


@dataclass(frozen=True)
class AudioFile:
    """A file, read: its bytes (None above IN_MEMORY_LIMIT: then read from ``path`` in
    chunks), size, and whether it holds MPEG audio."""

    path: Path
    data: bytes | None
    size: int
    is_mp3: bool

    def reader(self) -> BinaryIO:
        """A binary file object over the bytes, or the open file; the caller closes it."""
        return io.BytesIO(self.data) if self.data is not None else open(self.path, "rb")

    def source(self) -> str | io.BytesIO:
        """What soundfile opens: the bytes, or the path."""
        return io.BytesIO(self.data) if self.data is not None else str(self.path)


def open_audio(path: str | os.PathLike, sha1: str | None = None) -> AudioFile:
    """Read ``path`` (classifying missing, empty and unreadable files) and, with ``sha1``,
    check it: DecodeError("checksum_mismatch") when the file's SHA-1 differs."""
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise DecodeError("missing", str(path)) from None
    if st.st_size == 0:
        raise DecodeError("empty_file", str(path))
    if not stat.S_ISREG(st.st_mode):
        raise DecodeError("undecodable", f"{path}: not a regular file")
    digest = hashlib.sha1() if sha1 else None
    try:
        with open(path, "rb") as f:
            if st.st_size <= IN_MEMORY_LIMIT:
                data = f.read()
                if digest is not None:
                    digest.update(data)
            else:  # hours of audio: hash in chunks, decode from the path later
                data = None
                while digest is not None and (chunk := f.read(_CHUNK)):
                    digest.update(chunk)
    except OSError as e:  # no permission, I/O error, ...
        raise DecodeError("undecodable", f"{path}: {e.strerror}") from None
    if digest is not None and digest.hexdigest() != sha1.lower():
        raise DecodeError("checksum_mismatch", f"{path}: SHA-1 {digest.hexdigest()}")
    af = AudioFile(path, data, st.st_size, False)
    with af.reader() as f:
        return AudioFile(path, data, st.st_size, mp3.is_mp3(f))


def _info(af: AudioFile) -> tuple[int, int, float]:
    """(sample rate, channels, seconds) of a file miniaudio reads."""
    if af.data is None:
        info = miniaudio.get_file_info(str(af.path))
    else:
        info = _memory_info(af.data)
    return info.sample_rate, info.nchannels, info.duration


def _memory_info(data: bytes) -> miniaudio.SoundFileInfo:
    for get in (
        miniaudio.mp3_get_info,
        miniaudio.flac_get_info,
        miniaudio.wav_get_info,
        miniaudio.vorbis_get_info,
    ):
        try:
            return get(data)
        except miniaudio.MiniaudioError:
            continue
    raise miniaudio.DecodeError("no decoder in miniaudio reads it")


def _decode_miniaudio(af: AudioFile, max_seconds: float | None, mono: bool) -> Decoded:
    # miniaudio converts to 44.1 kHz stereo unless told the native format: ask for it.
    # Its own down-mix (a channel average) is ~6 ms cheaper per 30-s track than numpy's.
    rate, channels, duration = _info(af)
    fmt = dict(output_format=_F32, nchannels=1 if mono else channels, sample_rate=rate)
    if max_seconds is None or duration <= 2 * max_seconds:
        if af.data is not None:
            d = miniaudio.decode(af.data, **fmt)
        else:
            d = miniaudio.decode_file(str(af.path), **fmt)
        return Decoded(np.frombuffer(d.samples, dtype=np.float32), d.sample_rate, d.nchannels)
    # A long file (a full song): stream and stop once max_seconds are decoded.
    want = int(max_seconds * rate) * fmt["nchannels"]
    chunks, got = [], 0
    for chunk in _miniaudio_stream(af, fmt):
        chunks.append(np.frombuffer(chunk, dtype=np.float32))
        got += len(chunks[-1])
        if got >= want:
            break
    return Decoded(np.concatenate(chunks)[:want], rate, fmt["nchannels"])


def _miniaudio_stream(af: AudioFile, fmt: dict, frames: int = 16384):
    if af.data is not None:
        return miniaudio.stream_memory(af.data, frames_to_read=frames, **fmt)
    return miniaudio.stream_file(str(af.path), frames_to_read=frames, **fmt)


def _decode_soundfile(af: AudioFile, max_seconds: float | None, mono: bool) -> Decoded:
    with _quiet_stderr(), soundfile.SoundFile(af.source()) as f:
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
    return _plausible_seconds(d.seconds, f, size, counted)


def _plausible_seconds(seconds: float, f: BinaryIO, size: int, counted: bool) -> bool:
    for thorough in (False, True):  # the thorough pass looks for a large appended tag
        start, end = mp3.audio_region(f, size, thorough)
        if (end - start) * 8 / 1000 / max(seconds, 1e-3) <= MAX_KBPS:
            break
    else:
        return False
    return not counted or seconds >= 0.95 * mp3.frame_seconds(f, start, end) - 0.1


def decode(
    path: str | os.PathLike, max_seconds: float | None = None, mono: bool = False
) -> Decoded:
    """Decode ``path`` at its own rate and channel count, or down-mixed when ``mono``
    (about ``max_seconds`` at most: long files are cut while decoding).

    Raises DecodeError(reason) for missing, empty, unreadable or implausible files.
    """
    return decode_file(open_audio(path), max_seconds, mono)


def decode_file(af: AudioFile, max_seconds: float | None = None, mono: bool = False) -> Decoded:
    """Try each decoder on a read file; keep the first plausible result (MP3 rules only
    for MP3 content)."""
    errors, best = [], None
    for decoder in (_decode_miniaudio, _decode_soundfile):
        try:
            d = decoder(af, max_seconds, mono)
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
        if not af.is_mp3:
            return d
        with af.reader() as f:
            if _plausible_mp3(d, f, af.size, max_seconds, counted):
                return d
        best = d if best is None or d.samples.size > best.samples.size else best
        errors.append(f"{decoder.__name__[8:]}: stopped at {d.seconds:.1f} s")
    if best is not None:
        raise DecodeError("truncated_decode", "; ".join(errors))
    if all("0 samples" in e for e in errors):
        raise DecodeError("no_audio", str(af.path))
    raise DecodeError("undecodable", "; ".join(errors))


def _middle_mp3(af: AudioFile, seconds: float, mono: bool) -> Decoded | None:
    """The middle ``seconds`` of a long MP3, decoding only its middle frames; None when
    this cannot be done (then the whole file is decoded and cut)."""
    with af.reader() as f:
        start, end = mp3.audio_region(f, af.size)
        table = mp3.frame_table(af.data if af.data is not None else f, start, end)
        if table is None:
            return None
        return _middle_of(table, f, seconds, mono)


def _middle_of(table: mp3.FrameTable, f: BinaryIO, seconds: float, mono: bool) -> Decoded | None:
    spf, rate = table.samples, table.sample_rate
    total, want = len(table) * spf, int(seconds * rate)
    if total <= 2 * want:
        return None
    first = (total - want) // 2  # the clip's first sample, counted from the first frame
    f_from = max(0, first // spf - WARMUP_FRAMES)
    f_to = min(len(table), (first + want) // spf + 1)
    f.seek(int(table.offsets[f_from]))
    window = f.read(int(table.offsets[f_to] - table.offsets[f_from]))
    try:
        channels = 1 if mono else miniaudio.mp3_get_info(window).nchannels
        d = miniaudio.decode(window, output_format=_F32, nchannels=channels, sample_rate=rate)
    except miniaudio.MiniaudioError:
        return None
    x = np.frombuffer(d.samples, dtype=np.float32)
    # Align from the end: a decoder may drop warm-up frames it cannot decode.
    stop = len(x) // channels - (f_to * spf - (first + want))
    if stop - want < 0:
        return None
    return Decoded(x[(stop - want) * channels : stop * channels], rate, channels)


def _middle_soundfile(af: AudioFile, seconds: float, mono: bool) -> Decoded | None:
    """The middle ``seconds`` of a WAV/FLAC/OGG/AIFF file by seeking (libsndfile counts
    and seeks exactly in these); None when libsndfile cannot read it."""
    try:
        with _quiet_stderr(), soundfile.SoundFile(af.source()) as f:
            want = int(seconds * f.samplerate)
            if f.frames > want:
                f.seek((f.frames - want) // 2)
            x = f.read(frames=min(want, f.frames), dtype="float32", always_2d=True)
            d = Decoded(x.reshape(-1), f.samplerate, f.channels)
    except (soundfile.LibsndfileError, RuntimeError, ValueError):
        return None
    if d.samples.size == 0:
        return None
    return Decoded(to_mono(d), d.sample_rate, 1) if mono else d


def _middle(af: AudioFile, seconds: float, mono: bool) -> Decoded:
    """The middle ``seconds`` of a file (all of it when it is not longer). Only the
    middle is decoded where the format allows; otherwise the whole file, then cut."""
    d = _middle_mp3(af, seconds, mono) if af.is_mp3 else _middle_soundfile(af, seconds, mono)
    if d is not None:
        return d
    full = decode_file(af, None, mono)
    n = len(full.samples) // full.channels
    want = int(seconds * full.sample_rate)
    if n <= want:
        return full
    a = (n - want) // 2
    return Decoded(
        full.samples[a * full.channels : (a + want) * full.channels],
        full.sample_rate,
        full.channels,
    )


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


def _stereo(d: Decoded) -> np.ndarray:
    """Float32 [frames, 2]: a mono file's channel twice, or the first two channels."""
    x = d.samples.reshape(-1, d.channels)
    return np.repeat(x, 2, axis=1) if d.channels == 1 else np.ascontiguousarray(x[:, :2])


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """float32 [n] (or [n, channels]) at sr_in → float32 [≈ n * sr_out / sr_in] at sr_out
    (soxr HQ)."""
    if sr_in == sr_out:
        return x
    return soxr.resample(x, sr_in, sr_out, quality="HQ").astype(np.float32, copy=False)


def load_audio(
    path: str | os.PathLike,
    sample_rate: int,
    max_seconds: float | None = None,
    min_seconds: float = 0.0,
    clip: str = "start",
    sha1: str | None = None,
    channels: int = 1,
) -> np.ndarray:
    """Mono float32 [samples] at ``sample_rate``: a clip of the file, or all of it
    (``channels`` 2: float32 [samples, 2], a mono file's channel duplicated, a file of
    more channels giving its first two).

    Raises DecodeError, including reason "too_short" below ``min_seconds`` and
    "checksum_mismatch" when ``sha1`` is given and differs.

    Args:
        path: the audio file.
        sample_rate: the rate (Hz) to resample to.
        max_seconds: clip length (s); None (or 0): the whole file, as when it is shorter.
        min_seconds: shorter decoded audio (s) fails as "too_short".
        clip: which ``max_seconds`` to keep: "start" (the first) or "middle".
        sha1: the file's expected SHA-1 (hex), checked before decoding.
        channels: 1 (mono, down-mixed) or 2 (stereo).

    Returns:
        Float32 [samples] (or [samples, 2]), at most ``max_seconds * sample_rate`` of them.
    """
    af = open_audio(path, sha1)
    mono = channels == 1
    if clip == "middle" and max_seconds:
        d = _middle(af, max_seconds, mono=mono)
    else:
        d = decode_file(af, max_seconds, mono=mono)
    if d.seconds < min_seconds:
        raise DecodeError("too_short", f"{d.seconds:.2f} s < {min_seconds} s")
    x = resample(to_mono(d) if mono else _stereo(d), d.sample_rate, sample_rate)
    if max_seconds:
        x = x[: int(max_seconds * sample_rate)]
    return x


def stream_audio(
    path: str | os.PathLike,
    sample_rate: int,
    chunk_seconds: float = 60.0,
    sha1: str | None = None,
) -> Iterator[np.ndarray]:
    """A whole track as mono float32 chunks at ``sample_rate``, decoded and resampled as a
    stream: memory does not grow with the track's length.

    DecodeError may come before the first chunk (unreadable) or after the last (an MP3
    that stopped implausibly early): the caller drops what it took then.

    Args:
        path: the audio file.
        sample_rate: the rate (Hz) to resample to.
        chunk_seconds: about how long (s) each decoded chunk is.
        sha1: the file's expected SHA-1 (hex), checked before decoding.

    Returns:
        An iterator of float32 [k] chunks (the last one may be short or empty).
    """
    af = open_audio(path, sha1)
    try:
        rate, _, _ = _info(af)
        fmt = dict(output_format=_F32, nchannels=1, sample_rate=rate)
        blocks = (
            np.frombuffer(c, dtype=np.float32)
            for c in _miniaudio_stream(af, fmt, int(chunk_seconds * rate))
        )
        first = next(blocks, None)
    except miniaudio.MiniaudioError:
        rate, first, blocks = _soundfile_blocks(af, chunk_seconds)
    if first is None or not len(first):
        raise DecodeError("no_audio", str(path))
    stream = (
        soxr.ResampleStream(rate, sample_rate, 1, dtype="float32", quality="HQ")
        if rate != sample_rate
        else None
    )
    decoded = 0
    for block in _chain(first, blocks):
        decoded += len(block)
        yield stream.resample_chunk(block) if stream else block
    if stream:
        yield stream.resample_chunk(np.zeros(0, np.float32), last=True)
    if af.is_mp3:
        with af.reader() as f:
            if not _plausible_seconds(decoded / rate, f, af.size, counted=False):
                raise DecodeError("truncated_decode", f"stopped at {decoded / rate:.1f} s")


def _soundfile_blocks(af: AudioFile, chunk_seconds: float):
    try:
        with _quiet_stderr():
            info = soundfile.info(af.source())
        blocks = (
            to_mono(Decoded(b.reshape(-1), info.samplerate, info.channels))
            for b in soundfile.blocks(
                af.source(),
                blocksize=int(chunk_seconds * info.samplerate),
                dtype="float32",
                always_2d=True,
            )
        )
        return info.samplerate, next(blocks, None), blocks
    except (soundfile.LibsndfileError, RuntimeError, ValueError) as e:
        raise DecodeError("undecodable", f"{af.path}: {e}".replace("\n", " ")) from None


def _chain(first: np.ndarray, rest) -> Iterator[np.ndarray]:
    yield first
    yield from rest
