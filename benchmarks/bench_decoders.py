"""Which decoder pipeline/audio.py should use: measured on one core.

    .venv/bin/python benchmarks/bench_decoders.py [--repeats 5] [--seconds 30]

Generates music-like MP3s (harmonic notes + noise bursts, LAME via lameenc) in a
temporary directory: two FMA-like 30-s 44.1 kHz stereo 320 kbit/s CBR files, a mono
22.05 kHz 64 kbit/s CBR file and a 48 kHz stereo ~256 kbit/s VBR (LAME ABR) file;
lameenc writes no Xing/LAME header, like many FMA files. Prints, as the median of
``--repeats`` runs pinned to one CPU with OMP/MKL/BLAS threads = 1:

1. ms per file of the bare decoders at the file's own rate and channel count,
2. the samples each decoder returns per file (they disagree on encoder delay and
   padding, and libsndfile stops early on VBR files without a Xing header),
3. ms per file of the full load to mono float32 at 16 kHz, plus how much a 12 kHz
   tone aliases into the 16 kHz output of each path,
4. channel mixing (numpy mean over a trailing axis vs pipeline.audio.to_mono) and
   soxr HQ vs LQ resampling,
5. what each decoder does with broken files (exception, samples, stderr output).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable  # noqa: E402
from importlib.metadata import version  # noqa: E402
from pathlib import Path  # noqa: E402

import av  # noqa: E402
import lameenc  # noqa: E402
import librosa  # noqa: E402
import miniaudio  # noqa: E402
import numpy as np  # noqa: E402
import soundfile  # noqa: E402
import soxr  # noqa: E402
from scipy.signal import get_window  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline import audio  # noqa: E402

TARGET_SR = 16000


# --------------------------------------------------------------------------- inputs


def music(seconds: float, sr: int, channels: int, seed: int) -> np.ndarray:
    """float32 [frames, channels]: panned three-note chords with harmonics and decaying
    envelopes (a new chord every 0.5 s), hi-hat-like noise bursts, a noise floor."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    out = np.zeros((n, channels), np.float64)
    step = sr // 2
    for start in range(0, n, step):
        tt = np.arange(min(step, n - start)) / sr
        env = np.exp(-3.0 * tt)
        for midi in rng.integers(40, 84, 3):
            f0 = 440.0 * 2 ** ((midi - 69) / 12)
            tone = sum(
                a * np.sin(2 * np.pi * k * f0 * tt + rng.uniform(0, 2 * np.pi))
                for k, a in ((1, 1.0), (2, 0.5), (3, 0.3), (5, 0.15), (8, 0.08))
                if k * f0 < 0.45 * sr
            )
            out[start : start + len(tt)] += (env * tone)[:, None] * rng.uniform(0.4, 1, channels)
    m = int(0.08 * sr)
    hat = np.diff(rng.standard_normal(m + 1)) * np.exp(-np.arange(m) / (0.01 * sr))
    for start in range(0, n - len(hat), sr // 4):
        out[start : start + len(hat)] += 0.3 * hat[:, None] * rng.uniform(0.5, 1, channels)
    out += 0.01 * rng.standard_normal((n, channels))
    return (0.8 * out / np.abs(out).max()).astype(np.float32)


def encode(x: np.ndarray, sr: int, kbps: int, vbr: bool = False) -> bytes:
    pcm = np.clip(np.round(x * 32767), -32768, 32767).astype("<i2")
    enc = lameenc.Encoder()
    enc.set_in_sample_rate(sr)
    enc.set_channels(x.shape[1])
    enc.set_quality(5)
    if vbr:
        enc.set_vbr(3)  # vbr_abr: frame bit rates vary around the mean
        enc.set_vbr_mean_bitrate_kbps(kbps)
    else:
        enc.set_bit_rate(kbps)
    return bytes(enc.encode(pcm.tobytes()) + enc.flush())


# MPEG audio frame headers: enough to list the bit rates a file uses
_KBPS = {
    3: (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),  # MPEG-1 L3
    2: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),  # MPEG-2 L3
}
_SR = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000)}


def frame_bitrates(data: bytes) -> list[int]:
    rates, i = [], 0
    while i + 4 <= len(data):
        h = int.from_bytes(data[i : i + 4], "big")
        if h >> 21 != 0x7FF or (h >> 17) & 3 != 1 or (h >> 19) & 3 not in (2, 3):
            i += 1
            continue
        ver, bri, sri, pad = (h >> 19) & 3, (h >> 12) & 15, (h >> 10) & 3, (h >> 9) & 1
        if bri in (0, 15) or sri == 3:
            i += 1
            continue
        kbps, sr = _KBPS[ver][bri], _SR[ver][sri]
        rates.append(kbps)
        i += (144 if ver == 3 else 72) * kbps * 1000 // sr + pad
    return rates


