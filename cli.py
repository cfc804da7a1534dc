"""mrnet: music genre classification in three staged commands.

\b
mrnet preprocess  audio -> cache of HDF5 log-mel shards (parallel, resumable)
mrnet train       cache -> MRNet checkpoint (GPU when present, resumable)
mrnet evaluate    checkpoint + cache -> per-genre confusion reports

and around them: predict, embed, export (ONNX), compare, info, verify, demo.
"""

from __future__ import annotations

import dataclasses
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import typer

from mrnet.options import (
    DemoOptions,
    EmbedOptions,
    EvalOptions,
    ExportOptions,
    PredictOptions,
    TrainConfig,
)
from pipeline.errors import BadInput
from pipeline.options import PreprocessOptions
from pipeline.settings import from_values

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help texts are literal: [batch, n_mels, frames], 'mrnet[export]'
    help=__doc__,
)


def opt(cls: type, name: str, argument: bool = False) -> Any:
    """The typer parameter of field ``name`` of stage dataclass ``cls``: the dataclass
    holds its default, help text and flag (one source of truth for every setting)."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    if f.default is not dataclasses.MISSING:
        default = f.default
    elif f.default_factory is not dataclasses.MISSING:
        default = f.default_factory()
    else:
        default = ...
    if argument:
        return typer.Argument(default, help=f.metadata["help"])
    flag = f.metadata.get("flag")
    return typer.Option(default, *([flag] if flag else []), help=f.metadata["help"])


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread as Ctrl-C raises KeyboardInterrupt."""


