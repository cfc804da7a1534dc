"""A miniature FMA in FMA's own format: real MP3s, real tracks.csv / genres.csv layout.

Layout written under ``out_dir``::

    fma_metadata/tracks.csv   two-level header (album/artist/set/track groups, the 52
                              columns of the real file, sorted as there) + ``track_id`` line
    fma_metadata/genres.csv   genre_id, #tracks, parent, title, top_level
    fma_large/000/000123.mp3  every track of every subset (a large folder serves all)
    synth.json                the parameters and the broken tracks (written last)

Content per ``generate(n_per_genre=N)``:

- small: N tracks for each of the 8 fma_small genres (split ≈ 80/10/10, at least one
  validation and one test track per genre, artists never straddle splits), plus four
  deliberately broken small tracks (``broken``: missing file, 0-byte file, random
  bytes, a 0.3-s clip) and two healthy small tracks in other formats (48 kHz 256 kbit/s;
  mono 128 kbit/s), as the real release mixes formats;
- medium: tracks with ``genre_top`` among the 8 plus Jazz, Classical, Soul-RnB and
  Old-Time / Historic (every medium track has one, as in FMA);
- large: tracks of the 16 top genres, about half without ``genre_top`` (no genre, or
  genres under two top-level genres, which is why FMA leaves it empty).

Track ids are unique, sorted in the CSV and spread non-contiguously over several
``000/ 001/ ...`` folders, with genres and splits interleaved as in FMA.

Audio: each genre has its own generative recipe (tempo range, pitch register, timbre,
percussion, rhythm density, harmony), randomised per track (key, tempo, optional
layers, mix, loudness, echo) and, for one track in five, a "borrowed" layer from another
genre, so that no single constant feature identifies a genre while a small CNN on
log-mels separates them well. Output is deterministic for a given seed (per-track
seeds do not depend on ``jobs``). Genres outside fma_small reuse the nearest recipe.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.sources import SPLITS
from pipeline.sources.fma import audio_path

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
# The 16 top-level genres of FMA with their genre_id in the real genres.csv.
TOP_GENRE_IDS = {
    "International": 2,
    "Blues": 3,
    "Jazz": 4,
    "Classical": 5,
    "Old-Time / Historic": 8,
    "Country": 9,
    "Pop": 10,
    "Rock": 12,
    "Easy Listening": 13,
    "Soul-RnB": 14,
    "Electronic": 15,
    "Folk": 17,
    "Spoken": 20,
    "Hip-Hop": 21,
    "Experimental": 38,
    "Instrumental": 1235,
}
# A few sub-genres (illustrative ids) so that track.genres / genres_all look like FMA's.
SUB_GENRES = {
    1: ("Avant-Garde", 38),
    25: ("Punk", 12),
    66: ("Indie-Rock", 12),
    42: ("Ambient Electronic", 15),
    181: ("Techno", 15),
    49: ("Singer-Songwriter", 17),
    539: ("Rap", 21),
    76: ("Experimental Pop", 10),
    107: ("Ambient", 1235),
    77: ("Middle East", 2),
}
MEDIUM_EXTRA = ("Jazz", "Classical", "Soul-RnB", "Old-Time / Historic")
# Recipe used for genres that have none of their own.
RECIPE_OF = {
    **{g: g for g in SMALL_GENRES},
    "Jazz": "Instrumental",
    "Classical": "Instrumental",
    "Easy Listening": "Instrumental",
    "Blues": "Rock",
    "Country": "Folk",
    "Old-Time / Historic": "Folk",
    "Soul-RnB": "Pop",
    "Spoken": "Experimental",
}
BROKEN_KINDS = ("missing", "empty_file", "undecodable", "too_short")
SHORT_SECONDS = 0.3
LICENSE = "Attribution-NonCommercial-ShareAlike 3.0 International"

# The columns of the real tracks.csv, in its (sorted) order.
TRACK_COLUMNS: tuple[tuple[str, str], ...] = tuple(
    [
        ("album", c)
        for c in (
            "comments date_created date_released engineer favorites id information "
            "listens producer tags title tracks type"
        ).split()
    ]
    + [
        ("artist", c)
        for c in (
            "active_year_begin active_year_end associated_labels bio comments date_created "
            "favorites id latitude location longitude members name related_projects tags "
            "website wikipedia_page"
        ).split()
    ]
    + [("set", "split"), ("set", "subset")]
    + [
        ("track", c)
        for c in (
            "bit_rate comments composer date_created date_recorded duration favorites "
            "genre_top genres genres_all information interest language_code license listens "
            "lyricist number publisher tags title"
        ).split()
    ]
)


@dataclass(frozen=True)
class TrackSpec:
    """One track to write. ``seconds``: clip length; ``bit_rate`` in kbit/s;
    ``broken``: None or one of BROKEN_KINDS (the reason preprocess should report)."""

    track_id: int
    subset: str
    split: str
    genre_top: str | None
    genres: tuple[int, ...]
    recipe: str
    artist_id: int
    seconds: float
    sample_rate: int
    channels: int
    bit_rate: int
    seed: int
    broken: str | None = None


@dataclass
class SynthDataset:
    """What ``generate`` wrote. ``broken``: track id -> reason a decoder should give
    ("missing", "empty_file", "undecodable", or "too_short" for any min_seconds > 0.35)."""

    root: Path
    audio_dir: Path
    metadata_dir: Path
    track_ids: list[int]
    broken: dict[int, str]
    genres: list[str]
    tracks: pd.DataFrame = field(repr=False)
    seed: int = 0
    seconds: float = 30.0
    elapsed: float = 0.0

    def ids(self, subset: str | None = None, healthy: bool = False) -> list[int]:
        """Track ids (ascending) of exactly ``subset`` (None: all); ``healthy`` drops broken."""
        t = self.tracks
        if subset is not None:
            t = t[t["subset"] == subset]
        if healthy:
            t = t[~t["track_id"].isin(list(self.broken))]
        return sorted(int(x) for x in t["track_id"])


# --------------------------------------------------------------------------- planning


def _split_counts(n: int) -> dict[str, int]:
    """≈ 80/10/10 with at least one validation and one test track (n >= 3)."""
    n_val = max(1, round(0.1 * n))
    n_test = max(1, round(0.1 * n))
    return {"training": n - n_val - n_test, "validation": n_val, "test": n_test}


def _genre_ids(genre_top: str, rng: np.random.Generator) -> tuple[int, ...]:
    top = TOP_GENRE_IDS[genre_top]
    subs = [g for g, (_, parent) in SUB_GENRES.items() if parent == top]
    if subs and rng.random() < 0.5:
        sub = int(rng.choice(subs))
        return (sub,) if rng.random() < 0.5 else tuple(sorted((top, sub)))
    return (top,)


def _genres_all(genres: tuple[int, ...]) -> list[int]:
    out = set(genres)
    out.update(SUB_GENRES[g][1] for g in genres if g in SUB_GENRES)
    return sorted(out)


def plan(
    n_per_genre: int = 12,
    seconds: float = 30.0,
    sample_rate: int = 44100,
    channels: int = 2,
    bitrate: int = 320,
    seed: int = 0,
) -> list[TrackSpec]:
    """The tracks of the dataset, deterministic in ``seed``; sorted by track id."""
    if n_per_genre < 3:
        raise ValueError("n_per_genre must be at least 3 (one track per split)")
    rng = np.random.default_rng([seed, 0x46_4D_41])
    rows: list[dict] = []
    artist = [0]

    def add_group(subset: str, split: str, genre_top: str | None, count: int) -> None:
        left = count
        while left > 0:  # an artist has 1-3 tracks, all in one split (as in FMA)
            artist[0] += 1
            k = min(left, int(rng.integers(1, 4)))
            for _ in range(k):
                genres = _genre_ids(genre_top, rng) if genre_top else ()
                rows.append(
                    dict(
                        subset=subset,
                        split=split,
                        genre_top=genre_top,
                        genres=genres,
                        artist_id=artist[0],
                    )
                )
            left -= k

    for genre in SMALL_GENRES:
        for split, count in _split_counts(n_per_genre).items():
            add_group("small", split, genre, count)
    fmt = dict(seconds=seconds, sample_rate=sample_rate, channels=channels, bit_rate=bitrate)
    for row in rows:
        row.update(fmt)
    # Healthy small tracks in other formats, as the real release mixes them.
    variants = [i for i, r in enumerate(rows) if r["split"] == "training"]
    rows[variants[0]].update(sample_rate=48000, bit_rate=256)
    rows[variants[-1]].update(channels=1, bit_rate=128)
    # Broken small tracks, one of each kind, spread over the splits.
    for kind, split in zip(BROKEN_KINDS, ("training", "validation", "test", "training")):
        genre = SMALL_GENRES[int(rng.integers(len(SMALL_GENRES)))]
        add_group("small", split, genre, 1)
        rows[-1].update(fmt, broken=kind)
        if kind == "too_short":
            rows[-1]["seconds"] = SHORT_SECONDS
    n_medium = max(4, n_per_genre // 2)
    for i in range(n_medium):
        genre = (MEDIUM_EXTRA + SMALL_GENRES)[i % (len(MEDIUM_EXTRA) + len(SMALL_GENRES))]
        add_group("medium", SPLITS[int(rng.choice(3, p=[0.8, 0.1, 0.1]))], genre, 1)
        rows[-1].update(fmt)
    rows[-1].update(sample_rate=22050, channels=1, bit_rate=64)  # MPEG-2 layer III
    n_large = max(6, n_per_genre)
    tops = list(TOP_GENRE_IDS)
    for i in range(n_large):
        split = SPLITS[int(rng.choice(3, p=[0.8, 0.1, 0.1]))]
        if i % 2 == 0:
            add_group("large", split, tops[int(rng.integers(len(tops)))], 1)
        else:  # no genre_top: no genre at all, or genres under two top-level genres
            add_group("large", "training" if i % 4 == 1 else split, None, 1)
            if i % 4 == 3:
                a, b = rng.choice(list(SUB_GENRES), size=2, replace=False)
                while SUB_GENRES[int(a)][1] == SUB_GENRES[int(b)][1]:
                    b = rng.choice(list(SUB_GENRES))
                rows[-1]["genres"] = tuple(sorted((int(a), int(b))))
        rows[-1].update(fmt)

    # Non-contiguous ids over several folders, assigned in random order (genres and
    # splits interleave in id order, as in FMA).
    ids = np.sort(rng.choice(np.arange(2, max(3000, 40 * len(rows))), len(rows), replace=False))
    order = rng.permutation(len(rows))
    seeds = np.random.SeedSequence([seed, 0x5EED]).generate_state(len(rows))
    specs = []
    recipes = list(SMALL_GENRES)
    for tid, i, s in zip(ids, order, seeds):
        row = rows[i]
        recipe = RECIPE_OF[row["genre_top"]] if row["genre_top"] else recipes[int(s) % len(recipes)]
        specs.append(TrackSpec(track_id=int(tid), recipe=recipe, seed=int(s), **row))
    return sorted(specs, key=lambda t: t.track_id)


# --------------------------------------------------------------------------- metadata


def _date(rng: np.random.Generator, start: float, end: float) -> str:
    return pd.Timestamp(int(rng.uniform(start, end)), unit="s").strftime("%Y-%m-%d %H:%M:%S")


def tracks_table(specs: list[TrackSpec], seed: int = 0) -> pd.DataFrame:
    """The tracks.csv frame: index track_id, the real file's two-level columns."""
    rng = np.random.default_rng([seed, 0x7AB1E])
    t0, t1 = pd.Timestamp("2008-11-26").timestamp(), pd.Timestamp("2017-03-30").timestamp()
    # dates grow with track id, as on the FMA website
    created = np.sort(rng.uniform(t0, t1, len(specs)))
    albums: dict[int, int] = {}
    records = []
    for spec, when in zip(specs, created):
        a = spec.artist_id
        album = albums.setdefault(a, 1000 + len(albums))
        date = pd.Timestamp(int(when), unit="s").strftime("%Y-%m-%d %H:%M:%S")
        duration = (
            max(1, round(spec.seconds))
            if spec.broken == "too_short"
            else int(rng.integers(60, 420))
        )
        located = rng.random() < 0.6
        lat = float(np.round(rng.uniform(-40, 60), 4)) if located else np.nan
        lon = float(np.round(rng.uniform(-120, 30), 4)) if located else np.nan
        record = {
            ("album", "comments"): int(rng.integers(0, 3)),
            ("album", "date_created"): date,
            ("album", "date_released"): _date(rng, t0, when) if rng.random() < 0.7 else np.nan,
            ("album", "engineer"): np.nan,
            ("album", "favorites"): int(rng.integers(0, 20)),
            ("album", "id"): album,
            ("album", "information"): "<p></p>" if rng.random() < 0.5 else np.nan,
            ("album", "listens"): int(rng.integers(100, 50000)),
            ("album", "producer"): np.nan,
            ("album", "tags"): "[]",
            ("album", "title"): f"Synthetic Album {album}",
            ("album", "tracks"): int(rng.integers(1, 15)),
            ("album", "type"): "Album",
            ("artist", "active_year_begin"): "2006-01-01 00:00:00"
            if rng.random() < 0.2
            else np.nan,
            ("artist", "active_year_end"): np.nan,
            ("artist", "associated_labels"): np.nan,
            # real bios hold commas, quotes and newlines inside quoted fields
            ("artist", "bio"): f'<p>Artist {a}, "synthetic".\nMade by pipeline.synth.</p>',
            ("artist", "comments"): int(rng.integers(0, 3)),
            ("artist", "date_created"): date,
            ("artist", "favorites"): int(rng.integers(0, 30)),
            ("artist", "id"): a,
            ("artist", "latitude"): lat,
            ("artist", "location"): "Richmond, VA" if located else np.nan,
            ("artist", "longitude"): lon,
            ("artist", "members"): np.nan,
            ("artist", "name"): f"Synth Artist {a}",
            ("artist", "related_projects"): np.nan,
            ("artist", "tags"): "['synthetic']",
            ("artist", "website"): np.nan,
            ("artist", "wikipedia_page"): np.nan,
            ("set", "split"): spec.split,
            ("set", "subset"): spec.subset,
            ("track", "bit_rate"): spec.bit_rate * 1000,
            ("track", "comments"): 0,
            ("track", "composer"): np.nan,
            ("track", "date_created"): date,
            ("track", "date_recorded"): np.nan,
            ("track", "duration"): duration,
            ("track", "favorites"): int(rng.integers(0, 10)),
            ("track", "genre_top"): spec.genre_top if spec.genre_top else np.nan,
            ("track", "genres"): str(list(spec.genres)),
            ("track", "genres_all"): str(_genres_all(spec.genres)),
            ("track", "information"): np.nan,
            ("track", "interest"): int(rng.integers(100, 20000)),
            ("track", "language_code"): "en" if rng.random() < 0.3 else np.nan,
            ("track", "license"): LICENSE,
            ("track", "listens"): int(rng.integers(50, 10000)),
            ("track", "lyricist"): np.nan,
            ("track", "number"): int(rng.integers(1, 12)),
            ("track", "publisher"): np.nan,
            ("track", "tags"): "[]",
            ("track", "title"): f"Synthetic {spec.recipe} #{spec.track_id}",
        }
        records.append(record)
    return pd.DataFrame(
        [[r[c] for c in TRACK_COLUMNS] for r in records],
        index=pd.Index([s.track_id for s in specs], name="track_id"),
        columns=pd.MultiIndex.from_tuples(TRACK_COLUMNS),
    )


