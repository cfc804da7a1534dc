"""The settings of every command after the cache: defaults, help, choices and checks in
one place (cli.py generates the commands' options from these fields; recipes and --set
fill `TrainConfig`). Plain data: importing this loads neither torch nor the stages."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from mrnet.model import ARCHITECTURES, FRONTENDS, INPUT_NORMS, LEGACY_INPUT_NORM, ModelConfig
from pipeline.errors import BadInput
from pipeline.options import INPUT_FEATURES
from pipeline.settings import Registry, flag_of, setting

DEVICES = Registry(
    "device",
    {"auto": "the GPU when there is one, else the CPU", "cpu": "", "cuda": "an NVIDIA GPU"},
)
WINDOW_SECONDS = 30.0  # tracks longer than this are scored in windows (FMA's clip length)
WINDOW_HELP = (
    "Score a track longer than this many seconds as the mean of windows of this length "
    "(hop: half a window), shorter tracks whole; 0: every track whole, in one pass."
)
_MODEL = ModelConfig("mrnet", 1, 1)  # MRNet's default shape, read below


def _device(help_: str = "Where the model runs.") -> object:
    return setting("auto", help_, choices=DEVICES)


def _ssl_model() -> object:
    return setting(
        None,
        "A model trained on WavLM features (audio files) or with --frontend wavlm: the "
        "WavLM folder it was made with (checked against the SHA-256 the model records).",
    )


def _progress() -> object:
    return setting(True, "Show a progress bar.")


def check_positive(obj: object, *names: str) -> None:
    for name in names:
        if not getattr(obj, name) > 0:
            raise BadInput(f"{flag_of(name)} must be positive (got {getattr(obj, name)})")


def check_window(seconds: float, minimum: float = 1.0) -> None:
    if seconds != 0 and not seconds >= minimum:
        raise BadInput(
            f"--window must be 0 (whole tracks in one pass) or at least {minimum:g} s "
            f"(got {seconds:g})"
        )


@dataclass
class TrainConfig:
    """Everything `mrnet train` takes; recorded, as plain types, in every checkpoint.
    ``resume="keep"``: a resumed run keeps its recorded value (these decide what is
    computed); the others (epochs, where and how it runs, logging) may change."""

    cache: Path | None = setting(None, "Cache directory written by `mrnet preprocess`.")
    out: Path | None = setting(None, "Run directory: last.pt, best.pt, metrics.csv, tb/.")
    arch: str = setting("mrnet", "Model.", choices=ARCHITECTURES, resume="keep")
    frontend: str | None = setting(
        None,
        "Compute the input inside the model from a waveform cache (preprocess --features "
        "wave): wavlm, a frozen WavLM (--ssl-model) whose hidden states MRNet sums with "
        "learned weights, as the MRNet authors train.",
        choices=FRONTENDS,
        resume="keep",
    )
    ssl_model: Path | None = setting(
        None,
        "--frontend wavlm: a local WavLM folder in Hugging Face's format (config.json and "
        "model.safetensors or pytorch_model.bin), e.g. microsoft/wavlm-base-plus; nothing "
        "is downloaded. Give it again to --resume.",
    )
    epochs: int = setting(20, "Epochs in total (a resumed run continues up to this).")
    batch_size: int = setting(48, "Crops per step (per process under torchrun).", resume="keep")
    lr: float = setting(1e-3, "Peak learning rate (AdamW, cosine warm restarts).", resume="keep")
    lr_min: float = setting(
        5e-4, "Floor of the cosine schedule (the MRNet authors').", option=False, resume="keep"
    )
    t0: int = setting(
        0,
        "Epochs of the first cosine cycle; 0: all epochs (fixed at the run's start).",
        option=False,
        resume="keep",
    )
    t_mult: int = setting(
        2,
        "Each cosine cycle is this many times longer than the last.",
        option=False,
        resume="keep",
    )
    weight_decay: float = setting(1e-4, "AdamW weight decay.", option=False, resume="keep")
    channels: int = setting(
        _MODEL.channels, "MRNet width C (unused by cnn; the paper's is 512).", resume="keep"
    )
    input_norm: str = setting(
        _MODEL.input_norm,
        "MRNet's first layer.",
        choices=INPUT_NORMS,
        resume="keep",
        legacy=LEGACY_INPUT_NORM,
    )
    crop_seconds: float = setting(6.0, "Length of the random training crops, s.", resume="keep")
    min_steps: int = setting(
        50,
        "Optimiser steps an epoch makes at least: its crops visit every training track as "
        "many times as that takes (once on a large dataset); 0: one crop per track.",
        resume="keep",
        legacy=0,
    )
    val_crops: int = setting(
        3,
        "Validation during training scores each track as the mean of this many evenly "
        "spaced crops of --crop-seconds; 0: whole tracks in windows, as evaluate does.",
        resume="keep",
        legacy=0,
    )
    mixup: float = setting(
        0.4,
        "mixup alpha: each batch mixes its crops and targets pairwise with a Beta(alpha, "
        "alpha) weight; 0: off.",
        resume="keep",
        legacy=0.0,
    )
    workers: int = setting(2, "DataLoader worker processes (0: the main process).")
    device: str = _device()
    seed: int = setting(0, "Seed of initialisation, crops and augmentation.", resume="keep")
    compile: bool = setting(False, "torch.compile the model.", flag="--compile")
    data_on_gpu: bool = setting(
        False, "Hold the training features in device memory (no loader).", flag="--data-on-gpu"
    )
    specaugment: bool = setting(
        True,
        "SpecAugment frequency and time masks on the training crops (torchaudio).",
        resume="keep",
        legacy=False,
    )
    freq_mask: int = setting(
        16,
        "SpecAugment: the widest of 2 frequency masks, mel bands.",
        option=False,
        resume="keep",
    )
    time_mask: int = setting(
        30, "SpecAugment: the widest of 2 time masks, frames.", option=False, resume="keep"
    )
    noise_prob: float = setting(
        0.7,
        "Probability that a crop gets additive Gaussian noise (the authors').",
        option=False,
        resume="keep",
    )
    noise_mean: tuple[float, float] = setting(
        (-0.03, 0.03),
        "Range of the noise's mean, in input units: log-mel, or waveform samples with a "
        "--frontend (drawn per crop).",
        option=False,
        resume="keep",
    )
    noise_std: tuple[float, float] = setting(
        (0.05, 0.1),
        "Range of the noise's standard deviation (drawn per crop).",
        option=False,
        resume="keep",
    )
    grad_clip: float = setting(
        5.0, "Largest global gradient norm; 0: no clipping.", option=False, resume="keep"
    )
    window: float = setting(
        WINDOW_SECONDS, "Validation: " + WINDOW_HELP, option=False, resume="keep"
    )
    sync_bn: bool = setting(
        False, "Under torchrun: BatchNorm statistics over all GPUs (NCCL).", flag="--sync-bn"
    )
    verify: bool = setting(
        False,
        "Before training, re-read every shard of the cache as `mrnet verify` does (checksums, "
        "finite frames); without it only headers and labels are checked.",
        flag="--verify",
    )
    tensorboard: bool = setting(False, "Log to RUN/tb/.", flag="--tensorboard")
    wandb: str | None = setting(
        None,
        "Log the config and every epoch's metrics to this Weights & Biases project (needs "
        "pip install 'mrnet[tracking]'; WANDB_MODE=offline works without a network).",
    )
    wandb_name: str | None = setting(None, "Name of the W&B run (default: W&B picks one).")
    resume: bool = setting(False, "Continue the run in --out from last.pt.", flag="--resume")
    progress: bool = setting(True, "Show a progress bar per epoch.")

    def to_dict(self) -> dict:
        """Plain types only (str, int, float, bool, list), as checkpoints require."""
        return {
            k: str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v
            for k, v in dataclasses.asdict(self).items()
        }

    def model_config(self, n_mels: int, n_classes: int, input_layers: int = 0) -> ModelConfig:
        """The model these settings make for an input of ``n_mels`` features per frame
        (``input_layers`` stacked hidden states for WavLM features)."""
        return ModelConfig(
            self.arch,
            n_mels,
            n_classes,
            self.channels,
            input_norm=self.input_norm,
            input_layers=input_layers,
        )

    def check(self) -> None:
        """Every check that needs nothing but the settings; BadInput in one line."""
        for name in ("cache", "out"):
            if getattr(self, name) is None:
                raise BadInput(f"{flag_of(name)} is required (or set {name} in the recipe)")
        check_positive(self, "epochs", "channels", "lr", "crop_seconds")
        if self.workers < 0:
            raise BadInput("--workers must be 0 or more")
        if self.batch_size < 2:
            raise BadInput("--batch-size must be at least 2 (the models use BatchNorm)")
        if self.min_steps < 0 or self.val_crops < 0 or self.mixup < 0:
            raise BadInput("min_steps, val_crops and mixup must be 0 or more")
        if not 0 <= self.noise_prob <= 1:
            raise BadInput(f"noise_prob must lie in 0..1 (got {self.noise_prob})")
        if self.lr_min < 0 or self.t_mult < 1 or self.grad_clip < 0 or self.weight_decay < 0:
            raise BadInput("lr_min, grad_clip and weight_decay must be 0 or more, t_mult 1 or more")
        check_window(self.window)


@dataclass
class RecipeArgs:
    """How `mrnet train` assembles its settings: built-in defaults < the --config recipe <
    command-line flags < --set (under --resume the run's recorded settings win)."""

    config: Path | None = setting(
        None,
        "A TOML recipe of training settings: a file, or a name in recipes/ (demo, "
        "fma_small, gtzan, ...).",
    )
    set: list[str] = setting(
        [],
        "KEY=VALUE: any training setting, the last word (repeatable; tuples "
        "comma-separated, e.g. noise_std=0.05,0.1; none for no value).",
    )
    print_config: bool = setting(
        False, "Print the resolved settings as a recipe (TOML) and exit.", flag="--print-config"
    )


@dataclass
class EvalOptions:
    """Arguments of `mrnet evaluate` (see its --help)."""

    checkpoint: Path = setting(help="Checkpoint to evaluate, e.g. RUN/best.pt.")
    cache: Path = setting(help="Cache directory written by `mrnet preprocess`.")
    out: Path = setting(help="Report directory (created): report.json, CSVs, PNG.")
    split: str = setting("test", "Split to evaluate: training | validation | test.")
    ssl_model: Path | None = _ssl_model()
    device: str = _device()
    batch_size: int = setting(
        16, "Windows (or whole tracks) per forward pass (more when they are shorter)."
    )
    window: float = setting(WINDOW_SECONDS, WINDOW_HELP)
    progress: bool = _progress()

    def check(self) -> None:
        if self.out.exists() and not self.out.is_dir():
            raise BadInput(f"--out {self.out} is a file; pass a directory for the report")
        if self.batch_size < 1:
            raise BadInput(f"--batch-size must be at least 1 (got {self.batch_size})")
        check_window(self.window)


@dataclass
class BaselineOptions:
    """Arguments of `mrnet baseline` (see its --help)."""

    cache: Path = setting(help="Cache directory written by `mrnet preprocess`.")
    out: Path = setting(help="Report directory (created): the files `mrnet evaluate` writes.")
    split: str = setting("test", "Split to report on: training | validation | test.")
    progress: bool = _progress()

    def check(self) -> None:
        if self.out.exists() and not self.out.is_dir():
            raise BadInput(f"--out {self.out} is a file; pass a directory for the report")


@dataclass
class PredictOptions:
    """Arguments of `mrnet predict` (see its --help)."""

    paths: list[Path] = setting(help="Audio files or folders (searched recursively).")
    checkpoint: Path = setting(help="Checkpoint, e.g. RUN/best.pt.")
    top: int = setting(
        3,
        "How many genres to show per file (1 or more); multi-label models: at most this many "
        "of the labels above their thresholds.",
    )
    ssl_model: Path | None = _ssl_model()
    json: bool = setting(False, "One JSON object per line.", flag="--json")
    csv: bool = setting(False, "CSV: path, genre_1, p_1, ..., error.", flag="--csv")
    device: str = _device()
    window: float = setting(
        WINDOW_SECONDS,
        WINDOW_HELP + " The features are the checkpoint's clip, or the whole file for "
        "models trained with --max-seconds 0.",
    )

    def check(self) -> None:
        if self.json and self.csv:
            raise BadInput("--json and --csv exclude each other; pass one")
        if self.top < 1:
            raise BadInput(f"--top must be 1 or more (got {self.top})")
        check_window(self.window)


@dataclass
class EmbedOptions:
    """Arguments of `mrnet embed` (see its --help)."""

    checkpoint: Path = setting(help="Checkpoint, e.g. RUN/best.pt.")
    out: Path = setting(help="Folder (created): embeddings.npy, index.csv.")
    paths: list[Path] = setting(
        [], "Audio files or folders (searched recursively); or pass --cache instead."
    )
    cache: Path | None = setting(None, "Embed the tracks of this cache instead of files.")
    ssl_model: Path | None = _ssl_model()
    split: str | None = setting(None, "With --cache: only this split (default: all).")
    window: float = setting(WINDOW_SECONDS, WINDOW_HELP + " (Embeddings: the mean embedding.)")
    batch_size: int = setting(16, "Windows per forward pass.")
    device: str = _device()
    progress: bool = _progress()

    def check(self) -> None:
        if self.out.exists() and not self.out.is_dir():
            raise BadInput(f"--out {self.out} is a file; pass a directory for the embeddings")
        if (self.cache is None) == (not self.paths):
            raise BadInput("pass either --cache CACHE or audio files/folders (not both, not none)")
        if self.batch_size < 1:
            raise BadInput(f"--batch-size must be at least 1 (got {self.batch_size})")
        if self.split is not None and self.cache is None:
            raise BadInput("--split is for --cache; audio files have no split")
        check_window(self.window)


@dataclass
class ExportOptions:
    """Arguments of `mrnet export` (see its --help)."""

    checkpoint: Path = setting(help="Checkpoint to export, e.g. RUN/best.pt.")
    out: Path = setting(help="The ONNX file to write, e.g. model.onnx.")

    def check(self) -> None:
        if self.out.is_dir():
            raise BadInput(f"--out {self.out} is a folder; pass a file name such as model.onnx")


@dataclass
class CompareOptions:
    """Arguments of `mrnet compare` (see its --help)."""

    inputs: list[Path] = setting(
        help="Report folders of `mrnet evaluate` (or their report.json) or run directories "
        "of `mrnet train` (validation figures of best.pt)."
    )
    out: Path | None = setting(None, "Also write compare.csv, per_label.csv and compare.png here.")

    def check(self) -> None:
        if self.out is not None and self.out.exists() and not self.out.is_dir():
            raise BadInput(f"--out {self.out} is a file; pass a directory for the comparison")


@dataclass
class InfoOptions:
    """Arguments of `mrnet info` (see its --help)."""

    path: Path = setting(help="A cache directory, a run directory or a checkpoint.")


DEMO_DATASETS = Registry(
    "demo dataset",
    {
        "fma": "8 genres, FMA's layout",
        "gtzan": "10 genres, GTZAN's layout and split",
        "melon": "4 genres, Melon's layout: precomputed mel arrays (no audio), song_meta.json",
        "jamendo": "5 genre tags (multi-label), MTG-Jamendo's layout: MP3s and split TSVs",
    },
)
DEMO_LABELS = Registry(
    "demo label scheme",
    {
        "top": "one genre per track",
        "top-multi": "multi-label (fma: the large subset with two-genre tracks added; "
        "melon: every top genre of a song)",
    },
)


@dataclass
class DemoOptions:
    """Arguments of `mrnet demo` (see its --help). The training settings are those of
    recipes/demo.toml; --epochs and --channels override them."""

    out: Path = setting(Path("demo"), "Folder for the dataset, cache, run and report.")
    dataset: str = setting("fma", "Synthetic dataset.", choices=DEMO_DATASETS)
    n_per_genre: int | None = setting(
        None,
        "Synthetic tracks per genre (default: 40; 100 for gtzan, its full set of names: "
        "with fewer, GTZAN's filtered split is replaced by 5-fold cross-validation).",
    )
    seconds: float | None = setting(
        None, "Length of each synthetic clip, s (default: 30; 10 for gtzan)."
    )
    labels: str = setting(
        "top", "Labels (fma and melon; jamendo is multi-label, its tags).", choices=DEMO_LABELS
    )
    features: str = setting(
        "logmel",
        "Input features; wavlm: the hidden states of a tiny WavLM with random weights "
        "(written to OUT/wavlm-random; no trained model is downloaded), cached; wave: the "
        "same WavLM computed in each training step from a waveform cache (--frontend "
        "wavlm): the authors' input path end to end, not their accuracy.",
        choices=INPUT_FEATURES,
    )
    epochs: int | None = setting(None, "Training epochs (default: the demo recipe's).")
    channels: int | None = setting(None, "MRNet width C (default: the demo recipe's).")
    jobs: int | None = setting(None, "Processes for generation and preprocessing.")
    progress: bool = _progress()

    def check(self) -> None:
        if self.out.exists() and not self.out.is_dir():
            raise BadInput(f"--out {self.out} is a file; pass a directory for the demo")
        if self.labels != "top" and self.dataset == "gtzan":
            raise BadInput("--labels top-multi is for the fma and melon demos; drop it for gtzan")
        if self.features != "logmel" and self.dataset == "melon":
            raise BadInput(
                f"--features {self.features} needs audio and the Melon demo has mel arrays "
                "only; pick another --dataset"
            )
