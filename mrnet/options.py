"""The settings of train, evaluate, predict and demo: defaults and help text in one place
(cli.py builds its options from these fields, `command_line` turns them back into a
command). Plain data: importing this loads neither torch nor the stages."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from pipeline.settings import setting


@dataclass
class TrainConfig:
    """Everything `mrnet train` takes. Stored, as plain types, in every checkpoint."""

    cache: Path = setting(help="Cache directory written by `mrnet preprocess`.")
    out: Path = setting(help="Run directory: last.pt, best.pt, metrics.csv, tb/.")
    arch: str = setting("mrnet", "Model: mrnet | cnn (128x128 mel-image baseline).")
    epochs: int = setting(30, "Epochs in total (a resumed run continues up to this).")
    batch_size: int = setting(48, "Crops per step (per process under torchrun).")
    lr: float = setting(1e-3, "Peak learning rate (AdamW, cosine warm restarts).")
    lr_min: float = 5e-4  # cosine floor (the MRNet authors' lr_min)
    t0: int = 0  # epochs of the first cosine cycle; 0 = `epochs` (fixed at the run's start)
    t_mult: int = 2
    weight_decay: float = 1e-4
    channels: int = setting(512, "MRNet width C (unused by cnn).")
    input_norm: str = setting(
        "instance",
        "MRNet's first layer: instance (the authors': per track and band over time) | batch "
        "(per band over the training set; keeps each track's long-term spectrum).",
    )
    crop_seconds: float = setting(6.0, "Length of the random training crops, s.")
    workers: int = setting(2, "DataLoader worker processes (0 = main process).")
    device: str = setting("auto", "auto | cpu | cuda.")
    seed: int = setting(0, "Seed of initialisation, crops and augmentation.")
    compile: bool = setting(False, "torch.compile the model.", flag="--compile")
    data_on_gpu: bool = setting(
        False, "Hold the training features in device memory (no loader).", flag="--data-on-gpu"
    )
    specaugment: bool = setting(
        False, "Add SpecAugment frequency and time masks.", flag="--specaugment"
    )
    freq_mask: int = 16  # SpecAugment: widest of 2 frequency masks, mel bands
    time_mask: int = 30  # SpecAugment: widest of 2 time masks, frames
    noise_prob: float = 0.7  # probability that a crop gets additive Gaussian noise
    noise_mean: tuple[float, float] = (-0.03, 0.03)  # noise mean ~ U(range), log-mel units
    noise_std: tuple[float, float] = (0.05, 0.1)  # noise std ~ U(range)
    grad_clip: float = 5.0  # max global gradient norm; 0 = off
    window: float = 30.0  # validation scores longer tracks in windows of this many seconds
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


@dataclass
class EvalOptions:
    """Arguments of `mrnet evaluate` (see its --help)."""

    checkpoint: Path = setting(help="Checkpoint to evaluate, e.g. RUN/best.pt.")
    cache: Path = setting(help="Cache directory written by `mrnet preprocess`.")
    out: Path = setting(help="Report directory (created): report.json, CSVs, PNG.")
    split: str = setting("test", "Split to evaluate: training | validation | test.")
    device: str = setting("auto", "auto | cpu | cuda.")
    batch_size: int = setting(
        16, "Windows (or whole tracks) per forward pass (more when they are shorter)."
    )
    window: float = setting(
        30.0,
        "Score tracks longer than this many seconds as the mean probability of windows of "
        "this length (hop: half a window); shorter tracks whole. 0: every track whole.",
    )
    progress: bool = setting(True, "Show a progress bar.")


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
    json: bool = setting(False, "One JSON object per line.", flag="--json")
    csv: bool = setting(False, "CSV: path, genre_1, p_1, ..., error.", flag="--csv")
    device: str = setting("auto", "auto | cpu | cuda.")
    window: float = setting(
        30.0,
        "Score a file whose features (the checkpoint's clip, or the whole file for models "
        "trained with --max-seconds 0) are longer than this many seconds as the mean "
        "probability of windows of this length, hop half a window. 0: in one pass.",
    )


@dataclass
class EmbedOptions:
    """Arguments of `mrnet embed` (see its --help)."""

    checkpoint: Path = setting(help="Checkpoint, e.g. RUN/best.pt.")
    out: Path = setting(help="Folder (created): embeddings.npy, index.csv.")
    paths: list[Path] = setting(
        [], "Audio files or folders (searched recursively); or pass --cache instead."
    )
    cache: Path | None = setting(None, "Embed the tracks of this cache instead of files.")
    split: str | None = setting(None, "With --cache: only this split (default: all).")
    window: float = setting(
        30.0,
        "A track longer than this many seconds is embedded as the mean embedding of "
        "windows of this length (hop half a window), as evaluate scores it. 0: in one pass.",
    )
    batch_size: int = setting(16, "Windows per forward pass.")
    device: str = setting("auto", "auto | cpu | cuda.")
    progress: bool = setting(True, "Show a progress bar.")


@dataclass
class ExportOptions:
    """Arguments of `mrnet export` (see its --help)."""

    checkpoint: Path = setting(help="Checkpoint to export, e.g. RUN/best.pt.")
    out: Path = setting(help="The ONNX file to write, e.g. model.onnx.")


@dataclass
class DemoOptions:
    """Arguments of `mrnet demo` (see its --help)."""

    out: Path = setting(Path("demo"), "Folder for the dataset, cache, run and report.")
    dataset: str = setting(
        "fma", "fma (8 genres, FMA's layout) | gtzan (10 genres, GTZAN's layout and split)."
    )
    n_per_genre: int | None = setting(
        None,
        "Synthetic tracks per genre (default: 40 for fma; 100 for gtzan, its full set of "
        "names: with fewer, GTZAN's filtered split is replaced by 5-fold cross-validation).",
    )
    seconds: float | None = setting(
        None, "Length of each synthetic clip, s (default: 30 for fma, 10 for gtzan)."
    )
    labels: str = setting(
        "top",
        "fma only: top (one genre per track) | top-multi (multi-label: FMA's large subset "
        "with two-genre tracks added, every top-level genre of a track).",
    )
    epochs: int = setting(20, "Training epochs.")
    channels: int = setting(64, "MRNet width C (the paper's is 512).")
    jobs: int | None = setting(None, "Processes for generation and preprocessing.")
    batch_size: int = 32
    crop_seconds: float = 6.0
    device: str = "cpu"
    progress: bool = True
