"""pipeline.audio: decoding crafted files to mono float32 at the target rate, and the
classified DecodeError reasons for broken ones (missing, empty, garbage, tag-only,
truncated, too short, implausibly short decodes)."""

from __future__ import annotations

from pathlib import Path

import miniaudio
import numpy as np
import pytest
import soundfile

from pipeline import audio
from pipeline.audio import REASONS, Decoded, DecodeError, decode, load_audio, to_mono
from pipeline.synth import encode_mp3

SR = 16000


def sine(hz: float, seconds: float, sr: int, channels: int = 1, amp: float = 0.5) -> np.ndarray:
    """float32 [frames, channels], the same sine in every channel."""
    t = np.arange(int(seconds * sr)) / sr
    x = (amp * np.sin(2 * np.pi * hz * t)).astype(np.float32)
    return np.repeat(x[:, None], channels, axis=1)


def write_mp3(path: Path, x: np.ndarray, sr: int, kbps: int = 128) -> Path:
    path.write_bytes(encode_mp3(x, sr, kbps))
    return path


def peak_hz(x: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / sr)[spec.argmax()])


def reason(path: Path, **kw) -> str:
    with pytest.raises(DecodeError) as e:
        load_audio(path, SR, **kw)
    assert e.value.reason in REASONS
    return e.value.reason


@pytest.fixture(scope="module")
def long_mp3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """30 s, 44.1 kHz stereo, 128 kbit/s: a rising tone plus noise, different per channel."""
    sr, n = 44100, 30 * 44100
    t = np.arange(n) / sr
    rng = np.random.default_rng(0)
    left = 0.3 * np.sin(2 * np.pi * (200 + 20 * t) * t) + 0.05 * rng.standard_normal(n)
    right = 0.3 * np.sin(2 * np.pi * 330 * t) + 0.05 * rng.standard_normal(n)
    x = np.stack([left, right], axis=1).astype(np.float32)
    return write_mp3(tmp_path_factory.mktemp("long") / "long.mp3", x, sr)


# --------------------------------------------------------------------------- good files


def test_mp3_loads_as_mono_float32_at_target_rate(tmp_path):
    p = write_mp3(tmp_path / "a.mp3", sine(440, 3.0, 44100, channels=2), 44100, kbps=320)
    x = load_audio(p, SR)
    assert x.dtype == np.float32 and x.ndim == 1
    assert abs(len(x) / SR - 3.0) <= 0.1
    assert np.isfinite(x).all()
    assert 0.3 < np.abs(x).max() < 0.7  # the 0.5-amplitude sine, not silence or noise
    assert abs(peak_hz(x, SR) - 440) < 2


def test_stereo_to_mono_is_channel_average(long_mp3):
    d = decode(long_mp3)
    assert d.channels == 2 and d.sample_rate == 44100
    left, right = d.samples[0::2], d.samples[1::2]
    assert not np.allclose(left, right, atol=0.05)  # the channels really differ
    mono = to_mono(d)
    np.testing.assert_allclose(mono, (left + right) / 2, atol=1e-6)
    # end to end, at the file's own rate (no resampling in between)
    x = load_audio(long_mp3, d.sample_rate)
    np.testing.assert_allclose(x, (left + right) / 2, atol=1e-6)


def test_stereo_wav_average_matches_the_source(tmp_path):
    sr = 22050
    x = np.concatenate([sine(300, 1.0, sr), sine(700, 1.0, sr, amp=0.25)], axis=1)
    p = tmp_path / "st.wav"
    soundfile.write(p, x, sr, subtype="PCM_16")
    y = load_audio(p, sr)
    assert y.dtype == np.float32 and len(y) == len(x)
    np.testing.assert_allclose(y, x.mean(axis=1), atol=2 / 32768)


