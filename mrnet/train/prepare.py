"""Every check before training, in every process (BadInput in one stops all): the
device, the cache (and its shards with --verify), the settings, the labels, the run
directory (locked) and, for --resume, last.pt and the settings it recorded."""

from __future__ import annotations

import dataclasses
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from mrnet import checkpoint
from mrnet.checkpoint import Checkpoint
from mrnet.options import TrainConfig
from mrnet.recipe import KIND_RECIPES, input_defaults, resumed
from mrnet.runtime import Torchrun, resolve_device, same_outcome
from mrnet.task import TASKS, Task
from mrnet.tracking import require_wandb
from pipeline.atomic import remove_temps
from pipeline.cache.reader import Cache, SplitIndex, open_cache, split_index
from pipeline.cache.verify import damaged_error, format_report, verify_cache
from pipeline.deps import load_torchaudio
from pipeline.errors import BadInput
from pipeline.lock import DirLock

RESUME_FIX = "resume with the cache it was trained on or start a new --out"


@dataclass
class Prepared:
    """What the checks established: the final settings, device, cache, splits, and the
    last.pt to resume (None for a new run)."""

    cfg: TrainConfig
    device: torch.device
    cache: Cache
    train_idx: SplitIndex
    val_idx: SplitIndex
    last: Checkpoint | None


def prepare(cfg: TrainConfig, source: dict, torchrun: Torchrun, stack: ExitStack) -> Prepared:
    """Run every check before training (see the module docstring); BadInput on a failure.

    Args:
        cfg: the run's settings (for --resume, overridden by those last.pt recorded).
        source: the settings given explicitly (a resumed run refuses those that differ
            from its own).
        torchrun: this process's place among the torchrun processes.
        stack: the run directory's lock (rank 0) joins it.

    Returns:
        The final settings (t0 defaulted to the epochs for a new run), the device, the
        cache, its training and validation splits and last.pt to resume (None if new).
    """
    out = cfg.out
    with same_outcome(torchrun):
        device = resolve_device(cfg.device, torchrun.local_rank)
        if out.exists() and not out.is_dir():
            raise BadInput(f"--out {out} is a file; pass a directory for the run")
        cache = open_cache(cfg.cache)
        if cfg.verify and torchrun.main:
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
        check_labels(cache, train_idx, TASKS[cache.manifest.task], say=torchrun.main)
        if not cfg.resume:  # a resumed run is checked with its recorded settings below
            kind = cache.feature_config.get("kind", "logmel")
            cfg, changed = input_defaults(cfg, kind, source)
            if changed and torchrun.main:
                tqdm.write(
                    f"note: a cache of {kind} features: "
                    + ", ".join(f"{k} {getattr(cfg, k)}" for k in changed)
                    + f" (recipes/{KIND_RECIPES[kind]}.toml; set them to override)"
                )
            check_config(cfg, len(train_idx), torchrun.world, cache.root)
            check_input(cfg, cache, None)  # before the run folder is created
        if cfg.wandb and torchrun.main:
            require_wandb()
        last = claim(cfg, torchrun, stack)
        if last is not None:
            check_resume(last, cache, out / "last.pt")
            cfg = resumed(cfg, stored_settings(last), source)
            check_config(cfg, len(train_idx), torchrun.world, cache.root)
            check_input(cfg, cache, last)
    if last is None and cfg.t0 <= 0:
        cfg = dataclasses.replace(cfg, t0=cfg.epochs)
    if torchrun.main and len(val_idx) == 0:
        tqdm.write(f"warning: cache {cache.root} has no validation tracks; best.pt = last epoch")
    if torchrun.main and last is not None and last.world != torchrun.world:
        tqdm.write(
            f"note: {out} was trained by {last.world} process(es), resumed by "
            f"{torchrun.world}: its epochs from now on differ from an unbroken run's"
        )
    return Prepared(cfg, device, cache, train_idx, val_idx, last)


def check_config(cfg: TrainConfig, n_train: int, world: int, cache: Path) -> None:
    """The checks that need more than the settings; BadInput on a failure.

    Checks: torchaudio loads for SpecAugment, CUDA for --sync-bn, and the batch
    (``batch_size * world``) is no larger than the training split.

    Args:
        cfg: the run's settings.
        n_train: training tracks.
        world: torchrun processes.
        cache: the cache's folder (named in the error).
    """
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


