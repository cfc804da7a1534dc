"""`mrnet train`: cache -> RUN/ (last.pt, best.pt, metrics.csv, tb/).

One loop, nanoGPT style. Per epoch: a random crop of every training track
(mrnet.data), additive Gaussian noise and optional SpecAugment on the device, a
forward pass (bf16 autocast on CUDA, fp32 on CPU), class-weighted cross entropy
(weight = max count / count over the training split), AdamW (amsgrad), gradient
clipping; then the cosine-with-warm-restarts schedule steps, the whole tracks of
FMA's `validation` split are scored (never `test`), RUN/last.pt is replaced
atomically, RUN/best.pt when validation accuracy improves, and metrics.csv is
rewritten from the history stored in the checkpoint.

Reproducibility: every epoch reseeds torch / numpy / random from (seed, epoch, rank)
and draws its crops from the same triple, so an epoch's randomness does not depend on
how the run got there; `--resume` restores model, optimizer, scheduler, history and
RNG states from RUN/last.pt and continues with the next epoch. On CPU a resumed run
ends with the weights and metrics of an uninterrupted one (with the same process count).

Under torchrun (RANK and WORLD_SIZE set; `torchrun --nproc-per-node N --no-python mrnet
train ...`, multi-node with torchrun's --nnodes/--rdzv-* flags) every process joins one
process group (NCCL on GPUs, gloo on the CPU) and trains a DistributedDataParallel
replica on its disjoint share of each epoch's crops (`--batch-size` is per process);
BatchNorm statistics stay per process unless `--sync-bn`. All processes validate a
disjoint share of the validation tracks and all-reduce the sums, after taking rank 0's
BatchNorm buffers, so the figures are those of the saved model. Only rank 0 writes RUN/
(metrics.csv, last.pt, best.pt, tb/) and prints; the others print errors only. Bad input
stops every process with the same kind of one-line error (exit code 2). The cache, and
RUN/ for `--resume` (every process loads RUN/last.pt), must be readable on every node.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
import torchaudio.transforms as AT
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from mrnet.data import MemmapCrops, ResidentCrops, SplitIndex, split_index, whole_tracks
from pipeline.errors import BadInput
from pipeline.features import FeatureConfig
from pipeline.manifest import Cache, open_cache, write_atomic

CHECKPOINT_VERSION = 1
METRIC_COLUMNS = (
    "epoch",
    "train_loss",
    "train_acc",
    "val_loss",
    "val_acc",
    "lr",
    "train_samples",
    "val_tracks",
)
TIMING_COLUMNS = ("seconds", "samples_per_s")  # differ between otherwise identical runs
# Settings a resumed run takes from its checkpoint (they decide what is computed).
RESUME_KEEPS = (
    "arch",
    "channels",
    "batch_size",
    "lr",
    "lr_min",
    "t0",
    "t_mult",
    "weight_decay",
    "crop_seconds",
    "seed",
    "specaugment",
    "freq_mask",
    "time_mask",
    "noise_prob",
    "noise_mean",
    "noise_std",
    "grad_clip",
)
STEP_DELAY_ENV = "MRNET_TRAIN_STEP_DELAY"  # test hook: seconds to sleep after each step


@dataclass
class TrainConfig:
    """Everything `mrnet train` takes. Stored, as plain types, in every checkpoint."""

    cache: Path
    out: Path
    arch: str = "mrnet"
    epochs: int = 30
    batch_size: int = 48  # crops per step (per process under torchrun)
    lr: float = 1e-3
    lr_min: float = 5e-4  # cosine floor (the MRNet authors' lr_min)
    t0: int = 0  # epochs of the first cosine cycle; 0 = `epochs` (fixed at the run's start)
    t_mult: int = 2
    weight_decay: float = 1e-4
    channels: int = 512
    crop_seconds: float = 6.0
    workers: int = 2  # DataLoader worker processes (0 = read in the main process)
    device: str = "auto"
    seed: int = 0
    compile: bool = False
    data_on_gpu: bool = False
    specaugment: bool = False
    freq_mask: int = 16  # SpecAugment: widest of 2 frequency masks, mel bands
    time_mask: int = 30  # SpecAugment: widest of 2 time masks, frames
    noise_prob: float = 0.7  # probability that a crop gets additive Gaussian noise
    noise_mean: tuple[float, float] = (-0.03, 0.03)  # noise mean ~ U(range), log-mel units
    noise_std: tuple[float, float] = (0.05, 0.1)  # noise std ~ U(range)
    grad_clip: float = 5.0  # max global gradient norm; 0 = off
    sync_bn: bool = False  # SyncBatchNorm across torchrun processes (CUDA/NCCL only)
    tensorboard: bool = False
    resume: bool = False
    progress: bool = True

    def to_dict(self) -> dict:
        """Plain types only (str, int, float, bool, list), as checkpoints require."""
        return {
            k: str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v
            for k, v in dataclasses.asdict(self).items()
        }


# ---------------------------------------------------------------- checkpoints


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint with ``weights_only=True`` onto the CPU; BadInput if unusable."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"checkpoint {path} does not exist; train one with `mrnet train`")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for truncated or foreign files
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise BadInput(
            f"checkpoint {path} is corrupt or truncated ({reason}); use another checkpoint "
            "(RUN/best.pt or RUN/last.pt) or retrain"
        ) from e
    needed = {"model", "arch", "n_mels", "n_classes", "feature_config", "genres"}
    if not isinstance(ckpt, dict) or not needed <= set(ckpt):
        raise BadInput(f"{path} is not an mrnet checkpoint; pass RUN/best.pt or RUN/last.pt")
    return ckpt


def model_from_checkpoint(ckpt: dict) -> nn.Module:
    """The checkpoint's model with its weights, on the CPU, in eval mode."""
    from mrnet.model import build_model

    model = build_model(ckpt["arch"], ckpt["n_mels"], ckpt["n_classes"], ckpt.get("channels", 512))
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise BadInput(
            f"checkpoint weights do not fit a {ckpt['arch']} model "
            f"({str(e).splitlines()[0][:120]}); retrain with this version of mrnet"
        ) from e
    return model.eval()


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under DistributedDataParallel and torch.compile wrappers."""
    if isinstance(model, DDP):
        model = model.module
    return getattr(model, "_orig_mod", model)


def save_atomic(obj: dict, path: Path) -> None:
    """torch.save to a temporary name, fsync, rename: ``path`` is always whole."""
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def rng_state() -> dict:
    """torch (CPU, CUDA), numpy and python RNG states as tensors and plain types."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, state, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "python": [version, list(state), gauss],
    }


