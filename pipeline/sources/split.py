"""Stratified split assignments: pure functions of the sorted track keys and a seed.

stratified_folds  fold index per track: every label's tracks dealt round-robin over
                  N folds after a seeded shuffle (folds differ by at most one track
                  per label)
fold_splits       fold K is test, fold (K + 1) mod N validation, the rest training
ratio_splits      80/10/10 per label (at least one validation and one test track for
                  a label of three or more)
"""

from __future__ import annotations

import numpy as np


def stratified_folds(labels: list[int], n_folds: int, seed: int) -> np.ndarray:
    """Fold (0..n_folds-1) of each track; ``labels`` are in sorted-key order. Each label's
    tracks are shuffled (numpy's default_rng([seed, label])) and dealt to the folds
    round-robin, starting where the previous label stopped, so fold sizes also stay
    within one track of each other overall."""
    labels = np.asarray(labels)
    fold = np.empty(len(labels), np.int64)
    start = 0
    for label in sorted(set(labels.tolist())):
        members = np.flatnonzero(labels == label)
        order = np.random.default_rng([seed, int(label)]).permutation(len(members))
        fold[members[order]] = (start + np.arange(len(members))) % n_folds
        start = (start + len(members)) % n_folds
    return fold


def fold_splits(fold: np.ndarray, k: int, n_folds: int) -> np.ndarray:
    """Split name per track for cross-validation fold ``k`` of ``n_folds``."""
    out = np.full(len(fold), "training", dtype=object)
    out[fold == k] = "test"
    out[fold == (k + 1) % n_folds] = "validation"
    return out


def ratio_splits(labels: list[int], seed: int) -> np.ndarray:
    """Split name per track, about 80/10/10 within each label (tracks in sorted-key order)."""
    labels = np.asarray(labels)
    out = np.full(len(labels), "training", dtype=object)
    for label in sorted(set(labels.tolist())):
        members = np.flatnonzero(labels == label)
        n = len(members)
        n_val = max(1, round(0.1 * n)) if n >= 3 else 0
        n_test = max(1, round(0.1 * n)) if n >= 3 else 0
        order = members[np.random.default_rng([seed, int(label)]).permutation(n)]
        out[order[:n_val]] = "validation"
        out[order[n_val : n_val + n_test]] = "test"
    return out
