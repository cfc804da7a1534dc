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
