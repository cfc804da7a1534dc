"""`mrnet train`: cache -> RUN/ (last.pt, best.pt, metrics.csv, tb/).

One loop, nanoGPT style. Per epoch: a random crop of every training track
(mrnet.data), additive Gaussian noise and optional SpecAugment on the device, a
forward pass (bf16 autocast on CUDA, fp32 on CPU), class-weighted cross entropy
(weight = max count / count over the training split), AdamW (amsgrad), gradient
clipping; then the cosine-with-warm-restarts schedule steps and the whole tracks of
FMA's `validation` split are scored (never `test`). Then RUN/best.pt (when validation
accuracy improved), RUN/last.pt and metrics.csv are replaced atomically, in that order.

What a crash cannot break: last.pt holds the whole run (states, history, and the
weights of the best epoch), and best.pt and metrics.csv are views of it. A kill between
two writes leaves a view one epoch behind or ahead; `--resume` rewrites both from
last.pt (best.pt: the first epoch with the highest validation accuracy in the history;
for a run directory of mrnet 0.1, whose last.pt lacks those weights, by replaying the
epochs from the latest checkpoint that has them) before it goes on. A loss that turns
NaN or infinite stops the run at once (exit 2, naming the batch's tracks) before
anything is saved. RUN/.lock keeps a second run out of the directory.

Reproducibility: every epoch reseeds torch / numpy / random from (seed, epoch, rank)
and draws its crops from the same triple (mrnet.seeds), so an epoch's randomness does
not depend on how the run got there; on CPU a resumed run ends with the weights and
metrics of an uninterrupted one (with the same process count).

Under torchrun (see mrnet.runtime) every process trains a DistributedDataParallel
replica on its disjoint share of each epoch's crops (`--batch-size` is per process) and
validates a disjoint share of the validation tracks (all-reduced, after taking rank 0's
BatchNorm buffers, so the figures are those of the saved model). Only rank 0 writes RUN/
and prints. The cache, and RUN/ for `--resume`, must be readable on every node.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
import signal
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from mrnet import checkpoint as ckpt_io
from mrnet.augment import Augment, mixup
from mrnet.baseline import DESCRIPTION, has_statistics
from mrnet.baseline import fit as fit_baseline_model
from mrnet.checkpoint import SELECT_BY, Checkpoint, best_epoch
from mrnet.data import CropPlan, MemmapCrops, ResidentCrops, passes_for
from mrnet.deps import load_torchaudio
from mrnet.metrics import choose_thresholds, validation_figures
from mrnet.model import ModelConfig, build_model
from mrnet.options import RecipeArgs, TrainConfig
from mrnet.plots import plot_curves
from mrnet.recipe import resolve, resumed, to_toml
from mrnet.runtime import (
    Dist,
    autocast,
    broadcast_buffers,
    collective_device,
    init_distributed,
    resolve_device,
    same_outcome,
)
from mrnet.scoring import score, window_frames
from mrnet.seeds import epoch_seed, rng_state, seed_all, set_rng_state
from mrnet.tracking import Trackers, require_wandb
from pipeline.atomic import RERUN, remove_temps, write_atomic
from pipeline.cache.reader import Cache, SplitIndex, open_cache, split_index
from pipeline.cache.verify import damaged_error, format_report, verify_cache
from pipeline.errors import BadInput
from pipeline.features import FeatureConfig
from pipeline.lock import DirLock
from pipeline.settings import check_choices, flag_of

# metrics.csv columns of each task (multi-label: mAP = macro PR-AUC; ROC-AUC)
METRIC_COLUMNS = {
    "single": ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "train_samples",
               "val_tracks"),
    "multi": ("epoch", "train_loss", "val_loss", "val_map", "val_macro_auc", "lr",
              "train_samples", "val_tracks"),
}  # fmt: skip
TIMING_COLUMNS = ("seconds", "samples_per_s")  # differ between otherwise identical runs
SCORING_COLUMN = "val_scoring"  # how validation scored a track (fixed crops, whole tracks)
POS_WEIGHT_CAP = 10.0  # multi-label: negatives / positives of a label, at most this
STEP_DELAY_ENV = "MRNET_TRAIN_STEP_DELAY"  # test hook: seconds to sleep after each step
KILL_AT_ENV = "MRNET_TEST_KILL_AT"  # test hook: "best.pt@3" SIGKILLs after that write
_NO_BAD = 2**62  # "no non-finite loss yet" in the device-side step counter


# ---------------------------------------------------------------- checks


RESUME_FIX = "resume with the cache it was trained on or start a new --out"


def check_resume(ckpt: Checkpoint, cache: Cache, what: Path) -> None:
    """Features, label order and the very tracks must be those the run trained on."""
    ckpt.check_cache(cache, what, RESUME_FIX)
    if ckpt.cache_fingerprint and ckpt.cache_fingerprint != cache.fingerprint:
        raise BadInput(
            f"cache {cache.root} holds other tracks than {what} was trained on (track "
            f"fingerprint {cache.fingerprint}, run: {ckpt.cache_fingerprint}); {RESUME_FIX}"
        )


def check_config(cfg: TrainConfig, n_train: int, world: int, cache: Path) -> None:
    """The checks that need more than the settings: the training split's size, CUDA for
    --sync-bn, torchaudio for SpecAugment."""
    if cfg.specaugment:
        load_torchaudio("torchaudio.transforms")  # before any work: one line if it cannot load
    if cfg.sync_bn and not (cfg.device != "cpu" and torch.cuda.is_available()):
        raise BadInput(
            "--sync-bn needs CUDA GPUs (SyncBatchNorm syncs over NCCL, not on the CPU); "
            "drop --sync-bn or train on GPUs"
        )
    if cfg.batch_size * world > n_train:
        raise BadInput(
            f"--batch-size {cfg.batch_size} (x {world} processes) is larger than the {n_train} "
            f"training tracks of {cache}; pass --batch-size {n_train // world} or less"
        )


def check_labels(cache: Cache, train_idx: SplitIndex, say: bool = True) -> None:
    """Every label needs training tracks: a single-label class without any can never be
    predicted (and would get class weight 0), so it is refused; a multi-label label
    without a positive is noted (``say``)."""
    counts = train_idx.label.sum(axis=0) if train_idx.label.ndim == 2 else np.bincount(
        train_idx.label, minlength=len(cache.labels))  # fmt: skip
    missing = [name for name, n in zip(cache.labels, counts) if n == 0]
    if not missing:
        return
    more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
    shown = ", ".join(missing[:10]) + more
    if cache.manifest.task == "multi":
        if say:
            tqdm.write(f"warning: labels without a positive training track: {shown}")
        return
    raise BadInput(
        f"labels {shown} have no training tracks in cache {cache.root}: a model cannot learn "
        "them; add training tracks of each label (or leave those labels out) and preprocess again"
    )


def crop_frames(seconds: float, feature_config: dict) -> int:
    """Crop length in frames at the cache's frame rate (50 frames/s by default)."""
    return max(1, round(seconds * FeatureConfig.from_dict(feature_config).frames_per_second))


