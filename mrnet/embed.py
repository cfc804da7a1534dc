"""`mrnet embed`: a model's track embeddings, for similarity search and retrieval.

OUT/embeddings.npy  float32 [n, d]: MRNet's 128-d embedding (before the classifier);
                    the cnn baseline's penultimate layer (192-d)
OUT/index.csv       row, then track_id, split, label (a cache: the label names,
                    "|"-joined for multi-label) or path (audio files): row i of index.csv
                    is row i of embeddings.npy
OUT/failures.csv    audio files only: path, reason, for files that could not be read

A track is embedded the way evaluate scores it: whole up to ``--window`` seconds, else
the mean embedding of its windows (mrnet.scoring). Every file is written whole under a
temporary name before any is replaced, and index.csv is renamed into place last: a
folder with index.csv holds a complete result, and a disk fault keeps the previous one.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from mrnet import checkpoint
from mrnet.inputs import audio_features, expand_inputs, file_outputs
from mrnet.options import EmbedOptions
from mrnet.runtime import resolve_device
from mrnet.scoring import embedding_forward, split_means, window_frames
from pipeline.atomic import AGAIN, write_together, writing
from pipeline.cache.reader import open_cache, split_index
from pipeline.cache.verify import check_checksums
from pipeline.errors import BadInput
from pipeline.settings import check_choices


@dataclass
class Embedded:
    """What `run` wrote to ``out``: embeddings float32 [n, d], the index, the failures."""

    embeddings: np.ndarray
    index: pd.DataFrame
    failures: pd.DataFrame
    out: Path

    def summary(self) -> str:
        """A line per unreadable file, then what was written where."""
        lines = [
            f"{path}: cannot read ({reason})"
            for path, reason in self.failures.itertuples(index=False)
        ]
        n, d = self.embeddings.shape
        failed = f"; {len(self.failures)} unreadable, in failures.csv" if len(self.failures) else ""
        lines.append(
            f"{n} embeddings of {d} values written to {self.out}/ (embeddings.npy, "
            f"index.csv){failed}"
        )
        return "\n".join(lines)


def run(opts: EmbedOptions) -> Embedded:
    """`mrnet embed`: embeddings of a cache's tracks or of audio files, written to OUT/."""
    check_choices(opts)
    opts.check()
    ckpt = checkpoint.load(opts.checkpoint)
    model = checkpoint.load_model(ckpt, opts.ssl_model)
    device = resolve_device(opts.device)
    model = model.to(device).eval()
    window = window_frames(opts.window, ckpt.feature_config)
    forward = embedding_forward(model, device)
    if opts.cache is not None:
        emb, index, failures = _from_cache(opts, ckpt, forward, window)
    else:
        emb, index, failures = _from_files(opts, ckpt, forward, window)
    _write(opts.out, emb, index, failures)
    return Embedded(emb, index, failures, opts.out)


def _from_cache(opts: EmbedOptions, ckpt, forward, window: int):
    cache = open_cache(opts.cache)
    ckpt.check_cache(
        cache, f"checkpoint {opts.checkpoint}", fix="embed a cache built with the same settings"
    )
    present = [s for s in cache.manifest.splits if not cache.split(s).empty]
    if opts.split is not None and opts.split not in present:
        raise BadInput(
            f"split {opts.split!r} of cache {opts.cache} has no tracks; use one of {present}"
        )
    parts, rows = [], []
    for split in [opts.split] if opts.split else present:
        index = split_index(cache, split)
        check_checksums(cache.root, index.shards, opts.progress)
        emb = split_means(
            index, forward, window, opts.batch_size, "embeddings", f"embed {split}", opts.progress
        )
        parts.append(emb)
        rows.append(
            pd.DataFrame(
                {
                    "track_id": index.track_id,
                    "split": split,
                    "label": _label_names(index.label, ckpt.labels),
                }
            )
        )
    table = pd.concat(rows, ignore_index=True)
    table.insert(0, "row", np.arange(len(table)))
    return np.concatenate(parts).astype(np.float32), table, pd.DataFrame(columns=["path", "reason"])


def _label_names(label: np.ndarray, names: list[str]) -> list[str]:
    if label.ndim == 1:
        return [names[i] for i in label]
    return ["|".join(names[j] for j in np.flatnonzero(r)) for r in label]


def _from_files(opts: EmbedOptions, ckpt, forward, window: int):
    files, skipped = expand_inputs(opts.paths)
    cfg = audio_features(ckpt.feature_config, opts.ssl_model)
    out, kept, failed = [], [], []
    bar = tqdm(files, unit="file", desc="embed", disable=not opts.progress)
    for path, e, error in file_outputs(bar, cfg, forward, window, opts.batch_size):
        if error is not None:
            failed.append((str(path), error))
            continue
        out.append(e)
        kept.append(str(path))
    if not out:
        raise BadInput(
            f"none of the {len(files)} files could be read; pass MP3/WAV/FLAC/OGG audio files"
        )
    failed += [(str(p), "unsupported_format") for p in skipped]
    table = pd.DataFrame({"row": np.arange(len(kept)), "path": kept})
    return np.stack(out).astype(np.float32), table, pd.DataFrame(failed, columns=["path", "reason"])


def _write(out: Path, emb: np.ndarray, index: pd.DataFrame, failures: pd.DataFrame) -> None:
    """embeddings.npy, failures.csv (when there are failures), then index.csv, which marks
    a complete result: a disk fault keeps the previous result whole."""
    with writing(out, rerun=AGAIN):
        out.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.save(buf, emb)
    files = [(out / "embeddings.npy", buf.getvalue())]
    if len(failures):
        files.append((out / "failures.csv", failures.to_csv(index=False)))
    files.append((out / "index.csv", index.to_csv(index=False)))
    stale = () if len(failures) else (out / "failures.csv",)
    write_together(files, stale, AGAIN)
