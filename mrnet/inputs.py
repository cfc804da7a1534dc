"""Audio files given on the command line (`mrnet predict`, `mrnet embed FILES`): which to
read, and a model's output for each, read as `preprocess` reads it."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import torch

from mrnet.scoring import file_means
from pipeline.audio import AUDIO_SUFFIXES, audio_files
from pipeline.errors import BadInput, TrackFailed
from pipeline.extract import track_frames
from pipeline.features import FeatureConfig

MIN_SECONDS = 0.5  # shorter files are reported as too_short


def expand_inputs(inputs: Iterable[Path]) -> tuple[list[Path], list[Path]]:
    """(files to read, files skipped): files as given, directories searched recursively
    for audio files (sorted); the audio files found there in formats no decoder here
    reads are the skipped ones (the caller names them)."""
    files: list[Path] = []
    skipped: list[Path] = []
    for p in inputs:
        if p.is_dir():
            found, unreadable = audio_files(p)
            files += found
            skipped += unreadable
        elif p.exists():
            files.append(p)
        else:
            raise BadInput(f"{p} does not exist; pass audio files or folders holding them")
    if not files:
        also = f"; skipped {len(skipped)} of other formats" if skipped else ""
        raise BadInput(
            f"no audio files found in the given paths (looked for {', '.join(AUDIO_SUFFIXES)}"
            f"{also})"
        )
    return files, skipped


def audio_features(feature_config: dict, ssl_model: Path | None = None) -> FeatureConfig:
    """The feature settings a checkpoint records, for reading new audio files.

    Args:
        feature_config: the checkpoint's record.
        ssl_model: the WavLM folder, for a model trained on WavLM features (its weights
            must be the ones the record names); one given to a model that needs none is
            refused by `mrnet.checkpoint.load_model`.

    Raises:
        BadInput: in one line, when the frames cannot be computed from audio (a model
            trained on Melon's precomputed mels: their exact computation is not published
            with the dataset), or when a WavLM model's folder is missing or another.
    """
    cfg = FeatureConfig.from_dict(feature_config)
    if cfg.kind == "wavlm":
        from pipeline.ssl import cached_model

        if ssl_model is None:
            raise BadInput(
                "this model was trained on WavLM features: pass --ssl-model DIR, the WavLM "
                "folder its cache was made with"
            )
        path = str(ssl_model.absolute())
        cached_model(path, cfg.ssl_sha256)  # loaded once, and checked, before any file
        return dataclasses.replace(cfg, ssl_path=path)
    if not cfg.from_audio:
        raise BadInput(
            f"this model was trained on precomputed features ({cfg.kind}: {cfg.n_mels} bands "
            f"at {cfg.frames_per_second:g} frames/s), which mrnet cannot compute from audio "
            "files; score it on a cache of the same dataset with mrnet evaluate or mrnet "
            "embed --cache"
        )
    return cfg


def file_outputs(
    files: Iterable[Path],
    cfg: FeatureConfig,
    forward: Callable[[torch.Tensor], np.ndarray],
    window: int,
    batch_size: int,
    min_seconds: float = MIN_SECONDS,
) -> Iterator[tuple[Path, np.ndarray | None, str | None]]:
    """Per file, in order, its mean ``forward`` output over its windows, or why there is none.

    Args:
        files: the audio files, read as `preprocess` reads them (`track_frames`).
        cfg: the feature settings (the cache's the model was trained on).
        forward: a window batch's outputs, float [b, d] (see mrnet.scoring.track_means).
        window: window length (frames); 0: the whole file in one window.
        batch_size: windows per ``forward`` call.
        min_seconds: shorter files fail as too short.

    Returns:
        An iterator of (path, float64 [d] output, None), or (path, None, reason) when the
        file cannot be read (TrackFailed's reason) or the output is not finite
        ("non_finite_output").
    """
    for path in files:
        try:
            frames = track_frames(path, cfg, min_seconds, None)
            out = file_means(frames, window, forward, batch_size)
        except TrackFailed as e:
            yield path, None, e.reason
            continue
        if not np.isfinite(out).all():  # finite weights and input: an overflow in the model
            yield path, None, "non_finite_output"
            continue
        yield path, out, None