@pytest.mark.parametrize(
    "sr,channels,kbps",
    [(48000, 2, 256), (22050, 2, 64), (22050, 1, 64), (44100, 1, 128), (16000, 1, 64)],
)
def test_resamples_to_16k_keeping_a_1khz_sine_at_1khz(tmp_path, sr, channels, kbps):
    p = write_mp3(tmp_path / f"s{sr}.mp3", sine(1000, 2.0, sr, channels), sr, kbps)
    d = decode(p)
    assert (d.sample_rate, d.channels) == (sr, channels)  # decoded at the file's own format
    x = load_audio(p, SR)
    assert x.dtype == np.float32 and x.ndim == 1
    assert abs(len(x) / SR - 2.0) <= 0.1
    assert abs(peak_hz(x, SR) - 1000) < 2
    # the energy stays at 1 kHz: nothing else carries much (no aliasing, no pitch shift)
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x)))) ** 2
    f = np.fft.rfftfreq(len(x), 1 / SR)
    assert spec[np.abs(f - 1000) < 20].sum() / spec.sum() > 0.99
    assert 0.4 < np.abs(x[SR // 4 : -SR // 4]).max() < 0.6  # amplitude 0.5 kept


def test_resampling_filters_out_what_16k_cannot_hold(tmp_path):
    """A 12 kHz tone is above 16 kHz's Nyquist: it must go, not fold to 16 - 12 = 4 kHz."""
    p = tmp_path / "alias.wav"
    soundfile.write(p, sine(1000, 2.0, 44100, amp=0.3) + sine(12000, 2.0, 44100, amp=0.3), 44100)
    x = load_audio(p, SR)
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    f = np.fft.rfftfreq(len(x), 1 / SR)
    alias_db = 20 * np.log10(spec[np.abs(f - 4000) < 20].max() / spec[np.abs(f - 1000) < 20].max())
    assert alias_db < -60


def test_wav_file_loads(tmp_path):
    p = tmp_path / "m.wav"
    soundfile.write(p, sine(1000, 1.5, 44100), 44100, subtype="PCM_16")
    x = load_audio(p, SR)
    assert len(x) == 1.5 * SR
    assert abs(peak_hz(x, SR) - 1000) < 2


def test_format_miniaudio_refuses_falls_back_to_soundfile(tmp_path):
    p = tmp_path / "m.aiff"
    soundfile.write(p, sine(1000, 1.0, 44100, channels=2), 44100)
    with pytest.raises(miniaudio.DecodeError):
        miniaudio.get_file_info(str(p))  # precondition: only libsndfile reads it
    x = load_audio(p, SR)
    assert len(x) == SR and abs(peak_hz(x, SR) - 1000) < 2


@pytest.mark.parametrize("max_seconds", [5.0, 20.0])  # streamed / decoded whole and cut
def test_max_seconds_cuts(long_mp3, max_seconds):
    x = load_audio(long_mp3, SR, max_seconds=max_seconds)
    assert len(x) == int(max_seconds * SR)
    full = load_audio(long_mp3, SR)
    assert abs(len(full) / SR - 30) <= 0.1
    # the same audio as the start of the full decode (soxr edge effects aside)
    np.testing.assert_allclose(x[: SR * 4], full[: SR * 4], atol=1e-3)


# --------------------------------------------------------------------------- failures


def test_missing_file(tmp_path):
    assert reason(tmp_path / "nope.mp3") == "missing"


def test_empty_file(tmp_path):
    p = tmp_path / "e.mp3"
    p.write_bytes(b"")
    assert reason(p) == "empty_file"


def test_random_bytes(tmp_path):
    p = tmp_path / "r.mp3"
    p.write_bytes(np.random.default_rng(0).integers(0, 256, 16384, dtype=np.uint8).tobytes())
    assert reason(p) == "undecodable"


def test_too_short(tmp_path):
    p = write_mp3(tmp_path / "s.mp3", sine(440, 0.3, 44100, channels=2), 44100)
    assert reason(p, min_seconds=1.0) == "too_short"
    assert abs(len(load_audio(p, SR, min_seconds=0.2)) / SR - 0.3) <= 0.1


def test_id3_tag_without_frames(tmp_path):
    p = tmp_path / "tag.mp3"
    p.write_bytes(b"ID3\x04\x00\x00\x00\x00\x00\x20" + b"\x00" * 32)  # ID3v2.4, 32 B padding
    r = reason(p)
    assert r in ("no_audio", "undecodable")
    assert r == "undecodable"  # both decoders refuse to open it (neither returns 0 samples)


def test_truncated_mp3_decodes_the_part_that_is_there(tmp_path, long_mp3):
    p = tmp_path / "cut.mp3"
    data = long_mp3.read_bytes()
    p.write_bytes(data[: len(data) // 3])
    x = load_audio(p, SR)
    assert abs(len(x) / SR - 10.0) <= 0.3


# --------------------------------------------------------------------------- plausibility


def _shorten(decoder, seconds: float):
    def short(path, max_seconds, mono):
        d = decoder(path, max_seconds, mono)
        return Decoded(
            d.samples[: int(seconds * d.sample_rate) * d.channels], d.sample_rate, d.channels
        )

    return short


def test_implausibly_short_decode_falls_back_to_soundfile(monkeypatch, long_mp3):
    monkeypatch.setattr(audio, "_decode_miniaudio", _shorten(audio._decode_miniaudio, 2.0))
    d = decode(long_mp3)
    assert abs(d.seconds - 30) <= 0.1
    assert abs(len(load_audio(long_mp3, SR)) / SR - 30) <= 0.1


def test_both_decoders_short_is_truncated_decode(monkeypatch, long_mp3):
    monkeypatch.setattr(audio, "_decode_miniaudio", _shorten(audio._decode_miniaudio, 2.0))
    monkeypatch.setattr(audio, "_decode_soundfile", _shorten(audio._decode_soundfile, 3.0))
    with pytest.raises(DecodeError) as e:
        decode(long_mp3)
    assert e.value.reason == "truncated_decode"
    assert "stopped at 2.0 s" in e.value.detail and "stopped at 3.0 s" in e.value.detail


def test_short_decode_is_fine_when_max_seconds_asked_for_it(monkeypatch, long_mp3):
    monkeypatch.setattr(audio, "_decode_miniaudio", _shorten(audio._decode_miniaudio, 2.0))
    monkeypatch.setattr(audio, "_decode_soundfile", _shorten(audio._decode_soundfile, 2.0))
    assert len(load_audio(long_mp3, SR, max_seconds=2.0)) == 2 * SR


def test_soundfile_fallback_on_vbr_without_xing_is_not_silently_short(tmp_path, monkeypatch):
    sr = 44100
    x = sine(1000, 5.0, sr, channels=2)
    p = tmp_path / "vbr.mp3"  # 1 s at 320 then 4 s at 128 kbit/s, no Xing header
    p.write_bytes(encode_mp3(x[:sr], sr, 320) + encode_mp3(x[sr:], sr, 128))
    assert abs(decode(p).seconds - 5.0) <= 0.15  # miniaudio reads it all

    def refuse(path, max_seconds, mono):
        raise miniaudio.DecodeError("refused")

    monkeypatch.setattr(audio, "_decode_miniaudio", refuse)
    try:
        seconds = decode(p).seconds
    except DecodeError as e:
        assert e.reason == "truncated_decode"
        return
    assert abs(seconds - 5.0) <= 0.15  # libsndfile alone stops at 2.67 s of 5.1 s


def test_soundfile_fallback_is_silent_on_stderr(tmp_path, capfd):
    p = tmp_path / "junk.mp3"
    p.write_bytes(np.random.default_rng(0).integers(0, 256, 16384, dtype=np.uint8).tobytes())
    capfd.readouterr()
    with pytest.raises(soundfile.LibsndfileError):
        soundfile.read(str(p))  # precondition: bare libsndfile/mpg123 does chatter
    if not capfd.readouterr().err:
        pytest.skip("this libsndfile prints nothing on this file; nothing to silence")
    with pytest.raises(DecodeError) as e:
        decode(p)
    assert e.value.reason == "undecodable"
    assert "soundfile" in e.value.detail  # the fallback was really tried
    captured = capfd.readouterr()
    assert captured.err == "" and captured.out == ""


# --------------------------------------------------------------------------- MP3 rules by content


def _syncsafe(n: int) -> bytes:
    return bytes([(n >> 21) & 127, (n >> 14) & 127, (n >> 7) & 127, n & 127])


def id3v2(payload: bytes, version: int = 3, footer: bool = False) -> bytes:
    """An ID3v2 tag around ``payload`` (with the v2.4 footer when asked)."""
    flags = 0x10 if footer else 0
    head = b"ID3" + bytes([version, 0, flags]) + _syncsafe(len(payload))
    foot = b"3DI" + bytes([version, 0, flags]) + _syncsafe(len(payload)) if footer else b""
    return head + payload + foot


def picture(n: int, seed: int = 0) -> bytes:
    """An APIC frame of ``n`` random bytes (like cover art: full of 0xFF bytes)."""
    data = np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()
    return b"APIC" + n.to_bytes(4, "big") + b"\x00\x00" + data


def ape_tag(items: bytes = b"x" * 100) -> bytes:
    def block(header: bool) -> bytes:
        flags = 0x80000000 | (0x20000000 if header else 0)
        size = (32 + len(items)).to_bytes(4, "little")
        return (
            b"APETAGEX"
            + (2000).to_bytes(4, "little")
            + size
            + (1).to_bytes(4, "little")
            + flags.to_bytes(4, "little")
            + b"\x00" * 8
        )

    return block(True) + items + block(False)


@pytest.fixture(scope="module")
def clip_mp3() -> bytes:
    """4 s of a 440 Hz tone, 44.1 kHz stereo, 128 kbit/s."""
    return encode_mp3(sine(440, 4.0, 44100, channels=2), 44100, 128)


@pytest.mark.parametrize(
    "case",
    [
        "two leading ID3v2 tags",
        "5 MB ID3v2 tag appended",
        "ID3v2 with footer appended",
        "APEv2 and ID3v1 appended",
    ],
)
def test_tags_are_not_counted_as_audio(tmp_path, clip_mp3, case):
    """Fully decodable MP3s with tags where the old size estimate counted them as audio:
    they decode whole, never as truncated_decode."""
    data = {
        "two leading ID3v2 tags": id3v2(b"TIT2" + (5).to_bytes(4, "big") + b"\x00\x00\x00abcd")
        + id3v2(picture(300_000), version=4)
        + clip_mp3,
        "5 MB ID3v2 tag appended": clip_mp3 + id3v2(picture(5_000_000)),
        "ID3v2 with footer appended": clip_mp3 + id3v2(picture(2_000_000), 4, footer=True),
        "APEv2 and ID3v1 appended": clip_mp3 + ape_tag() + b"TAG" + b" " * 125,
    }[case]
    p = tmp_path / "tagged.mp3"
    p.write_bytes(data)
    x = load_audio(p, SR, min_seconds=1.0)
    assert abs(len(x) / SR - 4.0) <= 0.1
    assert abs(peak_hz(x, SR) - 440) < 2


@pytest.mark.parametrize("fmt", ["WAV", "FLAC"])
def test_other_formats_named_mp3_are_not_judged_by_mp3_rules(tmp_path, fmt):
    p = tmp_path / "track.mp3"
    soundfile.write(p, sine(440, 4.0, 44100, channels=2), 44100, format=fmt)
    x = load_audio(p, SR, min_seconds=1.0)
    assert abs(len(x) / SR - 4.0) <= 0.01 and abs(peak_hz(x, SR) - 440) < 2


def test_mp3_content_is_recognised_by_bytes(tmp_path, clip_mp3):
    from pipeline import mp3

    (tmp_path / "a.dat").write_bytes(id3v2(picture(50_000)) + clip_mp3)
    soundfile.write(tmp_path / "b.mp3", sine(440, 0.5, 8000), 8000, format="WAV")
    with open(tmp_path / "a.dat", "rb") as f:
        assert mp3.is_mp3(f)
        start, end = mp3.audio_region(f, (tmp_path / "a.dat").stat().st_size)
        tag = 10 + len(picture(50_000))
        assert (start, end) == (tag, tag + len(clip_mp3))
    with open(tmp_path / "b.mp3", "rb") as f:
        assert not mp3.is_mp3(f)


def test_non_finite_samples_are_a_non_finite_failure(tmp_path):
    """A float WAV holding NaN and infinity decodes, but its features cannot be cached."""
    from pipeline.errors import TrackFailed
    from pipeline.features import FeatureConfig, cached_log_mel

    x = sine(440, 2.0, SR)
    x[SR // 2 : SR // 2 + 10] = np.nan
    x[SR : SR + 3] = np.inf
    p = tmp_path / "nan.mp3"  # named like an FMA track
    soundfile.write(p, x, SR, format="WAV", subtype="FLOAT")
    audio_ = load_audio(p, SR)
    with pytest.raises(TrackFailed) as e:
        cached_log_mel(audio_, FeatureConfig())
    assert e.value.reason == "non_finite"
