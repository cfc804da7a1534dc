"""The settings of `mrnet preprocess`: defaults and help text in one place (cli.py builds
its options from these fields). Imports nothing heavy, so the CLI starts fast."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import BadInput
from pipeline.features import FeatureConfig
from pipeline.settings import setting

_FEATURES = FeatureConfig()  # the feature defaults, in one place


@dataclass
class PreprocessOptions:
    """Arguments of `mrnet preprocess` (see its --help)."""

    audio_dir: Path = setting(
        help="The audio: fma_small/ or fma_large/ (AUDIO_DIR/000/000002.mp3); GTZAN's genres/ "
        "or Data/genres_original/; or a folder of label folders."
    )
    out: Path = setting(help="Cache directory to create or resume, e.g. cache/small.")
    dataset: str = setting(
        "fma", "fma | gtzan | folder (one sub-folder of audio per label, any nesting)."
    )
    metadata_dir: Path | None = setting(
        None, "fma_metadata/ folder holding tracks.csv and genres.csv (--dataset fma only)."
    )
    subset: str = setting("small", "FMA subset: small | medium | large (they nest).")
    labels: str = setting(
        "top",
        "FMA labels: top (one genre_top per track) | top-multi (every top-level genre of "
        "genres_all) | all (every genre of genres_all). The last two are multi-label and "
        "need genres.csv.",
    )
    min_label_tracks: int = setting(
        50, "With --labels all: drop labels with fewer training tracks than this."
    )
    folds: int | None = setting(
        None,
        "Stratified N-fold cross-validation instead of the default split (gtzan: the "
        "filtered split; folder: 80/10/10 or its train/ valid/ test/ folders).",
    )
    fold: int | None = setting(
        None, "With --folds N: fold K (0..N-1) is the test split, fold K+1 mod N validation."
    )
    seed: int = setting(0, "Seed of the folds and of a folder dataset's 80/10/10 split.")
    jobs: int | None = setting(None, "Parallel worker processes (default: all cores).")
    sample_rate: int = setting(_FEATURES.sample_rate, "Target sample rate in Hz.")
    n_mels: int = setting(_FEATURES.n_mels, "Mel bands.")
    n_fft: int = setting(_FEATURES.n_fft, "FFT size in samples.")
    hop_length: int = setting(
        _FEATURES.hop_length, "Hop in samples (320 at 16 kHz = 50 frames/s)."
    )
    f_max: float = setting(0.0, "Highest mel frequency in Hz; 0 = sample_rate / 2.")
    max_seconds: float = setting(
        _FEATURES.max_seconds,
        "Seconds taken from each track (--clip says where); 0 keeps every track whole "
        "(decoded and featurised in chunks, for untrimmed audio such as fma_full).",
    )
    clip: str = setting(
        _FEATURES.clip,
        "Where the --max-seconds come from in a longer track: middle (as FMA cut its "
        "30-s clips) | start.",
    )
    min_seconds: float = setting(
        1.0, "Tracks with less decoded audio are recorded as failures (too_short)."
    )
    shard_size: int | None = setting(
        None,
        "Tracks per HDF5 shard (one job writes one shard); default: from the number of "
        "tracks (about 64 shards of 8 to 128 tracks).",
    )
    verify_checksums: bool = setting(
        False,
        "Check every file against its SHA-1 (sha1sum format, paths relative to --audio-dir); "
        "a file whose SHA-1 differs is the failure checksum_mismatch.",
        flag="--verify-checksums",
    )
    checksums: Path | None = setting(
        None, "With --verify-checksums: the checksums file (default: AUDIO_DIR/checksums)."
    )
    allow_missing: bool = setting(
        False,
        "Go on even when fewer than 1% of the selected tracks have a file (wrong "
        "--audio-dir or --subset?).",
        flag="--allow-missing",
    )
    backend: str = setting(
        "loky", "Where shard jobs run: loky (local processes) | dask (a dask cluster)."
    )
    scheduler: str | None = setting(
        None,
        "With --backend dask: scheduler address, e.g. tcp://HOST:8786. The cache directory "
        "must be on storage every dask worker sees.",
    )
    progress: bool = setting(True, "Show a progress bar (notes and warnings show anyway).")

    def feature_config(self) -> FeatureConfig:
        try:
            return FeatureConfig(
                sample_rate=self.sample_rate,
                n_fft=self.n_fft,
                hop_length=self.hop_length,
                n_mels=self.n_mels,
                f_max=self.f_max or self.sample_rate / 2,
                max_seconds=self.max_seconds,
                clip=self.clip,
            )
        except ValueError as e:
            raise BadInput(f"invalid feature settings: {e}") from e