def class_weights(labels: np.ndarray, n_classes: int) -> torch.Tensor:
    """Float32 [n_classes]: max count / count; 0 for classes absent from training."""
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    w = np.where(counts > 0, counts.max() / np.maximum(counts, 1), 0.0)
    return torch.tensor(w, dtype=torch.float32)


def positive_weights(labels: np.ndarray) -> torch.Tensor:
    """Float32 [n_labels]: negatives / positives of each label over the training tracks
    (labels uint8 [n, n_labels]), at most POS_WEIGHT_CAP (also for a label that has no
    positive training track)."""
    pos = labels.sum(axis=0).astype(np.float64)
    w = np.where(pos > 0, (len(labels) - pos) / np.maximum(pos, 1), POS_WEIGHT_CAP)
    return torch.tensor(np.clip(w, 1e-3, POS_WEIGHT_CAP), dtype=torch.float32)


# ---------------------------------------------------------------- one epoch


def _raise_if_non_finite(
    first_bad: torch.Tensor, plan: list, index: SplitIndex, epoch: int, ddp: Dist, cache: Path
) -> None:
    """Stop every process at the first step whose loss was not finite (device counter:
    one host sync per check). The process that saw it names its batch's tracks."""
    code = torch.where(first_bad < _NO_BAD, first_bad * ddp.world + ddp.rank, first_bad)
    if ddp.enabled:
        code = code.to(collective_device())
        dist.all_reduce(code, op=dist.ReduceOp.MIN)
    code = int(code)
    if code >= _NO_BAD:
        return
    step, rank = divmod(code, ddp.world)
    if rank != ddp.rank:
        raise BadInput(
            f"training loss became NaN or infinite at epoch {epoch} on torchrun process {rank} "
            "(see its error); last.pt and best.pt are left as they were"
        )
    ids = " ".join(str(t) for t in index.track_id[plan[step][0]].tolist())
    raise BadInput(
        f"training loss became NaN or infinite at epoch {epoch}, step {step + 1}, on a batch "
        f"of tracks {ids}; last.pt and best.pt are left as they were; check the cache with "
        f"`mrnet verify {cache}` (or lower --lr) and rerun"
    )


