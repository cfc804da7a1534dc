"""The state of a training run and how it is built from its settings (audiocraft's
builders): the model, optimizer, schedule, crops, loss and augmentation, plus what a
checkpoint records and restores."""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from mrnet.augment import Augment
from mrnet.checkpoint import Checkpoint, best_epoch
from mrnet.data import CropPlan, MemmapCrops, ResidentCrops, passes_for
from mrnet.model import ModelConfig, build_model
from mrnet.options import TrainConfig
from mrnet.runtime import Torchrun
from mrnet.seeds import rng_state, seed_all, set_rng_state
from mrnet.task import TASKS, Task
from pipeline.cache.reader import Cache, SplitIndex
from pipeline.errors import BadInput
from pipeline.features import FeatureConfig


def crop_frames(seconds: float, feature_config: dict) -> int:
    """Crop length in frames at the cache's frame rate (50 frames/s by default)."""
    return max(1, round(seconds * FeatureConfig.from_dict(feature_config).frames_per_second))


def state_copy(model: nn.Module) -> dict:
    """A CPU copy of a module's state dict."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


@dataclass(kw_only=True)
class Trainer:
    """One training run in memory: data, model, optimizer, schedule, history. ``model``
    is the plain module (what is saved); ``net`` runs the forward pass (compiled and/or
    DDP-wrapped ``model``)."""

    cfg: TrainConfig
    torchrun: Torchrun
    device: torch.device
    cache: Cache
    task: Task
    train_idx: SplitIndex
    val_idx: SplitIndex
    model_config: ModelConfig
    model: nn.Module
    net: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    source: MemmapCrops | ResidentCrops
    criterion: nn.Module
    augment: Augment
    weight: np.ndarray  # loss weights: per class (single-label) or per label's positives
    frames: int  # training crop length
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    epoch: int = 0
    history: list[dict] = field(default_factory=list)
    best_model: dict | None = None  # CPU copy of the weights of the best epoch
    thresholds: list[float] | None = None  # multi-label: per label, from validation
    best_thresholds: list[float] | None = None

    @property
    def best_epoch(self) -> int | None:
        """The epoch best.pt holds (`checkpoint.best_epoch` of the history); None before any."""
        return best_epoch(self.history, self.task.select_by)

    def restore(self, ck: Checkpoint) -> None:
        """Continue from ``ck`` (its weights, optimizer, schedule, history, RNG)."""
        self.model.load_state_dict(ck.model)
        self.optimizer.load_state_dict(ck.optimizer)
        self.scheduler.load_state_dict(ck.scheduler)
        set_rng_state(ck.rng)
        self.epoch, self.history = ck.epoch, list(ck.history)
        self.run_id = ck.run_id or self.run_id
        self.thresholds = ck.thresholds

    def checkpoint(self) -> Checkpoint:
        """RUN/last.pt of the current epoch."""
        current = self.best_epoch == self.epoch
        return Checkpoint(
            model_config=self.model_config,
            feature_config=self.cache.feature_config,
            labels=list(self.cache.labels),
            model=self.model.state_dict(),
            task=self.task.name,
            thresholds=self.thresholds,
            train_config=self.cfg.to_dict(),
            cache_fingerprint=self.cache.fingerprint,
            run_id=self.run_id,
            world=self.torchrun.world,
            epoch=self.epoch,
            history=list(self.history),
            best_epoch=self.best_epoch,
            optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(),
            rng=rng_state(),
            best_model=None if current else self.best_model,
            best_thresholds=None if current else self.best_thresholds,
        )


def build(
    cfg: TrainConfig,
    torchrun: Torchrun,
    device: torch.device,
    cache: Cache,
    train_idx: SplitIndex,
    val_idx: SplitIndex,
) -> Trainer:
    """A fresh run: seeded initial weights, optimizer, schedule, crops, loss.

    Args:
        cfg: the run's settings.
        torchrun: this process's place among the torchrun processes (DDP when enabled).
        device: where the model and the loss weights go.
        cache: the cache (task, labels, feature settings).
        train_idx: its training split (crops, loss weights).
        val_idx: its validation split.

    Returns:
        A Trainer at epoch 0 with an empty history.
    """
    task = TASKS[cache.manifest.task]
    frames = crop_frames(cfg.crop_seconds, cache.feature_config)
    features = FeatureConfig.from_dict(cache.feature_config)
    if features.ssl_layers and cfg.arch != "mrnet":
        raise BadInput(
            f"--arch {cfg.arch} reads log-mel images; a cache of WavLM features trains --arch mrnet"
        )
    model_config = cfg.model_config(train_idx.n_mels, len(cache.labels), len(features.ssl_layers))
    ssl = None
    if cfg.frontend:  # checked and loaded by prepare: the states of every layer, per channel
        from pipeline.ssl import cached_model

        ssl = cached_model(str(cfg.ssl_model.absolute()))
        layers = tuple(range(ssl.n_states))
        model_config = dataclasses.replace(
            model_config,
            n_mels=len(layers) * features.channels * ssl.dim,
            input_layers=len(layers),
            frontend=cfg.frontend,
            ssl_sha256=ssl.sha256,
            ssl_layers=layers,
            ssl_config=ssl.config,
        )
    seed_all(cfg.seed)
    model = build_model(model_config, ssl).to(device)
    if cfg.sync_bn and torchrun.enabled:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # same state_dict keys
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, amsgrad=True
    )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
        optimizer, T_0=cfg.t0, T_mult=cfg.t_mult, eta_min=cfg.lr_min
    )
    weight = task.loss_weights(train_idx.label, len(cache.labels))
    passes = passes_for(len(train_idx), cfg.batch_size, torchrun.world, cfg.min_steps)
    plan = CropPlan(
        train_idx.length, frames, cfg.batch_size, cfg.seed, torchrun.rank, torchrun.world, passes
    )
    if cfg.data_on_gpu:
        source = ResidentCrops(train_idx, plan, device)
    else:
        source = MemmapCrops(train_idx, plan, cfg.workers, pin_memory=device.type == "cuda")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    net = torch.compile(model) if cfg.compile else model
    if torchrun.enabled:  # broadcasts rank 0's parameters and buffers
        net = DDP(net, device_ids=[device.index] if device.type == "cuda" else None)
    return Trainer(
        cfg=cfg,
        torchrun=torchrun,
        device=device,
        cache=cache,
        task=task,
        train_idx=train_idx,
        val_idx=val_idx,
        model_config=model_config,
        model=model,
        net=net,
        optimizer=optimizer,
        scheduler=scheduler,
        source=source,
        criterion=task.criterion(torch.from_numpy(weight).to(device)),
        augment=Augment.from_config(cfg).to(device),
        weight=weight,
        frames=frames,
    )