def set_rng_state(s: dict) -> None:
    torch.set_rng_state(s["torch"])
    if s["cuda"] and torch.cuda.is_available() and len(s["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(s["cuda"])
    kind, keys, pos, has_gauss, cached = s["numpy"]
    np.random.set_state((kind, np.array(keys, np.uint32), pos, has_gauss, cached))
    version, state, gauss = s["python"]
    random.setstate((version, tuple(state), gauss))


def seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """A 63-bit seed that is a pure function of (seed, epoch, rank)."""
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1, np.uint64)[0] >> 1)


# ---------------------------------------------------------------- setup


@dataclass(frozen=True)
class Dist:
    """This process's place in a torchrun job; rank 0 of 1, not ``enabled``, without one."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    enabled: bool = False  # in a process group (even of one process: DDP all the same)

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str) -> Dist:
    """Join torchrun's process group when RANK and WORLD_SIZE are set: NCCL when the run
    uses GPUs (this process takes GPU LOCAL_RANK), gloo on the CPU."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return Dist()
    if not {"MASTER_ADDR", "MASTER_PORT"} <= set(os.environ):
        raise BadInput(
            "RANK and WORLD_SIZE are set but MASTER_ADDR/MASTER_PORT are not; launch "
            "with `torchrun ... --no-python mrnet train ...` or unset RANK"
        )
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_nccl = device != "cpu" and torch.cuda.is_available()
    if use_nccl:
        if local_rank >= torch.cuda.device_count():
            raise BadInput(
                f"torchrun process {local_rank} of this node has no GPU ("
                f"{torch.cuda.device_count()} visible); pass --nproc-per-node "
                f"{torch.cuda.device_count()} or less"
            )
        torch.cuda.set_device(local_rank)  # NCCL collectives use the current device
    dist.init_process_group("nccl" if use_nccl else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), local_rank, enabled=True)