def train_epoch(
    net: nn.Module,
    source: MemmapCrops | ResidentCrops,
    index: SplitIndex,
    epoch: int,
    optimizer: torch.optim.Optimizer,
    criterion: nn.Module,
    augment: Augment,
    cfg: TrainConfig,
    device: torch.device,
    ddp: Dist,
) -> tuple[float, float, int]:
    """One pass over the epoch's crops. Returns (mean loss, accuracy, samples) over all
    ranks (accuracy NaN for multi-label targets y [B, n_labels]); BadInput at the first
    non-finite loss (checked every step on CPU, every 16 steps on a GPU, where each
    check is a host sync)."""
    net.train()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.float64, device=device)
    first_bad = torch.full((), _NO_BAD, dtype=torch.int64, device=device)
    plan, steps, seen = source.plan.epoch(epoch), len(source), 0
    check_every = 1 if device.type == "cpu" else 16
    delay = float(os.environ.get(STEP_DELAY_ENV, "0") or 0)
    bar = tqdm(  # on rank 0, counting the samples of all processes
        total=steps * cfg.batch_size * ddp.world,
        desc=f"epoch {epoch}/{cfg.epochs}",
        unit="sample",
        leave=False,
        disable=not (cfg.progress and ddp.main),
    )
    for step, (x, y) in enumerate(source.batches(epoch)):
        x = augment(x.to(device, non_blocking=True))
        y = y.to(device, non_blocking=True)
        multi = y.ndim == 2
        if multi:
            y = y.float()
        if cfg.mixup > 0:
            x, partner, lam = mixup(x, y, cfg.mixup)
        with autocast(device):
            logits = net(x)
        loss = criterion(logits.float(), y)
        if cfg.mixup > 0:
            loss = lam * loss + (1 - lam) * criterion(logits.float(), partner)
        bad = ~torch.isfinite(loss) & (first_bad == _NO_BAD)
        first_bad = torch.where(bad, torch.full_like(first_bad, step), first_bad)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
        optimizer.step()
        loss_sum += loss.detach() * len(y)
        if not multi:
            correct += (logits.argmax(1) == y).sum()
        seen += len(y)
        bar.update(len(y) * ddp.world)
        if (step + 1) % check_every == 0 or step + 1 == steps:
            _raise_if_non_finite(first_bad, plan, index, epoch, ddp, cfg.cache)
        if step % 10 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
        if delay:
            time.sleep(delay)
    bar.close()
    totals = torch.stack([loss_sum, correct, torch.tensor(float(seen), device=device).double()])
    if ddp.enabled:
        dist.all_reduce(totals)
    loss_sum, correct, seen = totals.tolist()
    return loss_sum / seen, (math.nan if multi else correct / seen), int(seen)


@torch.no_grad()
def validate(
    model: nn.Module,
    index: SplitIndex,
    weight: torch.Tensor,
    device: torch.device,
    window: int,
    max_frames: int,
    ddp: Dist = Dist(),
    crops: int = 0,
) -> tuple[float, float]:
    """(class-weighted mean cross entropy, accuracy) of the tracks of ``index``, each
    scored as its mean window probability p (mrnet.scoring; loss -w_y log p_y); NaNs
    when it is empty. Under torchrun each process scores its share
    (``index.share(rank, world)``) and the float64 sums [sum of w_y * loss, sum of w_y,
    correct, tracks, non-finite tracks] are all-reduced: every process returns the whole
    split's figures. BadInput when a track's outputs are not finite. ``model`` is the
    plain module (not DDP), the same on every process."""
    if len(index) == 0:
        return math.nan, math.nan
    share = index.share(ddp.rank, ddp.world)
    sums = torch.zeros(5, dtype=torch.float64, device=device)
    bad_ids: list = []
    if len(share):
        probs = score(model, share, False, device, window, max_frames, crops=crops)
        finite = np.isfinite(probs).all(axis=1)
        bad_ids = share.track_id[~finite].tolist()
        y = share.label
        w = weight.double().cpu().numpy()[y]
        p_true = np.maximum(probs[np.arange(len(y)), y], np.finfo(np.float64).tiny)
        sums += torch.tensor([
            float((w * -np.log(p_true))[finite].sum()), float(w[finite].sum()),
            float((probs.argmax(1) == y)[finite].sum()), len(y), float((~finite).sum()),
        ], dtype=torch.float64, device=device)  # fmt: skip
    if ddp.enabled:
        dist.all_reduce(sums)
    loss_sum, weight_sum, correct, count, n_bad = sums.tolist()
    if n_bad:
        shown = f" (here: {' '.join(map(str, bad_ids[:10]))})" if bad_ids else ""
        raise BadInput(
            f"validation outputs are NaN or infinite for {int(n_bad)} tracks{shown}; last.pt "
            f"and best.pt are left as they were; check the cache with `mrnet verify` and rerun"
        )
    assert count == len(index), (count, len(index))  # the shares cover the split once
    return (loss_sum / weight_sum if weight_sum else math.nan), correct / count