def genres_table(specs: list[TrackSpec]) -> pd.DataFrame:
    """The genres.csv frame: index genre_id; #tracks (tracks whose genres_all holds it),
    parent (0 for a top-level genre), title, top_level."""
    rows = {gid: (title, 0, gid) for title, gid in TOP_GENRE_IDS.items()}
    rows.update({gid: (title, parent, parent) for gid, (title, parent) in SUB_GENRES.items()})
    counts = dict.fromkeys(rows, 0)
    for spec in specs:
        for g in _genres_all(spec.genres):
            counts[g] += 1
    frame = pd.DataFrame(
        {
            "#tracks": [counts[g] for g in rows],
            "parent": [rows[g][1] for g in rows],
            "title": [rows[g][0] for g in rows],
            "top_level": [rows[g][2] for g in rows],
        },
        index=pd.Index(list(rows), name="genre_id"),
    )
    return frame.sort_index()


# --------------------------------------------------------------------------- synthesis

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
        return int(round(beat * self.spb))

    def noise_slice(self, length: int) -> np.ndarray:
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
        """Wavetable oscillator, float32 [length]; ``vib`` = (rate Hz, depth as a frequency
        fraction); ``glide`` = pitch change in semitones over the note."""
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
        """One enveloped note (cached per parameters within the track)."""
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


