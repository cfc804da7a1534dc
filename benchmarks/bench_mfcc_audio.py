"""MFCC + logistic-regression baseline computed straight from the audio of a dataset made by
benchmarks/real_music.py (its tracks.csv and fold column).

    python benchmarks/bench_mfcc_audio.py data/real/<dataset> [--jobs 2] [--csv FILE]
                                          [--cache FILE.npz]

Features, per track: decode (soundfile), mix to mono, keep at most the middle 30 s (mrnet's
default clip), resample to 16 kHz (librosa, soxr_hq), 20 MFCCs (librosa: 128 mel bands,
1024-point FFT, hop 320, as mrnet's front end) and their deltas; mean and std over time,
80 numbers. The features do not depend on the fold, so they are computed once (--cache
keeps them between runs, keyed by file path, size and mtime).

Per fold k of K (K = the number of folds in tracks.csv): test = fold k, validation = fold
(k+1) mod K, training = the rest, as real_music.py writes them. Standardise on training;
fit a multinomial LogisticRegression on training for each C of the grid; keep the C with
the best validation accuracy (ties: the smaller C); report that model's test accuracy and
balanced accuracy, and the majority-class accuracy (training's most frequent style).
Then mean ± sample std over folds, and test recall per style over all folds together.

--ignore-groups replaces the grouped folds by a style-stratified K-fold over tracks (seeded
by --seed) that lets one composer sit in training and test: the gap to the grouped result
measures how much the baseline leans on composer/source rather than style.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
import warnings
from pathlib import Path

import librosa
import numpy as np
import soundfile as sf
from joblib import Parallel, delayed
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import StandardScaler

SAMPLE_RATE = 16000
CLIP_SECONDS = 30.0
N_MFCC = 20
C_GRID = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)


def middle_clip(path: Path, seconds: float = CLIP_SECONDS) -> tuple[np.ndarray, int]:
    """At most the middle ``seconds`` of the file, mono float32, at its own rate."""
    with sf.SoundFile(str(path)) as f:
        want = min(f.frames, int(round(seconds * f.samplerate)))
        f.seek((f.frames - want) // 2)
        x = f.read(want, dtype="float32", always_2d=True)
        return x.mean(axis=1), f.samplerate


def mfcc_features(path: Path) -> np.ndarray:
    """Mean and std over time of 20 MFCCs and their deltas (80 numbers)."""
    x, sr = middle_clip(path)
    y = librosa.resample(x, orig_sr=sr, target_sr=SAMPLE_RATE, res_type="soxr_hq")
    mfcc = librosa.feature.mfcc(
        y=y, sr=SAMPLE_RATE, n_mfcc=N_MFCC, n_fft=1024, hop_length=320, n_mels=128
    )
    both = np.vstack([mfcc, librosa.feature.delta(mfcc)])
    return np.concatenate([both.mean(axis=1), both.std(axis=1)]).astype(np.float32)


def _key(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}|{st.st_size}|{int(st.st_mtime)}"


def features(paths: list[Path], jobs: int, cache: Path | None) -> np.ndarray:
    """One row of features per path, from ``cache`` where it has them."""
    keys = [_key(p) for p in paths]
    known: dict[str, np.ndarray] = {}
    if cache is not None and cache.exists():
        with np.load(cache) as z:
            known = dict(zip(z["keys"].tolist(), z["features"]))
    todo = [p for p, k in zip(paths, keys) if k not in known]
    if todo:
        print(f"computing features of {len(todo)} tracks with {jobs} job(s)", flush=True)
        rows = Parallel(n_jobs=jobs)(delayed(mfcc_features)(p) for p in todo)
        known.update(zip((_key(p) for p in todo), rows))
        if cache is not None:
            np.savez(cache, keys=np.array(list(known)), features=np.stack(list(known.values())))
    return np.stack([known[k] for k in keys])


def read_tracks(ds_dir: Path) -> tuple[list[Path], np.ndarray, np.ndarray]:
    """Paths, styles and folds from DS_DIR/tracks.csv."""
    with open(ds_dir / "tracks.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    paths = [ds_dir / r["path"] for r in rows]
    return paths, np.array([r["style"] for r in rows]), np.array([int(r["fold"]) for r in rows])


def fit_best(x_tr, y_tr, x_va, y_va) -> tuple[LogisticRegression, float, float]:
    """The model (fit on training) whose C has the best validation accuracy."""
    best = None
    for c in C_GRID:
        model = LogisticRegression(C=c, max_iter=5000).fit(x_tr, y_tr)
        acc = float((model.predict(x_va) == y_va).mean())
        if best is None or acc > best[2]:
            best = (model, c, acc)
    return best


def run_fold(x: np.ndarray, y: np.ndarray, fold_of: np.ndarray, k: int, n_folds: int) -> dict:
    """One fold's split sizes, chosen C, accuracies and test predictions."""
    test, valid = fold_of == k, fold_of == (k + 1) % n_folds
    train = ~(test | valid)
    scaler = StandardScaler().fit(x[train])
    xs = scaler.transform(x)
    model, c, valid_acc = fit_best(xs[train], y[train], xs[valid], y[valid])
    pred = model.predict(xs[test])
    styles, counts = np.unique(y[train], return_counts=True)
    majority = styles[np.argmax(counts)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        balanced = balanced_accuracy_score(y[test], pred)
    return {
        "fold": k,
        "n_train": int(train.sum()),
        "n_valid": int(valid.sum()),
        "n_test": int(test.sum()),
        "C": c,
        "valid_acc": valid_acc,
        "test_acc": float((pred == y[test]).mean()),
        "test_balanced_acc": float(balanced),
        "majority_acc": float((y[test] == majority).mean()),
        "pred": pred,
        "true": y[test],
    }


def report(name: str, results: list[dict]) -> list[str]:
    """The per-fold table, mean ± std, and the test recall per style over all folds."""
    lines = [
        f"MFCC(20)+delta mean/std -> logistic regression, {name}",
        f"{'fold':<5}{'train':>6}{'valid':>6}{'test':>6}{'C':>7}{'valid':>8}{'test':>8}"
        f"{'bal.':>8}{'major.':>8}",
    ]
    for r in results:
        lines.append(
            f"{r['fold']:<5}{r['n_train']:>6}{r['n_valid']:>6}{r['n_test']:>6}"
            f"{r['C']:>7g}{r['valid_acc']:>8.3f}{r['test_acc']:>8.3f}"
            f"{r['test_balanced_acc']:>8.3f}{r['majority_acc']:>8.3f}"
        )
    for key, label in (
        ("test_acc", "test accuracy"),
        ("test_balanced_acc", "balanced acc."),
        ("majority_acc", "majority class"),
    ):
        v = np.array([r[key] for r in results])
        lines.append(f"{label:<15} {v.mean():.3f} ± {v.std(ddof=1):.3f} (mean ± sample std)")
    true = np.concatenate([r["true"] for r in results])
    pred = np.concatenate([r["pred"] for r in results])
    lines.append(
        "test recall per style (all folds): "
        + ", ".join(
            f"{s} {(pred[true == s] == s).mean():.2f} ({(true == s).sum()})"
            for s in np.unique(true)
        )
    )
    return lines


def write_csv(path: Path, name: str, results: list[dict]) -> None:
    keys = [
        "fold",
        "n_train",
        "n_valid",
        "n_test",
        "C",
        "valid_acc",
        "test_acc",
        "test_balanced_acc",
        "majority_acc",
    ]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["dataset", *keys])
        for r in results:
            w.writerow([name, *(r[k] for k in keys)])