@torch.no_grad()
def validate_multi(
    model: nn.Module,
    index: SplitIndex,
    pos_weight: torch.Tensor,
    device: torch.device,
    window: int,
    max_frames: int,
    ddp: Dist = Dist(),
    prior: np.ndarray | None = None,
    crops: int = 0,
) -> tuple[dict[str, float], list[float]]:
    """Multi-label validation of the tracks of ``index``, each scored as its mean window
    probability p: ({val_loss (mean pos-weighted binary cross entropy of p), val_map,
    val_macro_auc}, per-label thresholds that maximise F1; ``prior``: the labels'
    training frequencies, for labels without validation positives). Under torchrun each
    process scores its share and the probabilities are gathered, so every process
    computes the whole split's figures. BadInput when outputs are not finite."""
    n_labels = index.label.shape[1]
    if len(index) == 0:
        nan = math.nan
        return {"val_loss": nan, "val_map": nan, "val_macro_auc": nan}, [0.5] * n_labels
    positions = np.arange(ddp.rank, len(index), ddp.world)
    share = index.subset(positions)
    local = (positions, score(model, share, True, device, window, max_frames, crops=crops)
             if len(share) else np.zeros((0, n_labels)))  # fmt: skip
    parts = [local]
    if ddp.enabled:
        parts = [None] * ddp.world
        dist.all_gather_object(parts, local)
    probs = np.zeros((len(index), n_labels), np.float64)
    for r, out in parts:
        probs[r] = out
    bad = ~np.isfinite(probs).all(axis=1)
    if bad.any():
        shown = " ".join(map(str, index.track_id[bad][:10].tolist()))
        raise BadInput(
            f"validation outputs are NaN or infinite for {int(bad.sum())} tracks (e.g. "
            f"{shown}); last.pt and best.pt are left as they were; check the cache with "
            "`mrnet verify` and rerun"
        )
    y = index.label.astype(np.float64)
    pw = pos_weight.double().cpu().numpy()[None, :]
    tiny = np.finfo(np.float64).tiny
    loss = -(pw * y * np.log(np.maximum(probs, tiny))
             + (1 - y) * np.log(np.maximum(1 - probs, tiny))).mean()  # fmt: skip
    figures = {"val_loss": float(loss), **validation_figures(index.label, probs)}
    return figures, choose_thresholds(index.label, probs, prior)


def write_metrics(path: Path, history: list[dict], task: str = "single",
                  rerun: str = RERUN) -> None:  # fmt: skip
    """metrics.csv from the history: the task's METRIC_COLUMNS, then TIMING_COLUMNS."""
    buf = io.StringIO()
    columns = [*METRIC_COLUMNS[task], SCORING_COLUMN, *TIMING_COLUMNS]
    w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    w.writeheader()
    w.writerows(history)
    write_atomic(path, buf.getvalue(), rerun)


def validation_scoring(cfg: TrainConfig) -> str:
    """How validation scores a track, in words (metrics.csv's val_scoring column)."""
    if cfg.val_crops:
        return f"mean of {cfg.val_crops} crops of {cfg.crop_seconds:g} s"
    return f"whole tracks ({cfg.window:g}-s windows)" if cfg.window else "whole tracks"


def epoch_line(row: dict, epochs: int) -> str:
    if "val_map" in row:
        figures = (f"train loss {row['train_loss']:.4f}  val loss {row['val_loss']:.4f} "
                   f"mAP {row['val_map']:.3f} ROC-AUC {row['val_macro_auc']:.3f}")  # fmt: skip
    else:
        figures = (f"train loss {row['train_loss']:.4f} acc {row['train_acc']:.3f}  "
                   f"val loss {row['val_loss']:.4f} acc {row['val_acc']:.3f}")  # fmt: skip
    rate = row["samples_per_s"]
    shown = f"{rate:.0f}" if rate >= 10 else f"{rate:.2g}"  # never "0 samples/s"
    return (
        f"epoch {row['epoch']}/{epochs}  {figures}  lr {row['lr']:.2e}  "
        f"{shown} samples/s  {row['seconds']:.1f} s"
    )


# ---------------------------------------------------------------- the run's state


