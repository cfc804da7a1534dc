"""mrnet: FMA genre classification in three staged commands.

mrnet preprocess  FMA mp3s -> cache of HDF5 log-mel shards (parallel, resumable)
mrnet train       cache -> MRNet checkpoint (GPU when present, resumable)
mrnet evaluate    checkpoint + cache -> per-genre confusion reports
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import NoReturn

import typer

from pipeline.errors import BadInput

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help=__doc__,
)


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


def run_guarded(fn, *args, **kwargs):
    """Call ``fn``; BadInput (and a full disk anywhere) becomes a one-line error, exit 2."""
    from pipeline.atomic import write_error

    try:
        return fn(*args, **kwargs)
    except BadInput as e:
        fail(str(e).splitlines()[0] if str(e) else type(e).__name__)
    except OSError as e:
        if e.errno not in (28, 122):  # ENOSPC, EDQUOT: an environment fault the user fixes
            raise
        fail(str(write_error(Path(e.filename or "?"), e)))


# ---------------------------------------------------------------- preprocess


@app.command()
def preprocess(
    audio_dir: Path = typer.Option(
        ..., help="FMA audio folder (fma_small/, fma_large/ ...): AUDIO_DIR/000/000002.mp3."
    ),
    metadata_dir: Path = typer.Option(
        ..., help="fma_metadata/ folder holding tracks.csv (and genres.csv)."
    ),
    subset: str = typer.Option("small", help="FMA subset: small | medium | large (they nest)."),
    out: Path = typer.Option(..., help="Cache directory to create or resume, e.g. cache/small."),
    jobs: int | None = typer.Option(None, help="Parallel worker processes (default: all cores)."),
    sample_rate: int = typer.Option(16000, help="Target sample rate in Hz."),
    n_mels: int = typer.Option(128, help="Mel bands."),
    n_fft: int = typer.Option(1024, help="FFT size in samples."),
    hop_length: int = typer.Option(320, help="Hop in samples (320 at 16 kHz = 50 frames/s)."),
    f_max: float = typer.Option(0.0, help="Highest mel frequency in Hz; 0 = sample_rate / 2."),
    max_seconds: float = typer.Option(30.0, help="Keep at most this many seconds per track."),
    min_seconds: float = typer.Option(
        1.0, help="Tracks with less decoded audio are recorded as failures (too_short)."
    ),
    shard_size: int | None = typer.Option(
        None,
        help="Tracks per HDF5 shard (one job writes one shard); default: from the number of "
        "tracks (about 64 shards of 8 to 128 tracks).",
    ),
    backend: str = typer.Option(
        "loky", help="Where shard jobs run: loky (local processes) | dask (a dask cluster)."
    ),
    scheduler: str | None = typer.Option(
        None,
        help="With --backend dask: scheduler address, e.g. tcp://HOST:8786. The cache "
        "directory must be on storage every dask worker sees.",
    ),
) -> None:
    """Decode FMA MP3s in parallel into HDF5 log-mel shards; rerun to resume."""
    from pipeline.preprocess import PreprocessOptions, format_summary, run_preprocess

    opts = PreprocessOptions(
        audio_dir=audio_dir,
        metadata_dir=metadata_dir,
        subset=subset,
        out=out,
        jobs=jobs,
        sample_rate=sample_rate,
        n_mels=n_mels,
        n_fft=n_fft,
        hop_length=hop_length,
        f_max=f_max,
        max_seconds=max_seconds,
        min_seconds=min_seconds,
        shard_size=shard_size,
        backend=backend,
        scheduler=scheduler,
    )
    try:
        manifest = run_guarded(run_preprocess, opts)
    except KeyboardInterrupt as e:
        interrupted(e, "finished shards are kept; rerun the same command to resume.")
    typer.echo(format_summary(manifest))


# ---------------------------------------------------------------- train


@app.command()
def train(
    cache: Path = typer.Option(..., help="Cache directory written by `mrnet preprocess`."),
    out: Path = typer.Option(..., help="Run directory: last.pt, best.pt, metrics.csv, tb/."),
    arch: str = typer.Option("mrnet", help="Model: mrnet | cnn (128x128 mel-image baseline)."),
    epochs: int = typer.Option(30, help="Epochs in total (a resumed run continues up to this)."),
    batch_size: int = typer.Option(48, help="Crops per step (per process under torchrun)."),
    lr: float = typer.Option(1e-3, help="Peak learning rate (AdamW, cosine warm restarts)."),
    channels: int = typer.Option(512, help="MRNet width C (unused by cnn)."),
    crop_seconds: float = typer.Option(6.0, help="Length of the random training crops, s."),
    workers: int = typer.Option(2, help="DataLoader worker processes (0 = main process)."),
    device: str = typer.Option("auto", help="auto | cpu | cuda."),
    data_on_gpu: bool = typer.Option(
        False, "--data-on-gpu", help="Hold the training features in device memory (no loader)."
    ),
    specaugment: bool = typer.Option(
        False, "--specaugment", help="Add SpecAugment frequency and time masks."
    ),
    compile_model: bool = typer.Option(False, "--compile", help="torch.compile the model."),
    sync_bn: bool = typer.Option(
        False, "--sync-bn", help="Under torchrun: BatchNorm statistics over all GPUs (NCCL)."
    ),
    verify: bool = typer.Option(
        False,
        "--verify",
        help="Before training, re-read every shard as `mrnet verify` does (checksums, finite "
        "frames); without it only shard headers and labels are checked.",
    ),
    tensorboard: bool = typer.Option(False, "--tensorboard", help="Log to RUN/tb/."),
    seed: int = typer.Option(0, help="Seed of initialisation, crops and augmentation."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from last.pt."),
    progress: bool = typer.Option(True, help="Show a progress bar per epoch."),
) -> None:
    """Train MRNet (or the cnn baseline) on a cache; validate on FMA's validation split.

    Data parallel: torchrun --nproc-per-node N --no-python mrnet train ... (rank 0 writes)."""
    from mrnet.train import TrainConfig
    from mrnet.train import train as run_train

    cfg = TrainConfig(
        cache=cache,
        out=out,
        arch=arch,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        channels=channels,
        crop_seconds=crop_seconds,
        workers=workers,
        device=device,
        seed=seed,
        compile=compile_model,
        data_on_gpu=data_on_gpu,
        specaugment=specaugment,
        sync_bn=sync_bn,
        verify=verify,
        tensorboard=tensorboard,
        resume=resume,
        progress=progress,
    )
    try:
        s = run_guarded(run_train, cfg)
    except KeyboardInterrupt as e:
        interrupted(e, f"rerun with --resume to continue from {out}/last.pt")
    if s["main"]:
        typer.echo(
            f"{s['epochs']} epochs in {s['run']}; best validation accuracy "
            f"{s['best_val_acc']:.3f} (epoch {s['best_epoch']}): {s['run']}/best.pt, last.pt, "
            "metrics.csv"
        )


# ---------------------------------------------------------------- info


@app.command()
def info(
    path: Path = typer.Argument(..., help="A cache directory, a run directory or a checkpoint."),
) -> None:
    """Print what a cache, run or checkpoint holds."""
    from mrnet.info import describe

    typer.echo(run_guarded(describe, path))


# ---------------------------------------------------------------- verify


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
    """Re-read every shard: checksums, finite frames, label range, agreement with tracks.csv.

    Exit 0 when all is sound (or after --repair), 2 listing damaged shards otherwise."""
    from pipeline.cache.verify import damaged_error, format_report, verify_cache

    report = run_guarded(verify_cache, cache, repair=repair, progress=progress)
    typer.echo(format_report(report))
    if not report.ok and not report.repaired:
        fail(str(damaged_error(report)))


# ---------------------------------------------------------------- evaluate


@app.command()
def evaluate(
    checkpoint: Path = typer.Option(..., help="Checkpoint to evaluate, e.g. RUN/best.pt."),
    cache: Path = typer.Option(..., help="Cache directory written by `mrnet preprocess`."),
    split: str = typer.Option("test", help="FMA split to evaluate: training | validation | test."),
    out: Path = typer.Option(..., help="Report directory (created): report.json, CSVs, PNG."),
    device: str = typer.Option("auto", help="auto | cpu | cuda."),
    batch_size: int = typer.Option(
        16, help="Whole tracks per forward pass (more when the tracks are shorter)."
    ),
) -> None:
    """Whole-track inference on a cache split; write per-genre confusion reports."""
    from mrnet.evaluate import EvalOptions, format_table
    from mrnet.evaluate import evaluate as run_evaluate

    opts = EvalOptions(
        checkpoint=checkpoint,
        cache=cache,
        out=out,
        split=split,
        device=device,
        batch_size=batch_size,
    )
    report = run_guarded(run_evaluate, opts)
    typer.echo(format_table(report))
    typer.echo(
        f"report written to {out}/ (report.json, confusion.csv, confusion.png, "
        "per_genre.csv, predictions.csv)"
    )


# ---------------------------------------------------------------- predict


@app.command()
def predict(
    paths: list[Path] = typer.Argument(..., help="Audio files or folders (searched recursively)."),
    checkpoint: Path = typer.Option(..., help="Checkpoint, e.g. RUN/best.pt."),
    top: int = typer.Option(3, help="How many genres to show per file (1 or more)."),
    json_out: bool = typer.Option(False, "--json", help="One JSON object per line."),
    csv_out: bool = typer.Option(False, "--csv", help="CSV: path, genre_1, p_1, ..., error."),
    device: str = typer.Option("auto", help="auto | cpu | cuda."),
) -> None:
    """Print the top genres of audio files (same decoder and features as preprocess)."""
    import csv
    import json

    from mrnet import checkpoint as ckpt_io
    from mrnet.predict import expand_inputs, predict_files
    from mrnet.runtime import resolve_device

    if json_out and csv_out:
        fail("--json and --csv exclude each other; pass one")
    if top < 1:
        fail(f"--top must be 1 or more (got {top})")
    ckpt = run_guarded(ckpt_io.load, checkpoint)
    model = run_guarded(ckpt_io.load_model, ckpt)
    files = run_guarded(expand_inputs, paths)
    dev = run_guarded(resolve_device, device)
    top = min(top, len(ckpt.labels))
    writer = csv.writer(sys.stdout) if csv_out else None
    if writer:
        header = ["path"] + [f"{c}_{i}" for i in range(1, top + 1) for c in ("genre", "p")]
        writer.writerow(header + ["error"])
    failed = 0
    for p in predict_files(ckpt, model, files, dev):
        failed += p.error is not None
        if json_out:
            row = {"path": str(p.path), "top": p.top(top), "error": p.error}
            typer.echo(json.dumps(row, allow_nan=False))
        elif writer:
            cells = [x for g, v in p.top(top) for x in (g, f"{v:.4f}")]
            writer.writerow([str(p.path), *cells, *[""] * (2 * top - len(cells)), p.error or ""])
        elif p.error:
            typer.echo(f"{p.path}: cannot read ({p.error})")
        else:
            typer.echo(f"{p.path}: " + ", ".join(f"{g} {v:.2f}" for g, v in p.top(top)))
    if failed == len(files):
        fail(f"none of the {len(files)} files could be read; pass MP3/WAV/FLAC/OGG audio files")


# ---------------------------------------------------------------- demo


@app.command()
def demo(
    out: Path = typer.Option(Path("demo"), help="Folder for the dataset, cache, run, report."),
    n_per_genre: int = typer.Option(40, help="Synthetic tracks per genre (8 genres)."),
    seconds: float = typer.Option(30.0, help="Length of each synthetic clip."),
    epochs: int = typer.Option(20, help="Training epochs."),
    channels: int = typer.Option(64, help="MRNet width C (the paper's is 512)."),
    jobs: int | None = typer.Option(None, help="Processes for generation and preprocessing."),
) -> None:
    """Run the whole pipeline on a synthetic FMA-format dataset (CPU, a few minutes)."""
    from mrnet.demo import DemoOptions, run_demo

    opts = DemoOptions(
        out=out,
        n_per_genre=n_per_genre,
        seconds=seconds,
        epochs=epochs,
        channels=channels,
        jobs=jobs,
    )
    run_guarded(run_demo, opts, echo=typer.echo)


def main() -> None:  # pragma: no cover - `python cli.py`
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
