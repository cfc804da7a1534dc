"""The built-in baseline: a regularised logistic regression on per-track statistics of
the cached log-mels (band means and stds, MFCCs as the DCT of the log-mel, their first
differences: pipeline.features.TrackStats). It is what MRNet is reported beside.

The statistics are stored in every shard by preprocess (the shard writer computes them
from the very frames it stores, under the shard's checksum); for a cache made before
that, they are computed here from the frames in one pass, and nothing is written into
the cache. The regularisation C is chosen on the validation split (accuracy, or mAP for
multi-label caches) from `C_GRID`; a cache without validation tracks uses C = 1.

    fit       the baseline of a cache (training split; C from validation)
    beside    its figures on a split, for the reports of `mrnet evaluate` and train
    report    its report dict on a split (what `mrnet baseline` writes)
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from mrnet.metrics import choose_thresholds
from mrnet.task import TASKS, Task
from pipeline.cache.reader import Cache, FrameStore, SplitIndex, split_index
from pipeline.errors import BadInput
from pipeline.features import STATS_VERSION, TrackStats

C_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)
DESCRIPTION = "logistic regression on per-track band and MFCC statistics"


def stored_statistics(index: SplitIndex) -> np.ndarray | None:
    """Float32 [n, d]: the statistics the shards hold for the tracks of ``index``, in its
    order; None when a shard has none (made by mrnet 0.2) or another definition."""
    if any(s.stats is None or s.stats_version != STATS_VERSION for s in index.shards):
        return None
    if len(index) == 0:
        return np.zeros((0, 0), np.float32)
    return np.stack([index.shards[k].stats[r] for k, r in zip(index.shard, index.row)])


def statistics(index: SplitIndex, progress: bool = False) -> np.ndarray:
    """Float32 [n, d]: stored statistics, or computed from the frames (one pass)."""
    stored = stored_statistics(index)
    if stored is not None:
        return stored
    store = FrameStore(index.shards)
    rows = []
    for t in tqdm(
        range(len(index)), desc="track statistics", unit="track", leave=False, disable=not progress
    ):
        acc = TrackStats(index.n_mels)
        acc.push(store.track(index, t))
        rows.append(acc.value())
    return np.array(rows, np.float32).reshape(len(index), -1)


def has_statistics(cache: Cache) -> bool:
    """Whether every shard of ``cache`` holds track statistics of the current definition."""
    return all(
        s.stats is not None and s.stats_version == STATS_VERSION for s in cache.shards.values()
    )


@dataclass
class Baseline:
    """A fitted baseline: standardisation, classifier, the C chosen and its validation
    figure (``figure`` names it: val_acc or val_map; NaN without validation tracks)."""

    scaler: object
    model: object
    c: float
    task: Task
    n_labels: int
    value: float = float("nan")

    @property
    def figure(self) -> str:
        """The name of ``value``: the task's selection figure (val_acc or val_map)."""
        return self.task.select_by

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """Float64 [n, n_labels] for statistics ``x`` [n, d] (a single-label class
        without training tracks gets probability 0)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            p = self.model.predict_proba(self.scaler.transform(x)).astype(np.float64)
        if self.task.thresholded:  # one probability per label already
            return p
        out = np.zeros((len(p), self.n_labels))
        out[:, self.model.classes_] = p
        return out


def fit(cache: Cache, progress: bool = False) -> Baseline:
    """The baseline of ``cache``: fitted on its training split, C chosen on validation."""
    from sklearn.preprocessing import StandardScaler

    train, val = split_index(cache, "training"), split_index(cache, "validation")
    if len(train) == 0:
        raise BadInput(f"cache {cache.root} has no training tracks; nothing to fit")
    task, n_labels = TASKS[cache.manifest.task], len(cache.labels)
    x_train, x_val = statistics(train, progress), statistics(val, progress)
    scaler = StandardScaler().fit(x_train)
    if train.label.ndim == 1 and len(np.unique(train.label)) < 2:
        raise BadInput(f"cache {cache.root} has training tracks of one label only")
    best = None
    for c in C_GRID if len(val) else (1.0,):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence chatter; constant labels (OvR)
            model = task.classifier(c).fit(scaler.transform(x_train), train.label)
        b = Baseline(scaler, model, c, task, n_labels)
        if not len(val):
            return b
        b.value = task.score(val.label, b.probabilities(x_val))
        if best is None or b.value > best.value:
            best = b
    return best


def beside(cache: Cache, split: str) -> dict:
    """The baseline's figures on ``split``, for a report beside the model's (fitted from
    the stored statistics; a note instead when the cache has none)."""
    if not has_statistics(cache):
        return {
            "note": "the cache holds no track statistics (made by mrnet 0.2); "
            "`mrnet baseline` computes them from the frames"
        }
    b = fit(cache)
    rep, _ = report(b, cache, split_index(cache, split))
    keep = ("accuracy", "balanced_accuracy", "macro_f1", "mean_average_precision", "macro_roc_auc")
    return {"model": DESCRIPTION, "C": b.c, **{k: rep[k] for k in keep if k in rep}}


def report(
    b: Baseline, cache: Cache, index: SplitIndex, progress: bool = False
) -> tuple[dict, np.ndarray]:
    """The task's report of ``b`` on the tracks of ``index``, and its probabilities.

    Multi-label thresholds are chosen on the cache's validation split (0.5 without one).

    Args:
        b: the fitted baseline.
        cache: the cache ``index`` comes from (labels, validation split).
        index: the tracks to report on.
        progress: show a progress bar while statistics are computed from frames.

    Returns:
        (the report dict, probabilities float32 [n, n_labels]).
    """
    probs = b.probabilities(statistics(index, progress))
    rep = b.task.report(index.label, probs, list(cache.labels), *_thresholds(b, cache))
    return rep, probs.astype(np.float32)


def _thresholds(b: Baseline, cache: Cache) -> tuple[list[float] | None, str | None]:
    """Multi-label: per-label thresholds of maximum F1 on the validation split."""
    if not b.task.thresholded:
        return None, None
    val = split_index(cache, "validation")
    if len(val) == 0:
        return [0.5] * len(cache.labels), "none (no validation split): 0.5"
    prior = split_index(cache, "training").label.mean(axis=0)
    probs = b.probabilities(statistics(val))
    return choose_thresholds(val.label, probs, prior), "the validation split (maximum F1)"
