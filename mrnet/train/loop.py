"""`mrnet train`, top to bottom: settings, checks, build, resume, then for each epoch
train, validate and save. README's Train section says what a user sees; the modules
beside this one hold the pieces:

    prepare   every check before training, the run directory's lock, --resume's settings
    trainer   the run's state and how it is built from its settings
    steps     one epoch of training steps; validation
    recovery  the three writes of an epoch and their repair on --resume
    report    metrics.csv, the printed lines, the summary

Reproducibility: every epoch reseeds torch / numpy / random from (seed, epoch, rank) and
draws its crops from the same triple (mrnet.seeds), so an epoch's randomness does not
depend on how the run got there; on the CPU a resumed run ends with the weights and
metrics of an unbroken one (with the same process count). Under torchrun every process
trains a DistributedDataParallel replica on its share of each epoch's crops
(`--batch-size` is per process) and validates its share of the validation tracks; only
rank 0 writes RUN/ and prints.
"""

from __future__ import annotations

import dataclasses
import time
from contextlib import ExitStack
from pathlib import Path

import torch.distributed as dist
from tqdm import tqdm

from mrnet import checkpoint
from mrnet.linear import DESCRIPTION, has_statistics
from mrnet.linear import fit as fit_baseline
from mrnet.options import RecipeArgs, TrainConfig
from mrnet.plots import plot_curves
from mrnet.recipe import resolve, resumed, to_toml
from mrnet.runtime import broadcast_buffers, init_distributed
from mrnet.scoring import window_frames
from mrnet.seeds import epoch_seed, seed_all
from mrnet.tracking import Trackers
from mrnet.train.prepare import prepare, stored_settings
from mrnet.train.recovery import heal_best, save_epoch
from mrnet.train.report import (
    Printed,
    Trained,
    epoch_line,
    start_line,
    summary,
    validation_scoring,
    write_metrics,
)
from mrnet.train.steps import train_epoch, validate
from mrnet.train.trainer import Trainer, build, state_copy
from pipeline.cache.reader import Cache
from pipeline.settings import check_choices, flag_of


def run(
    cfg: TrainConfig, recipe: RecipeArgs | None = None, given: set[str] | frozenset = frozenset()
) -> Trained | Printed:
    """`mrnet train`: the settings from defaults < recipe < the flags ``given`` (values in
    ``cfg``) < --set, then train, or print them (--print-config)."""
    recipe = recipe or RecipeArgs()
    cfg, source = resolve(cfg, recipe, set(given))
    if recipe.print_config:
        last = Path(cfg.out or "") / "last.pt"
        if cfg.resume and cfg.out is not None and last.is_file():
            cfg = resumed(cfg, stored_settings(checkpoint.load(last)), source)
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
        source = {
            f.name: flag_of(f.name)
            for f in dataclasses.fields(cfg)
            if getattr(cfg, f.name) != getattr(default, f.name)
        }
    torchrun = init_distributed(cfg.device)
    try:
        with ExitStack() as stack:
            return _train(cfg, source, torchrun, stack)
    finally:
        if torchrun.enabled:
            dist.destroy_process_group()


def _train(cfg: TrainConfig, source: dict, torchrun, stack: ExitStack) -> Trained:
    p = prepare(cfg, source, torchrun, stack)
    cfg, out, main = p.cfg, p.cfg.out, torchrun.main
    t = build(cfg, torchrun, p.device, p.cache, p.train_idx, p.val_idx)
    if p.last is not None:
        heal_best(t, p.last, run_epoch)
        # rank 0's states; every epoch reseeds from (seed, epoch, rank) anyway, so no
        # process needs its own stored state to continue deterministically
        t.restore(p.last)
        if main:
            write_metrics(out / "metrics.csv", t.history, t.task)
            plot_curves(t.history, t.task.select_by, out / "curves.png")
        if t.epoch >= cfg.epochs:
            if main:
                tqdm.write(
                    f"{out} has already trained {t.epoch} epochs; pass --epochs above {t.epoch}"
                )
            return summary(out, t.history, t.task.select_by, main)
    trackers = Trackers(out, cfg.to_dict(), t.run_id, t.epoch + 1, stack) if main else None
    if main:
        tqdm.write(start_line(t))
    baseline = baseline_figure(p.cache, say=main)
    while t.epoch < cfg.epochs:
        row = run_epoch(t)
        t.history.append(row)
        improved = t.best_epoch == t.epoch
        if improved:
            t.best_model = state_copy(t.model)
            t.best_thresholds = t.thresholds
        if main:
            save_epoch(t, improved)
            trackers.epoch(row, (*t.task.metric_columns[1:-2], "samples_per_s"))
            tqdm.write(epoch_line(row, cfg.epochs))
        if torchrun.enabled:
            dist.barrier()  # last.pt of this epoch is whole before any process goes on
    done = summary(out, t.history, t.task.select_by, main, baseline)
    if trackers is not None and done.best_epoch:
        trackers.best(t.history[done.best_epoch - 1])
    return done


def run_epoch(t: Trainer) -> dict:
    """Train and validate the next epoch; returns its metrics row."""
    cfg, torchrun = t.cfg, t.torchrun
    epoch = t.epoch + 1
    seed_all(epoch_seed(cfg.seed, epoch, torchrun.rank))
    lr = t.optimizer.param_groups[0]["lr"]
    t0 = time.perf_counter()
    train_loss, train_acc, seen = train_epoch(t, epoch)
    train_s = time.perf_counter() - t0
    t.scheduler.step()
    if torchrun.enabled:
        broadcast_buffers(t.model)  # score (and save) the same model everywhere
    crops = cfg.val_crops
    window = t.frames if crops else window_frames(cfg.window, t.cache.feature_config)
    figures, t.thresholds = validate(
        t.model,
        t.task,
        t.val_idx,
        t.weight,
        t.device,
        window,
        cfg.batch_size * t.frames,
        torchrun,
        crops,
        prior=t.train_idx.label.mean(axis=0),
    )
    t.epoch = epoch
    return {
        "epoch": epoch,
        "train_loss": train_loss,
        **({"train_acc": train_acc} if "train_acc" in t.task.metric_columns else {}),
        **figures,
        "lr": lr,
        "train_samples": seen,
        "val_tracks": len(t.val_idx),
        "val_scoring": validation_scoring(cfg),
        "seconds": round(time.perf_counter() - t0, 3),
        "samples_per_s": round(seen / train_s, 1),
    }


def baseline_figure(cache: Cache, say: bool) -> float | None:
    """The built-in baseline's validation figure (from the cache's stored statistics);
    None, with a note (``say``), for a cache that has none."""
    if not has_statistics(cache):
        if say:
            tqdm.write(
                "note: the cache holds no track statistics (made by mrnet 0.2): no "
                "baseline to compare with; `mrnet baseline` computes one"
            )
        return None
    b = fit_baseline(cache)
    if say:
        tqdm.write(f"baseline ({DESCRIPTION}, C={b.c:g}): validation {b.figure} {b.value:.3f}")
    return b.value
