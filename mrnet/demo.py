"""`mrnet demo`: the whole pipeline on a synthetic FMA-, GTZAN-, Melon- or MTG-Jamendo-format
dataset, on CPU.

synth dataset ─preprocess─▶ OUT/cache ─train─▶ OUT/run ─evaluate─▶ OUT/report

With --features wavlm the cache holds the hidden states of a tiny WavLM with random
weights written to OUT/wavlm-random (pipeline.synth.wavlm), and training follows
recipes/wavlm.toml at the demo's size; with --features wave the cache holds the waveform
and training runs that WavLM in each step (--frontend wavlm, recipes/wavlm_wave.toml):
the authors' input path end to end, not their accuracy.

Each stage is run from the same options object that `command_line` prints as the
equivalent `mrnet` command, so what the demo shows is what it ran.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass

from mrnet.options import DemoOptions, EvalOptions, RecipeArgs, TrainConfig
from mrnet.recipe import apply, load, resolve
from mrnet.task import TASKS
from pipeline.errors import BadInput
from pipeline.options import PreprocessOptions
from pipeline.settings import check_choices, command_line, flag_of
from pipeline.workers import local_cores

DEFAULTS = {
    "fma": (40, 30.0),
    "gtzan": (100, 10.0),
    "melon": (40, 30.0),
    "jamendo": (40, 30.0),
}  # tracks per genre, seconds per clip
DEMO_RECIPE = "demo"  # recipes/demo.toml: the demo's training settings
# the recipe of each input kind (sized by the demo's): training on cached WavLM features,
# or on a waveform cache through the WavLM front-end
RECIPES = {"logmel": DEMO_RECIPE, "wavlm": "wavlm", "wave": "wavlm_wave"}
RANDOM_WAVLM = "wavlm-random"  # OUT/wavlm-random/: the tiny random WavLM of wavlm and wave


def recipe_of(opts: DemoOptions) -> TrainConfig:
    """The demo's training settings: recipes/demo.toml, or for WavLM input the recipe of
    its kind with the demo recipe's settings (size, device) over it."""
    train, _ = resolve(TrainConfig(), RecipeArgs(config=_recipe_name(opts)), set())
    if opts.features != "logmel":
        train = apply(train, load(DEMO_RECIPE), f"recipe {DEMO_RECIPE}")
    if opts.features == "wave":
        train = dataclasses.replace(train, ssl_model=opts.out / RANDOM_WAVLM)
    return train


def _recipe_name(opts: DemoOptions) -> str:
    return RECIPES[opts.features]


def resolved(opts: DemoOptions) -> DemoOptions:
    """``opts`` with the dataset's defaults filled in."""
    n, seconds = DEFAULTS[opts.dataset]
    return dataclasses.replace(
        opts, n_per_genre=opts.n_per_genre or n, seconds=opts.seconds or seconds
    )