@contextmanager
def same_outcome(ddp: Dist) -> Iterator[None]:
    """Checks that every process runs: BadInput in any process is raised in all of them
    (the others name the first failing rank), so none waits in a collective for one
    that stopped. Every process must enter and leave the block (no return inside)."""
    error: BadInput | None = None
    try:
        yield
    except BadInput as e:
        error = e
    if ddp.enabled:
        on = torch.device("cuda") if dist.get_backend() == "nccl" else torch.device("cpu")
        first = torch.tensor([ddp.rank if error else ddp.world], device=on)
        dist.all_reduce(first, op=dist.ReduceOp.MIN)
        if error is None and int(first) < ddp.world:
            error = BadInput(
                f"torchrun process {int(first)} stopped on bad input (see its error); "
                "fix that and rerun"
            )
    if error is not None:
        raise error


def broadcast_buffers(model: nn.Module) -> None:
    """Give every process rank 0's buffers (BatchNorm running statistics): DDP keeps the
    parameters equal, but each process's last forward updated its own statistics."""
    for b in model.buffers():
        dist.broadcast(b, src=0)


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name not in ("auto", "cpu", "cuda"):
        raise BadInput(f"unknown --device {name!r}; use auto, cpu or cuda")
    if name == "cuda" and not torch.cuda.is_available():
        raise BadInput("--device cuda but no GPU is visible; use --device cpu or auto")
    if name == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", local_rank)


RESUME_FIX = "resume with the cache it was trained on or start a new --out"


def check_features(ckpt: dict, cache: Cache, what: Path | str, fix: str = RESUME_FIX) -> None:
    """Refuse a checkpoint whose features or genre order differ from the cache's;
    ``fix`` ends the one-line message."""
    if ckpt["feature_config"] != cache.feature_config:
        fc, cc = ckpt["feature_config"], cache.feature_config
        diff = sorted(k for k in set(fc) | set(cc) if fc.get(k) != cc.get(k))
        raise BadInput(
            f"{what} was trained on other features than cache {cache.root} (differs in "
            f"{', '.join(diff)}); {fix}"
        )
    if list(ckpt["genres"]) != list(cache.genres):
        raise BadInput(f"{what} has another genre order than cache {cache.root}; {fix}")


def resumed_config(cfg: TrainConfig, stored: dict, say: bool = True) -> TrainConfig:
    """The command's config with the run's RESUME_KEEPS settings; notes (if ``say``) what
    it overrides."""
    current = cfg.to_dict()
    default = TrainConfig(cache=cfg.cache, out=cfg.out).to_dict()
    kept = {k: stored[k] for k in RESUME_KEEPS if k in stored}
    changed = [
        f"{k} {v!r} (given {current[k]!r})"
        for k, v in kept.items()
        if current[k] != v and current[k] != default[k]
    ]
    if changed and say:
        tqdm.write("note: --resume keeps the run's settings: " + ", ".join(changed))
    return dataclasses.replace(
        cfg, **{k: tuple(v) if isinstance(v, list) else v for k, v in kept.items()}
    )


def check_config(cfg: TrainConfig, n_train: int, world: int, cache: Path) -> None:
    from mrnet.model import ARCHS

    if cfg.arch not in ARCHS:
        raise BadInput(f"unknown --arch {cfg.arch!r}; use one of {', '.join(ARCHS)}")
    for name in ("epochs", "channels", "lr", "crop_seconds"):
        if getattr(cfg, name) <= 0:
            raise BadInput(f"--{name.replace('_', '-')} must be positive")
    if cfg.workers < 0:
        raise BadInput("--workers must be 0 or more")
    if cfg.batch_size < 2:
        raise BadInput("--batch-size must be at least 2 (the models use BatchNorm)")
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


def crop_frames(seconds: float, feature_config: dict) -> int:
    """Crop length in frames at the cache's frame rate (50 frames/s by default)."""
    return max(1, round(seconds * FeatureConfig.from_dict(feature_config).frames_per_second))


def class_weights(labels: np.ndarray, n_classes: int) -> torch.Tensor:
    """Float32 [n_classes]: max count / count; 0 for classes absent from training."""
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    w = np.where(counts > 0, counts.max() / np.maximum(counts, 1), 0.0)
    return torch.tensor(w, dtype=torch.float32)


