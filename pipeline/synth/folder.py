"""A folder of label folders, as a researcher's own collection looks: nested folders,
mixed formats (.mp3 .wav .flac .ogg .au), Unicode label names, optionally split into
train/ valid/ test/."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile

from pipeline.atomic import write_atomic
from pipeline.synth.files import encode_mp3
from pipeline.synth.sound import render

SAMPLE_RATE = 22050
LABELS = {"techno": "Electronic", "ambient drone": "Instrumental", "fólk": "Folk"}
FORMATS = (".mp3", ".wav", ".flac", ".ogg", ".au")


def _write(path: Path, recipe: str, seconds: float, seed: int) -> None:
    x = render(recipe, seconds, SAMPLE_RATE, 2, seed)
    if path.suffix == ".mp3":
        write_atomic(path, encode_mp3(x, SAMPLE_RATE, 128))
        return
    fmt = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG", ".au": "AU"}[path.suffix]
    subtype = "VORBIS" if fmt == "OGG" else "PCM_16"
    write_atomic(path, lambda f: soundfile.write(f, x, SAMPLE_RATE, format=fmt, subtype=subtype))


def generate(
    out_dir: Path,
    n_per_label: int = 6,
    seconds: float = 4.0,
    seed: int = 0,
    splits: bool = False,
    labels: dict[str, str] = LABELS,
) -> dict[str, Path]:
    """Write the dataset: stereo clips at SAMPLE_RATE, cycling through FORMATS.

    Args:
        out_dir: the dataset folder (created as needed).
        n_per_label: tracks per label.
        seconds: clip length (s).
        seed: seed of the whole dataset.
        splits: put tracks in train/ valid/ test/ (the last two get one per label).
        labels: label folder name -> the recipe its tracks are rendered from.

    Returns:
        Track id (relative path without suffix, "/"-separated) -> file.
    """
    out_dir = Path(out_dir)
    files: dict[str, Path] = {}
    seeds = iter(np.random.SeedSequence([seed, 0xF01D]).generate_state(len(labels) * n_per_label))
    for label, recipe in labels.items():
        for i in range(n_per_label):
            split = ("valid" if i == 0 else "test" if i == 1 else "train") if splits else ""
            nested = "live/2024" if i % 3 == 2 else ""  # some tracks two folders deeper
            rel = Path(split) / label / nested / f"track {i:02d}{FORMATS[i % len(FORMATS)]}"
            path = out_dir / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            _write(path, recipe, seconds, int(next(seeds)))
            files[rel.with_suffix("").as_posix()] = path
    return files
