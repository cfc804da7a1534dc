"""Music-like audio for the synthetic datasets: one generative recipe per fma_small genre.

Each genre has its own recipe (tempo range, pitch register, timbre, percussion, rhythm
density, harmony), randomised per track (key, tempo, optional layers, mix, loudness,
echo) and, for one track in five, a "borrowed" layer from another genre, so that no
single constant feature identifies a genre while a small CNN on log-mels separates them
well. `render` is deterministic in its seed.

Building blocks: band-limited wavetable oscillators and enveloped notes (`_Ctx`),
percussion samples, chord progressions, melodies, and a few effects.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

SMALL_GENRES = (
    "Electronic",
    "Experimental",
    "Folk",
    "Hip-Hop",
    "Instrumental",
    "International",
    "Pop",
    "Rock",
)

TABLE = 4096  # wavetable length (power of two)


@functools.lru_cache(maxsize=64)
def _table(name: str, kmax: int) -> np.ndarray:
    """One period of a band-limited waveform (at most ``kmax`` harmonics), peak 1."""
    k = np.arange(1, kmax + 1, dtype=np.float64)
    amps = {
        "sine": (k == 1) * 1.0,
        "saw": 1 / k,
        "square": (k % 2 == 1) / k,
        "mellow": 1 / k**2,
        "bright": 1 / k**1.2,
        "organ": np.isin(k, (1, 2, 3, 4, 6, 8)) / np.sqrt(k),
        "reed": np.exp(-0.5 * ((k - 3) / 2.0) ** 2) + 0.3 / k,
        "vocal": np.exp(-0.5 * ((k - 2.5) / 1.5) ** 2) + 0.4 * np.exp(-0.5 * ((k - 9) / 2) ** 2),
    }[name]
    ph = np.arange(TABLE) / TABLE
    w = (amps[:, None] * np.sin(2 * np.pi * k[:, None] * ph[None, :])).sum(0)
    return (w / np.abs(w).max()).astype(np.float32)


class _Ctx:
    """Per-track synthesis state: rate, length, random generator, tempo grid, key."""

    def __init__(self, rng: np.random.Generator, n: int, sr: int, tempo: float, root: int):
        self.rng, self.n, self.sr, self.tempo, self.root = rng, n, sr, tempo, root
        self.spb = 60.0 / tempo * sr  # samples per beat
        self.beats = n / self.spb
        self.noise = rng.standard_normal(sr).astype(np.float32)  # 1-s noise bank
        self._notes: dict = {}

    def pos(self, beat: float) -> int:
        """The sample index at which ``beat`` (counted from 0) starts."""
        return int(round(beat * self.spb))

    def noise_slice(self, length: int) -> np.ndarray:
        """Float32 [length] of the noise bank, from a random start, repeated as needed."""
        start = int(self.rng.integers(self.sr))
        return np.tile(self.noise, (start + length) // self.sr + 1)[start : start + length]

    def osc(
        self,
        name: str,
        freq: float,
        length: int,
        vib: tuple[float, float] = (0.0, 0.0),
        glide: float = 0.0,
    ) -> np.ndarray:
        """Wavetable oscillator, float32 [length], from a random phase.

        Args:
            name: the wavetable's name.
            freq: the fundamental (Hz); harmonics stay below 0.45 * sample rate.
            length: samples.
            vib: vibrato (rate Hz, depth as a fraction of the frequency).
            glide: pitch change in semitones over the note.

        Returns:
            Float32 [length].
        """
        top = freq * (1 + vib[1]) * 2 ** (max(glide, 0.0) / 12)  # highest fundamental
        kmax = int(max(1, min(32, 0.45 * self.sr / max(top, 1.0))))
        kmax = 1 << (kmax.bit_length() - 1)  # few distinct tables
        table = _table(name, kmax)
        t = np.arange(length, dtype=np.float64) / self.sr
        if vib[1] == 0 and glide == 0:
            phase = (freq + 0.0) * t
        else:
            inst = freq * (1 + vib[1] * np.sin(2 * np.pi * vib[0] * t))
            if glide:
                inst *= 2 ** (glide / 12 * t / max(t[-1], 1e-9))
            phase = np.cumsum(inst) / self.sr
        phase += self.rng.random()
        idx = (phase * TABLE).astype(np.int64) & (TABLE - 1)
        return table[idx]

    def note(
        self,
        name: str,
        midi: float,
        seconds: float,
        env: str = "pluck",
        tau: float = 0.3,
        attack: float = 0.01,
        vib: tuple[float, float] = (0.0, 0.0),
        glide: float = 0.0,
    ) -> np.ndarray:
        """One enveloped note (cached per parameters within the track, up to 512 notes).

        Args:
            name: the oscillator's wavetable.
            midi: pitch as a MIDI note number (69: 440 Hz; fractions allowed).
            seconds: duration (s); at least 8 samples.
            env: "pluck" (exponential decay) or anything else for "pad" (linear attack,
                sustain, release over the last 20 %).
            tau: "pluck": the decay's time constant (s).
            attack: "pad": attack time (s).
            vib: vibrato (rate Hz, depth as a fraction of the frequency); see `osc`.
            glide: pitch change in semitones over the note.

        Returns:
            Float32 [max(8, seconds * sample rate)], ending in a 5-ms fade; the cached
            array itself (callers must not modify it).
        """
        key = (name, round(midi, 2), round(seconds, 3), env, tau, attack, vib, glide)
        if key in self._notes:
            return self._notes[key]
        length = max(8, int(seconds * self.sr))
        x = self.osc(name, _hz(midi), length, vib, glide)
        t = np.arange(length, dtype=np.float32) / self.sr
        if env == "pluck":
            e = np.exp(-t / tau) * np.minimum(t / 0.003, 1)
        else:  # "pad": linear attack, sustain, release over the last 20 %
            rel = max(0.02, 0.2 * seconds)
            e = np.minimum(np.minimum(t / max(attack, 1e-3), 1), (seconds - t) / rel)
            e = np.clip(e, 0, 1)
        fade = min(length, int(0.005 * self.sr))
        e[-fade:] *= np.linspace(1, 0, fade, dtype=np.float32)
        x = (x * e).astype(np.float32)
        if len(self._notes) < 512:
            self._notes[key] = x
        return x


def _hz(midi: float) -> float:
    return 440.0 * 2 ** ((midi - 69) / 12)


def _place(buf: np.ndarray, pos: int, x: np.ndarray, gain: float = 1.0) -> None:
    if pos >= len(buf) or pos + len(x) <= 0:
        return
    lo = max(pos, 0)
    end = min(len(buf), pos + len(x))
    buf[lo:end] += gain * x[lo - pos : end - pos]


# percussion samples ------------------------------------------------------------------


def _kick(c: _Ctx, f0: float, f1: float, decay: float) -> np.ndarray:
    length = int(min(1.2, 5 * decay) * c.sr)
    t = np.arange(length) / c.sr
    tau = 0.03
    phase = f1 * t + (f0 - f1) * tau * (1 - np.exp(-t / tau))
    return (np.sin(2 * np.pi * phase) * np.exp(-t / decay)).astype(np.float32)


def _snare(c: _Ctx, tone: float, decay: float, noise_mix: float = 0.7) -> np.ndarray:
    length = int(5 * decay * c.sr)
    t = np.arange(length, dtype=np.float32) / c.sr
    n = c.noise_slice(length)
    body = np.sin(2 * np.pi * tone * t) * np.exp(-t / (decay * 0.6))
    return ((noise_mix * n * 0.5 + (1 - noise_mix) * body) * np.exp(-t / decay)).astype(np.float32)


def _hat(c: _Ctx, decay: float) -> np.ndarray:
    length = int(5 * decay * c.sr) + 2
    n = c.noise_slice(length)
    hp = np.diff(np.diff(n))  # second difference: a steep high-pass
    t = np.arange(len(hp), dtype=np.float32) / c.sr
    return (0.25 * hp * np.exp(-t / decay)).astype(np.float32)


def _hand_drum(c: _Ctx, freq: float, decay: float, bend: float) -> np.ndarray:
    length = int(5 * decay * c.sr)
    t = np.arange(length) / c.sr
    inst = freq * (1 + bend * np.exp(-t / 0.04))
    phase = np.cumsum(inst) / c.sr
    x = (
        np.sin(2 * np.pi * phase)
        + 0.4 * np.sin(4 * np.pi * phase)
        + 0.2 * np.sin(6 * np.pi * phase)
    )
    return (x * np.exp(-t / decay) / 1.6).astype(np.float32)


def _hits(c: _Ctx, buf: np.ndarray, sample: np.ndarray, beats, gain: float, jitter: float = 0.0):
    rng = c.rng
    for b in beats:
        if b >= c.beats:
            break
        shift = rng.normal(0, jitter) if jitter else 0.0
        _place(buf, c.pos(b + shift), sample, gain * float(rng.uniform(0.8, 1.0)))


def _grid(c: _Ctx, period: float, offsets=(0.0,), prob: float = 1.0) -> list[float]:
    """Beat positions ``k * period + offset`` over the clip, each kept with ``prob``."""
    out = []
    start = 0.0
    while start < c.beats:
        out += [start + o for o in offsets if c.rng.random() < prob]
        start += period
    return sorted(out)


# harmony -------------------------------------------------------------------------------

MAJOR = (0, 2, 4, 5, 7, 9, 11)
MINOR = (0, 2, 3, 5, 7, 8, 10)
HIJAZ = (0, 1, 4, 5, 7, 8, 10)
BAYATI = (0, 1.5, 3, 5, 7, 8, 10)  # with a quarter tone
PENTA = (0, 3, 5, 7, 10)


def _chord(root: int, degree: int, scale, size: int = 3) -> list[int]:
    """Triad (or 7th) on a scale degree: midi numbers."""
    return [root + scale[(degree + 2 * i) % 7] + 12 * ((degree + 2 * i) // 7) for i in range(size)]


def _progression(c: _Ctx, scale, prog, base: int) -> Callable[[float], list[int]]:
    """Chord (midi list) sounding at a beat: one chord per bar, looping ``prog``."""
    chords = [_chord(base + c.root, d, scale) for d in prog]
    return lambda beat: chords[int(beat // 4) % len(chords)]


def _melody(c: _Ctx, scale, low: int, high: int, steps: int, leap: float = 0.3) -> list[float]:
    """A random walk on the scale between midi ``low`` and ``high``."""
    degrees = [o + s + c.root for o in range(low - 24, high + 12, 12) for s in scale]
    pitches = sorted(p for p in degrees if low <= p <= high) or [float(low)]
    i = int(c.rng.integers(len(pitches)))
    out = []
    for _ in range(steps):
        move = c.rng.integers(-4, 5) if c.rng.random() < leap else c.rng.integers(-1, 2)
        i = int(np.clip(i + move, 0, len(pitches) - 1))
        out.append(float(pitches[i]))
    return out


# layers: each returns a mono float32 [n] buffer --------------------------------------


def _four_floor(c: _Ctx) -> np.ndarray:
    buf = np.zeros(c.n, np.float32)
    _hits(c, buf, _kick(c, 160, 50, 0.12), _grid(c, 1.0), 1.0)
    _hits(c, buf, _hat(c, 0.06), _grid(c, 1.0, (0.5,)), 0.7)
    if c.rng.random() < 0.5:
        _hits(c, buf, _hat(c, 0.015), _grid(c, 0.25, prob=0.8), 0.35)
    if c.rng.random() < 0.6:
        _hits(c, buf, _snare(c, 220, 0.08, 0.9), _grid(c, 4, (1.0, 3.0)), 0.6)
    return buf


def _backbeat(c: _Ctx, rock: bool) -> np.ndarray:
    buf = np.zeros(c.n, np.float32)
    kick_beats = _grid(c, 4, (0.0, 2.0)) + _grid(c, 4, (1.5, 2.5, 3.5), 0.3 if rock else 0.2)
    _hits(c, buf, _kick(c, 130, 55, 0.1), sorted(kick_beats), 1.0, 0.004)
    _hits(c, buf, _snare(c, 190, 0.12 if rock else 0.09), _grid(c, 4, (1.0, 3.0)), 0.9, 0.004)
    step = 0.5 if rock or c.rng.random() < 0.7 else 0.25
    _hits(c, buf, _hat(c, 0.03), _grid(c, step), 0.5, 0.003)
    if rock:
        _hits(c, buf, _hat(c, 0.6), _grid(c, 16, (0.0,)), 0.8)  # crash every 4 bars
    return buf


def _trap_drums(c: _Ctx) -> np.ndarray:
    buf = np.zeros(c.n, np.float32)
    pattern = [0.0, 1.75, 2.5] + [x / 4 for x in c.rng.choice(16, 2, replace=False)]
    _hits(c, buf, _kick(c, 110, 42, 0.4), _grid(c, 4, tuple(pattern)), 1.0)
    clap = _snare(c, 180, 0.1, 0.95)
    _hits(c, buf, clap, _grid(c, 4, (1.0, 3.0)), 1.0)
    step = 0.25 if c.rng.random() < 0.6 else 0.5
    _hits(c, buf, _hat(c, 0.02), _grid(c, step, prob=0.9), 0.4)
    return buf


def _hand_drums(c: _Ctx) -> np.ndarray:
    buf = np.zeros(c.n, np.float32)
    cycle = int(c.rng.choice([7, 10, 12, 16]))
    high = _hand_drum(c, float(c.rng.uniform(300, 480)), 0.12, 0.15)
    low = _hand_drum(c, float(c.rng.uniform(80, 130)), 0.25, 0.6)
    accents = sorted(c.rng.choice(cycle, max(2, cycle // 3), replace=False) / 2)
    fills = [x / 2 for x in range(cycle) if c.rng.random() < 0.6]
    _hits(c, buf, low, _grid(c, cycle / 2, tuple(accents)), 0.9, 0.005)
    _hits(c, buf, high, _grid(c, cycle / 2, tuple(fills)), 0.6, 0.005)
    _hits(c, buf, high, _grid(c, 0.25, prob=0.25), 0.3, 0.003)
    return buf


def _bass(c: _Ctx, chord_at, name: str, step: float, octave: int, tau: float) -> np.ndarray:
    buf = np.zeros(c.n, np.float32)
    b = 0.0
    while b < c.beats:
        root = chord_at(b)[0] - 12 * octave
        if c.rng.random() < 0.15:
            root += 12
        _place(buf, c.pos(b), c.note(name, root, step * c.spb / c.sr, "pluck", tau), 0.8)
        b += step
    return buf


def _chords(
    c: _Ctx,
    chord_at,
    name: str,
    step: float,
    env: str,
    tau: float = 0.4,
    attack: float = 0.01,
    strum: float = 0.0,
    vib: tuple[float, float] = (0.0, 0.0),
) -> np.ndarray:
    buf = np.zeros(c.n, np.float32)
    b = 0.0
    dur = step * c.spb / c.sr
    while b < c.beats:
        for i, m in enumerate(chord_at(b)):
            x = c.note(name, m, dur, env, tau, attack, vib)
            _place(buf, c.pos(b) + int(i * strum * c.sr), x, 0.35)
        b += step
    return buf


def _arpeggio(c: _Ctx, chord_at, name: str, step: float, up: int, tau: float) -> np.ndarray:
    buf = np.zeros(c.n, np.float32)
    b, i = 0.0, 0
    dur = step * c.spb / c.sr
    while b < c.beats:
        tones = chord_at(b)
        tones = tones + [tones[0] + 12]
        m = tones[i % len(tones)] + 12 * up
        _place(buf, c.pos(b), c.note(name, m, dur * 1.5, "pluck", tau), 0.45)
        b += step
        i += 1
    return buf


def _lead(
    c: _Ctx,
    scale,
    low: int,
    high: int,
    name: str,
    steps=(0.5, 1.0, 2.0),
    vib: tuple[float, float] = (5.5, 0.006),
    rest: float = 0.2,
    glide: float = 0.0,
    env: str = "pad",
    tau: float = 0.3,
) -> np.ndarray:
    buf = np.zeros(c.n, np.float32)
    pitches = _melody(c, scale, low, high, int(c.beats * 2) + 4)
    b, i = 0.0, 0
    while b < c.beats and i < len(pitches):
        step = float(c.rng.choice(steps))
        if c.rng.random() > rest:
            g = float(c.rng.choice([-1.0, 1.0])) * glide if glide and c.rng.random() < 0.4 else 0.0
            x = c.note(name, pitches[i], step * c.spb / c.sr, env, tau, 0.03, vib, g)
            _place(buf, c.pos(b), x, 0.5)
        b += step
        i += 1
    return buf


def _rap(c: _Ctx) -> np.ndarray:
    """Speech-like syllables on a 16th grid: short voiced bursts with a noise onset."""
    buf = np.zeros(c.n, np.float32)
    base = float(c.rng.uniform(44, 52))
    b = 0.0
    while b < c.beats:
        if (b % 8) < 7 and c.rng.random() < 0.75:
            dur = float(c.rng.uniform(0.06, 0.14))
            m = base + float(c.rng.normal(0, 1.5))
            x = c.note("vocal", m, dur, "pad", attack=0.01, glide=float(c.rng.normal(0, 2)))
            _place(buf, c.pos(b), x, 0.6)
            _place(buf, c.pos(b), c.noise_slice(int(0.015 * c.sr)), 0.08)
        b += 0.25
    return buf


def _bells(c: _Ctx) -> np.ndarray:
    buf = np.zeros(c.n, np.float32)
    rate = float(c.rng.uniform(0.4, 1.5))  # events per second, irregular
    t = float(c.rng.exponential(1 / rate))
    seconds = c.n / c.sr
    while t < seconds:
        f = float(np.exp(c.rng.uniform(np.log(120), np.log(2500))))
        dur = float(c.rng.uniform(0.4, 2.5))
        length = int(dur * c.sr)
        tt = np.arange(length, dtype=np.float32) / c.sr
        ratios = np.concatenate([[1.0], c.rng.uniform(1.3, 7.5, int(c.rng.integers(2, 5)))])
        x = np.zeros(length, np.float32)
        for k, r in enumerate(ratios):
            if f * r < 0.45 * c.sr:
                x += c.osc("sine", f * r, length) * np.exp(-tt / (dur / (1 + k))) / (1 + k)
        _place(buf, int(t * c.sr), x, float(c.rng.uniform(0.15, 0.4)))
        t += float(c.rng.exponential(1 / rate))
    return buf


def _glissandi(c: _Ctx) -> np.ndarray:
    buf = np.zeros(c.n, np.float32)
    t, seconds = 0.0, c.n / c.sr
    while t < seconds:
        dur = float(c.rng.uniform(1.0, 5.0))
        m = float(c.rng.uniform(40, 90))
        x = c.note(
            str(c.rng.choice(["sine", "saw", "square"])),
            m,
            dur,
            "pad",
            attack=dur / 3,
            glide=float(c.rng.uniform(-24, 24)),
        )
        _place(buf, int(t * c.sr), x, 0.25)
        t += dur * float(c.rng.uniform(0.5, 1.5))
    return buf


def _noise_swells(c: _Ctx) -> np.ndarray:
    from scipy.signal import butter, sosfilt

    lo, hi = sorted(np.exp(c.rng.uniform(np.log(100), np.log(8000), 2)))
    hi = max(hi, lo * 1.5)
    sos = butter(2, [lo, min(hi, 0.45 * c.sr)], btype="band", fs=c.sr, output="sos")
    x = sosfilt(sos, np.tile(c.noise, c.n // c.sr + 1)[: c.n]).astype(np.float32)
    period = float(c.rng.uniform(2, 8))
    t = np.arange(c.n, dtype=np.float32) / c.sr
    env = 0.5 - 0.5 * np.cos(2 * np.pi * t / period + float(c.rng.uniform(0, 6.3)))
    return x * env**2 * 1.5


def _glitches(c: _Ctx) -> np.ndarray:
    buf = np.zeros(c.n, np.float32)
    for _ in range(int(c.rng.integers(10, 60) * c.n / c.sr / 30)):
        length = int(c.rng.uniform(0.005, 0.08) * c.sr)
        x = np.sign(c.noise_slice(length)) * float(c.rng.uniform(0.05, 0.3))
        _place(buf, int(c.rng.integers(c.n)), x.astype(np.float32))
    return buf


def _drone(c: _Ctx, name: str, base: int, fifth: bool = True) -> np.ndarray:
    t = np.arange(c.n, dtype=np.float32) / c.sr
    x = c.osc(name, _hz(base + c.root), c.n)
    if fifth:
        x = x + 0.6 * c.osc(name, _hz(base + c.root + 7), c.n)
    swell = 0.75 + 0.25 * np.sin(2 * np.pi * float(c.rng.uniform(0.05, 0.3)) * t)
    return (x * swell * 0.3).astype(np.float32)


def _crackle(c: _Ctx) -> np.ndarray:
    buf = np.zeros(c.n, np.float32)
    pos = c.rng.integers(0, c.n, int(8 * c.n / c.sr))
    buf[pos] = c.rng.uniform(-0.5, 0.5, len(pos)).astype(np.float32)
    return buf + 0.01 * np.tile(c.noise, c.n // c.sr + 1)[: c.n]


def _distort(x: np.ndarray, drive: float) -> np.ndarray:
    return (np.tanh(drive * x) / np.tanh(drive)).astype(np.float32)


# recipes: (tempo range, scale, layers) -------------------------------------------------


def _electronic(c: _Ctx) -> list[np.ndarray]:
    ch = _progression(c, MINOR, [0, 5, 6, 0] if c.rng.random() < 0.5 else [0, 3, 4, 0], 48)
    pump = 1 - 0.6 * np.exp(-((np.arange(c.n) % c.spb) / c.sr) / 0.12).astype(np.float32)
    layers = [
        _four_floor(c),
        _bass(c, ch, "saw", 0.25 if c.rng.random() < 0.6 else 0.5, 1, 0.08),
        _chords(c, ch, str(c.rng.choice(["saw", "square"])), 4.0, "pad", attack=0.05) * pump,
    ]
    if c.rng.random() < 0.7:
        layers.append(_arpeggio(c, ch, "square", 0.25, 2, 0.1))
    return layers


def _experimental(c: _Ctx) -> list[np.ndarray]:
    layers = [_bells(c)]
    for fn, p in ((_glissandi, 0.6), (_noise_swells, 0.6), (_glitches, 0.5)):
        if c.rng.random() < p:
            layers.append(fn(c))
    if c.rng.random() < 0.4:
        layers.append(_drone(c, "sine", 36, fifth=False) * 1.5)
    return layers


def _folk(c: _Ctx) -> list[np.ndarray]:
    ch = _progression(c, MAJOR, [0, 3, 0, 4], 52)
    layers = [_arpeggio(c, ch, "bright", 0.5, 0, 0.5)]
    if c.rng.random() < 0.4:
        layers.append(_chords(c, ch, "bright", 2.0, "pluck", tau=0.6, strum=0.02))
    if c.rng.random() < 0.7:
        name, vib = ("saw", (5.5, 0.008)) if c.rng.random() < 0.5 else ("sine", (4.5, 0.004))
        layers.append(_lead(c, MAJOR, 67, 84, name, (0.5, 1.0), vib))
    if c.rng.random() < 0.6:
        layers.append(_bass(c, ch, "mellow", 2.0, 1, 0.4))
    return layers


def _hiphop(c: _Ctx) -> list[np.ndarray]:
    ch = _progression(c, MINOR, [0, 3] if c.rng.random() < 0.5 else [0, 5], 55)
    layers = [_trap_drums(c), _bass(c, ch, "sine", 2.0, 2, 0.8) * 1.4]
    if c.rng.random() < 0.8:
        layers.append(_chords(c, ch, str(c.rng.choice(["mellow", "organ"])), 4.0, "pluck", 1.0))
    if c.rng.random() < 0.7:
        layers.append(_rap(c))
    if c.rng.random() < 0.5:
        layers.append(_crackle(c))
    return layers


def _instrumental(c: _Ctx) -> list[np.ndarray]:
    scale = MAJOR if c.rng.random() < 0.5 else MINOR
    ch = _progression(c, scale, [0, 5, 3, 4], 48)
    layers = [
        _chords(c, ch, "mellow", 4.0, "pluck", tau=1.2),
        _lead(c, scale, 64, 81, "mellow", (1.0, 2.0), (0.0, 0.0), env="pluck", tau=0.9),
    ]
    if c.rng.random() < 0.8:
        layers.append(_chords(c, ch, "saw", 4.0, "pad", attack=0.6, vib=(5.0, 0.004)) * 0.6)
    if c.rng.random() < 0.6:
        layers.append(_bass(c, ch, "mellow", 4.0, 1, 1.0))
    return layers


def _international(c: _Ctx) -> list[np.ndarray]:
    scale = (HIJAZ, BAYATI, PENTA)[int(c.rng.integers(3))]
    layers = [
        _drone(c, str(c.rng.choice(["saw", "reed"])), 43),
        _lead(c, scale, 62, 81, "reed", (0.25, 0.5, 1.0), (6.5, 0.012), rest=0.1, glide=1.0),
        _hand_drums(c),
    ]
    if c.rng.random() < 0.5:
        pluck = _progression(c, MAJOR, [0], 55)
        layers.append(_arpeggio(c, pluck, "saw", 0.25, 1, 0.25) * 0.7)
    return layers


def _pop(c: _Ctx) -> list[np.ndarray]:
    ch = _progression(c, MAJOR, [0, 4, 5, 3], 55)
    layers = [
        _backbeat(c, rock=False),
        _bass(c, ch, "square", 0.5, 2, 0.25),
        _chords(c, ch, str(c.rng.choice(["organ", "square", "bright"])), 1.0, "pluck", 0.35),
        _lead(c, MAJOR, 62, 76, "vocal", (0.5, 1.0, 1.5), (5.5, 0.01), rest=0.25) * 1.3,
    ]
    if c.rng.random() < 0.4:
        layers.append(_chords(c, ch, "saw", 4.0, "pad", attack=0.3) * 0.5)
    return layers


def _rock(c: _Ctx) -> list[np.ndarray]:
    prog = [0, 6, 3, 0] if c.rng.random() < 0.5 else [0, 3, 4, 3]
    ch = _progression(c, MAJOR, prog, 40)

    def power(beat: float) -> list[int]:
        """A power chord on the chord root at ``beat``: root, fifth, octave (MIDI)."""
        r = ch(beat)[0]
        return [r, r + 7, r + 12]

    step = 0.5 if c.rng.random() < 0.6 else 1.0
    guitar = _chords(c, power, "saw", step, "pluck", tau=0.25 if step == 0.5 else 0.6)
    layers = [
        _backbeat(c, rock=True),
        _distort(guitar * float(c.rng.uniform(2.0, 4.0)), float(c.rng.uniform(3, 8))) * 0.5,
        _bass(c, ch, "saw", 0.5, 1, 0.2),
    ]
    if c.rng.random() < 0.4:
        lead = _lead(c, PENTA, 64, 84, "saw", (0.25, 0.5, 1.0), (6.0, 0.01))
        layers.append(_distort(lead * 3, 5) * 0.3)
    return layers


RECIPES: dict[str, tuple[tuple[float, float], Callable[[_Ctx], list[np.ndarray]]]] = {
    "Electronic": ((118, 135), _electronic),
    "Experimental": ((60, 140), _experimental),
    "Folk": ((80, 120), _folk),
    "Hip-Hop": ((78, 98), _hiphop),
    "Instrumental": ((58, 90), _instrumental),
    "International": ((92, 135), _international),
    "Pop": ((96, 124), _pop),
    "Rock": ((110, 165), _rock),
}

# One characteristic layer per genre, lent to other genres' tracks now and then.
BORROWED: dict[str, Callable[[_Ctx], np.ndarray]] = {
    "Electronic": _four_floor,
    "Experimental": _bells,
    "Folk": lambda c: _arpeggio(c, _progression(c, MAJOR, [0, 3], 52), "bright", 0.5, 0, 0.5),
    "Hip-Hop": _rap,
    "Instrumental": lambda c: _chords(
        c, _progression(c, MINOR, [0, 5], 48), "saw", 4.0, "pad", attack=0.6, vib=(5.0, 0.004)
    ),
    "International": _hand_drums,
    "Pop": lambda c: _lead(c, MAJOR, 62, 76, "vocal", (0.5, 1.0, 1.5), (5.5, 0.01), rest=0.25),
    "Rock": lambda c: _backbeat(c, rock=True),
}


def render(
    recipe: str,
    seconds: float,
    sample_rate: int,
    channels: int,
    seed: int,
    tempo: tuple[float, float] | None = None,
) -> np.ndarray:
    """Synthesise one clip, deterministic in ``seed``.

    Args:
        recipe: the genre recipe (a key of RECIPES).
        seconds: clip length (s).
        sample_rate: rate (Hz).
        channels: 1 for mono (the mean of both sides); any other value gives stereo.
        seed: seed of the clip.
        tempo: a BPM range other than the recipe's own (variants of one recipe).

    Returns:
        Float32 [frames, 1 or 2]; the stereo peak is in [0.25, 0.95].
    """
    rng = np.random.default_rng(seed)
    n = max(1, int(round(seconds * sample_rate)))
    (lo, hi), fn = RECIPES[recipe]
    lo, hi = tempo or (lo, hi)
    c = _Ctx(rng, n, sample_rate, float(rng.uniform(lo, hi)), int(rng.integers(12)))
    layers = fn(c)
    if rng.random() < 0.2:  # borrow one layer from another genre: no genre is trivially pure
        other = str(rng.choice([g for g in RECIPES if g != recipe]))
        layers.append(BORROWED[other](c) * float(rng.uniform(0.2, 0.5)))
    out = np.zeros((n, 2), np.float32)
    for layer in layers:
        peak = float(np.abs(layer).max()) or 1.0
        gain = float(rng.uniform(0.5, 1.0)) / peak
        pan = float(rng.uniform(0.2, 0.8))
        out[:, 0] += layer * (gain * np.sqrt(1 - pan))
        out[:, 1] += layer * (gain * np.sqrt(pan))
    for ch in range(2):  # a cheap stereo echo, different per side
        d = int(rng.uniform(0.03, 0.12) * sample_rate)
        if d < n:
            out[d:, ch] += float(rng.uniform(0.1, 0.35)) * out[:-d, ch].copy()
    out += rng.uniform(1e-4, 3e-3) * np.tile(c.noise, n // sample_rate + 1)[:n, None]
    out *= float(rng.uniform(0.25, 0.95)) / max(float(np.abs(out).max()), 1e-9)
    if channels == 1:
        return out.mean(axis=1, keepdims=True)
    return out
