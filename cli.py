"""mrnet: music genre classification in three staged commands.

\b
mrnet preprocess  audio -> cache of HDF5 log-mel shards (parallel, resumable)
mrnet train       cache -> MRNet checkpoint (GPU when present, resumable)
mrnet evaluate    checkpoint + cache -> per-genre confusion reports

and around them: predict, embed, export (ONNX), compare, info, verify, demo.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import typer

from mrnet.options import (
    BaselineOptions,
    CompareOptions,
    DemoOptions,
    EmbedOptions,
    EvalOptions,
    ExportOptions,
    InfoOptions,
    PredictOptions,
    RecipeArgs,
    TrainConfig,
)
from pipeline.errors import BadInput
from pipeline.options import PreprocessOptions, VerifyOptions
from pipeline.settings import default_of, field_types

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help texts are literal: [batch, n_mels, frames], 'mrnet[export]'
    help=__doc__,
)

NOTHING_CHANGED = "nothing half-written is left; rerun the same command"


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


def run_guarded(fn, *args, interrupted_hint: str | Callable[[], str] = NOTHING_CHANGED, **kwargs):
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


# ---------------------------------------------------------------- commands from settings


def _parameter(f: dataclasses.Field, tp: Any, positional: bool) -> inspect.Parameter:
    """The typer parameter of one settings field: its default, help, flag and choices."""
    meta = f.metadata
    help_ = meta["help"]
    if meta.get("choices") is not None:
        help_ += f" One of: {meta['choices'].help()}."
    default = default_of(f)
    default = ... if default is dataclasses.MISSING else default
    if positional:
        info = typer.Argument(default, help=help_, show_default=False)
    else:
        flag = meta.get("flag")
        info = typer.Option(default, *([flag] if flag else []), help=help_)
    return inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=tp)


def command(
    options: type,
    target: str,
    *,
    positional: tuple[str, ...] = (),
    interrupted_hint: Callable[[Any], str] | str = NOTHING_CHANGED,
    extra: type | None = None,
) -> Callable:
    """Register the decorated function's name and docstring as a command whose options
    are the command-line fields of ``options`` (and of ``extra``, handed to ``target``
    as well). ``target`` ("module:function", imported when the command runs) takes the
    filled options (and ``echo=`` if it streams lines) and returns a result whose
    ``summary()`` is printed and whose ``failure()``, if any, ends the command with it."""

    def register(doc: Callable) -> Callable:
        classes = [options] + ([extra] if extra else [])
        params, annotations = [], {}
        for cls in classes:
            hints = field_types(cls)
            for f in dataclasses.fields(cls):
                if f.metadata and f.metadata.get("option", True) and "help" in f.metadata:
                    params.append(_parameter(f, hints[f.name], f.name in positional))
                    annotations[f.name] = hints[f.name]

        def run(ctx: typer.Context, **values: Any) -> None:
            given = {k for k in values if _typed(ctx, k)}
            module, name = target.split(":")
            fn = getattr(importlib.import_module(module), name)
            args = [_fill(cls, values) for cls in classes]
            kwargs = {"given": given} if "given" in inspect.signature(fn).parameters else {}
            if "echo" in inspect.signature(fn).parameters:
                kwargs["echo"] = typer.echo
            hint = interrupted_hint
            if callable(hint):
                hint = _later(hint, args[0])
            result = run_guarded(fn, *args, interrupted_hint=hint, **kwargs)
            text = result.summary() if result is not None else ""
            if text:
                typer.echo(text)
            failure = getattr(result, "failure", lambda: None)()
            if failure:
                fail(failure)

        context = inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context)
        run.__signature__ = inspect.Signature([context, *params])
        run.__annotations__ = {"ctx": typer.Context, **annotations}
        run.__doc__ = doc.__doc__
        run.__name__ = doc.__name__
        app.command(name=doc.__name__)(run)
        return doc

    return register


def _typed(ctx: typer.Context, name: str) -> bool:
    """The value of parameter ``name`` was typed on the command line (not a default)."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name == "COMMANDLINE"


def _fill(cls: type, values: dict) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in names})


def _later(hint: Callable[[Any], str], opts: Any) -> Callable[[], str]:
    return lambda: hint(opts)


