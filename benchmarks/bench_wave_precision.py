"""How much a waveform cache's float16 samples lose, against int16 PCM, on real recordings.

    python benchmarks/bench_wave_precision.py [--audio data/real/multisource/all] [--limit 60]

`mrnet preprocess --features wave` stores each 16-kHz clip as float16 (2 bytes a sample,
as int16). For every audio file below --audio (sorted, at most --limit) it decodes the
middle 30 s as preprocess does (mono, pipeline.audio.load_audio), rounds the samples to
float16 and to int16 (x * 32767, rounded, clipped), and measures each rounding's
signal-to-noise ratio, 10 log10(sum x^2 / sum (x - rounded)^2), over the whole clip and over
its quietest second (the 1-s window of least energy). It prints the median and the worst of
each over the files, and the share of files where float16 is the more exact.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.audio import AUDIO_SUFFIXES, load_audio  # noqa: E402

RATE = 16000


def snr_db(x: np.ndarray, rounded: np.ndarray) -> float:
    """10 log10(signal energy / rounding-error energy); inf when exact."""
    noise = float(np.sum((x.astype(np.float64) - rounded) ** 2))
    signal = float(np.sum(x.astype(np.float64) ** 2))
    return float("inf") if noise == 0 else 10 * np.log10(max(signal, 1e-30) / noise)


def quietest_second(x: np.ndarray) -> np.ndarray:
    """The 1-s window of x (hop 0.5 s) with the least energy."""
    starts = range(0, max(1, len(x) - RATE + 1), RATE // 2)
    return min((x[s : s + RATE] for s in starts), key=lambda w: float(np.sum(w * w)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--audio", type=Path, default=ROOT / "data/real/multisource/all")
    ap.add_argument("--limit", type=int, default=60)
    a = ap.parse_args()
    files = sorted(p for p in a.audio.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    files = files[: a.limit]
    if not files:
        raise SystemExit(f"no audio files below {a.audio} (build them: benchmarks/real_music.py)")
    rows = []
    for path in files:
        x = load_audio(path, RATE, 30.0, clip="middle")
        as16 = x.astype(np.float16).astype(np.float64)
        pcm = np.clip(np.round(x.astype(np.float64) * 32767), -32768, 32767) / 32767
        q = quietest_second(x)
        q16 = q.astype(np.float16).astype(np.float64)
        qpcm = np.clip(np.round(q.astype(np.float64) * 32767), -32768, 32767) / 32767
        rows.append((snr_db(x, as16), snr_db(x, pcm), snr_db(q, q16), snr_db(q, qpcm)))
    cols = np.array(rows)
    print(f"{len(files)} files below {a.audio}, middle 30 s at {RATE} Hz, mono")
    print(f"{'SNR, dB':32s} {'median':>8s} {'worst':>8s}")
    names = ("float16, whole clip", "int16, whole clip", "float16, quietest second")
    for k, name in enumerate((*names, "int16, quietest second")):
        finite = cols[np.isfinite(cols[:, k]), k]
        print(f"{name:32s} {statistics.median(finite):8.1f} {finite.min():8.1f}")
    better = np.mean(cols[:, 2] > cols[:, 3])
    print(f"float16 more exact than int16 in the quietest second: {better:.0%} of files")


if __name__ == "__main__":
    main()
