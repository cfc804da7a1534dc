"""Shared fixtures: one synthetic FMA-format dataset per test session."""

from __future__ import annotations

import pytest

from pipeline.synth import SynthDataset, generate


@pytest.fixture(scope="session")
def synth(tmp_path_factory: pytest.TempPathFactory) -> SynthDataset:
    """A miniature FMA (see pipeline/synth.py): 5 healthy tracks per fma_small genre
    (3 training, 1 validation, 1 test) plus 4 broken small tracks, medium and large
    extras; 4-s clips, 44.1 kHz stereo 320 kbit/s MP3s (two healthy small tracks in
    other formats). About 3 s to generate on 2 cores. Treat it as read-only."""
    return generate(tmp_path_factory.mktemp("fma"), n_per_genre=5, seconds=4.0, jobs=2)
