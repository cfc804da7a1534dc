"""The checkpoint: one typed schema, atomic save, validated weights-only load.

A checkpoint file holds only tensors and plain types, so ``torch.load(path,
weights_only=True)`` reads it; `Checkpoint.to_dict` is exactly what is saved:

    format_version   2
    model_config     every constructor argument of the model (`ModelConfig`)
    feature_config   the log-mel settings of the cache it was trained on
    labels           label names in output order (the cache's label order)
    task             single (softmax over labels) | multi (a sigmoid per label)
    thresholds       multi-label: per-label decision thresholds chosen on validation
    train_config     the `TrainConfig` of the run, as plain types
    cache_fingerprint  which tracks the training cache held (`--resume` refuses others)
    run_id, world    the run this belongs to; torchrun processes that trained it
    epoch, history   epochs done; one metrics row per epoch (metrics.csv is made from it)
    best_epoch       first epoch with the best validation figure (None: none yet)
    model            the weights (state dict of the plain module: no DDP/compile prefixes)
    optimizer, scheduler, rng     RUN/last.pt only: what `--resume` continues from
    best_model       RUN/last.pt only: the weights (and best_thresholds: the thresholds) of
                     ``best_epoch``, so that a crash between writing last.pt and best.pt
                     can always be healed from last.pt

mrnet 0.1 checkpoints (format 1: arch, n_mels, n_classes, channels and genres at the
top level, best.pt a full copy of last.pt) load as the same type.
"""

from __future__ import annotations

import math
import os
import pickle
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import torch
from torch import nn

from mrnet.model import ModelConfig, build_model
from mrnet.task import TASKS
from pipeline.atomic import RERUN, write_atomic
from pipeline.errors import BadInput
from pipeline.features import FeatureConfig

CHECKPOINT_VERSION = 2


def best_epoch(history: list[dict], key: str = "val_acc") -> int | None:
    """The first epoch with the highest finite ``key``; the last epoch when no epoch has
    one (no validation split); None for an empty history."""
    scored = [r for r in history if isinstance(r.get(key), float) and math.isfinite(r[key])]
    if scored:
        top = max(r[key] for r in scored)
        return next(int(r["epoch"]) for r in scored if r[key] == top)
    return int(history[-1]["epoch"]) if history else None


