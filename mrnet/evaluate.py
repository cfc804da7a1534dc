"""`mrnet evaluate`: track-level inference on a cache split, metrics, reports (README's
Evaluate section lists the files).

A track is scored whole when it is at most ``--window`` long, else as the mean
probability of its windows (mrnet.scoring): memory does not grow with track length.
The task (mrnet.task) decides the figures and files; a multi-label track's predicted
labels are those whose probability reaches the label's threshold, chosen (maximum F1)
on the cache's validation split (0.5 when it is empty). Every figure recomputes from
predictions.csv (files written by mrnet.reports).
"""

from __future__ import annotations

import numpy as np
import torch

from mrnet import checkpoint
from mrnet.linear import beside
from mrnet.metrics import choose_thresholds
from mrnet.options import EvalOptions
from mrnet.reports import Evaluated, write_report
from mrnet.runtime import resolve_device
from mrnet.scoring import model_forward, split_means, window_frames
from mrnet.task import TASKS, Task
from pipeline.cache.reader import Cache, SplitIndex, open_cache, split_index
from pipeline.cache.verify import check_checksums
from pipeline.errors import BadInput
from pipeline.settings import check_choices


def run(opts: EvalOptions) -> Evaluated:
    """`mrnet evaluate`: score the split and write REPORT/."""
    return Evaluated(evaluate(opts), opts.out)


def score_split(
    model: torch.nn.Module,
    index: SplitIndex,
    task: Task,
    device: torch.device,
    batch_size: int,
    window: int,
    desc: str = "evaluate",
    progress: bool = True,
) -> np.ndarray:
    """Probabilities for the tracks of ``index``, in its order, averaged over their windows.

    Windows of equal length go through together, so memory does not grow with track
    length (see mrnet.scoring). BadInput when an output is not finite.

    Args:
        model: the classifier (put in eval mode).
        index: the split's tracks.
        task: turns logits into probabilities.
        device: where the model runs.
        batch_size: windows' worth of frames per forward pass.
        window: window length (frames); 0: whole tracks.
        desc: the progress bar's label.
        progress: show a progress bar.

    Returns:
        Float32 [n, n_labels]: each track's mean probability over its windows.
    """
    forward = model_forward(model.eval(), device, task)
    probs = split_means(index, forward, window, batch_size, "outputs", desc, progress)
    return probs.astype(np.float32)


def evaluate(opts: EvalOptions) -> dict:
    """Run the evaluation and write REPORT/; returns the report dict."""
    check_choices(opts)
    opts.check()
    device = resolve_device(opts.device)
    ckpt = checkpoint.load(opts.checkpoint)
    cache = open_cache(opts.cache)
    ckpt.check_cache(
        cache,
        f"checkpoint {opts.checkpoint}",
        fix="evaluate on a cache built with the same settings and subset",
    )
    if cache.split(opts.split).empty:
        known = sorted(set(cache.tracks["split"]))
        raise BadInput(
            f"split {opts.split!r} of cache {opts.cache} has no tracks; use one of {known}"
        )
    model = checkpoint.load_model(ckpt, opts.ssl_model).to(device).eval()
    task = TASKS[ckpt.task]
    index = split_index(cache, opts.split)
    check_checksums(cache.root, index.shards, opts.progress)  # figures only from sound bytes
    window = window_frames(opts.window, cache.feature_config)
    probs = score_split(
        model, index, task, device, opts.batch_size, window, f"evaluate {opts.split}", opts.progress
    )
    thresholds, source = None, None
    if task.thresholded:
        thresholds, source = _thresholds(model, cache, opts, device, window)
    rep = task.report(index.label, probs, list(cache.labels), thresholds, source)
    rep["source"] = {
        "checkpoint": str(opts.checkpoint),
        "cache": str(opts.cache),
        "split": opts.split,
        "epoch": ckpt.epoch,
        "arch": ckpt.arch,
        "feature_config": cache.feature_config,
        "model_config": ckpt.model_config.to_dict(),
        "train_config": ckpt.train_config,
    }
    rep["baseline"] = beside(cache, opts.split)
    write_report(opts.out, opts.split, rep, cache, index, probs)
    return rep


def _thresholds(
    model, cache: Cache, opts: EvalOptions, device, window: int
) -> tuple[list[float], str]:
    """Per-label thresholds chosen on the validation split (0.5 when it is empty)."""
    val = split_index(cache, "validation")
    if len(val) == 0:
        return [0.5] * len(cache.labels), "none (no validation split): 0.5"
    check_checksums(cache.root, val.shards, opts.progress)
    probs = score_split(
        model,
        val,
        TASKS[cache.manifest.task],
        device,
        opts.batch_size,
        window,
        "thresholds (validation)",
        opts.progress,
    )
    prior = split_index(cache, "training").label.mean(axis=0)
    return choose_thresholds(val.label, probs, prior), "the validation split (maximum F1)"
