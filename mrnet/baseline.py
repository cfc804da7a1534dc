"""The built-in baseline: a regularised logistic regression on per-track statistics of
the cached log-mels (band means and stds, MFCCs as the DCT of the log-mel, their first
differences: pipeline.features.TrackStats). It is what MRNet is reported beside.

The statistics are stored in every shard by preprocess (the shard writer computes them
from the very frames it stores, under the shard's checksum); for a cache made before
that, they are computed here from the frames in one pass, and nothing is written into
the cache. The regularisation C is chosen on the validation split (accuracy, or mAP for
multi-label caches) from `C_GRID`; a cache without validation tracks uses C = 1.

    fit       the baseline of a cache (training split; C from validation)
    beside    its figures on a split, for `mrnet evaluate`'s report
    run       `mrnet baseline`: the same report files as `mrnet evaluate`
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mrnet.metrics import choose_thresholds, validation_figures
from mrnet.options import BaselineOptions
from pipeline.cache.reader import Cache, FrameStore, SplitIndex, open_cache, split_index
from pipeline.cache.verify import check_checksums
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
    for t in tqdm(range(len(index)), desc="track statistics", unit="track", leave=False,
                  disable=not progress):  # fmt: skip
        acc = TrackStats(index.n_mels)
        acc.push(store.track(index, t))
        rows.append(acc.value())
    return np.array(rows, np.float32).reshape(len(index), -1)


def has_statistics(cache: Cache) -> bool:
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
    multi: bool
    n_labels: int
    figure: str
    value: float = float("nan")

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """Float64 [n, n_labels] for statistics ``x`` [n, d] (a single-label class
        without training tracks gets probability 0)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            p = self.model.predict_proba(self.scaler.transform(x)).astype(np.float64)
        if self.multi:
            return p
        out = np.zeros((len(p), self.n_labels))
        out[:, self.model.classes_] = p
        return out


def _classifier(c: float, multi: bool):
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    lr = LogisticRegression(C=c, max_iter=2000)
    return OneVsRestClassifier(lr) if multi else lr


def _score(probs: np.ndarray, y: np.ndarray, multi: bool) -> float:
    if multi:
        return float(validation_figures(y, probs)["val_map"])
    return float((probs.argmax(1) == y).mean())


def fit(cache: Cache, progress: bool = False) -> Baseline:
    """The baseline of ``cache``: fitted on its training split, C chosen on validation."""
    from sklearn.preprocessing import StandardScaler

    train, val = split_index(cache, "training"), split_index(cache, "validation")
    if len(train) == 0:
        raise BadInput(f"cache {cache.root} has no training tracks; nothing to fit")
    multi, n_labels = cache.manifest.task == "multi", len(cache.labels)
    x_train, x_val = statistics(train, progress), statistics(val, progress)
    scaler = StandardScaler().fit(x_train)
    figure = "val_map" if multi else "val_acc"
    if not multi and len(np.unique(train.label)) < 2:
        raise BadInput(f"cache {cache.root} has training tracks of one label only")
    best = None
    for c in C_GRID if len(val) else (1.0,):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence chatter; constant labels (OvR)
            model = _classifier(c, multi).fit(scaler.transform(x_train), train.label)
        b = Baseline(scaler, model, c, multi, n_labels, figure)
        if not len(val):
            return b
        b.value = _score(b.probabilities(x_val), val.label, multi)
        if best is None or b.value > best.value:
            best = b
    return best


def beside(cache: Cache, split: str, progress: bool = False) -> dict:
    """The baseline's figures on ``split``, for a report beside the model's (fitted from
    the stored statistics; a note instead when the cache has none)."""
    from mrnet.evaluate import report

    if not has_statistics(cache):
        return {"note": "the cache holds no track statistics (made by mrnet 0.2); "
                "`mrnet baseline` computes them from the frames"}  # fmt: skip
    b = fit(cache)
    index = split_index(cache, split)
    probs = b.probabilities(statistics(index))
    rep = report(index, probs, list(cache.labels), *_thresholds(b, cache))
    keep = ("accuracy", "balanced_accuracy", "macro_f1", "mean_average_precision",
            "macro_roc_auc")  # fmt: skip
    return {"model": DESCRIPTION, "C": b.c, **{k: rep[k] for k in keep if k in rep}}


def _thresholds(b: Baseline, cache: Cache) -> tuple[list[float] | None, str | None]:
    """Multi-label: per-label thresholds of maximum F1 on the validation split."""
    if not b.multi:
        return None, None
    val = split_index(cache, "validation")
    if len(val) == 0:
        return [0.5] * len(cache.labels), "none (no validation split): 0.5"
    prior = split_index(cache, "training").label.mean(axis=0)
    probs = b.probabilities(statistics(val))
    return choose_thresholds(val.label, probs, prior), "the validation split (maximum F1)"


@dataclass
class Fitted:
    """The report `run` wrote (the same files as `mrnet evaluate`)."""

    report: dict
    out: Path
    computed: bool  # the statistics came from the frames (a cache made before they were stored)

    def summary(self) -> str:
        from mrnet.evaluate import Evaluated

        note = ("note: this cache holds no track statistics (made by mrnet 0.2): they were "
                "computed from its frames; nothing was written into the cache\n"
                if self.computed else "")  # fmt: skip
        return note + Evaluated(self.report, self.out).summary()


def run(opts: BaselineOptions) -> Fitted:
    """`mrnet baseline`: fit the baseline and report on ``opts.split``."""
    from mrnet.evaluate import report, write_report

    opts.check()
    cache = open_cache(opts.cache)
    if cache.split(opts.split).empty:
        known = sorted(set(cache.tracks["split"]))
        raise BadInput(
            f"split {opts.split!r} of cache {opts.cache} has no tracks; use one of {known}"
        )
    computed = not has_statistics(cache)
    if computed:  # the frames are read: check them first, as evaluate does
        check_checksums(cache.root, cache.shards.values(), opts.progress)
    b = fit(cache, opts.progress)
    index = split_index(cache, opts.split)
    probs = b.probabilities(statistics(index, opts.progress))
    rep = report(index, probs, list(cache.labels), *_thresholds(b, cache))
    rep["source"] = {
        "cache": str(opts.cache),
        "split": opts.split,
        "arch": "baseline",
        "feature_config": cache.feature_config,
        "model_config": {"model": DESCRIPTION, "C": b.c, "chosen_on": "validation"},
        "train_config": {"arch": "baseline"},
    }
    write_report(opts.out, opts.split, rep, cache, index, probs.astype(np.float32))
    return Fitted(rep, opts.out, computed)
