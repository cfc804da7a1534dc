"""FMA's metadata at full size, without audio: the fixed costs of a run at scale.

`full_size_metadata` writes a tracks.csv of FMA's 106,574 tracks by default, with the
real 52 columns and the real proportions (8,000 small, 25,000 medium, 49,598 tracks
with a genre_top, splits 80/10/10) and about as much text per row as the real file
(250 MB in all: the artist bios and album notes are long HTML), plus genres.csv. Only
metadata: a test or benchmark puts audio files under the ids it wants.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.atomic import write_atomic
from pipeline.sources import SPLITS
from pipeline.synth.fma import (
    MEDIUM_EXTRA,
    SUB_GENRES,
    TOP_GENRE_IDS,
    TrackSpec,
    genres_table,
    tracks_table,
)
from pipeline.synth.sound import SMALL_GENRES

FMA_TRACKS = 106_574
FMA_SHARES = {"small": 8_000 / FMA_TRACKS, "medium": 17_000 / FMA_TRACKS}
WITH_GENRE_TOP = 49_598 / FMA_TRACKS
_WORDS = (
    "synthetic music archive track artist album release label tour band song "
    "record studio live session remix edition"
).split()


def full_size_specs(n_tracks: int = FMA_TRACKS, seed: int = 0) -> list[TrackSpec]:
    """``n_tracks`` track specs with FMA's proportions of subsets, genres and splits;
    ids spread as FMA's (2 .. ~1.46 n_tracks). Artists keep to one split."""
    rng = np.random.default_rng([seed, 0xF11])
    n_small = round(n_tracks * FMA_SHARES["small"])
    n_medium = round(n_tracks * FMA_SHARES["medium"])
    subset = np.array(["large"] * n_tracks, dtype=object)
    subset[:n_small], subset[n_small : n_small + n_medium] = "small", "medium"
    n_top = round(n_tracks * WITH_GENRE_TOP) - n_small - n_medium  # large tracks with one
    tops, subs = list(TOP_GENRE_IDS), list(SUB_GENRES)
    medium_genres = list(SMALL_GENRES) + list(MEDIUM_EXTRA)
    artist = np.repeat(np.arange(1, n_tracks + 1), rng.integers(1, 4, n_tracks))[:n_tracks]
    split_of_artist = rng.choice(SPLITS, size=n_tracks + 1, p=[0.8, 0.1, 0.1])
    specs = []
    for i in range(n_tracks):
        if subset[i] == "small":
            genre = SMALL_GENRES[i % len(SMALL_GENRES)]
        elif subset[i] == "medium":
            genre = medium_genres[i % len(medium_genres)]
        else:
            genre = tops[int(rng.integers(len(tops)))] if i - n_small - n_medium < n_top else None
        genres = (
            (TOP_GENRE_IDS[genre],)
            if genre
            else tuple(sorted({int(g) for g in rng.choice(subs, 2)}))
        )
        specs.append(
            TrackSpec(
                track_id=0,
                subset=str(subset[i]),
                split=str(split_of_artist[artist[i]]),
                genre_top=genre,
                genres=genres,
                recipe=SMALL_GENRES[i % len(SMALL_GENRES)],
                artist_id=int(artist[i]),
                seconds=30.0,
                sample_rate=44100,
                channels=2,
                bit_rate=320,
                seed=i,
            )
        )
    ids = np.sort(rng.choice(np.arange(2, int(n_tracks * 1.46) + 3), n_tracks, replace=False))
    order = rng.permutation(n_tracks)  # subsets and genres interleave in id order
    return sorted(
        (TrackSpec(**{**s.__dict__, "track_id": int(ids[k])}) for k, s in zip(order, specs)),
        key=lambda s: s.track_id,
    )


def full_size_metadata(
    out_dir: Path, n_tracks: int = FMA_TRACKS, seed: int = 0, text_bytes: int = 2_000
) -> list[TrackSpec]:
    """Write ``out_dir``/tracks.csv and genres.csv for ``full_size_specs`` (no audio).

    Args:
        out_dir: the metadata folder (created if missing).
        n_tracks: tracks in the table (default: as many as FMA's).
        seed: seed of the specs and the bios.
        text_bytes: about how many bytes of artist bio each row carries (real rows average
            ~2.3 KB); each is cut at a random length in [text_bytes / 2, 1.5 * text_bytes].

    Returns:
        The TrackSpecs written, sorted by track id.
    """
    specs = full_size_specs(n_tracks, seed)
    table = tracks_table(specs, seed)
    rng = np.random.default_rng([seed, 0x7E47])
    words = np.array(_WORDS)
    phrase = " ".join(words[rng.integers(len(words), size=max(1, text_bytes // 4))])
    cuts = rng.integers(text_bytes // 2, 3 * text_bytes // 2 + 1, n_tracks)
    table[("artist", "bio")] = [f"<p>{phrase[:c]}</p>" for c in cuts]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(out_dir / "tracks.csv", table.to_csv())
    write_atomic(out_dir / "genres.csv", genres_table(specs).to_csv())
    return specs
