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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mrnet import checkpoint
from mrnet.checkpoint import Checkpoint
from mrnet.inputs import MIN_SECONDS, audio_features, expand_inputs, file_outputs
from mrnet.options import WINDOW_SECONDS, PredictOptions
from mrnet.runtime import resolve_device
from mrnet.scoring import model_forward, window_frames
from mrnet.task import TASKS
from pipeline.errors import BadInput
from pipeline.settings import check_choices


@dataclass
class Prediction:
    """One file's result: probability per label (sorted, highest first), or an error.
    ``labels``: multi-label only, the labels whose probability reaches their threshold."""

    path: Path
    probs: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    labels: list[str] | None = None

    def top(self, k: int = 3) -> list[tuple[str, float]]:
        """The ``k`` most probable labels, as (label, probability), highest first."""
        return list(self.probs.items())[:k]

    def chosen(self, k: int) -> list[tuple[str, float]]:
        """Multi-label: at most ``k`` of the labels above their thresholds."""
        return [(n, self.probs[n]) for n in (self.labels or [])][:k]


@torch.no_grad()
def predict_files(
    ckpt: Checkpoint,
    model: torch.nn.Module,
    files: list[Path],
    device: torch.device,
    min_seconds: float = MIN_SECONDS,
    window_seconds: float = WINDOW_SECONDS,
    batch_size: int = 16,
    ssl_model: Path | None = None,
) -> Iterator[Prediction]:
    """Yield one Prediction per file, in order (``model`` from `checkpoint.load_model`).

    A file's features are what the checkpoint's cache held for it (its clip, or the
    whole file, streamed); longer than ``window_seconds`` they are scored as the mean
    probability of windows (mrnet.scoring). A file that cannot be read, or whose output
    is not finite, gets a Prediction with ``error`` set.

    Args:
        ckpt: the checkpoint (feature settings, labels, task, thresholds).
        model: its model; moved to ``device`` and put in eval mode.
        files: the audio files.
        device: where the model runs.
        min_seconds: shorter files fail as too short.
        window_seconds: window length (s); 0: every file whole.
        batch_size: windows per forward pass.
        ssl_model: the WavLM folder, for a model trained on WavLM features.

    Returns:
        An iterator of Predictions, one per file.
    """
    cfg = audio_features(ckpt.feature_config, ssl_model)
    names, task = list(ckpt.labels), TASKS[ckpt.task]
    forward = model_forward(model.to(device).eval(), device, task)
    window = window_frames(window_seconds, ckpt.feature_config)
    for path, p, error in file_outputs(files, cfg, forward, window, batch_size, min_seconds):
        if error is not None:
            yield Prediction(path, error=error)
            continue
        order = np.argsort(p)[::-1]
        chosen = task.chosen(p, names, ckpt.thresholds)
        yield Prediction(path, {names[i]: float(p[i]) for i in order}, labels=chosen)


@dataclass
class Predicted:
    """How many files `run` printed, and how many of them could not be read."""

    files: int
    failed: int

    def summary(self) -> str:
        """Nothing: every file had its line."""
        return ""  # every file had its line


def run(opts: PredictOptions, echo: Callable[[str], None] = print) -> Predicted:
    """`mrnet predict`: one line (or JSON object, or CSV row) per file as it is scored.
    BadInput when none of the files could be read."""
    check_choices(opts)
    opts.check()
    ckpt = checkpoint.load(opts.checkpoint)
    audio_features(ckpt.feature_config, opts.ssl_model)  # refuses what it cannot read first
    model = checkpoint.load_model(ckpt, opts.ssl_model)
    readable, skipped = expand_inputs(opts.paths)
    device = resolve_device(opts.device)
    files = readable + skipped
    predictions = itertools.chain(
        predict_files(
            ckpt, model, readable, device, window_seconds=opts.window, ssl_model=opts.ssl_model
        ),
        (Prediction(p, error="unsupported_format") for p in skipped),
    )
    task, names = TASKS[ckpt.task], list(ckpt.labels)
    top = min(opts.top, len(names))
    if opts.csv:
        echo(_csv_row(["path", *task.csv_header(names, top), "error"]))
    failed = 0
    for p in predictions:
        failed += p.error is not None
        if opts.json:
            row = {"path": str(p.path), **task.json_fields(p, names, top), "error": p.error}
            echo(json.dumps(row, allow_nan=False))
        elif opts.csv:
            cells = (
                task.csv_cells(p, names, top)
                if p.error is None
                else ([""] * len(task.csv_header(names, top)))
            )
            echo(_csv_row([str(p.path), *cells, p.error or ""]))
        elif p.error:
            echo(f"{p.path}: cannot read ({p.error})")
        else:
            echo(f"{p.path}: {task.line(p, top)}")
    if failed == len(files):
        raise BadInput(
            f"none of the {len(files)} files could be read; pass MP3/WAV/FLAC/OGG audio files"
        )
    return Predicted(len(files), failed)


def _csv_row(cells: list[str]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow(cells)
    return buf.getvalue()