def stage_options(
    opts: DemoOptions, audio_dir, metadata_dir, train_tracks: int | None = None
) -> tuple[PreprocessOptions, TrainConfig, EvalOptions]:
    """The options of the three stages the demo runs, all under ``opts.out``.

    Training comes from recipes/demo.toml, with --epochs and --channels over it; it
    resumes when OUT/run/last.pt exists.

    Args:
        opts: the demo's options, with the dataset's defaults filled in (`resolved`).
        audio_dir: the synthetic dataset's audio folder.
        metadata_dir: its metadata folder (None for GTZAN; MTG-Jamendo: its splits/).
        train_tracks: the training split's size, when known; the batch size is cut to it.

    Returns:
        (preprocess options, training config, evaluation options).
    """
    cache, run, report = opts.out / "cache", opts.out / "run", opts.out / "report"
    splits_dir = metadata_dir if opts.dataset == "jamendo" else None  # its split TSVs
    metadata_dir = None if opts.dataset == "jamendo" else metadata_dir
    pre = PreprocessOptions(
        audio_dir=audio_dir,
        metadata_dir=metadata_dir,
        out=cache,
        jobs=opts.jobs,
        progress=opts.progress,
    )
    if opts.dataset == "gtzan":
        folds = 5 if opts.n_per_genre < 100 else None  # the filtered split needs all names
        pre = dataclasses.replace(pre, dataset="gtzan", folds=folds, fold=0 if folds else None)
    elif opts.dataset == "melon":
        pre = dataclasses.replace(pre, dataset="melon", labels=opts.labels)
    elif opts.dataset == "jamendo":
        pre = dataclasses.replace(pre, dataset="jamendo", splits_dir=splits_dir, labels="top-multi")
    elif opts.labels != "top":
        pre = dataclasses.replace(pre, subset="large", labels=opts.labels)
    if opts.features == "wavlm":
        pre = dataclasses.replace(pre, features="wavlm", ssl_model=opts.out / RANDOM_WAVLM)
    elif opts.features == "wave":
        pre = dataclasses.replace(pre, features="wave")
    train = recipe_of(opts)
    given = {"epochs": opts.epochs, "channels": opts.channels}
    given = {k: v for k, v in given.items() if v is not None}
    if train_tracks is not None and train.batch_size > train_tracks:
        given["batch_size"] = train_tracks
    train = dataclasses.replace(
        train,
        **given,
        cache=cache,
        out=run,
        resume=(run / "last.pt").exists(),
        progress=opts.progress,
    )
    evaluate = EvalOptions(
        checkpoint=run / "best.pt",
        cache=cache,
        out=report,
        device=train.device,
        progress=opts.progress,
        ssl_model=train.ssl_model,
    )
    return pre, train, evaluate


def train_command(cfg: TrainConfig, opts: DemoOptions) -> str:
    """The `mrnet train` command equivalent to ``cfg``: the recipe, then what differs."""
    name = _recipe_name(opts)
    recipe, _ = resolve(TrainConfig(), RecipeArgs(config=name), set())
    changed = _changed(cfg, recipe)
    return f"mrnet train --config {name} --cache {cfg.cache} --out {cfg.out}" + (
        f" {changed}" if changed else ""
    )


def _changed(cfg: TrainConfig, recipe: TrainConfig) -> str:
    """The flags of the settings in which ``cfg`` differs from the demo recipe."""
    out = []
    for f in dataclasses.fields(cfg):
        a, b = getattr(cfg, f.name), getattr(recipe, f.name)
        if a == b or f.name in ("cache", "out"):
            continue
        flag = flag_of(f.name)
        out.append(flag if a is True else f"--no-{flag[2:]}" if a is False else f"{flag} {a}")
    return " ".join(out)


@dataclass
class Demoed:
    """The demo's evaluation report (test split); every stage printed as it ran."""

    report: dict

    def summary(self) -> str:
        """Nothing: the demo printed every stage as it ran."""
        return ""