@dataclass
class Checkpoint:
    """An in-memory checkpoint (see the module docstring for the fields)."""

    model_config: ModelConfig
    feature_config: dict
    labels: list[str]
    model: dict
    task: str = "single"
    thresholds: list[float] | None = None
    train_config: dict = field(default_factory=dict)
    cache_fingerprint: str | None = None
    run_id: str | None = None
    world: int = 1
    epoch: int = 0
    history: list[dict] = field(default_factory=list)
    best_epoch: int | None = None
    optimizer: dict | None = None
    scheduler: dict | None = None
    rng: dict | None = None
    best_model: dict | None = None
    best_thresholds: list[float] | None = None
    format_version: int = CHECKPOINT_VERSION

    @property
    def arch(self) -> str:
        """The model's architecture name (from its ModelConfig)."""
        return self.model_config.arch

    @property
    def select_by(self) -> str:
        """The validation figure that picks best.pt for this checkpoint's task."""
        return TASKS[self.task].select_by

    @property
    def resumable(self) -> bool:
        """Whether it holds what a resume needs: optimizer, scheduler, RNG and settings."""
        return None not in (self.optimizer, self.scheduler, self.rng) and bool(self.train_config)

    def check_cache(self, cache, what: object, fix: str) -> None:
        """Refuse a cache (pipeline.cache.Cache) whose task, features or label order
        differ from this checkpoint's; ``fix`` ends the one-line message."""
        if self.task != cache.manifest.task:
            raise BadInput(
                f"{what} is a {self.task}-label model and cache {cache.root} a "
                f"{cache.manifest.task}-label cache; {fix}"
            )
        if self.feature_config != cache.feature_config:
            fc, cc = self.feature_config, cache.feature_config
            diff = sorted(k for k in set(fc) | set(cc) if fc.get(k) != cc.get(k))
            raise BadInput(
                f"{what} was trained on other features than cache {cache.root} (differs in "
                f"{', '.join(diff)}); {fix}"
            )
        if list(self.labels) != list(cache.labels):
            raise BadInput(f"{what} has another genre order than cache {cache.root}; {fix}")

    def to_dict(self) -> dict:
        """The fields as a dict for saving (current format version), None fields left out."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["model_config"] = self.model_config.to_dict()
        d["format_version"] = CHECKPOINT_VERSION
        return {k: v for k, v in d.items() if v is not None}

    def as_best(self) -> Checkpoint:
        """What RUN/best.pt holds for this last.pt: the weights of ``best_epoch`` and the
        history up to it, without the optimizer state (best.pt is for scoring)."""
        if self.best_epoch is None:
            raise ValueError("no best epoch yet")
        current = self.best_epoch == self.epoch
        weights = self.model if current else self.best_model
        if weights is None:
            raise ValueError(f"the weights of epoch {self.best_epoch} are not in this file")
        return replace(
            self,
            model=weights,
            thresholds=self.thresholds if current else self.best_thresholds,
            best_thresholds=None,
            epoch=self.best_epoch,
            history=self.history[: self.best_epoch],
            optimizer=None,
            scheduler=None,
            rng=None,
            best_model=None,
        )

    @classmethod
    def from_dict(cls, d: object) -> Checkpoint:
        """Validate and convert a loaded dict (format 1 or 2); ValueError says what is wrong."""
        if not isinstance(d, dict):
            raise ValueError("not a dict")
        d = dict(d)
        version = d.get("format_version", 1)
        if version == 1:
            d = _from_version_1(d)
        elif version != CHECKPOINT_VERSION:
            raise ValueError(f"format {version!r} is newer than this mrnet reads")
        missing = [k for k in ("model_config", "feature_config", "labels", "model") if k not in d]
        if missing:
            raise ValueError(f"missing {', '.join(missing)}")
        if not isinstance(d["model_config"], dict):
            raise ValueError("model_config is not a dict")
        model_config = ModelConfig.from_dict(d.pop("model_config"))
        _check_state(d["model"], "model")
        if d.get("best_model") is not None:
            _check_state(d["best_model"], "best_model")
        if not isinstance(d["feature_config"], dict):
            raise ValueError("feature_config is not a dict")
        FeatureConfig.from_dict(d["feature_config"])  # raises ValueError when unusable
        labels = d["labels"]
        if not isinstance(labels, list) or not all(isinstance(g, str) for g in labels):
            raise ValueError("labels is not a list of names")
        if len(labels) != model_config.n_classes:
            raise ValueError(f"{len(labels)} labels for {model_config.n_classes} outputs")
        if d.get("task", "single") not in TASKS:
            raise ValueError(f"unknown task {d.get('task')!r}")
        for name in ("thresholds", "best_thresholds"):
            t = d.get(name)
            if t is not None and (not isinstance(t, list) or len(t) != len(labels)):
                raise ValueError(f"{name} do not fit the {len(labels)} labels")
        for name, kind in (
            ("optimizer", dict),
            ("scheduler", dict),
            ("rng", dict),
            ("train_config", dict),
            ("history", list),
        ):
            if d.get(name) is not None and not isinstance(d[name], kind):
                raise ValueError(f"{name} is not a {kind.__name__}")
        known = {f.name for f in fields(cls)}
        return cls(model_config=model_config, **{k: v for k, v in d.items() if k in known})


def _check_state(state: object, name: str) -> None:
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise ValueError(f"{name} is not a dict of tensors")


def _from_version_1(d: dict) -> dict:
    """mrnet 0.1's flat layout -> format 2 (the model settings it could not change then
    were the constructor defaults)."""
    try:
        model_config = {
            "arch": d["arch"],
            "n_mels": d["n_mels"],
            "n_classes": d["n_classes"],
            "channels": d.get("channels", 512),
        }
        out = {
            "model_config": model_config,
            "feature_config": d["feature_config"],
            "labels": d["genres"],
            "model": d["model"],
            "train_config": d.get("config") or {},
            "world": d.get("world", 1),
            "epoch": d.get("epoch", 0),
            "history": d.get("history") or [],
            "optimizer": d.get("optimizer"),
            "scheduler": d.get("scheduler"),
            "rng": d.get("rng"),
        }
    except KeyError as e:
        raise ValueError(f"missing {e.args[0]}") from None
    out["best_epoch"] = best_epoch(out["history"]) if isinstance(out["history"], list) else None
    return out


def load(path: str | os.PathLike, *, resume: bool = False) -> Checkpoint:
    """Read a checkpoint with ``weights_only=True`` onto the CPU and validate it; BadInput
    (one line) when it is absent, truncated, not weights-only, or not an mrnet checkpoint.
    ``resume``: it must also hold the optimizer state and config (RUN/last.pt)."""
    path = Path(path)
    if path.is_dir():
        raise BadInput(
            f"checkpoint {path} is a directory; pass a checkpoint file such as {path}/best.pt"
        )
    if not path.is_file():
        raise BadInput(f"checkpoint {path} does not exist; train one with `mrnet train`")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "GLOBAL" in str(e):  # a pickle that would import (and maybe run) code
            raise BadInput(
                f"{path} is not a weights-only mrnet checkpoint; refusing to load it "
                "(it may run code); pass RUN/best.pt or RUN/last.pt of an mrnet run"
            ) from None
        raise BadInput(_corrupt(path, e)) from None
    except Exception as e:  # torch raises many types for truncated or foreign files
        raise BadInput(_corrupt(path, e)) from None
    try:
        ckpt = Checkpoint.from_dict(raw)
    except (ValueError, TypeError) as e:
        raise BadInput(
            f"{path} is not a usable mrnet checkpoint ({str(e)[:120]}); pass RUN/best.pt or "
            "RUN/last.pt, or retrain"
        ) from None
    if resume and not ckpt.resumable:
        raise BadInput(
            f"{path} cannot be resumed from (no optimizer state or config); --resume needs "
            "RUN/last.pt of an mrnet run"
        )
    return ckpt


def _corrupt(path: Path, e: BaseException) -> str:
    """Why torch could not read ``path``, in words (torch's own texts run to paragraphs):
    a checkpoint is a zip archive, so a file that starts like one is damaged, and any
    other file is not a checkpoint at all."""
    with open(path, "rb") as f:
        zipped = f.read(4) == b"PK\x03\x04"
    what = (
        "is truncated or corrupt (an incomplete zip archive)"
        if zipped
        else ("is not a PyTorch checkpoint file")
    )
    return f"checkpoint {path} {what}; pass RUN/best.pt or RUN/last.pt of an mrnet run, or retrain"


def save(ckpt: Checkpoint, path: Path, rerun: str = RERUN) -> None:
    """torch.save through a temporary file, fsync, rename: ``path`` is always whole; a
    disk fault is a one-line BadInput (ending with ``rerun``) and leaves the old file."""
    write_atomic(path, lambda f: torch.save(ckpt.to_dict(), f), rerun)


def load_model(ckpt: Checkpoint, ssl_model: Path | None = None) -> nn.Module:
    """The checkpoint's model with its weights, on the CPU, in eval mode. BadInput when
    the weights do not fit or are not finite (a run that diverged), or when the model
    has a WavLM front-end and ``ssl_model`` (--ssl-model DIR) is missing or another."""
    ssl = None
    if ckpt.model_config.frontend:
        from mrnet.model.wavlm import frontend_ssl

        mc = ckpt.model_config
        ssl = frontend_ssl(mc.ssl_sha256, mc.ssl_config, ssl_model)
    elif ssl_model is not None and ckpt.feature_config.get("kind") != "wavlm":
        raise BadInput(
            "--ssl-model is for models trained on WavLM features or with --frontend wavlm; drop it"
        )
    model = build_model(ckpt.model_config, ssl)
    try:
        model.load_state_dict(ckpt.model)
    except RuntimeError as e:
        raise BadInput(
            f"checkpoint weights do not fit a {ckpt.arch} model "
            f"({str(e).splitlines()[0][:120]}); retrain with this version of mrnet"
        ) from e
    bad = [k for k, v in ckpt.model.items() if v.is_floating_point() and not v.isfinite().all()]
    if bad:
        raise BadInput(
            f"checkpoint weights hold NaN or infinity ({bad[0]}): the run diverged; retrain "
            "from a verified cache (`mrnet verify`)"
        )
    return model.eval()
