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

Audio comes from the genre recipes of pipeline.synth.sound; genres outside fma_small
reuse the nearest recipe. Output is deterministic for a given seed (per-track seeds do
not depend on ``jobs``).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.atomic import write_atomic
from pipeline.sources import SPLITS
from pipeline.sources.fma import audio_path
from pipeline.synth.files import encode_mp3
from pipeline.synth.sound import SMALL_GENRES, render

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
    n_multi: int = 0,
) -> list[TrackSpec]:
    """The tracks of the dataset, deterministic in ``seed``; sorted by track id.

    Args:
        n_per_genre: fma_small tracks per genre, 3 or more (else ValueError); split
            about 80/10/10 with at least one validation and one test track.
        seconds: clip length (s).
        sample_rate: the healthy tracks' rate (Hz); some variants use others.
        channels: audio channels.
        bitrate: MP3 bit rate (kbit/s); some variants use others.
        seed: seed of the whole plan.
        n_multi: extra large-subset tracks that mix two fma_small genres' recipes (genres
            under two top-level genres, so no genre_top: FMA's multi-label tracks).

    Returns:
        One TrackSpec per track.
    """
    if n_per_genre < 3:
        raise ValueError("n_per_genre must be at least 3 (one track per split)")
    rng = np.random.default_rng([seed, 0x46_4D_41])
    rows: list[dict] = []
    artist = [0]

    def add_group(subset: str, split: str, genre_top: str | None, count: int) -> None:
        """Add ``count`` track rows of one subset, split and genre, artists of 1-3 tracks.

        Args:
            subset: the FMA subset ("small", "medium", "large").
            split: the track's split; an artist's tracks all share it.
            genre_top: the top-level genre title (None: no genres).
            count: how many tracks.
        """
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
    rows += _multi_genre_rows(n_multi, fmt, seed, artist)

    # Non-contiguous ids over several folders, assigned in random order (genres and
    # splits interleave in id order, as in FMA).
    ids = np.sort(rng.choice(np.arange(2, max(3000, 40 * len(rows))), len(rows), replace=False))
    order = rng.permutation(len(rows))
    seeds = np.random.SeedSequence([seed, 0x5EED]).generate_state(len(rows))
    specs = []
    recipes = list(SMALL_GENRES)
    for tid, i, s in zip(ids, order, seeds):
        row = dict(rows[i])
        recipe = row.pop("recipe", None) or (
            RECIPE_OF[row["genre_top"]] if row["genre_top"] else recipes[int(s) % len(recipes)]
        )
        specs.append(TrackSpec(track_id=int(tid), recipe=recipe, seed=int(s), **row))
    return sorted(specs, key=lambda t: t.track_id)


def _multi_genre_rows(n: int, fmt: dict, seed: int, artist: list[int]) -> list[dict]:
    """Tracks of two fma_small genres at once (a sub-genre or the top genre of each), whose
    audio mixes both recipes (recipe "A+B"). Drawn from their own generator, so that a
    dataset without them is the same as before they existed."""
    rng = np.random.default_rng([seed, 0x4D55])
    rows = []
    for _ in range(n):
        a, b = (SMALL_GENRES[int(i)] for i in rng.choice(len(SMALL_GENRES), 2, replace=False))
        genres = tuple(sorted(set(_genre_ids(a, rng)) | set(_genre_ids(b, rng))))
        artist[0] += 1
        rows.append(
            dict(
                subset="large",
                split=SPLITS[int(rng.choice(3, p=[0.8, 0.1, 0.1]))],
                genre_top=None,
                genres=genres,
                artist_id=artist[0],
                recipe=f"{RECIPE_OF[a]}+{RECIPE_OF[b]}",
                **fmt,
            )
        )
    return rows


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


def _render(spec: TrackSpec) -> np.ndarray:
    """The track's audio; a recipe "A+B" mixes two renderings at equal loudness."""
    parts = spec.recipe.split("+")
    seeds = [spec.seed + k * 0x9E37 for k in range(len(parts))]
    clips = [
        render(r, spec.seconds, spec.sample_rate, spec.channels, s) for r, s in zip(parts, seeds)
    ]
    if len(clips) == 1:
        return clips[0]
    mix = sum(c / max(float(np.abs(c).max()), 1e-9) for c in clips)
    return (mix * (0.8 / max(float(np.abs(mix).max()), 1e-9))).astype(np.float32)


def write_track(spec: TrackSpec, audio_dir: Path, quality: int = 7) -> int:
    """Write the file of one track (or its deliberate defect); returns bytes written."""
    path = audio_path(audio_dir, spec.track_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    if spec.broken == "missing":
        path.unlink(missing_ok=True)
        return 0
    if spec.broken == "empty_file":
        write_atomic(path, b"")
        return 0
    if spec.broken == "undecodable":
        # no 0xFF byte, hence no MPEG frame sync: no decoder can find audio in it
        data = np.random.default_rng(spec.seed).integers(0, 255, 16384, dtype=np.uint8)
        write_atomic(path, data.tobytes())
        return len(data)
    audio = _render(spec)
    data = encode_mp3(audio, spec.sample_rate, spec.bit_rate, quality)
    write_atomic(path, data)
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
    n_multi: int = 0,
) -> SynthDataset:
    """Write the miniature FMA under ``out_dir`` (see the module docstring).

    Files of a previous generation are overwritten, unless ``reuse`` and ``synth.json``
    says they were made with the same parameters (then nothing is rewritten).
    synth.json is written last: the dataset is complete once it exists.

    Args:
        out_dir: the folder for fma_large/, fma_metadata/ and synth.json.
        n_per_genre: fma_small tracks per genre (see `plan`).
        seconds: clip length (s; FMA: 30).
        sample_rate: the healthy tracks' rate (Hz).
        channels: audio channels.
        bitrate: MP3 bit rate (kbit/s).
        seed: seed of the whole dataset.
        jobs: parallel encoder processes (joblib).
        quality: LAME's 2 (best) .. 7 (fastest).
        reuse: keep a previous generation made with the same parameters.
        n_multi: two-genre tracks added to the large subset (for multi-label tasks).

    Returns:
        The SynthDataset: its folders, track ids, broken tracks and track table.
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
        **({"n_multi": n_multi} if n_multi else {}),
    )
    specs = plan(n_per_genre, seconds, sample_rate, channels, bitrate, seed, n_multi)
    audio_dir, metadata_dir = out_dir / "fma_large", out_dir / "fma_metadata"
    marker = out_dir / "synth.json"
    if not (reuse and _complete(marker, params, specs, audio_dir)):
        marker.unlink(missing_ok=True)
        audio_dir.mkdir(parents=True, exist_ok=True)
        metadata_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(metadata_dir / "tracks.csv", tracks_table(specs, seed).to_csv())
        write_atomic(metadata_dir / "genres.csv", genres_table(specs).to_csv())
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
    write_atomic(marker, json.dumps(content, indent=1) + "\n")  # last: the dataset is complete
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