# ---------------------------------------------------------------- augmentation


class Augment(nn.Module):
    """Training-time augmentation of x float32 [B, n_mels, T], on its device.

    Additive Gaussian noise per crop with probability ``p`` (mean and std drawn
    uniformly from the given ranges, as the MRNet authors train); then, if enabled,
    SpecAugment: 2 frequency and 2 time masks per crop, filled with the crop's mean.
    """

    def __init__(self, cfg: TrainConfig) -> None:
        super().__init__()
        self.p, self.mean, self.std = cfg.noise_prob, cfg.noise_mean, cfg.noise_std
        masks = [AT.FrequencyMasking(cfg.freq_mask, iid_masks=True)] * 2
        masks += [AT.TimeMasking(cfg.time_mask, iid_masks=True)] * 2
        self.masks = nn.ModuleList(masks) if cfg.specaugment else nn.ModuleList()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p > 0:
            u = torch.rand(x.shape[0], 3, 1, 1, device=x.device)  # apply?, mean, std
            on = (u[:, 0] < self.p).to(x.dtype)
            mean = self.mean[0] + (self.mean[1] - self.mean[0]) * u[:, 1]
            std = self.std[0] + (self.std[1] - self.std[0]) * u[:, 2]
            x = x + on * (mean + std * torch.randn_like(x))
        if len(self.masks):
            mu = x.mean(dim=(1, 2), keepdim=True)
            x = x - mu
            for mask in self.masks:
                x = mask(x)
            x = x + mu
        return x


# ---------------------------------------------------------------- epochs


def train_epoch(
    model: nn.Module,
    source: MemmapCrops | ResidentCrops,
    epoch: int,
    optimizer: torch.optim.Optimizer,
    criterion: nn.Module,
    augment: Augment,
    cfg: TrainConfig,
    device: torch.device,
    ddp: Dist,
) -> tuple[float, float, int]:
    """One pass over the epoch's crops. Returns (mean loss, accuracy, samples) over all ranks."""
    model.train()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.float64, device=device)
    seen = 0
    delay = float(os.environ.get(STEP_DELAY_ENV, "0") or 0)
    bar = tqdm(  # on rank 0, counting the samples of all processes
        total=len(source) * cfg.batch_size * ddp.world,
        desc=f"epoch {epoch}/{cfg.epochs}",
        unit="sample",
        leave=False,
        disable=not (cfg.progress and ddp.main),
    )
    for step, (x, y) in enumerate(source.batches(epoch)):
        x = augment(x.to(device, non_blocking=True))
        y = y.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = model(x)
        loss = criterion(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        loss_sum += loss.detach() * len(y)
        correct += (logits.argmax(1) == y).sum()
        seen += len(y)
        bar.update(len(y) * ddp.world)
        if step % 10 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
        if delay:
            time.sleep(delay)
    bar.close()
    totals = torch.stack([loss_sum, correct, torch.tensor(float(seen), device=device).double()])
    if ddp.enabled:
        dist.all_reduce(totals)
    loss_sum, correct, seen = totals.tolist()
    return loss_sum / seen, correct / seen, int(seen)


@torch.no_grad()
def validate(
    model: nn.Module,
    index: SplitIndex,
    weight: torch.Tensor,
    device: torch.device,
    max_frames: int,
    ddp: Dist = Dist(),
) -> tuple[float, float]:
    """(class-weighted mean cross entropy, accuracy) over the whole tracks of ``index``;
    NaNs when it is empty. Under torchrun each process scores its share
    (``index.share(rank, world)``) and the float64 sums [sum of w_y * loss, sum of w_y,
    correct, tracks] are all-reduced: every process returns the whole split's figures,
    those of one process scoring it alone up to float rounding. ``model`` is the plain
    module (not DDP), the same on every process."""
    if len(index) == 0:
        return math.nan, math.nan
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64, device=device)
    for _, x, y in whole_tracks(index.share(ddp.rank, ddp.world), max_frames):
        x, y = x.to(device), y.to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = model(x).float()
        sums[0] += F.cross_entropy(logits, y, weight=weight, reduction="sum").double()
        sums[1] += weight[y].double().sum()
        sums[2] += (logits.argmax(1) == y).sum()
        sums[3] += len(y)
    if ddp.enabled:
        dist.all_reduce(sums)
    loss_sum, weight_sum, correct, count = sums.tolist()
    assert count == len(index), (count, len(index))  # the shares cover the split once
    return (loss_sum / weight_sum if weight_sum else math.nan), correct / count


