"""The settings of `mrnet preprocess`: defaults, help, choices and checks in one place
(cli.py generates its options from these fields). Imports nothing heavy, so the CLI
starts fast."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import BadInput
from pipeline.features import CLIPS, SSL_HOP, SSL_RATE, FeatureConfig
from pipeline.settings import Registry, setting
from pipeline.sources import ARRAY_SCALES, DATASETS, LABEL_SCHEMES, SUBSETS
from pipeline.workers import BACKENDS

_FEATURES = FeatureConfig()  # the feature defaults, in one place
SSL_DEVICES = Registry(
    "device",
    {
        "auto": "cuda when torch sees a GPU, else cpu",
        "cpu": "the CPU, one model a worker",
        "cuda": "the GPU (every worker's model on it)",
    },
)
INPUT_FEATURES = Registry(
    "input features",
    {
        "logmel": "log-mel spectrograms (mrnet's default)",
        "wavlm": "the hidden states of a frozen WavLM (--ssl-model), the MRNet authors' "
        "input, computed once here: about 30 MB per 30-s track with all 13 layers of "
        "wavlm-base-plus (78x a log-mel; --layers keeps fewer)",
        "wave": "the 16-kHz waveform (float16, mono or --stereo), for a WavLM front-end "
        "computed inside training (`mrnet train --frontend wavlm`): 1 MB per mono 30-s "
        "track (2.5x a log-mel)",
    },
)


@dataclass
class PreprocessOptions:
    """Arguments of `mrnet preprocess` (see its --help)."""

    out: Path = setting(help="Cache directory to create or resume, e.g. cache/small.")
    audio_dir: Path | None = setting(
        None,
        "The audio: fma_small/ or fma_large/ (AUDIO_DIR/000/000002.mp3); GTZAN's genres/ "
        "or Data/genres_original/; a folder of label folders; Melon's arena_mel/; "
        "MTG-Jamendo's audio folder. Required except with --dataset csv (default there: "
        "the manifest's folder).",
    )
    dataset: str = setting("fma", "Where the tracks come from.", choices=DATASETS)
    metadata_dir: Path | None = setting(
        None,
        "fma: the fma_metadata/ folder (tracks.csv, genres.csv); melon: the folder of "
        "song_meta.json and genre_gn_all.json.",
    )
    manifest: Path | None = setting(
        None,
        "CSV manifest (--dataset csv only): columns path and label (or labels, names joined "
        "by '|'), optionally split, group, track_id, artist, title; relative paths resolve "
        "against --audio-dir, by default the manifest's folder.",
    )
    splits_dir: Path | None = setting(
        None,
        "MTG-Jamendo's splits/ folder, holding split-0/ .. split-4/ with "
        "autotagging_genre-{train,validation,test}.tsv (--dataset jamendo only).",
    )
    split: int = setting(0, "MTG-Jamendo: which of its splits (0..4) to use.")
    array_scale: str = setting(
        "auto",
        "Melon: the scale of its mel arrays (auto: decided from the data and recorded).",
        choices=ARRAY_SCALES,
    )
    split_file: Path | None = setting(
        None,
        "CSV with columns track_id,split (training/validation/test) replacing the dataset's "
        "own split, e.g. a published one; tracks it does not list are skipped.",
    )
    subset: str = setting("small", "FMA subset (they nest).", choices=SUBSETS)
    labels: str = setting(
        "top",
        "Labels (FMA: the last two read genres_all and need genres.csv).",
        choices=LABEL_SCHEMES,
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
    seed: int = setting(
        0,
        "Seed of the folds, and of the 80/10/10 split of a folder, a csv manifest without a "
        "split column, and melon.",
    )
    jobs: int | None = setting(None, "Parallel worker processes (default: all cores).")
    features: str = setting(_FEATURES.kind, "What the cache holds.", choices=INPUT_FEATURES)
    ssl_model: Path | None = setting(
        None,
        "--features wavlm: a local WavLM folder in Hugging Face's format (config.json and "
        "model.safetensors or pytorch_model.bin), e.g. microsoft/wavlm-base-plus from the "
        "Hugging Face hub; nothing is downloaded.",
    )
    device: str = setting(
        "auto",
        "--features wavlm: where the workers run WavLM: auto (a GPU when torch sees one, "
        "else cpu), cpu or cuda. On a GPU each worker holds a copy of the model, so "
        "--jobs defaults to 1 there.",
        choices=SSL_DEVICES,
    )
    layers: str | None = setting(
        None,
        "--features wavlm: the hidden states to keep, comma-separated (0: the embedding "
        "output, 1..12: the transformer layers of a base model); default: all.",
    )
    stereo: bool = setting(
        False,
        "--features wave: keep two channels (a mono file's channel twice), as the MRNet "
        "authors feed WavLM; default: mono.",
        flag="--stereo",
    )
    sample_rate: int = setting(_FEATURES.sample_rate, "Target sample rate in Hz.")
    n_mels: int = setting(_FEATURES.n_mels, "Mel bands.")
    n_fft: int = setting(_FEATURES.n_fft, "FFT size in samples.")
    hop_length: int = setting(_FEATURES.hop_length, "Hop in samples (320 at 16 kHz = 50 frames/s).")
    f_max: float = setting(0.0, "Highest mel frequency in Hz; 0 = sample_rate / 2.")
    max_seconds: float = setting(
        _FEATURES.max_seconds,
        "Seconds taken from each track (--clip says where); 0 keeps every track whole "
        "(decoded and featurised in chunks, for untrimmed audio such as fma_full).",
    )
    clip: str = setting(
        _FEATURES.clip, "Where the --max-seconds come from in a longer track.", choices=CLIPS
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
    backend: str = setting("loky", "Where shard jobs run.", choices=BACKENDS)
    scheduler: str | None = setting(
        None,
        "With --backend dask: scheduler address, e.g. tcp://HOST:8786. The cache directory "
        "must be on storage every dask worker sees.",
    )
    progress: bool = setting(True, "Show a progress bar (notes and warnings show anyway).")

    def check(self) -> None:
        """Every check that needs nothing but the settings (and the audio folder's
        existence); the dataset's module checks the options it reads."""
        if self.jobs is not None and self.jobs < 1:
            raise BadInput(f"--jobs must be at least 1 (got {self.jobs}); omit it to use all cores")
        if self.min_seconds < 0:
            raise BadInput(f"--min-seconds must be 0 or more (got {self.min_seconds})")
        if self.max_seconds > 0 and self.min_seconds > self.max_seconds:
            raise BadInput(
                f"--min-seconds {self.min_seconds:g} is more than --max-seconds "
                f"{self.max_seconds:g}: no clip could be long enough; lower --min-seconds"
            )
        if self.shard_size is not None and self.shard_size < 1:
            raise BadInput(f"--shard-size must be at least 1 (got {self.shard_size})")
        if self.min_label_tracks < 1:
            raise BadInput(f"--min-label-tracks must be 1 or more (got {self.min_label_tracks})")
        if self.fold is not None and self.folds is None:
            raise BadInput(f"--fold {self.fold} needs --folds N (the number of folds)")
        if self.folds is not None:
            if self.folds < 2:
                raise BadInput(f"--folds must be 2 or more (got {self.folds})")
            if not 0 <= (self.fold or 0) < self.folds:
                raise BadInput(f"--fold must be in 0..{self.folds - 1} (got {self.fold})")
        if self.dataset == "csv" and self.manifest is None:
            raise BadInput(
                "--dataset csv needs --manifest FILE: a CSV with columns path and label (or labels)"
            )
        if self.dataset == "csv" and not self.manifest.is_file():
            what = "does not exist" if not self.manifest.exists() else "is not a file"
            raise BadInput(f"manifest {self.manifest} {what}; pass --manifest pointing at the CSV")
        if self.audio_dir is None:
            if self.dataset != "csv":
                raise BadInput(
                    f"--audio-dir is required for --dataset {self.dataset}; pass the folder "
                    "that holds the audio"
                )
            self.audio_dir = self.manifest.parent
        if not self.audio_dir.is_dir():
            what = {
                "fma": "FMA audio folder (fma_small/, ...)",
                "gtzan": "GTZAN genres/ folder",
                "folder": "folder of label folders",
                "melon": "Melon arena_mel/ folder",
                "jamendo": "MTG-Jamendo audio folder (holding 00/ .. 99/)",
                "csv": "folder the manifest's paths are relative to",
            }.get(self.dataset, "audio folder")
            raise BadInput(
                f"audio dir {self.audio_dir} does not exist; pass --audio-dir pointing at the "
                f"{what}"
            )
        if self.features in ("wavlm", "wave") and self.dataset == "melon":
            raise BadInput(
                f"--features {self.features} reads audio; Melon ships mel arrays and no "
                "audio: drop --features for --dataset melon"
            )
        if self.features != "wavlm" and (self.ssl_model or self.layers):
            raise BadInput("--ssl-model and --layers are for --features wavlm; add it or drop them")
        if self.device == "cuda" and self.features != "wavlm":
            raise BadInput("--device cuda is for --features wavlm; drop it")
        if self.stereo and self.features != "wave":
            raise BadInput("--stereo is for --features wave; add it or drop --stereo")
        if self.backend == "dask" and not self.scheduler:
            raise BadInput(
                "--backend dask needs --scheduler tcp://HOST:8786 (a running dask scheduler)"
            )
        self.feature_config()

    def feature_config(self) -> FeatureConfig:
        """The FeatureConfig these options describe (f_max 0: the Nyquist frequency);
        BadInput when the settings are invalid."""
        if self.features == "wavlm":
            return self._ssl_config()
        try:
            if self.features == "wave":  # WavLM's rate, one frame per WavLM frame
                return FeatureConfig(
                    sample_rate=SSL_RATE,
                    hop_length=SSL_HOP,
                    n_mels=SSL_HOP * (2 if self.stereo else 1),
                    max_seconds=self.max_seconds,
                    clip=self.clip,
                    kind="wave",
                )
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

    def _ssl_config(self) -> FeatureConfig:
        """Kind "wavlm": the model's identity and the chosen layers (the mel settings do
        not apply). The model is loaded here, once per process, so that a folder that
        does not load (a truncated download) stops the run before anything is written."""
        from pipeline import ssl  # torch: only for this kind

        if self.ssl_model is None:
            raise BadInput(f"--features wavlm needs --ssl-model DIR: {ssl.WHERE_FROM}")
        path = str(self.ssl_model.absolute())
        model = ssl.cached_model(path)
        device = self.ssl_device()
        n = model.n_states
        try:
            layers = tuple(range(n)) if self.layers is None else parse_layers(self.layers)
        except ValueError:
            raise BadInput(
                f"--layers {self.layers!r}: give hidden-state numbers separated by commas, "
                "e.g. 0,6,12"
            ) from None
        if not layers or len(set(layers)) < len(layers) or not all(0 <= i < n for i in layers):
            raise BadInput(
                f"--layers {self.layers}: pick distinct hidden states among 0..{n - 1} "
                f"(this model has {n})"
            )
        try:
            return FeatureConfig(
                sample_rate=ssl.SAMPLE_RATE,
                hop_length=ssl.HOP,
                n_mels=len(layers) * model.dim,
                max_seconds=self.max_seconds,
                clip=self.clip,
                kind="wavlm",
                ssl_sha256=model.sha256,
                ssl_layers=layers,
                ssl_path=path,
                ssl_device=device,
            )
        except ValueError as e:
            raise BadInput(f"invalid feature settings: {e}") from e

    def ssl_device(self) -> str:
        """Where the workers run WavLM ("cpu" or "cuda"); BadInput for cuda without one."""
        from pipeline.ssl import gpu_available  # torch: loaded already for this kind

        if self.device == "auto":
            return "cuda" if gpu_available() else "cpu"
        if self.device == "cuda" and not gpu_available():
            raise BadInput("--device cuda but torch sees no GPU here; pass --device cpu")
        return self.device


def parse_layers(text: str) -> tuple[int, ...]:
    """ "0, 6,12" -> (0, 6, 12); ValueError when a part is not an integer."""
    return tuple(int(part) for part in text.split(",") if part.strip())


@dataclass
class VerifyOptions:
    """Arguments of `mrnet verify` (see its --help)."""

    cache: Path = setting(help="Cache directory written by `mrnet preprocess`.")
    repair: bool = setting(
        False,
        "Delete damaged shards (the cache becomes unfinished) so that rerunning the same "
        "`mrnet preprocess` command rebuilds exactly them.",
        flag="--repair",
    )
    progress: bool = setting(True, "Show a progress bar.")
