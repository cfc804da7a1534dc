"""Synthetic datasets in the formats mrnet reads, for `mrnet demo` and the tests.

    sound   music-like audio: one generative recipe per fma_small genre (`render`)
    files   encoding audio into the files a dataset holds (`encode_mp3`)
    fma     a miniature FMA: real MP3s, real tracks.csv / genres.csv layout (`generate`)

``python -m pipeline.synth OUT`` writes one from the command line.
"""

from pipeline.synth.files import encode_mp3
from pipeline.synth.fma import TRACK_COLUMNS, SynthDataset, TrackSpec, generate, plan
from pipeline.synth.sound import RECIPES, SMALL_GENRES, render

__all__ = [
    "RECIPES",
    "SMALL_GENRES",
    "TRACK_COLUMNS",
    "SynthDataset",
    "TrackSpec",
    "encode_mp3",
    "generate",
    "plan",
    "render",
]