def write_metrics(path: Path, history: list[dict]) -> None:
    """metrics.csv from the history: METRIC_COLUMNS, then TIMING_COLUMNS."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=[*METRIC_COLUMNS, *TIMING_COLUMNS], lineterminator="\n")
    w.writeheader()
    w.writerows(history)
    write_atomic(path, buf.getvalue())


def epoch_line(row: dict, epochs: int) -> str:
    return (
        f"epoch {row['epoch']}/{epochs}  train loss {row['train_loss']:.4f} "
        f"acc {row['train_acc']:.3f}  val loss {row['val_loss']:.4f} acc {row['val_acc']:.3f}  "
        f"lr {row['lr']:.2e}  {row['samples_per_s']:.0f} samples/s  {row['seconds']:.1f} s"
    )


# ---------------------------------------------------------------- the run


def train(cfg: TrainConfig) -> dict:
    """Train (or resume) the run in ``cfg.out``; returns a summary (best val acc, last row)."""
    cfg = dataclasses.replace(cfg, cache=Path(cfg.cache), out=Path(cfg.out))
    ddp = init_distributed(cfg.device)
    try:
        return _train(cfg, ddp)
    finally:
        if ddp.enabled:
            dist.destroy_process_group()


def _train(cfg: TrainConfig, ddp: Dist) -> dict:
    from mrnet.model import build_model

    out = cfg.out
    ckpt = None
    with same_outcome(ddp):
        device = resolve_device(cfg.device, ddp.local_rank)
        if out.exists() and not out.is_dir():
            raise BadInput(f"--out {out} is a file; pass a directory for the run")
        cache = open_cache(cfg.cache)
        if cfg.resume:
            if not (out / "last.pt").is_file():
                raise BadInput(
                    f"--resume but {out / 'last.pt'} does not exist; drop --resume to start "
                    "a new run"
                )
            ckpt = load_checkpoint(out / "last.pt")
            check_features(ckpt, cache, out / "last.pt")
            cfg = resumed_config(cfg, ckpt["config"], say=ddp.main)
        elif (out / "last.pt").exists():
            raise BadInput(
                f"{out} already holds a run (last.pt); pass --resume to continue it "
                "or choose another --out"
            )
        train_idx = split_index(cache, "training")
        if len(train_idx) == 0:
            raise BadInput(
                f"cache {cache.root} has no training tracks; preprocess a subset with a "
                "`training` split"
            )
        val_idx = split_index(cache, "validation")
        check_config(cfg, len(train_idx), ddp.world, cache.root)
    if ckpt is None and cfg.t0 <= 0:
        cfg = dataclasses.replace(cfg, t0=cfg.epochs)
    frames = crop_frames(cfg.crop_seconds, cache.feature_config)
    n_mels, n_classes = train_idx.n_mels, len(cache.genres)
    if ddp.main and len(val_idx) == 0:
        tqdm.write(f"warning: cache {cache.root} has no validation tracks; best.pt = last epoch")
    if ddp.main and ckpt is not None and ckpt.get("world", 1) != ddp.world:
        tqdm.write(
            f"note: {out} was trained by {ckpt.get('world', 1)} process(es), resumed by "
            f"{ddp.world}: its epochs from now on differ from an unbroken run's"
        )

    seed_all(cfg.seed)
    model = build_model(cfg.arch, n_mels, n_classes, cfg.channels).to(device)
    if cfg.sync_bn and ddp.enabled:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # same state_dict keys
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, amsgrad=True
    )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
        optimizer, T_0=cfg.t0, T_mult=cfg.t_mult, eta_min=cfg.lr_min
    )
    start, best, history = 0, -math.inf, []
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        start, best, history = ckpt["epoch"], ckpt["best"], list(ckpt["history"])
        # rank 0's states; every epoch reseeds from (seed, epoch, rank) anyway, so no
        # process needs its own stored state to continue deterministically
        set_rng_state(ckpt["rng"])
        if start >= cfg.epochs:
            if ddp.main:
                tqdm.write(f"{out} has already trained {start} epochs; pass --epochs above {start}")
            return summary(out, history, best, ddp)

    weight = class_weights(train_idx.label, n_classes).to(device)
    criterion = nn.CrossEntropyLoss(weight=weight)
    augment = Augment(cfg).to(device)
    if cfg.data_on_gpu:
        source = ResidentCrops(
            train_idx, frames, cfg.batch_size, cfg.seed, device, ddp.rank, ddp.world
        )
    else:
        source = MemmapCrops(
            train_idx, frames, cfg.batch_size, cfg.seed, cfg.workers,
            pin_memory=device.type == "cuda", rank=ddp.rank, world=ddp.world,
        )  # fmt: skip
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    net = torch.compile(model) if cfg.compile else model
    if ddp.enabled:  # broadcasts rank 0's parameters and buffers
        net = DDP(net, device_ids=[device.index] if device.type == "cuda" else None)

    tb = None
    if cfg.tensorboard and ddp.main:
        from torch.utils.tensorboard import SummaryWriter

        tb = SummaryWriter(str(out / "tb"), purge_step=start + 1)
    if ddp.main:
        out.mkdir(parents=True, exist_ok=True)
        for stale in out.glob("*.pt.tmp-*"):  # left by a run killed while saving
            stale.unlink(missing_ok=True)
    fixed = {
        "feature_config": cache.feature_config,
        "genres": list(cache.genres),
        "config": cfg.to_dict(),
        "arch": cfg.arch,
        "n_mels": n_mels,
        "n_classes": n_classes,
        "channels": cfg.channels,
        "world": ddp.world,
        "format_version": CHECKPOINT_VERSION,
    }
    for epoch in range(start + 1, cfg.epochs + 1):
        seed_all(epoch_seed(cfg.seed, epoch, ddp.rank))
        lr = optimizer.param_groups[0]["lr"]
        t0 = time.perf_counter()
        train_loss, train_acc, seen = train_epoch(
            net, source, epoch, optimizer, criterion, augment, cfg, device, ddp
        )
        train_s = time.perf_counter() - t0
        scheduler.step()
        if ddp.enabled:
            broadcast_buffers(model)  # score (and save) the same model everywhere
        val_loss, val_acc = validate(model, val_idx, weight, device, cfg.batch_size * frames, ddp)
        row = {
            "epoch": epoch,
            "train_loss": train_loss,
            "train_acc": train_acc,
            "val_loss": val_loss,
            "val_acc": val_acc,
            "lr": lr,
            "train_samples": seen,
            "val_tracks": len(val_idx),
            "seconds": round(time.perf_counter() - t0, 3),
            "samples_per_s": round(seen / train_s, 1),
        }
        history.append(row)
        improved = math.isnan(val_acc) or val_acc > best
        best = val_acc if improved else best
        if ddp.main:
            ckpt = {
                **fixed,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "epoch": epoch,
                "best": best,
                "history": history,
                "rng": rng_state(),
            }
            save_atomic(ckpt, out / "last.pt")
            if improved:
                save_atomic(ckpt, out / "best.pt")
            write_metrics(out / "metrics.csv", history)
            if tb is not None:
                for k in ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "samples_per_s"):
                    tb.add_scalar(k, row[k], epoch)
                tb.flush()
            tqdm.write(epoch_line(row, cfg.epochs))
        if ddp.enabled:
            dist.barrier()  # last.pt of this epoch is whole before any process goes on
    if tb is not None:
        tb.close()
    return summary(out, history, best, ddp)


def summary(out: Path, history: list[dict], best: float, ddp: Dist) -> dict:
    """What `mrnet train` reports: run dir, epochs done, best val accuracy and its epoch;
    ``main`` is False on the other processes of a torchrun job (they print nothing)."""
    scored = [r for r in history if not math.isnan(r["val_acc"])]
    best_row = max(scored, key=lambda r: r["val_acc"]) if scored else (history or [None])[-1]
    return {
        "main": ddp.main,
        "run": str(out),
        "epochs": len(history),
        "best_val_acc": best,
        "best_epoch": best_row["epoch"] if best_row else None,
        "last": history[-1] if history else None,
    }