@dataclass
class Run:
    """One training run in memory: data, model, optimizer, schedule and history."""

    cfg: TrainConfig
    ddp: Dist
    device: torch.device
    cache: Cache
    train_idx: SplitIndex
    val_idx: SplitIndex
    model_config: ModelConfig
    model: nn.Module  # the plain module: what is saved
    net: nn.Module  # what runs the forward pass: compiled and/or DDP-wrapped ``model``
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    source: MemmapCrops | ResidentCrops
    criterion: nn.Module
    augment: Augment
    weight: torch.Tensor  # class weights (single-label) or positive weights (multi-label)
    frames: int
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    epoch: int = 0
    history: list[dict] = field(default_factory=list)
    best_model: dict | None = None  # CPU copy of the weights of the best epoch
    thresholds: list[float] | None = None  # multi-label: per label, from validation
    best_thresholds: list[float] | None = None

    @property
    def task(self) -> str:
        return self.cache.manifest.task

    @property
    def select_by(self) -> str:
        return SELECT_BY[self.task]

    @property
    def best_epoch(self) -> int | None:
        return best_epoch(self.history, self.select_by)

    def restore(self, ck: Checkpoint) -> None:
        """Continue from ``ck`` (its weights, optimizer, schedule, history, RNG)."""
        self.model.load_state_dict(ck.model)
        self.optimizer.load_state_dict(ck.optimizer)
        self.scheduler.load_state_dict(ck.scheduler)
        set_rng_state(ck.rng)
        self.epoch, self.history = ck.epoch, list(ck.history)
        self.run_id = ck.run_id or self.run_id
        self.thresholds = ck.thresholds

    def run_epoch(self) -> dict:
        """Train and validate the next epoch; returns its metrics row."""
        cfg, ddp = self.cfg, self.ddp
        epoch = self.epoch + 1
        seed_all(epoch_seed(cfg.seed, epoch, ddp.rank))
        lr = self.optimizer.param_groups[0]["lr"]
        t0 = time.perf_counter()
        train_loss, train_acc, seen = train_epoch(
            self.net, self.source, self.train_idx, epoch, self.optimizer, self.criterion,
            self.augment, cfg, self.device, ddp,
        )  # fmt: skip
        train_s = time.perf_counter() - t0
        self.scheduler.step()
        if ddp.enabled:
            broadcast_buffers(self.model)  # score (and save) the same model everywhere
        max_frames = cfg.batch_size * self.frames
        crops = cfg.val_crops
        window = self.frames if crops else window_frames(cfg.window, self.cache.feature_config)
        if self.task == "multi":
            figures, self.thresholds = validate_multi(
                self.model, self.val_idx, self.weight, self.device, window, max_frames, ddp,
                prior=self.train_idx.label.mean(axis=0), crops=crops,
            )
        else:
            val_loss, val_acc = validate(
                self.model, self.val_idx, self.weight, self.device, window, max_frames, ddp,
                crops=crops,
            )
            figures = {"train_acc": train_acc, "val_loss": val_loss, "val_acc": val_acc}
        self.epoch = epoch
        return {
            "epoch": epoch,
            "train_loss": train_loss,
            **figures,
            "lr": lr,
            "train_samples": seen,
            "val_tracks": len(self.val_idx),
            "val_scoring": validation_scoring(cfg),
            "seconds": round(time.perf_counter() - t0, 3),
            "samples_per_s": round(seen / train_s, 1),
        }

    def checkpoint(self) -> Checkpoint:
        """RUN/last.pt of the current epoch."""
        return Checkpoint(
            model_config=self.model_config,
            feature_config=self.cache.feature_config,
            labels=list(self.cache.labels),
            model=self.model.state_dict(),
            task=self.task,
            thresholds=self.thresholds,
            train_config=self.cfg.to_dict(),
            cache_fingerprint=self.cache.fingerprint,
            run_id=self.run_id,
            world=self.ddp.world,
            epoch=self.epoch,
            history=list(self.history),
            best_epoch=self.best_epoch,
            optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(),
            rng=rng_state(),
            best_model=self.best_model if self.best_epoch != self.epoch else None,
            best_thresholds=self.best_thresholds if self.best_epoch != self.epoch else None,
        )


def _state_copy(model: nn.Module) -> dict:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def build_run(cfg: TrainConfig, ddp: Dist, device: torch.device, cache: Cache,
              train_idx: SplitIndex, val_idx: SplitIndex) -> Run:  # fmt: skip
    """A fresh run: seeded initial weights, optimizer, schedule, loader."""
    frames = crop_frames(cfg.crop_seconds, cache.feature_config)
    model_config = cfg.model_config(train_idx.n_mels, len(cache.labels))
    seed_all(cfg.seed)
    model = build_model(model_config).to(device)
    if cfg.sync_bn and ddp.enabled:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # same state_dict keys
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, amsgrad=True
    )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
        optimizer, T_0=cfg.t0, T_mult=cfg.t_mult, eta_min=cfg.lr_min
    )
    if cache.manifest.task == "multi":
        weight = positive_weights(train_idx.label).to(device)
        criterion: nn.Module = nn.BCEWithLogitsLoss(pos_weight=weight)
    else:
        weight = class_weights(train_idx.label, model_config.n_classes).to(device)
        criterion = nn.CrossEntropyLoss(weight=weight)
    passes = passes_for(len(train_idx), cfg.batch_size, ddp.world, cfg.min_steps)
    plan = CropPlan(train_idx.length, frames, cfg.batch_size, cfg.seed, ddp.rank, ddp.world,
                    passes)  # fmt: skip
    if cfg.data_on_gpu:
        source = ResidentCrops(train_idx, plan, device)
    else:
        source = MemmapCrops(train_idx, plan, cfg.workers, pin_memory=device.type == "cuda")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    net = torch.compile(model) if cfg.compile else model
    if ddp.enabled:  # broadcasts rank 0's parameters and buffers
        net = DDP(net, device_ids=[device.index] if device.type == "cuda" else None)
    return Run(
        cfg, ddp, device, cache, train_idx, val_idx, model_config, model, net, optimizer,
        scheduler, source, criterion, Augment.from_config(cfg).to(device), weight, frames,
    )  # fmt: skip


# ---------------------------------------------------------------- best.pt


