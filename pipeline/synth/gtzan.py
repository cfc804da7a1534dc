"""A miniature GTZAN in either download layout, with the real genre and file names.

    original  OUT/genres/<genre>/<genre>.000NN.au         22,050 Hz mono 16-bit Sun .au
    kaggle    OUT/Data/genres_original/<genre>/<genre>.000NN.wav   (16-bit WAV; its
              jazz.00054.wav does not decode, as in the real Kaggle copy)

Track ``<genre>.000NN`` has the same audio in both layouts (same seed), so both decode
to the same samples. Genres borrow the fma_small recipes of pipeline.synth.sound, some
at another tempo.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile

from pipeline.atomic import write_atomic
from pipeline.sources.gtzan import GENRES
from pipeline.synth.sound import render

SAMPLE_RATE = 22050
BROKEN = "jazz.00054"  # Kaggle's copy of this file does not decode
# genre -> (fma_small recipe, tempo range or None for the recipe's own)
RECIPES = {
    "blues": ("Folk", (60.0, 85.0)),
    "classical": ("Instrumental", None),
    "country": ("Folk", (95.0, 125.0)),
    "disco": ("Electronic", None),
    "hiphop": ("Hip-Hop", None),
    "jazz": ("Experimental", None),
    "metal": ("Rock", (160.0, 200.0)),
    "pop": ("Pop", None),
    "reggae": ("International", (70.0, 90.0)),
    "rock": ("Rock", (105.0, 140.0)),
}


@dataclass
class GTZANDataset:
    """What `generate` wrote: ``audio_dir`` is the folder holding the genre folders."""

    root: Path
    audio_dir: Path
    layout: str
    files: dict[str, Path]  # track id -> file
    broken: set[str]


def track_ids(n_per_genre: int, genres: tuple[str, ...] = GENRES) -> list[str]:
    """GTZAN's track ids, "<genre>.00000" on, ``n_per_genre`` per genre in genre order."""
    return [f"{g}.{i:05d}" for g in genres for i in range(n_per_genre)]


def _write(args: tuple) -> None:
    track_id, path, seconds, seed, broken = args
    if broken:
        data = np.random.default_rng(seed).integers(0, 255, 8192, dtype=np.uint8).tobytes()
        write_atomic(path, b"RIFF" + data)  # a WAV header's start, then noise
        return
    recipe, tempo = RECIPES[track_id.split(".")[0]]
    x = render(recipe, seconds, SAMPLE_RATE, 1, seed, tempo)
    fmt = "AU" if path.suffix == ".au" else "WAV"
    write_atomic(path, lambda f: soundfile.write(f, x, SAMPLE_RATE, format=fmt, subtype="PCM_16"))


def generate(
    out_dir: Path,
    layout: str = "original",
    n_per_genre: int = 100,
    seconds: float = 30.0,
    seed: int = 0,
    jobs: int = 1,
    genres: tuple[str, ...] = GENRES,
) -> GTZANDataset:
    """Write ``n_per_genre`` mono clips of each genre (ids <genre>.00000 ...) under
    ``out_dir``.

    Args:
        out_dir: the dataset folder.
        layout: "original" (genres/<genre>/*.au) or "kaggle"
            (Data/genres_original/<genre>/*.wav, with BROKEN undecodable); else ValueError.
        n_per_genre: clips per genre.
        seconds: clip length (s).
        seed: seed of the whole dataset.
        jobs: parallel writer processes (joblib).
        genres: the genres to write.

    Returns:
        The GTZANDataset: its folders, layout, files by track id and broken ids.
    """
    from joblib import Parallel, delayed

    if layout not in ("original", "kaggle"):
        raise ValueError(f"unknown GTZAN layout {layout!r}")
    audio_dir = Path(out_dir) / ("genres" if layout == "original" else "Data/genres_original")
    suffix = ".au" if layout == "original" else ".wav"
    ids = track_ids(n_per_genre, genres)
    seeds = np.random.SeedSequence([seed, 0x6777]).generate_state(len(ids))
    broken = {BROKEN} & set(ids) if layout == "kaggle" else set()
    files = {t: audio_dir / t.split(".")[0] / f"{t}{suffix}" for t in ids}
    for g in genres:
        (audio_dir / g).mkdir(parents=True, exist_ok=True)
    work = [(t, files[t], seconds, int(s), t in broken) for t, s in zip(ids, seeds)]
    Parallel(n_jobs=jobs)(delayed(_write)(w) for w in work)
    return GTZANDataset(Path(out_dir), audio_dir, layout, files, broken)