def ungrouped_folds(y: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """A style-stratified fold per track, ignoring groups."""
    fold_of = np.zeros(len(y), dtype=int)
    splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for k, (_, test) in enumerate(splitter.split(np.zeros(len(y)), y)):
        fold_of[test] = k
    return fold_of


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dataset", type=Path, help="a dataset folder holding tracks.csv")
    ap.add_argument("--jobs", type=int, default=1, help="parallel decoding processes")
    ap.add_argument("--csv", type=Path, default=None, help="write the per-fold results here")
    ap.add_argument("--cache", type=Path, default=None, help="an .npz feature cache")
    ap.add_argument(
        "--ignore-groups",
        action="store_true",
        help="style-stratified folds over tracks instead of tracks.csv's folds",
    )
    ap.add_argument("--seed", type=int, default=0, help="seed of --ignore-groups folds")
    args = ap.parse_args(argv)
    start = time.perf_counter()
    paths, y, fold_of = read_tracks(args.dataset)
    x = features(paths, args.jobs, args.cache)
    n_folds = int(fold_of.max()) + 1
    if args.ignore_groups:
        fold_of = ungrouped_folds(y, n_folds, args.seed)
    results = [run_fold(x, y, fold_of, k, n_folds) for k in range(n_folds)]
    kind = "ungrouped stratified folds" if args.ignore_groups else "grouped folds of tracks.csv"
    name = f"{args.dataset.name}: {len(y)} tracks, {len(set(y))} styles, {n_folds} {kind}"
    print("\n".join(report(name, results)))
    if args.csv is not None:
        write_csv(args.csv, args.dataset.name, results)
    print(f"done in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