def run(opts: DemoOptions, echo: Callable[[str], None] = print) -> Demoed:
    """Run every stage, printing each command and its outcome."""
    from mrnet.evaluate import evaluate
    from mrnet.reports import format_table
    from mrnet.train import train
    from pipeline import synth
    from pipeline.preprocess import format_summary
    from pipeline.preprocess import run as preprocess
    from pipeline.synth import gtzan, jamendo, melon

    check_choices(opts)
    opts.check()
    opts = resolved(opts)
    top = 100 if opts.dataset == "gtzan" else None
    least = 7 if opts.dataset == "jamendo" else 3  # jamendo: 3 rounds of artists of two
    if opts.n_per_genre < least or (top and opts.n_per_genre > top):
        raise BadInput(
            f"--n-per-genre must be {least} or more{f' and {top} at most' if top else ''} "
            f"(got {opts.n_per_genre}): each genre needs training, validation and test tracks"
        )
    t0 = time.perf_counter()
    jobs = opts.jobs or local_cores()
    data = opts.out / opts.dataset
    echo(f"[1/4] generating the synthetic {opts.dataset.upper()} dataset in {data} ...")
    if opts.dataset == "gtzan":
        ds = gtzan.generate(data, "original", opts.n_per_genre, opts.seconds, jobs=jobs)
        audio_dir, metadata_dir = ds.audio_dir, None
    elif opts.dataset == "melon":
        ds = melon.generate(data, opts.n_per_genre, opts.seconds)
        audio_dir, metadata_dir = ds.audio_dir, ds.metadata_dir
    elif opts.dataset == "jamendo":
        ds = jamendo.generate(data, len(jamendo.GENRES) * opts.n_per_genre, opts.seconds)
        audio_dir, metadata_dir = ds.audio_dir, ds.splits_dir
    else:
        n_multi = 4 * opts.n_per_genre if opts.labels != "top" else 0  # two-genre tracks
        ds = synth.generate(
            data,
            n_per_genre=opts.n_per_genre,
            seconds=opts.seconds,
            jobs=jobs,
            reuse=True,
            n_multi=n_multi,
        )
        audio_dir, metadata_dir = ds.audio_dir, ds.metadata_dir
    if opts.features != "logmel":
        from joblib.externals.loky import get_reusable_executor

        # fresh workers for preprocess: loky would take torch, loaded into the generator's
        # workers by their next job, for a memory leak and restart them, with a warning
        get_reusable_executor().shutdown(wait=True)
        if not (opts.out / RANDOM_WAVLM / "config.json").exists():
            from pipeline.synth.wavlm import NOTE, write_random_wavlm

            write_random_wavlm(opts.out / RANDOM_WAVLM)
            echo(f"      and a tiny WavLM in {opts.out / RANDOM_WAVLM}: {NOTE}")
    pre, _, _ = stage_options(opts, audio_dir, metadata_dir)
    echo(f"[2/4] {command_line('preprocess', pre)}")
    manifest = preprocess(pre).manifest
    echo(format_summary(manifest))
    _, fit, score = stage_options(
        opts, audio_dir, metadata_dir, manifest.splits["training"]["tracks"]
    )
    echo(f"[3/4] {train_command(fit, opts)}")
    train(fit)
    echo(f"[4/4] {command_line('evaluate', score)}")
    rep = evaluate(score)
    echo(format_table(rep))
    task = TASKS[rep["task"]]
    name, value = task.headline(rep)
    base = rep.get("baseline", {}).get(task.report_figures[0])
    figure = f"test {name} {value:.3f}" + (
        f" (the built-in baseline's: {base:.3f})" if base is not None else ""
    )
    if opts.features != "logmel":
        figure += f" on the features of a WavLM with random weights ({opts.out / RANDOM_WAVLM})"
    files = task.report_files
    try_line = (
        f"mrnet embed --checkpoint {score.checkpoint} --cache {pre.out} --out "
        f"{opts.out / 'embeddings'}  (predict reads audio files into log-mels)"
        if opts.dataset == "melon" or opts.features == "wavlm"
        else f"mrnet predict --checkpoint {score.checkpoint} "
        f"{audio_dir / {'gtzan': 'jazz', 'jamendo': '00'}.get(opts.dataset, '000')}"
        + (f" --ssl-model {score.ssl_model}" if score.ssl_model else "")
    )
    echo(
        f"\ndemo finished in {time.perf_counter() - t0:.0f} s; {figure}\n"
        f"  dataset     {data}\n  cache       {pre.out}  (mrnet info {pre.out})\n"
        f"  checkpoint  {score.checkpoint}  (metrics: {fit.out / 'metrics.csv'})\n"
        f"  report      {score.out}/report.json, {files}, predictions.csv\n"
        f"  try         {try_line}"
    )
    return Demoed(rep)