def _on_sigterm(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM kills at once
    raise Terminated()


@app.callback()
def _setup() -> None:
    signal.signal(signal.SIGTERM, _on_sigterm)


def fail(message: str) -> NoReturn:
    """Print a one-line error and exit 2 (bad input the user can fix)."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def interrupted(e: KeyboardInterrupt, what: str) -> NoReturn:
    """Ctrl-C (exit 130) or SIGTERM (exit 143): say how to carry on."""
    typer.echo(f"\ninterrupted: {what}", err=True)
    raise typer.Exit(143 if isinstance(e, Terminated) else 130)


NOTHING_CHANGED = "nothing half-written is left; rerun the same command"


def run_guarded(fn, *args, interrupted_hint: str | Callable[[], str] = NOTHING_CHANGED,
                **kwargs):  # fmt: skip
    """Call ``fn``; BadInput and environment faults (a full disk, a read-only or
    forbidden path) become a one-line error, exit 2; Ctrl-C or SIGTERM one line saying
    ``interrupted_hint`` (or what it returns then), exit 130 or 143."""
    from pipeline.atomic import environment_error

    try:
        return fn(*args, **kwargs)
    except KeyboardInterrupt as e:
        interrupted(e, interrupted_hint() if callable(interrupted_hint) else interrupted_hint)
    except BadInput as e:
        fail(str(e).splitlines()[0] if str(e) else type(e).__name__)
    except OSError as e:
        known = environment_error(e)
        if known is None:
            raise
        fail(str(known))


# ---------------------------------------------------------------- preprocess

P = PreprocessOptions


@app.command()
def preprocess(
    audio_dir: Path = opt(P, "audio_dir"),
    out: Path = opt(P, "out"),
    dataset: str = opt(P, "dataset"),
    metadata_dir: Path | None = opt(P, "metadata_dir"),
    subset: str = opt(P, "subset"),
    labels: str = opt(P, "labels"),
    min_label_tracks: int = opt(P, "min_label_tracks"),
    folds: int | None = opt(P, "folds"),
    fold: int | None = opt(P, "fold"),
    seed: int = opt(P, "seed"),
    jobs: int | None = opt(P, "jobs"),
    sample_rate: int = opt(P, "sample_rate"),
    n_mels: int = opt(P, "n_mels"),
    n_fft: int = opt(P, "n_fft"),
    hop_length: int = opt(P, "hop_length"),
    f_max: float = opt(P, "f_max"),
    max_seconds: float = opt(P, "max_seconds"),
    clip: str = opt(P, "clip"),
    min_seconds: float = opt(P, "min_seconds"),
    shard_size: int | None = opt(P, "shard_size"),
    verify_checksums: bool = opt(P, "verify_checksums"),
    checksums: Path | None = opt(P, "checksums"),
    allow_missing: bool = opt(P, "allow_missing"),
    backend: str = opt(P, "backend"),
    scheduler: str | None = opt(P, "scheduler"),
    progress: bool = opt(P, "progress"),
) -> None:
    """Decode audio into a cache of log-mel shards (rerun to resume).

    FMA, GTZAN or a folder of label folders, in parallel processes (or on a dask
    cluster), into HDF5 shards; rerun the same command to resume."""
    from pipeline.preprocess import format_summary, run_preprocess

    opts = from_values(PreprocessOptions, locals())
    manifest = run_guarded(
        run_preprocess, opts,
        interrupted_hint="finished shards are kept; rerun the same command to resume.",
    )  # fmt: skip
    typer.echo(format_summary(manifest))


# ---------------------------------------------------------------- train

T = TrainConfig


@app.command()
def train(
    cache: Path = opt(T, "cache"),
    out: Path = opt(T, "out"),
    arch: str = opt(T, "arch"),
    epochs: int = opt(T, "epochs"),
    batch_size: int = opt(T, "batch_size"),
    lr: float = opt(T, "lr"),
    channels: int = opt(T, "channels"),
    input_norm: str = opt(T, "input_norm"),
    crop_seconds: float = opt(T, "crop_seconds"),
    workers: int = opt(T, "workers"),
    device: str = opt(T, "device"),
    data_on_gpu: bool = opt(T, "data_on_gpu"),
    specaugment: bool = opt(T, "specaugment"),
    compile: bool = opt(T, "compile"),
    sync_bn: bool = opt(T, "sync_bn"),
    verify: bool = opt(T, "verify"),
    tensorboard: bool = opt(T, "tensorboard"),
    wandb: str | None = opt(T, "wandb"),
    wandb_name: str | None = opt(T, "wandb_name"),
    seed: int = opt(T, "seed"),
    resume: bool = opt(T, "resume"),
    progress: bool = opt(T, "progress"),
) -> None:
    """Train MRNet (or the cnn baseline) on a cache.

    Validates on the cache's validation split each epoch; RUN/best.pt is the best epoch.

    Data parallel: torchrun --nproc-per-node N --no-python mrnet train ... (rank 0 writes)."""
    from mrnet.train import train as run_train

    cfg = from_values(TrainConfig, locals())
    def hint() -> str:
        if (out / "last.pt").is_file():
            return f"rerun with --resume to continue from {out}/last.pt"
        return "no epoch was saved yet; rerun the same command"

    s = run_guarded(run_train, cfg, interrupted_hint=hint)
    if s["main"]:
        figure = {"val_acc": "accuracy", "val_map": "mAP"}[s["select_by"]]
        typer.echo(
            f"{s['epochs']} epochs in {s['run']}; best validation {figure} {s['best']:.3f} "
            f"(epoch {s['best_epoch']}): {s['run']}/best.pt, last.pt, metrics.csv"
        )


# ---------------------------------------------------------------- info, verify


@app.command()
def info(
    path: Path = typer.Argument(..., help="A cache directory, a run directory or a checkpoint."),
) -> None:
    """Print what a cache, run or checkpoint holds."""
    from mrnet.info import describe

    typer.echo(run_guarded(describe, path))


@app.command()
def verify(
    cache: Path = typer.Argument(..., help="Cache directory written by `mrnet preprocess`."),
    repair: bool = typer.Option(
        False,
        "--repair",
        help="Delete damaged shards (the cache becomes unfinished) so that rerunning the "
        "same `mrnet preprocess` command rebuilds exactly them.",
    ),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Re-read every shard of a cache and check it.

    Checksums, finite frames, label range, agreement with tracks.csv.

    Exit 0 when all is sound (or after --repair), 2 listing damaged shards otherwise."""
    from pipeline.cache.verify import damaged_error, format_report, verify_cache

    report = run_guarded(verify_cache, cache, repair=repair, progress=progress)
    typer.echo(format_report(report))
    if not report.ok and not report.repaired:
        fail(str(damaged_error(report)))


# ---------------------------------------------------------------- evaluate, predict

E = EvalOptions


@app.command()
def evaluate(
    checkpoint: Path = opt(E, "checkpoint"),
    cache: Path = opt(E, "cache"),
    split: str = opt(E, "split"),
    out: Path = opt(E, "out"),
    device: str = opt(E, "device"),
    batch_size: int = opt(E, "batch_size"),
    window: float = opt(E, "window"),
    progress: bool = opt(E, "progress"),
) -> None:
    """Score a cache split; write per-genre reports.

    Accuracy, F1, confusion matrix, per-track predictions (multi-label caches: per-label
    average precision and ROC-AUC). Long tracks are scored in windows."""
    from mrnet.evaluate import evaluate as run_evaluate
    from mrnet.evaluate import format_table

    report = run_guarded(run_evaluate, from_values(EvalOptions, locals()))
    typer.echo(format_table(report))
    files = ("labels.png, per_label.csv" if report.get("task") == "multi"
             else "confusion.csv, confusion.png, per_genre.csv")  # fmt: skip
    typer.echo(f"report written to {out}/ (report.json, {files}, predictions.csv)")


R = PredictOptions


@app.command()
def predict(
    paths: list[Path] = opt(R, "paths", argument=True),
    checkpoint: Path = opt(R, "checkpoint"),
    top: int = opt(R, "top"),
    json: bool = opt(R, "json"),
    csv: bool = opt(R, "csv"),
    device: str = opt(R, "device"),
    window: float = opt(R, "window"),
) -> None:
    """Print the top genres of audio files.

    Same decoder, clip and features as preprocess, with the checkpoint's settings."""
    from mrnet.predict import run_predict

    run_guarded(run_predict, from_values(PredictOptions, locals()), echo=typer.echo)


M = EmbedOptions


@app.command()
def embed(
    paths: list[Path] = opt(M, "paths", argument=True),
    checkpoint: Path = opt(M, "checkpoint"),
    out: Path = opt(M, "out"),
    cache: Path | None = opt(M, "cache"),
    split: str | None = opt(M, "split"),
    window: float = opt(M, "window"),
    batch_size: int = opt(M, "batch_size"),
    device: str = opt(M, "device"),
    progress: bool = opt(M, "progress"),
) -> None:
    """Write track embeddings of a cache or of audio files.

    MRNet's 128-d embedding before the classifier (cnn: its penultimate layer), long
    tracks as the mean over windows: OUT/embeddings.npy, OUT/index.csv (row i of one is
    row i of the other)."""
    from mrnet.embed import run_embed

    done = run_guarded(run_embed, from_values(EmbedOptions, locals()))
    for path, reason in done.failures.itertuples(index=False):
        typer.echo(f"{path}: cannot read ({reason})", err=True)
    n, d = done.embeddings.shape
    failed = f"; {len(done.failures)} unreadable, in failures.csv" if len(done.failures) else ""
    typer.echo(f"{n} embeddings of {d} values written to {out}/ (embeddings.npy, "
               f"index.csv){failed}")  # fmt: skip


X = ExportOptions


@app.command()
def export(
    checkpoint: Path = opt(X, "checkpoint"),
    out: Path = opt(X, "out"),
) -> None:
    """Export a checkpoint to ONNX.

    Input log_mel [batch, n_mels, frames] (dynamic batch and frames) as the cache stores
    it; output logits. Feature settings and label names go into the ONNX metadata.
    Needs pip install 'mrnet[export]'."""
    from mrnet.export import export as run_export

    meta = run_guarded(run_export, from_values(ExportOptions, locals()))
    labels = ", ".join(__import__("json").loads(meta["mrnet.labels"]))
    typer.echo(f"wrote {out}: input log_mel [batch, n_mels, frames], output logits over "
               f"{labels}; feature settings and labels in its metadata")  # fmt: skip


@app.command()
def compare(
    inputs: list[Path] = typer.Argument(
        ..., help="Report folders of `mrnet evaluate` (or their report.json) or run "
        "directories of `mrnet train` (validation figures of best.pt).", show_default=False,
    ),
    out: Path | None = typer.Option(
        None, help="Also write compare.csv, per_label.csv and compare.png here."
    ),
) -> None:
    """Compare runs or reports side by side, with mean ± std.

    Reports of `mrnet evaluate` (test figures, per-genre F1) or run directories
    (validation figures of best.pt), e.g. one per seed. Inputs must share labels, split
    and task."""
    from mrnet.compare import compare as run_compare

    text, _ = run_guarded(run_compare, inputs, out)
    typer.echo(text)
    if out is not None:
        typer.echo(f"written to {out}/ (compare.csv, per_label.csv, compare.png)")


# ---------------------------------------------------------------- demo

D = DemoOptions


@app.command()
def demo(
    out: Path = opt(D, "out"),
    dataset: str = opt(D, "dataset"),
    n_per_genre: int | None = opt(D, "n_per_genre"),
    seconds: float | None = opt(D, "seconds"),
    labels: str = opt(D, "labels"),
    epochs: int = opt(D, "epochs"),
    channels: int = opt(D, "channels"),
    jobs: int | None = opt(D, "jobs"),
) -> None:
    """Run the whole pipeline on a synthetic dataset (CPU, minutes).

    An FMA- or GTZAN-format dataset is generated, preprocessed, trained on and evaluated;
    the commands it runs are printed."""
    from mrnet.demo import run_demo

    run_guarded(run_demo, from_values(DemoOptions, locals()), echo=typer.echo,
                interrupted_hint="rerun the same `mrnet demo` to go on: finished stages "
                "are reused")  # fmt: skip


if __name__ == "__main__":
    app()