def _read_best(path: Path) -> Checkpoint | None:
    try:
        return ckpt_io.load(path)
    except BadInput:
        return None  # missing, truncated or foreign: rewritten below


def _holds_best(best: Checkpoint | None, last: Checkpoint, b: int) -> bool:
    """``best`` is the checkpoint of epoch ``b`` of the run in ``last``."""
    if best is None or best.epoch != b or best.history != last.history[:b]:
        return False
    if best.run_id and last.run_id and best.run_id != last.run_id:
        return False
    weights = last.model if b == last.epoch else last.best_model
    if weights is not None:
        return set(weights) == set(best.model) and all(
            torch.equal(weights[k], best.model[k]) for k in weights
        )
    return True


def heal_best(run: Run, last: Checkpoint) -> None:
    """Make RUN/best.pt the checkpoint of the first epoch with the best validation figure
    in last.pt's history, and set ``run.best_model`` to its weights. The weights come
    from last.pt; for a last.pt of mrnet 0.1 (no best weights in it) the epochs up to the
    best one are replayed from best.pt (when it is an earlier, resumable epoch of the same
    run) or from the start. ``run`` is left at last.pt's state by the caller."""
    out = run.cfg.out / "best.pt"
    b = best_epoch(last.history, run.select_by)
    if b is None:
        return
    current = _read_best(out)
    if run.ddp.enabled:
        dist.barrier()  # every process has read best.pt before rank 0 may rewrite it
    if _holds_best(current, last, b):
        run.best_model = current.model
        return
    if b == last.epoch:
        weights = last.model
    elif last.best_model is not None:
        weights = last.best_model
    else:
        start = current
        usable = (
            start is not None and start.resumable and start.epoch < b
            and start.history == last.history[: start.epoch]
        )  # fmt: skip
        weights = _replay(run, start if usable else None, b, last)
    run.best_model = weights
    if run.ddp.main:
        was = f"epoch {current.epoch}" if current is not None else "no readable checkpoint"
        healed = dataclasses.replace(last, best_model=weights, best_epoch=b)
        ckpt_io.save(healed.as_best(), out)
        tqdm.write(f"note: repaired {out}: it held {was}; the best epoch is {b}")


def _replay(run: Run, start: Checkpoint | None, target: int, last: Checkpoint) -> dict:
    """Train epochs up to ``target`` again from ``start`` (None: from the run's seeded
    initial state, which ``run`` holds when fresh) and return the weights at ``target``."""
    if start is not None:
        run.restore(start)
    first = run.epoch + 1
    if run.ddp.main:
        tqdm.write(f"note: rebuilding best.pt: replaying epochs {first}-{target} of {run.cfg.out}")
    while run.epoch < target:
        row = run.run_epoch()
    want = last.history[target - 1]
    key = run.select_by
    if run.ddp.main and not math.isclose(row[key], want[key], abs_tol=1e-9):
        tqdm.write(
            f"warning: the replayed epoch {target} scored {key} {row[key]:.4f}, the run "
            f"logged {want[key]:.4f} (GPU nondeterminism); best.pt holds the replay"
        )
    return _state_copy(run.model)


# ---------------------------------------------------------------- the run


def _fault_point(name: str, epoch: int) -> None:
    """Test hook: SIGKILL this process right after writing ``name`` in ``epoch``."""
    if os.environ.get(KILL_AT_ENV) == f"{name}@{epoch}":
        os.kill(os.getpid(), signal.SIGKILL)


def save_epoch(run: Run, improved: bool) -> None:
    """best.pt (when improved), then last.pt, then metrics.csv and curves.png: last.pt is
    the truth, and a kill between two writes is repaired from it by `--resume` (see
    heal_best)."""
    out, epoch = run.cfg.out, run.epoch
    rerun = "rerun with --resume" if (out / "last.pt").exists() else RERUN
    last = run.checkpoint()
    if improved:
        ckpt_io.save(last.as_best(), out / "best.pt", rerun)
        _fault_point("best.pt", epoch)
    ckpt_io.save(last, out / "last.pt", rerun)
    _fault_point("last.pt", epoch)
    write_metrics(out / "metrics.csv", run.history, run.task, rerun)
    _fault_point("metrics.csv", epoch)
    plot_curves(run.history, run.select_by, out / "curves.png", rerun)


@dataclass
class Trained:
    """What `mrnet train` reports: run dir, epochs done, the best validation figure
    (``select_by``: val_acc or val_map) and its epoch (the one best.pt holds); ``main`` is
    False on the other torchrun processes."""

    main: bool
    run: str
    epochs: int
    select_by: str
    best: float
    best_epoch: int | None
    last: dict | None
    baseline: float | None = None  # the built-in baseline's validation figure

    def summary(self) -> str:
        if not self.main:
            return ""
        figure = {"val_acc": "accuracy", "val_map": "mAP"}[self.select_by]
        text = (
            f"{self.epochs} epochs in {self.run}; best validation {figure} {self.best:.3f} "
            f"(epoch {self.best_epoch}): {self.run}/best.pt, last.pt, metrics.csv"
        )
        if self.baseline is None or not math.isfinite(self.baseline):
            return text
        if self.best < self.baseline:
            return text + (
                f"\nbelow the baseline: its validation {figure} is {self.baseline:.3f} "
                f"({DESCRIPTION}; `mrnet baseline` writes its report): train longer, or "
                "see README's Train section for settings measured on real music"
            )
        return text + f" (the baseline's: {self.baseline:.3f})"


