"""`mrnet predict`: genre probabilities for audio files, with the checkpoint's own features.

Each file goes through the same reader as `preprocess` (pipeline.extract.TrackFeatures:
decoder, clip, log-mel), with the settings stored in the checkpoint, and is scored like
`evaluate` scores a cache's tracks (in windows when it is long).
A file that cannot be read is reported on its own line and does not stop the others.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mrnet import checkpoint as ckpt_io
from mrnet.checkpoint import Checkpoint
from mrnet.options import WINDOW_SECONDS, PredictOptions
from mrnet.runtime import resolve_device
from mrnet.scoring import file_means, model_forward, window_frames
from pipeline.audio import AUDIO_SUFFIXES, audio_files
from pipeline.errors import BadInput, TrackFailed
from pipeline.extract import TrackFeatures
from pipeline.features import FeatureConfig
from pipeline.settings import check_choices

MIN_SECONDS = 0.5  # shorter files are reported as too_short


@dataclass
class Prediction:
    """One file's result: probability per label (sorted, highest first), or an error.
    ``labels``: multi-label only, the labels whose probability reaches their threshold."""

    path: Path
    probs: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    labels: list[str] | None = None

    def top(self, k: int = 3) -> list[tuple[str, float]]:
        return list(self.probs.items())[:k]

    def chosen(self, k: int) -> list[tuple[str, float]]:
        """Multi-label: at most ``k`` of the labels above their thresholds."""
        return [(n, self.probs[n]) for n in (self.labels or [])][:k]


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


def file_outputs(
    files: Iterable[Path],
    cfg: FeatureConfig,
    forward: Callable[[torch.Tensor], np.ndarray],
    window: int,
    batch_size: int,
    min_seconds: float = MIN_SECONDS,
) -> Iterator[tuple[Path, np.ndarray | None, str | None]]:
    """Per file, in order: (path, its mean ``forward`` output over its windows, None), or
    (path, None, reason) when it cannot be read or the output is not finite."""
    for path in files:
        try:
            out = file_means(TrackFeatures(path, cfg, min_seconds), window, forward, batch_size)
        except TrackFailed as e:
            yield path, None, e.reason
            continue
        if not np.isfinite(out).all():  # finite weights and input: an overflow in the model
            yield path, None, "non_finite_output"
            continue
        yield path, out, None


@torch.no_grad()
def predict_files(
    ckpt: Checkpoint,
    model: torch.nn.Module,
    files: list[Path],
    device: torch.device,
    min_seconds: float = MIN_SECONDS,
    window_seconds: float = WINDOW_SECONDS,
    batch_size: int = 16,
) -> Iterator[Prediction]:
    """Yield one Prediction per file, in order (``model`` from `checkpoint.load_model`).

    A file's features are what the checkpoint's cache held for it (its clip, or the
    whole file, streamed); longer than ``window_seconds`` they are scored as the mean
    probability of windows (mrnet.scoring), ``batch_size`` windows per forward pass."""
    cfg = FeatureConfig.from_dict(ckpt.feature_config)
    genres = list(ckpt.labels)
    multi = ckpt.task == "multi"
    thresholds = np.asarray(ckpt.thresholds or [0.5] * len(genres))
    forward = model_forward(model.to(device).eval(), device, multi)
    window = window_frames(window_seconds, ckpt.feature_config)
    for path, p, error in file_outputs(files, cfg, forward, window, batch_size, min_seconds):
        if error is not None:
            yield Prediction(path, error=error)
            continue
        order = np.argsort(p)[::-1]
        chosen = [genres[i] for i in order if p[i] >= thresholds[i]] if multi else None
        yield Prediction(path, {genres[i]: float(p[i]) for i in order}, labels=chosen)


@dataclass
class Predicted:
    """How many files `run` printed, and how many of them could not be read."""

    files: int
    failed: int

    def summary(self) -> str:
        return ""  # every file had its line


def run(opts: PredictOptions, echo: Callable[[str], None] = print) -> Predicted:
    """`mrnet predict`: one line (or JSON object, or CSV row) per file as it is scored.
    BadInput when none of the files could be read."""
    check_choices(opts)
    opts.check()
    ckpt = ckpt_io.load(opts.checkpoint)
    model = ckpt_io.load_model(ckpt)
    readable, skipped = expand_inputs(opts.paths)
    device = resolve_device(opts.device)
    files = readable + skipped
    predictions = itertools.chain(
        predict_files(ckpt, model, readable, device, window_seconds=opts.window),
        (Prediction(p, error="unsupported_format") for p in skipped),
    )
    if ckpt.task == "multi":
        return Predicted(len(files), _report(predictions, files, opts, ckpt.labels, echo))
    top = min(opts.top, len(ckpt.labels))
    if opts.csv:
        header = ["path"] + [f"{c}_{i}" for i in range(1, top + 1) for c in ("genre", "p")]
        echo(_csv_row([*header, "error"]))
    failed = 0
    for p in predictions:
        failed += p.error is not None
        if opts.json:
            row = {"path": str(p.path), "top": p.top(top), "error": p.error}
            echo(json.dumps(row, allow_nan=False))
        elif opts.csv:
            cells = [x for g, v in p.top(top) for x in (g, f"{v:.4f}")]
            echo(_csv_row([str(p.path), *cells, *[""] * (2 * top - len(cells)), p.error or ""]))
        elif p.error:
            echo(f"{p.path}: cannot read ({p.error})")
        else:
            echo(f"{p.path}: " + ", ".join(f"{g} {v:.2f}" for g, v in p.top(top)))
    if failed == len(files):
        raise BadInput(
            f"none of the {len(files)} files could be read; pass MP3/WAV/FLAC/OGG audio files"
        )
    return Predicted(len(files), failed)


def _report(predictions: Iterator[Prediction], files: list[Path], opts: PredictOptions,
            labels: list[str], echo: Callable[[str], None]) -> int:  # fmt: skip
    """The multi-label output: the labels above their thresholds, highest first."""
    if opts.csv:
        echo(_csv_row(["path", "labels", *[f"p_{n}" for n in labels], "error"]))
    failed = 0
    for p in predictions:
        failed += p.error is not None
        if opts.json:
            row = {"path": str(p.path), "labels": p.chosen(len(labels)),
                   "probabilities": p.probs, "error": p.error}  # fmt: skip
            echo(json.dumps(row, allow_nan=False))
        elif opts.csv:
            cells = [f"{p.probs[n]:.4f}" for n in labels] if not p.error else [""] * len(labels)
            echo(_csv_row([str(p.path), "|".join(p.labels or []), *cells, p.error or ""]))
        elif p.error:
            echo(f"{p.path}: cannot read ({p.error})")
        elif p.labels:
            echo(f"{p.path}: " + ", ".join(f"{n} {v:.2f}" for n, v in p.chosen(opts.top)))
        else:
            name, value = p.top(1)[0]
            echo(f"{p.path}: no label reaches its threshold (highest: {name} {value:.2f})")
    if failed == len(files):
        raise BadInput(
            f"none of the {len(files)} files could be read; pass MP3/WAV/FLAC/OGG audio files"
        )
    return failed


def _csv_row(cells: list[str]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow(cells)
    return buf.getvalue()