def make_files(tmp: Path, seconds: float) -> dict[str, tuple[Path, int]]:
    """name -> (path, input frames)."""
    specs = [  # name, sr, channels, kbps, vbr, seed
        ("44k-st-320", 44100, 2, 320, False, 0),
        ("44k-st-320b", 44100, 2, 320, False, 1),
        ("22k-mono-64", 22050, 1, 64, False, 2),
        ("48k-st-vbr256", 48000, 2, 256, True, 3),
    ]
    files = {}
    print(f"inputs ({seconds:g} s each; LAME via lameenc {version('lameenc')}):")
    for name, sr, ch, kbps, vbr, seed in specs:
        x = music(seconds, sr, ch, seed)
        data = encode(x, sr, kbps, vbr)
        p = tmp / f"{name}.mp3"
        p.write_bytes(data)
        rates = frame_bitrates(data)
        xing = any(tag in data[:4096] for tag in (b"Xing", b"Info"))
        print(
            f"  {name:14s} {sr} Hz {ch} ch  {len(data) / 1e6:5.2f} MB  "
            f"{len(data) * 8 / seconds / 1000:5.1f} kbit/s avg  frames {len(rates)}  "
            f"bit rates {min(rates)}-{max(rates)}  Xing/Info header: {'yes' if xing else 'no'}"
        )
        files[name] = (p, len(x))
    return files


# --------------------------------------------------------------------------- decoders
# Each returns (frames, channels) samples or an array whose len() / channels is frames.


def dec_soundfile(p: str) -> np.ndarray:
    return soundfile.read(p, dtype="float32", always_2d=True)[0]


def dec_miniaudio_info_f32(p: str) -> np.ndarray:
    """What pipeline.audio does: get_file_info (native format), then decode_file."""
    i = miniaudio.get_file_info(p)
    d = miniaudio.decode_file(p, miniaudio.SampleFormat.FLOAT32, i.nchannels, i.sample_rate)
    return np.frombuffer(d.samples, np.float32).reshape(-1, d.nchannels)


def _native(p: str) -> tuple[int, int]:
    return NATIVE[p]


def dec_miniaudio_f32(p: str) -> np.ndarray:
    ch, sr = _native(p)
    d = miniaudio.decode_file(p, miniaudio.SampleFormat.FLOAT32, ch, sr)
    return np.frombuffer(d.samples, np.float32).reshape(-1, ch)


def dec_miniaudio_s16(p: str) -> np.ndarray:
    ch, sr = _native(p)
    d = miniaudio.decode_file(p, miniaudio.SampleFormat.SIGNED16, ch, sr)
    return np.frombuffer(d.samples, np.int16).reshape(-1, ch)


def dec_pyav(p: str) -> np.ndarray:
    with av.open(p) as c:
        parts = [f.to_ndarray() for f in c.decode(audio=0)]  # fltp: [channels, n] each
    return np.concatenate(parts, axis=1).T


def dec_librosa(p: str) -> np.ndarray:
    y, _ = librosa.load(p, sr=None, mono=False)
    return y.T if y.ndim == 2 else y[:, None]


def dec_pipeline(p: str) -> np.ndarray:
    d = audio.decode(p)
    return d.samples.reshape(-1, d.channels)


DECODERS: dict[str, Callable[[str], np.ndarray]] = {
    "soundfile f32": dec_soundfile,
    "miniaudio f32 (+info)": dec_miniaudio_info_f32,
    "miniaudio f32": dec_miniaudio_f32,
    "miniaudio s16": dec_miniaudio_s16,
    "pyav": dec_pyav,
    "librosa sr=None": dec_librosa,
    "pipeline decode": dec_pipeline,
}
NATIVE: dict[str, tuple[int, int]] = {}  # path -> (channels, sample rate), from soundfile


# full load to mono float32 at 16 kHz


def load_pipeline(p: str) -> np.ndarray:
    return audio.load_audio(p, TARGET_SR)


def load_librosa(p: str) -> np.ndarray:
    return librosa.load(p, sr=TARGET_SR, mono=True)[0]


def load_miniaudio(p: str) -> np.ndarray:
    d = miniaudio.decode_file(p, miniaudio.SampleFormat.FLOAT32, 1, TARGET_SR)
    return np.frombuffer(d.samples, np.float32)


def load_pipeline_lq(p: str) -> np.ndarray:
    d = audio.decode(p)
    return soxr.resample(audio.to_mono(d), d.sample_rate, TARGET_SR, quality="LQ")


LOADERS: dict[str, Callable[[str], np.ndarray]] = {
    "pipeline load_audio (soxr HQ)": load_pipeline,
    "pipeline decode + soxr LQ": load_pipeline_lq,
    "librosa.load sr=16k mono": load_librosa,
    "miniaudio nch=1 sr=16k": load_miniaudio,
}