@dataclass
class Printed:
    """`--print-config`: the settings a run would use, as a recipe."""

    text: str

    def summary(self) -> str:
        return self.text.rstrip("\n")


def run(cfg: TrainConfig, recipe: RecipeArgs | None = None,
        given: set[str] | frozenset = frozenset()) -> Trained | Printed:  # fmt: skip
    """`mrnet train`: the settings from defaults < recipe < the flags ``given`` (values in
    ``cfg``) < --set, then train, or print them (--print-config)."""
    recipe = recipe or RecipeArgs()
    cfg, source = resolve(cfg, recipe, set(given))
    if recipe.print_config:
        if cfg.resume and cfg.out is not None and (Path(cfg.out) / "last.pt").is_file():
            cfg = resumed(cfg, _stored(ckpt_io.load(Path(cfg.out) / "last.pt")), source)
        return Printed(to_toml(cfg))
    return train(cfg, source)


def train(cfg: TrainConfig, source: dict | None = None) -> Trained:
    """Train (or resume) the run in ``cfg.out``. ``source``: the settings given
    explicitly and where from (default: those that differ from the built-in defaults);
    under --resume they must agree with the run's."""
    check_choices(cfg)
    cfg.check()
    cfg = dataclasses.replace(cfg, cache=Path(cfg.cache), out=Path(cfg.out))
    if source is None:
        default = TrainConfig()
        source = {f.name: flag_of(f.name) for f in dataclasses.fields(cfg)
                  if getattr(cfg, f.name) != getattr(default, f.name)}  # fmt: skip
    ddp = init_distributed(cfg.device)
    try:
        with ExitStack() as stack:
            return _train(cfg, source, ddp, stack)
    finally:
        if ddp.enabled:
            dist.destroy_process_group()


def _stored(last: Checkpoint) -> dict:
    """A run's recorded settings; the model's own record decides its shape (runs from
    before --input-norm recorded it in neither place: see ModelConfig.from_dict)."""
    return {**last.train_config, "arch": last.arch, "channels": last.model_config.channels,
            "input_norm": last.model_config.input_norm}  # fmt: skip


def _claim(cfg: TrainConfig, ddp: Dist, stack: ExitStack) -> Checkpoint | None:
    """Take RUN/.lock (rank 0) and decide new run vs resume; returns last.pt to resume."""
    out = cfg.out
    if cfg.resume and not (out / "last.pt").is_file():
        raise BadInput(
            f"--resume but {out / 'last.pt'} does not exist; drop --resume to start a new run"
        )
    if ddp.main:
        out.mkdir(parents=True, exist_ok=True)
        stack.enter_context(DirLock(out, "run", fix="choose another --out"))
        remove_temps(out)  # left by a run killed while saving
    if not cfg.resume:
        if (out / "last.pt").exists():
            raise BadInput(
                f"{out} already holds a run (last.pt); pass --resume to continue it "
                "or choose another --out"
            )
        return None
    return ckpt_io.load(out / "last.pt", resume=True)


def _prepare(cfg: TrainConfig, source: dict, ddp: Dist, stack: ExitStack) -> tuple:
    """Every check before training, in every process (BadInput in one stops all): the
    device, the cache (and its shards with --verify), the settings, the run directory
    (locked) and, for --resume, last.pt. Returns (cfg, device, cache, training index,
    validation index, last.pt or None)."""
    out = cfg.out
    with same_outcome(ddp):
        device = resolve_device(cfg.device, ddp.local_rank)
        if out.exists() and not out.is_dir():
            raise BadInput(f"--out {out} is a file; pass a directory for the run")
        cache = open_cache(cfg.cache)
        if cfg.verify and ddp.main:
            report = verify_cache(cache.root, progress=cfg.progress)
            if not report.ok:
                raise damaged_error(report)
            tqdm.write(format_report(report))
        train_idx = split_index(cache, "training")
        if len(train_idx) == 0:
            raise BadInput(
                f"cache {cache.root} has no training tracks; preprocess a subset with a "
                "`training` split"
            )
        val_idx = split_index(cache, "validation")
        check_labels(cache, train_idx, say=ddp.main)
        if not cfg.resume:  # a resumed run is checked with its recorded settings below
            check_config(cfg, len(train_idx), ddp.world, cache.root)
        if cfg.wandb and ddp.main:
            require_wandb()
        last = _claim(cfg, ddp, stack)
        if last is not None:
            check_resume(last, cache, out / "last.pt")
            cfg = resumed(cfg, _stored(last), source)
            check_config(cfg, len(train_idx), ddp.world, cache.root)
    if last is None and cfg.t0 <= 0:
        cfg = dataclasses.replace(cfg, t0=cfg.epochs)
    if ddp.main and len(val_idx) == 0:
        tqdm.write(f"warning: cache {cache.root} has no validation tracks; best.pt = last epoch")
    if ddp.main and last is not None and last.world != ddp.world:
        tqdm.write(
            f"note: {out} was trained by {last.world} process(es), resumed by "
            f"{ddp.world}: its epochs from now on differ from an unbroken run's"
        )
    return cfg, device, cache, train_idx, val_idx, last