def check_input(cfg: TrainConfig, cache: Cache, last: Checkpoint | None) -> None:
    """The cache's kind of input and the run's front-end agree, and the front-end's WavLM
    loads (for --resume: the one last.pt was trained with); BadInput otherwise."""
    kind = cache.feature_config.get("kind", "logmel")
    if not cfg.frontend:
        if kind == "wave":
            raise BadInput(
                f"cache {cache.root} holds waveforms (preprocess --features wave): train "
                "it with --frontend wavlm --ssl-model DIR"
            )
        if cfg.ssl_model is not None:
            raise BadInput("--ssl-model is for --frontend wavlm; add it or drop --ssl-model")
        return
    if kind != "wave":
        raise BadInput(
            f"--frontend {cfg.frontend} reads a waveform cache and cache {cache.root} holds "
            f"{kind} features; preprocess the audio again with --features wave"
        )
    if cfg.arch != "mrnet":
        raise BadInput(f"--frontend {cfg.frontend} feeds --arch mrnet; drop --arch {cfg.arch}")
    if cfg.specaugment:
        raise BadInput(
            "SpecAugment masks mel bands and does not apply to a front-end's waveform "
            "input; pass --no-specaugment"
        )
    from mrnet.model.wavlm import frontend_ssl  # torch's WavLM: only for this input
    from pipeline.ssl import WHERE_FROM, cached_model

    if cfg.ssl_model is None:
        raise BadInput(f"--frontend {cfg.frontend} needs --ssl-model DIR: {WHERE_FROM}")
    if last is not None:
        frontend_ssl(last.model_config.ssl_sha256, last.model_config.ssl_config, cfg.ssl_model)
    else:
        cached_model(str(cfg.ssl_model.absolute()))


def check_labels(cache: Cache, train_idx: SplitIndex, task: Task, say: bool = True) -> None:
    """Check that every label has training tracks, as the task requires.

    A single-label class without any can never be predicted (and would get class weight
    0), so it is refused (BadInput); a multi-label label without a positive is noted.

    Args:
        cache: the cache (label names, root for the error).
        train_idx: its training split.
        task: decides whether a missing label is refused or noted.
        say: print the note (multi-label).
    """
    counts = task.label_counts(train_idx.label, len(cache.labels))
    missing = [name for name, n in zip(cache.labels, counts) if n == 0]
    if not missing:
        return
    more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
    shown = ", ".join(missing[:10]) + more
    if not task.needs_every_label:
        if say:
            tqdm.write(f"warning: labels without a positive training track: {shown}")
        return
    raise BadInput(
        f"labels {shown} have no training tracks in cache {cache.root}: a model cannot learn "
        "them; add training tracks of each label (or leave those labels out) and preprocess again"
    )


def check_resume(ckpt: Checkpoint, cache: Cache, what: Path) -> None:
    """Features, label order and the very tracks must be those the run trained on."""
    ckpt.check_cache(cache, what, RESUME_FIX)
    if ckpt.cache_fingerprint and ckpt.cache_fingerprint != cache.fingerprint:
        raise BadInput(
            f"cache {cache.root} holds other tracks than {what} was trained on (track "
            f"fingerprint {cache.fingerprint}, run: {ckpt.cache_fingerprint}); {RESUME_FIX}"
        )


def stored_settings(last: Checkpoint) -> dict:
    """A run's recorded settings; the model's own record decides its shape (runs from
    before --input-norm recorded it in neither place: see ModelConfig.from_dict)."""
    return {
        **last.train_config,
        "arch": last.arch,
        "channels": last.model_config.channels,
        "input_norm": last.model_config.input_norm,
    }


def claim(cfg: TrainConfig, torchrun: Torchrun, stack: ExitStack) -> Checkpoint | None:
    """Take RUN/.lock (rank 0) and decide new run vs resume; returns last.pt to resume."""
    out = cfg.out
    if cfg.resume and not (out / "last.pt").is_file():
        raise BadInput(
            f"--resume but {out / 'last.pt'} does not exist; drop --resume to start a new run"
        )
    if torchrun.main:
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
    return checkpoint.load(out / "last.pt", resume=True)
