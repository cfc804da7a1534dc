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


def grouped_splits(
    labels: list[tuple[int, ...]], groups: list[str], seed: int, fractions=(0.8, 0.1, 0.1)
) -> np.ndarray:
    """Split name per track (SPLITS order: training, validation, test) keeping every group
    (artist, album) on one side, about ``fractions`` of each label per split.

    Groups are taken largest first (ties in an order seeded by ``seed``), each going to
    the split that most lacks its labels: the sum over the group's labels of the share of
    the split's target count still missing (relative, so that a small split is not
    starved by a large one's absolute need), with the split's own deficit in tracks as
    the tie-break. A pure function of the track order, the groups and the seed.

    Args:
        labels: each track's label indices (one for single-label tracks).
        groups: each track's group key; tracks of one key land in one split.
        seed: the seed of the order among groups of equal size.
        fractions: the wanted share of each split, summing to 1.

    Returns:
        object array of "training" / "validation" / "test", one per track.
    """
    names = np.array(["training", "validation", "test"], dtype=object)
    n_labels = 1 + max((max(t) for t in labels if t), default=0)
    want = np.asarray(fractions, np.float64)[:, None] * np.bincount(
        [i for t in labels for i in t], minlength=n_labels
    )
    have = np.zeros_like(want)
    tracks_want = np.asarray(fractions, np.float64) * len(labels)
    tracks_have = np.zeros(3)
    members: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    keys = sorted(members)
    tiebreak = np.random.default_rng(seed).permutation(len(keys))
    order = sorted(range(len(keys)), key=lambda k: (-len(members[keys[k]]), tiebreak[k]))
    out = np.empty(len(labels), dtype=object)
    for k in order:
        rows = members[keys[k]]
        counts = np.bincount([i for r in rows for i in labels[r]], minlength=n_labels)
        need = ((want - have) / np.maximum(want, 1e-9) * (counts > 0)).sum(axis=1)
        space = tracks_want - tracks_have
        split = max(range(3), key=lambda s: (need[s], space[s]))
        have[split] += counts
        tracks_have[split] += len(rows)
        out[rows] = names[split]
    return out