def render(recipe: str, seconds: float, sample_rate: int, channels: int, seed: int) -> np.ndarray:
    """Synthesise one clip: float32 [frames, channels] in [-1, 1], deterministic in seed."""
    rng = np.random.default_rng(seed)
    n = max(1, int(round(seconds * sample_rate)))
    (lo, hi), fn = RECIPES[recipe]
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


def encode_mp3(audio: np.ndarray, sample_rate: int, bit_rate: int, quality: int = 7) -> bytes:
    """float32 [frames, channels] -> CBR MP3 bytes (LAME via lameenc); bit_rate in kbit/s."""
    import lameenc

    pcm = np.clip(np.round(audio * 32767), -32768, 32767).astype("<i2")
    enc = lameenc.Encoder()
    enc.set_bit_rate(int(bit_rate))
    enc.set_in_sample_rate(int(sample_rate))
    enc.set_channels(int(audio.shape[1]))
    enc.set_quality(int(quality))
    enc.silence()
    return bytes(enc.encode(pcm.tobytes()) + enc.flush())


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_track(spec: TrackSpec, audio_dir: Path, quality: int = 7) -> int:
    """Write the file of one track (or its deliberate defect); returns bytes written."""
    path = audio_path(audio_dir, spec.track_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    if spec.broken == "missing":
        path.unlink(missing_ok=True)
        return 0
    if spec.broken == "empty_file":
        _write_atomic(path, b"")
        return 0
    if spec.broken == "undecodable":
        # no 0xFF byte, hence no MPEG frame sync: no decoder can find audio in it
        data = np.random.default_rng(spec.seed).integers(0, 255, 16384, dtype=np.uint8)
        _write_atomic(path, data.tobytes())
        return len(data)
    audio = render(spec.recipe, spec.seconds, spec.sample_rate, spec.channels, spec.seed)
    data = encode_mp3(audio, spec.sample_rate, spec.bit_rate, quality)
    _write_atomic(path, data)
    return len(data)


def generate(
    out_dir: Path,
    n_per_genre: int = 12,
    seconds: float = 30.0,
    sample_rate: int = 44100,
    channels: int = 2,
    bitrate: int = 320,
    seed: int = 0,
    jobs: int = 1,
    quality: int = 7,
    reuse: bool = False,
) -> SynthDataset:
    """Write the miniature FMA under ``out_dir`` (see the module docstring).

    ``seconds``: clip length (FMA: 30); ``bitrate`` in kbit/s; ``jobs``: parallel
    encoder processes (joblib); ``quality``: LAME's 2 (best) .. 7 (fastest).
    Files of a previous generation are overwritten, unless ``reuse`` and ``synth.json``
    says they were made with the same parameters (then nothing is rewritten).
    """
    from joblib import Parallel, delayed

    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    params = dict(
        n_per_genre=n_per_genre,
        seconds=seconds,
        sample_rate=sample_rate,
        channels=channels,
        bitrate=bitrate,
        seed=seed,
        quality=quality,
    )
    specs = plan(n_per_genre, seconds, sample_rate, channels, bitrate, seed)
    audio_dir, metadata_dir = out_dir / "fma_large", out_dir / "fma_metadata"
    marker = out_dir / "synth.json"
    if not (reuse and _complete(marker, params, specs, audio_dir)):
        marker.unlink(missing_ok=True)
        audio_dir.mkdir(parents=True, exist_ok=True)
        metadata_dir.mkdir(parents=True, exist_ok=True)
        tracks_table(specs, seed).to_csv(metadata_dir / "tracks.csv")
        genres_table(specs).to_csv(metadata_dir / "genres.csv")
        todo = sorted(specs, key=lambda s: -s.seconds * s.sample_rate)  # longest first
        Parallel(n_jobs=jobs)(delayed(write_track)(s, audio_dir, quality) for s in todo)
    broken = {s.track_id: s.broken for s in specs if s.broken}
    table = pd.DataFrame([asdict(s) for s in specs]).drop(columns=["genres"])
    dataset = SynthDataset(
        root=out_dir,
        audio_dir=audio_dir,
        metadata_dir=metadata_dir,
        track_ids=[s.track_id for s in specs],
        broken=broken,
        genres=list(SMALL_GENRES),
        tracks=table,
        seed=seed,
        seconds=seconds,
        elapsed=time.perf_counter() - t0,
    )
    content = {"params": params, "broken": {str(k): v for k, v in broken.items()}}
    marker.write_text(json.dumps(content, indent=1) + "\n")  # last: the dataset is complete
    return dataset


def _complete(marker: Path, params: dict, specs: list[TrackSpec], audio_dir: Path) -> bool:
    """A finished generation with these parameters is already there."""
    try:
        if json.loads(marker.read_text())["params"] != params:
            return False
    except (OSError, ValueError, KeyError):
        return False
    tables = [marker.parent / "fma_metadata" / n for n in ("tracks.csv", "genres.csv")]
    return all(p.is_file() for p in tables) and all(
        audio_path(audio_dir, s.track_id).is_file() == (s.broken != "missing") for s in specs
    )


def main(argv: list[str] | None = None) -> None:
    """``python -m pipeline.synth OUT [--n-per-genre N] [--seconds S] [--jobs J]``."""
    p = argparse.ArgumentParser(description="Write an FMA-format synthetic dataset.")
    p.add_argument("out", type=Path)
    p.add_argument("--n-per-genre", type=int, default=12)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quality", type=int, default=7)
    a = p.parse_args(argv)
    ds = generate(a.out, a.n_per_genre, a.seconds, seed=a.seed, jobs=a.jobs, quality=a.quality)
    counts = ds.tracks["subset"].value_counts().reindex(["small", "medium", "large"])
    print(
        f"wrote {len(ds.track_ids)} tracks ({', '.join(f'{k} {v}' for k, v in counts.items())}; "
        f"{len(ds.broken)} broken) to {ds.root} in {ds.elapsed:.1f} s"
    )


if __name__ == "__main__":
    # call the importable module's main so that joblib workers can unpickle its functions
    from pipeline.synth import main as _main

    _main()