def _resume_hint(cfg: TrainConfig) -> str:
    out = Path(cfg.out) if cfg.out is not None else None
    if out is not None and (out / "last.pt").is_file():
        return f"rerun with --resume to continue from {out}/last.pt"
    return "no epoch was saved yet; rerun the same command"


# ---------------------------------------------------------------- the commands


KEPT = "finished shards are kept; rerun the same command to resume."
REUSED = "rerun the same `mrnet demo` to go on: finished stages are reused"


@command(PreprocessOptions, "pipeline.preprocess:run", interrupted_hint=KEPT)
def preprocess() -> None:
    """Decode audio into a cache of log-mel shards (rerun to resume).

    FMA, GTZAN, MTG-Jamendo, a folder of label folders or a CSV manifest (and Melon's
    precomputed mel arrays, ingested without decoding), in parallel processes (or on a
    dask cluster), into HDF5 shards; rerun the same command to resume. With --features
    wavlm the shards hold a frozen WavLM's hidden states instead (--ssl-model DIR), with
    --features wave the 16-kHz waveform (for `mrnet train --frontend wavlm`)."""


@command(TrainConfig, "mrnet.train:run", extra=RecipeArgs, interrupted_hint=_resume_hint)
def train() -> None:
    """Train MRNet (or the cnn baseline) on a cache.

    Validates on the cache's validation split each epoch; RUN/best.pt is the best epoch.
    Settings: built-in defaults < --config RECIPE.toml < flags < --set KEY=VALUE.

    Data parallel: torchrun --nproc-per-node N --no-python mrnet train ... (rank 0 writes)."""


@command(InfoOptions, "mrnet.info:run", positional=("path",))
def info() -> None:
    """Print what a cache, run or checkpoint holds."""


@command(VerifyOptions, "pipeline.verify:run", positional=("cache",))
def verify() -> None:
    """Re-read every shard of a cache and check it.

    Checksums, finite frames, label range, agreement with tracks.csv.

    Exit 0 when all is sound (or after --repair), 2 listing damaged shards otherwise."""


@command(EvalOptions, "mrnet.evaluate:run")
def evaluate() -> None:
    """Score a cache split; write per-genre reports.

    Accuracy, F1, confusion matrix, per-track predictions (multi-label caches: per-label
    average precision and ROC-AUC). Long tracks are scored in windows."""


@command(BaselineOptions, "mrnet.baseline:run")
def baseline() -> None:
    """Fit the built-in baseline on a cache; write the reports evaluate writes.

    A logistic regression on per-track statistics of the cached log-mels (band means and
    stds, MFCCs and their differences; C chosen on validation). `mrnet compare` puts its
    report beside MRNet's."""


@command(PredictOptions, "mrnet.predict:run", positional=("paths",))
def predict() -> None:
    """Print the top genres of audio files.

    Same decoder, clip and features as preprocess, with the checkpoint's settings."""


@command(EmbedOptions, "mrnet.embed:run", positional=("paths",))
def embed() -> None:
    """Write track embeddings of a cache or of audio files.

    MRNet's 128-d embedding before the classifier (cnn: its penultimate layer), long
    tracks as the mean over windows: OUT/embeddings.npy, OUT/index.csv (row i of one is
    row i of the other)."""


@command(ExportOptions, "mrnet.export:run")
def export() -> None:
    """Export a checkpoint to ONNX.

    Input log_mel [batch, n_mels, frames] (dynamic batch and frames), the cache's frames
    transposed; output logits. Feature settings and label names go into the ONNX
    metadata. Needs pip install 'mrnet[export]'."""


@command(CompareOptions, "mrnet.compare:run", positional=("inputs",))
def compare() -> None:
    """Compare runs or reports side by side, with mean ± std.

    Reports of `mrnet evaluate` (test figures, per-genre F1) or run directories
    (validation figures of best.pt), e.g. one per seed. Inputs must share labels, split
    and task; what else differs between them is noted."""


@command(DemoOptions, "mrnet.demo:run", interrupted_hint=REUSED)
def demo() -> None:
    """Run the whole pipeline on a synthetic dataset (CPU, minutes).

    An FMA- or GTZAN-format dataset is generated, preprocessed, trained on (with
    recipes/demo.toml) and evaluated; the commands it runs are printed."""


if __name__ == "__main__":
    app()