# --------------------------------------------------------------------------- timing


def median_ms(fn: Callable, *args, repeats: int) -> float:
    fn(*args)  # warm: imports, caches, page cache
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def interleaved_ms(
    fns: dict[str, Callable[[str], object]], files: dict[str, tuple[Path, int]], repeats: int
) -> dict[tuple[str, str], float]:
    """Median ms per (candidate, file); each repeat runs every candidate once, in turn,
    so a burst of load from other processes hits all candidates alike."""
    times: dict[tuple[str, str], list[float]] = {(d, f): [] for d in fns for f in files}
    for rep in range(repeats + 1):
        for f, (p, _) in files.items():
            for d, fn in fns.items():
                t0 = time.perf_counter()
                fn(str(p))
                if rep:  # the first round only warms up
                    times[d, f].append(time.perf_counter() - t0)
    return {k: 1000 * statistics.median(v) for k, v in times.items()}


def table(title: str, rows: list[str], cols: list[str], cell: Callable[[str, str], str]) -> None:
    w0 = max(len(r) for r in rows + [title])
    widths = [max(len(c), *(len(cell(r, c)) for r in rows)) for c in cols]
    print()
    print(f"{title:<{w0}}  " + "  ".join(f"{c:>{w}}" for c, w in zip(cols, widths)))
    for r in rows:
        print(f"{r:<{w0}}  " + "  ".join(f"{cell(r, c):>{w}}" for c, w in zip(cols, widths)))


class StderrCapture:
    """Collect what C code writes to fd 2 during a block."""

    def __enter__(self) -> StderrCapture:
        sys.stderr.flush()
        self._saved = os.dup(2)
        self._file = tempfile.TemporaryFile()
        os.dup2(self._file.fileno(), 2)
        return self

    def __exit__(self, *exc: object) -> None:
        os.dup2(self._saved, 2)
        os.close(self._saved)
        self._file.seek(0)
        self.text = self._file.read().decode(errors="replace")
        self._file.close()


# --------------------------------------------------------------------------- sections


def bench_decoders(files: dict[str, tuple[Path, int]], repeats: int) -> None:
    names = list(files)
    ms = interleaved_ms(DECODERS, files, repeats)
    table(
        "1. decode, ms per file (median)",
        list(DECODERS),
        names,
        lambda d, f: f"{ms[d, f]:.1f}",
    )

    counts: dict[tuple[str, str], str] = {}
    for d, fn in DECODERS.items():
        for f in names:
            p, n_in = files[f]
            y = fn(str(p))
            counts[d, f] = f"{len(y)} ({len(y) - n_in:+d})"
    rows = ["input PCM", "sf.info frames", "miniaudio info", *DECODERS]
    for f in names:
        p, n_in = files[f]
        counts["input PCM", f] = str(n_in)
        counts["sf.info frames", f] = f"{soundfile.info(str(p)).frames} "
        counts["miniaudio info", f] = f"{miniaudio.get_file_info(str(p)).num_frames} "
    table(
        "2. decoded frames (diff vs input)",
        rows,
        names,
        lambda d, f: counts[d, f],
    )


def alias_probe(tmp: Path) -> Path:
    """5 s, 44.1 kHz stereo 320 kbit/s: 1 kHz and 12 kHz tones, 0.3 each. Resampled to
    16 kHz, the 12 kHz tone must be removed; a resampler with a weak anti-alias
    filter folds it to 16 - 12 = 4 kHz."""
    sr, n = 44100, 5 * 44100
    t = np.arange(n) / sr
    x = 0.3 * np.sin(2 * np.pi * 1000 * t) + 0.3 * np.sin(2 * np.pi * 12000 * t)
    p = tmp / "alias-probe.mp3"
    p.write_bytes(encode(np.stack([x, x], 1).astype(np.float32), sr, 320))
    return p