def _train(cfg: TrainConfig, source: dict, ddp: Dist, stack: ExitStack) -> Trained:
    cfg, device, cache, train_idx, val_idx, last = _prepare(cfg, source, ddp, stack)
    out = cfg.out
    run = build_run(cfg, ddp, device, cache, train_idx, val_idx)
    if last is not None:
        heal_best(run, last)
        # rank 0's states; every epoch reseeds from (seed, epoch, rank) anyway, so no
        # process needs its own stored state to continue deterministically
        run.restore(last)
        if ddp.main:
            write_metrics(out / "metrics.csv", run.history, run.task)
            plot_curves(run.history, run.select_by, out / "curves.png")
        if run.epoch >= cfg.epochs:
            if ddp.main:
                tqdm.write(f"{out} has already trained {run.epoch} epochs; pass --epochs above "
                           f"{run.epoch}")  # fmt: skip
            return summary(out, run.history, run.select_by, ddp)

    trackers = None
    if ddp.main:
        trackers = Trackers(out, cfg.to_dict(), run.run_id, run.epoch + 1, stack)
        tqdm.write(start_line(run))
    baseline = fit_baseline(cache, say=ddp.main)
    while run.epoch < cfg.epochs:
        row = run.run_epoch()
        run.history.append(row)
        improved = run.best_epoch == run.epoch
        if improved:
            run.best_model = _state_copy(run.model)
            run.best_thresholds = run.thresholds
        if ddp.main:
            save_epoch(run, improved)
            trackers.epoch(row, (*METRIC_COLUMNS[run.task][1:-2], "samples_per_s"))
            tqdm.write(epoch_line(row, cfg.epochs))
        if ddp.enabled:
            dist.barrier()  # last.pt of this epoch is whole before any process goes on
    done = summary(out, run.history, run.select_by, ddp, baseline)
    if trackers is not None and done.best_epoch:
        trackers.best(run.history[done.best_epoch - 1])
    return done


FEW_STEPS = 500  # fewer optimiser steps in a whole run than this: warned


def start_line(run: Run) -> str:
    """What is about to happen, printed before the first epoch (also without a bar), and
    a warning when the whole run makes few optimiser steps."""
    cfg, ddp, steps = run.cfg, run.ddp, len(run.source)
    procs = f" x {ddp.world} processes" if ddp.world > 1 else ""
    passes = run.source.plan.passes
    visits = f" ({passes} crops of each track)" if passes > 1 else ""
    line = (
        f"training {cfg.arch} on {len(run.train_idx)} tracks of {cfg.cache}: {steps} steps "
        f"of {cfg.batch_size} crops{procs} per epoch{visits}, epochs {run.epoch + 1}-"
        f"{cfg.epochs}, validating on {len(run.val_idx)} tracks "
        f"({validation_scoring(cfg)}), on {run.device.type}"
    )
    total = steps * cfg.epochs
    if total < FEW_STEPS:
        line += (
            f"\nwarning: this run makes only {total} optimiser steps in all ({cfg.epochs} "
            f"epochs of {steps}); MRNet needs hundreds to thousands: raise --epochs or "
            "--min-steps"
        )
    return line


def summary(out: Path, history: list[dict], select_by: str, ddp: Dist,
            baseline: float | None = None) -> Trained:  # fmt: skip
    """The run's outcome from its history (see `Trained`)."""
    b = best_epoch(history, select_by)
    best_row = history[b - 1] if b else None
    return Trained(
        main=ddp.main,
        run=str(out),
        epochs=len(history),
        select_by=select_by,
        best=best_row[select_by] if best_row else math.nan,
        best_epoch=b,
        last=history[-1] if history else None,
        baseline=baseline,
    )


def fit_baseline(cache: Cache, say: bool) -> float | None:
    """The built-in baseline's validation figure (from the cache's stored statistics);
    None, with a note (``say``), for a cache that has none."""
    if not has_statistics(cache):
        if say:
            tqdm.write("note: the cache holds no track statistics (made by mrnet 0.2): no "
                       "baseline to compare with; `mrnet baseline` computes one")  # fmt: skip
        return None
    b = fit_baseline_model(cache)
    if say:
        tqdm.write(f"baseline ({DESCRIPTION}, C={b.c:g}): validation {b.figure} {b.value:.3f}")
    return b.value
