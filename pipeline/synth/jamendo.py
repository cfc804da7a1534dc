"""A miniature MTG-Jamendo autotagging_genre: real MP3s at ``audio/NN/ID.mp3`` and
``splits/split-K/autotagging_genre-{train,validation,test}.tsv`` in the real layout.

Artists have two tracks each and a main genre (one of GENRES, whose fma_small recipe
renders the audio): the first track carries only that tag, the second one more, and its
audio mixes both recipes, so every tag is audible. Each split keeps an artist on one
side; splits differ in which artists are validation and test. RARE's one artist is in
training in every split: a tag without validation or test positives, as real splits
have.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.atomic import write_atomic
from pipeline.sources.jamendo import COLUMNS, FILES, GENRE_PREFIX, N_SPLITS, tsv_path
from pipeline.synth.files import encode_mp3
from pipeline.synth.sound import render

SAMPLE_RATE = 22050
GENRES = {"electronic": "Electronic", "folk": "Folk", "hiphop": "Hip-Hop", "rock": "Rock"}
RARE = {"experimental": "Experimental"}  # one artist, in training in every split
TRACKS_PER_ARTIST = 2


@dataclass
class JamendoDataset:
    """What `generate` wrote. ``tracks``: indexed by TRACK_ID, columns artist, album, path
    (relative to ``audio_dir``), genres (tuple of names, the main one first) and
    ``split-K`` (training / validation / test) for each split written."""

    root: Path
    audio_dir: Path
    splits_dir: Path
    tracks: pd.DataFrame

    def split(self, k: int = 0) -> pd.Series:
        """TRACK_ID -> split name in split ``k``."""
        return self.tracks[f"split-{k}"]


def _audio(recipes: list[str], seconds: float, seed: int) -> np.ndarray:
    """One rendering per recipe, mixed at equal loudness."""
    clips = [render(r, seconds, SAMPLE_RATE, 2, seed + k * 0x9E37) for k, r in enumerate(recipes)]
    mix = sum(c / max(float(np.abs(c).max()), 1e-9) for c in clips)
    return (mix * (0.8 / max(float(np.abs(mix).max()), 1e-9))).astype(np.float32)


def plan(n_tracks: int, seed: int = 0, n_splits: int = 1) -> pd.DataFrame:
    """The tracks of `generate` (its ``tracks`` frame, without writing anything).

    Args:
        n_tracks: how many tracks, at least 26 (else ValueError): two for RARE, the
            rest in artists of two; each full round of len(GENRES) artists (one per
            genre) is a validation or test round in some split, at least three rounds.
        seed: seed of the second tags.
        n_splits: splits written, 1..5.

    Returns:
        The frame described in `JamendoDataset`.
    """
    n_genres = len(GENRES)
    n_artists = (n_tracks - TRACKS_PER_ARTIST) // TRACKS_PER_ARTIST
    rounds = n_artists // n_genres
    if rounds < 3:
        raise ValueError(
            f"n_tracks must be at least {TRACKS_PER_ARTIST * (3 * n_genres + 1)} (got {n_tracks})"
        )
    if not 1 <= n_splits <= N_SPLITS:
        raise ValueError(f"n_splits must be in 1..{N_SPLITS} (got {n_splits})")
    rng = np.random.default_rng([seed, 0x7A3E])
    names = list(GENRES)
    rows = []
    for a in range(n_artists + 1):
        rare = a == n_artists
        main = next(iter(RARE)) if rare else names[a % n_genres]
        r = a // n_genres
        splits = {}
        for k in range(n_splits):
            if rare or r >= rounds:
                splits[f"split-{k}"] = "training"
            else:
                val, test = k % rounds, (k + 1) % rounds
                splits[f"split-{k}"] = (
                    "validation" if r == val else "test" if r == test else "training"
                )
        for t in range(TRACKS_PER_ARTIST):
            genres = (main,)
            if t and not rare:
                genres += (str(rng.choice([g for g in names if g != main])),)
            tid = 1000 + 97 * len(rows)
            rows.append(
                {
                    "track_id": f"track_{tid:07d}",
                    "artist": f"artist_{a:06d}",
                    "album": f"album_{a:06d}",
                    "path": f"{tid % 100:02d}/{tid}.mp3",
                    "genres": genres,
                    **splits,
                }
            )
    return pd.DataFrame(rows).set_index("track_id")


def write_splits(tracks: pd.DataFrame, splits_dir: Path, seconds: float, crlf: bool) -> None:
    """The TSVs of every ``split-K`` column of ``tracks`` (tags sorted, as in the release)."""
    end = "\r\n" if crlf else "\n"
    for col in [c for c in tracks if c.startswith("split-")]:
        k = int(col.removeprefix("split-"))
        for split, name in FILES.items():
            part = tracks[tracks[col] == split]
            lines = ["\t".join(COLUMNS)] + [
                "\t".join(
                    [tid, r.artist, r.album, r.path, f"{seconds:.1f}"]
                    + [GENRE_PREFIX + g for g in sorted(r.genres)]
                )
                for tid, r in part.iterrows()
            ]
            path = tsv_path(splits_dir, k, name)
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, end.join(lines) + end)


def generate(
    out_dir: Path,
    n_tracks: int = 34,
    seconds: float = 4.0,
    seed: int = 0,
    crlf: bool = False,
    n_splits: int = 1,
    audio: bool = True,
) -> JamendoDataset:
    """Write the dataset: ``out_dir/audio/NN/ID.mp3`` (stereo, SAMPLE_RATE) and
    ``out_dir/splits/split-K/``.

    Args:
        out_dir: the dataset folder (created as needed).
        n_tracks: tracks, 26 or more (see `plan`).
        seconds: length of each track (s).
        seed: seed of the whole dataset.
        crlf: end the TSVs' lines with CRLF, as some copies do.
        n_splits: how many of split-0 .. split-4 to write.
        audio: write the MP3s (False: only the TSVs, e.g. a second copy of the splits).

    Returns:
        What was written.
    """
    out_dir = Path(out_dir)
    tracks = plan(n_tracks, seed, n_splits)
    audio_dir = out_dir / "audio"
    if audio:
        recipes = GENRES | RARE
        seeds = np.random.SeedSequence([seed, 0x7A4E]).generate_state(len(tracks))
        for (_, r), s in zip(tracks.iterrows(), seeds):
            path = audio_dir / r.path
            path.parent.mkdir(parents=True, exist_ok=True)
            x = _audio([recipes[g] for g in r.genres], seconds, int(s))
            write_atomic(path, encode_mp3(x, SAMPLE_RATE, 96))
    write_splits(tracks, out_dir / "splits", seconds, crlf)
    return JamendoDataset(out_dir, audio_dir, out_dir / "splits", tracks)