def tone_db(y: np.ndarray, sr: int, hz: float) -> float:
    """Peak level (dBFS of a sine) within ±50 Hz of ``hz``; flat-top window, so the
    amplitude is exact to ~0.01 dB wherever the tone falls between bins."""
    y = y[len(y) // 10 : -len(y) // 10]
    w = get_window("flattop", len(y))
    spec = np.abs(np.fft.rfft(y * w)) * 2 / w.sum()
    f = np.fft.rfftfreq(len(y), 1 / sr)
    return float(20 * np.log10(spec[np.abs(f - hz) < 50].max() + 1e-12))


def bench_loaders(files: dict[str, tuple[Path, int]], probe: Path, repeats: int) -> None:
    names = list(files)
    ms = interleaved_ms(LOADERS, files, repeats)
    cols = [*names, "1k dB", "4k alias dB"]
    cell = {}
    for d, fn in LOADERS.items():
        for f in names:
            cell[d, f] = f"{ms[d, f]:.1f}"
        y = fn(str(probe))
        cell[d, "1k dB"] = f"{tone_db(y, TARGET_SR, 1000):.1f}"
        cell[d, "4k alias dB"] = f"{tone_db(y, TARGET_SR, 4000):.1f}"
    table(
        "3. load to mono f32 16 kHz, ms/file",
        list(LOADERS),
        cols,
        lambda d, f: cell[d, f],
    )
    print("   (probe: 1 kHz + 12 kHz sines at -10.5 dBFS each; a clean 16 kHz result keeps")
    print("    the 1 kHz tone at -10.5 dB and shows nothing at 4 kHz, the 12 kHz alias)")


def bench_mixing(files: dict[str, tuple[Path, int]], repeats: int) -> None:
    d = audio.decode(str(files["44k-st-320"][0]))
    x = d.samples  # interleaved float32, 30 s stereo
    r = max(repeats, 10)
    mono = audio.to_mono(d)
    rows = {
        "x.reshape(-1,2).mean(axis=1)": median_ms(lambda: x.reshape(-1, 2).mean(axis=1), repeats=r),
        "(x[0::2] + x[1::2]) * 0.5": median_ms(lambda: (x[0::2] + x[1::2]) * 0.5, repeats=r),
        "pipeline.audio.to_mono": median_ms(audio.to_mono, d, repeats=r),
    }
    diff = np.abs(x.reshape(-1, 2).mean(axis=1) - mono).max()
    print(f"\n4a. channel mix of {len(x) // 2} stereo frames, ms (max |diff| {diff:.1e})")
    for k, v in rows.items():
        print(f"   {k:32s} {v:7.2f}")
    print(f"\n4b. soxr {d.sample_rate} -> {TARGET_SR} Hz of {d.seconds:.1f} s mono, ms")
    for q in ("VHQ", "HQ", "MQ", "LQ", "QQ"):
        t = median_ms(soxr.resample, mono, d.sample_rate, TARGET_SR, q, repeats=r)
        print(f"   soxr {q:4s} {t:7.2f}")


def bench_broken(files: dict[str, tuple[Path, int]], tmp: Path) -> None:
    good = files["44k-st-320"][0].read_bytes()
    id3 = b"ID3\x04\x00\x00\x00\x00\x00\x20" + b"\x00" * 32  # tag with 32 bytes of padding
    cases = {
        "truncated 1/3": good[: len(good) // 3],
        "ID3 tag only": id3,
        "header, 1 frame": good[:1044],  # a 320 kbit/s 44.1 kHz frame is 1044-1045 bytes
        "random bytes": np.random.default_rng(0).integers(0, 256, 16384, np.uint8).tobytes(),
        "empty": b"",
    }
    paths = {}
    for k, data in cases.items():
        paths[k] = tmp / f"broken-{k.replace(' ', '_').replace('/', '_')}.mp3"
        paths[k].write_bytes(data)
    n_full = files["44k-st-320"][1]
    decs = {k: v for k, v in DECODERS.items() if k not in ("miniaudio f32", "miniaudio s16")}
    cell = {}
    for d, fn in decs.items():
        for k, p in paths.items():
            with StderrCapture() as cap, warnings.catch_warnings(record=True) as w:
                warnings.simplefilter("always")
                try:
                    y = fn(str(p))
                    out = f"{len(y)}" if k != "truncated 1/3" else f"{len(y) / n_full:.2f} of full"
                except Exception as e:  # noqa: BLE001 - recording what each decoder raises
                    out = type(e).__name__
            if cap.text:
                out += f" +{len(cap.text)}B stderr"
            if w:
                out += f" +{len(w)}warn"
            cell[d, k] = out
    table(
        "5. broken files: frames / exception",
        list(decs),
        list(cases),
        lambda d, k: cell[d, k],
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--seconds", type=float, default=30.0)
    a = ap.parse_args()

    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    print(
        f"one core (cpu {cpu}), threads=1; numpy {np.__version__}, soundfile "
        f"{soundfile.__version__} ({soundfile.__libsndfile_version__}), miniaudio "
        f"{miniaudio.__version__}, av {av.__version__}, librosa {librosa.__version__}, "
        f"soxr {soxr.__version__}; median of {a.repeats}; load average "
        f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs (other processes share them)"
    )
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        files = make_files(tmp, a.seconds)
        for p, _ in files.values():
            i = soundfile.info(str(p))
            NATIVE[str(p)] = (i.channels, i.samplerate)
        bench_decoders(files, a.repeats)
        bench_loaders(files, alias_probe(tmp), a.repeats)
        bench_mixing(files, a.repeats)
        bench_broken(files, tmp)


if __name__ == "__main__":
    main()
