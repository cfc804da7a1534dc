"""`mrnet info`: a human-readable account of a cache, a run directory or a checkpoint."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from mrnet.options import InfoOptions
from pipeline.cache.describe import describe_cache
from pipeline.cache.layout import MANIFEST
from pipeline.errors import BadInput

if TYPE_CHECKING:
    from mrnet.checkpoint import Checkpoint


@dataclass
class Described:
    text: str

    def summary(self) -> str:
        """The description."""
        return self.text


def run(opts: InfoOptions) -> Described:
    """`mrnet info`."""
    return Described(describe(opts.path))


def describe(path: Path) -> str:
    """Dispatch on what ``path`` is: cache dir (manifest.json), run dir (last.pt) or *.pt."""
    if not path.exists():
        raise BadInput(f"{path} does not exist; pass a cache directory, run directory or .pt file")
    if path.is_dir() and (path / MANIFEST).exists():
        return describe_cache(path)
    if path.is_dir() and ((path / "last.pt").exists() or (path / "best.pt").exists()):
        return describe_run(path)
    if path.is_file() and path.suffix == ".pt":
        return describe_checkpoint(path)
    raise BadInput(
        f"{path} is neither a cache (manifest.json), a run directory (last.pt) nor a checkpoint"
    )


def _checkpoint_lines(path: Path, ck: Checkpoint) -> list[str]:
    mc, tc = ck.model_config, ck.train_config
    n_params = sum(v.numel() for v in ck.model.values())
    row = ck.history[ck.epoch - 1] if 0 < ck.epoch <= len(ck.history) else {}
    return [
        f"checkpoint {path}",
        f"  model    {mc.arch} channels={mc.channels} n_mels={mc.n_mels} "
        + (f"(input_layers={mc.input_layers}: learned layer weights) " if mc.input_layers else "")
        + f"{mc.n_classes} {ck.task}-label outputs ({n_params / 1e6:.2f} M weights and buffers)",
        *(
            [
                f"  frontend {mc.frontend}: a frozen WavLM of {len(mc.ssl_layers)} hidden states, "
                f"weights SHA-256 {mc.ssl_sha256[:12]} (not in this file: --ssl-model DIR)"
            ]
            if mc.frontend
            else []
        ),
        f"  epoch    {ck.epoch}  {ck.select_by} {row.get(ck.select_by, float('nan')):.4f}  "
        f"(best epoch of the run so far: {ck.best_epoch})",
        f"  labels   {', '.join(ck.labels)}",
        f"  features {ck.feature_config}",
        f"  trained  on {tc.get('cache')} batch {tc.get('batch_size')} lr {tc.get('lr')} "
        f"seed {tc.get('seed')} (tracks {ck.cache_fingerprint or 'not recorded'})",
    ]


def describe_checkpoint(path: Path) -> str:
    """A checkpoint file's model, epoch and figure, labels, features and training settings."""
    from mrnet import checkpoint  # torch: only for runs and checkpoints

    return "\n".join(_checkpoint_lines(path, checkpoint.load(path)))


def describe_run(path: Path) -> str:
    """A run folder: its last metrics, a warning when best.pt is stale, and its checkpoints."""
    from mrnet import checkpoint
    from mrnet.checkpoint import best_epoch

    parts = [f"run {path}"]
    metrics = path / "metrics.csv"
    if metrics.exists():
        m = pd.read_csv(metrics)
        parts.append(f"  {len(m)} epochs logged; last:")
        parts += ["    " + line for line in m.tail(3).to_string(index=False).splitlines()]
    last = checkpoint.load(path / "last.pt") if (path / "last.pt").exists() else None
    best = checkpoint.load(path / "best.pt") if (path / "best.pt").exists() else None
    if last is not None:
        b = best_epoch(last.history, last.select_by)
        if best is None or best.epoch != b:
            held = f"epoch {best.epoch}" if best is not None else "nothing"
            parts.append(
                f"  warning: best.pt holds {held} but the best epoch is {b} (the run was "
                "interrupted); `mrnet train --resume` repairs it"
            )
    if (path / "curves.png").exists():
        parts.append(f"  curves   {path / 'curves.png'} (loss, accuracy or mAP, learning rate)")
    for name, ck in (("best.pt", best), ("last.pt", last)):
        if ck is not None:
            parts += _checkpoint_lines(path / name, ck)
    return "\n".join(parts)
