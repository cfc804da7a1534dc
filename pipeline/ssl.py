"""A frozen WavLM read from a local copy in Hugging Face's format, and its hidden states.

The authors of MRNet feed their model the hidden states of microsoft/wavlm-base-plus (frozen), all
13 of them (the embedding output and the 12 transformer layers) summed with learned
weights. mrnet reads such a model folder (``config.json`` plus ``model.safetensors`` or
``pytorch_model.bin``, as the Hugging Face hub distributes it) into torchaudio's WavLM,
which mrnet already depends on: the transformers package (and its own dependency tree)
is not needed at run time, and nothing is downloaded. The mapping of the checkpoint's
names onto torchaudio's is checked against transformers' WavLMModel in the tests.

    SSLModel            the loaded model, what it was read from, the SHA-256 of its weights
    load_wavlm(dir)     SSLModel, or BadInput naming what the folder lacks
    hidden_states       (B, S) waveform -> (L + 1, B, T, D), Hugging Face's hidden_states
    ssl_frames          a clip of audio -> float32 [T, L' * D], the cached feature kind
                        "wavlm" (loads the model once per process)

It is in pipeline/ because `mrnet preprocess --features wavlm` computes these features
in its workers; it imports torch, which log-mel workers never load. The learned layer
weights that combine the states are part of the model (mrnet.model.wavlm).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from pipeline.deps import load_torchaudio
from pipeline.errors import BadInput
from pipeline.features import SSL_HOP, SSL_RATE

SAMPLE_RATE, HOP = SSL_RATE, SSL_HOP  # WavLM's input rate (Hz), frame hop (samples)
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
WHERE_FROM = (
    "a local copy of microsoft/wavlm-base-plus from the Hugging Face hub "
    "(config.json and model.safetensors or pytorch_model.bin)"
)
# Hugging Face config.json field -> torchaudio.models.wavlm_model argument
_CONFIG_FIELDS = {
    "hidden_size": "encoder_embed_dim",
    "feat_proj_dropout": "encoder_projection_dropout",
    "num_conv_pos_embeddings": "encoder_pos_conv_kernel",
    "num_conv_pos_embedding_groups": "encoder_pos_conv_groups",
    "num_hidden_layers": "encoder_num_layers",
    "num_attention_heads": "encoder_num_heads",
    "num_buckets": "encoder_num_buckets",
    "max_bucket_distance": "encoder_max_distance",
    "attention_dropout": "encoder_attention_dropout",
    "intermediate_size": "encoder_ff_interm_features",
    "activation_dropout": "encoder_ff_interm_dropout",
    "hidden_dropout": "encoder_dropout",
    "do_stable_layer_norm": "encoder_layer_norm_first",
    "layerdrop": "encoder_layer_drop",
    "conv_bias": "extractor_conv_bias",
}
_CONV_FIELDS = ("conv_dim", "conv_kernel", "conv_stride", "feat_extract_norm")


@dataclass
class SSLModel:
    """A frozen WavLM and where it came from.

    Attributes:
        model: torchaudio's Wav2Vec2Model (WavLM variant), in eval mode, no gradients.
        config: the folder's config.json, as read.
        sha256: SHA-256 of the weights file (hex): a checkpoint records it and refuses
            another model.
        path: the folder.
    """

    model: nn.Module
    config: dict
    sha256: str
    path: Path

    @property
    def n_states(self) -> int:
        """Hidden states per input: the embedding output and one per transformer layer
        (13 for base-plus)."""
        return int(self.config["num_hidden_layers"]) + 1

    @property
    def dim(self) -> int:
        """Feature size D of each hidden state."""
        return int(self.config["hidden_size"])


def _bad(path: Path, problem: str) -> BadInput:
    return BadInput(f"--ssl-model {path}: {problem}; expected {WHERE_FROM}")


def read_config(path: Path) -> dict:
    """config.json of a WavLM folder; BadInput when missing, unreadable or another model."""
    file = path / "config.json"
    if not path.is_dir():
        raise _bad(path, "no such folder")
    if not file.is_file():
        raise _bad(path, "has no config.json")
    try:
        config = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _bad(path, f"config.json does not read as JSON ({e})") from None
    if not isinstance(config, dict) or config.get("model_type") != "wavlm":
        kind = config.get("model_type") if isinstance(config, dict) else None
        raise _bad(path, f"config.json describes model_type {kind!r}, not 'wavlm'")
    missing = [k for k in (*_CONFIG_FIELDS, *_CONV_FIELDS) if k not in config]
    if missing:
        raise _bad(path, f"config.json lacks {', '.join(missing)}")
    hop = math.prod(int(x) for x in config["conv_stride"])
    if hop != HOP:
        raise _bad(
            path,
            f"config.json's convolutions advance {hop} samples a frame, not {HOP} "
            f"(50 frames/s at {SAMPLE_RATE} Hz, as every released WavLM)",
        )
    return config


def torchaudio_args(config: dict) -> dict:
    """torchaudio.models.wavlm_model's arguments for a Hugging Face WavLM config."""
    args = {ta: config[hf] for hf, ta in _CONFIG_FIELDS.items()}
    args["extractor_mode"] = f"{config['feat_extract_norm']}_norm"
    args["extractor_conv_layer_config"] = [
        (int(d), int(k), int(s))
        for d, k, s in zip(config["conv_dim"], config["conv_kernel"], config["conv_stride"])
    ]
    return args


def weights_file(path: Path) -> Path:
    """The folder's weights (safetensors preferred); BadInput when there are none."""
    for name in WEIGHT_FILES:
        if (path / name).is_file():
            return path / name
    raise _bad(path, f"has no weights ({' or '.join(WEIGHT_FILES)})")


def file_sha256(file: Path) -> str:
    digest = hashlib.sha256()
    with open(file, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def read_state(file: Path) -> dict[str, Tensor]:
    """The tensors of a weights file (safetensors or a torch pickle, read weights-only)."""
    try:
        if file.suffix == ".safetensors":
            try:
                from safetensors.torch import load_file
            except ImportError:
                raise BadInput(
                    f"{file} is a safetensors file and the safetensors package is not "
                    "installed: pip install -e '.[ssl]'"
                ) from None
            return load_file(str(file), device="cpu")
        state = torch.load(file, map_location="cpu", weights_only=True)
    except BadInput:
        raise
    except Exception as e:  # a truncated or foreign file: name it in one line
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:120]
        raise _bad(file.parent, f"{file.name} does not load ({reason})") from None
    if not isinstance(state, dict):
        raise _bad(file.parent, f"{file.name} holds no state dict")
    return state


def torchaudio_state(hf: dict[str, Tensor], n_layers: int) -> dict[str, Tensor]:
    """Rename a Hugging Face WavLM state dict to torchaudio's (the whole Wav2Vec2Model).

    Keys of a task head (``wavlm.`` prefix, lm_head, projector, classifier) and the
    masked-frame embedding are dropped; q/k/v projections are stacked into the
    in-projection of torch's MultiheadAttention; the positional convolution's weight
    norm is accepted in both of torch's spellings (weight_g/weight_v or parametrizations).
    """
    state: dict[str, Tensor] = {}
    for key, value in hf.items():
        key = key.removeprefix("wavlm.")
        key = key.replace(".weight_g", ".parametrizations.weight.original0")
        key = key.replace(".weight_v", ".parametrizations.weight.original1")
        if key.startswith("feature_extractor."):
            state[key] = value
        elif key.startswith("feature_projection."):
            state["encoder." + key] = value
        elif key.startswith("encoder."):
            state["encoder.transformer." + key.removeprefix("encoder.")] = value
    for i in range(n_layers):
        p = f"encoder.transformer.layers.{i}.attention."
        try:
            for part in ("weight", "bias"):
                state[f"{p}attention.in_proj_{part}"] = torch.cat(
                    [state.pop(f"{p}{x}_proj.{part}") for x in "qkv"]
                )
                state[f"{p}attention.out_proj.{part}"] = state.pop(f"{p}out_proj.{part}")
        except KeyError:
            break  # load_state_dict names what is missing
    return state


def load_wavlm(path: Path | str) -> SSLModel:
    """Read a local WavLM folder in Hugging Face's format into torchaudio's WavLM.

    Args:
        path: folder with config.json and model.safetensors or pytorch_model.bin.

    Returns:
        The frozen model (eval mode, requires_grad False) with its config and the
        SHA-256 of its weights file.

    Raises:
        BadInput: one line naming what is missing or wrong and where the files come from.
    """
    path = Path(path)
    config = read_config(path)
    file = weights_file(path)
    models = load_torchaudio("torchaudio.models")
    try:
        model = models.wavlm_model(**torchaudio_args(config), aux_num_out=None)
    except (TypeError, ValueError) as e:
        raise _bad(path, f"config.json does not describe a buildable WavLM ({e})") from None
    state = torchaudio_state(read_state(file), int(config["num_hidden_layers"]))
    wanted = model.state_dict()
    missing = sorted(set(wanted) - set(state))
    if missing:
        raise _bad(path, f"{file.name} lacks {len(missing)} WavLM tensors (e.g. {missing[0]})")
    for key, tensor in wanted.items():
        if state[key].shape != tensor.shape:
            raise _bad(
                path,
                f"{file.name} does not match config.json: {key} is "
                f"{tuple(state[key].shape)}, expected {tuple(tensor.shape)}",
            )
    model.load_state_dict({k: state[k] for k in wanted})
    model.eval().requires_grad_(False)
    return SSLModel(model=model, config=config, sha256=file_sha256(file), path=path)


def hidden_states(model: nn.Module, wave: Tensor) -> Tensor:
    """All hidden states of a torchaudio WavLM, as Hugging Face's ``hidden_states``.

    Args:
        model: torchaudio's WavLM (Wav2Vec2Model), in eval mode.
        wave: (B, S) float waveform at 16 kHz.

    Returns:
        (L + 1, B, T, D): the embedding output (after the positional convolution) and
        each of the L transformer layers' outputs; T is about 50 frames per second.
    """
    features, _ = model.feature_extractor(wave, None)
    transformer = model.encoder.transformer
    x = transformer._preprocess(model.encoder.feature_projection(features))
    states, bias = [x], None
    for layer in transformer.layers:
        x, bias = layer(x, None, position_bias=bias)
        states.append(x)
    if not transformer.layer_norm_first:  # "stable layer norm" models normalise the last
        states[-1] = transformer.layer_norm(states[-1])
    return torch.stack(states)


def gpu_available() -> bool:
    """Whether torch sees a CUDA GPU (where `ssl_frames` may run)."""
    return torch.cuda.is_available()


_loaded: dict[str, SSLModel] = {}  # by folder, in this process (a preprocess worker)


def cached_model(path: str, sha256: str | None = None) -> SSLModel:
    """The model of folder ``path``, loaded once per process; BadInput when it does not
    load, or when its weights are not the ones ``sha256`` names (the folder changed since
    a preprocess run began, or predict was given another model's folder)."""
    ssl = _loaded.get(path)
    if ssl is None:
        ssl = _loaded[path] = load_wavlm(path)
    if sha256 is not None and ssl.sha256 != sha256:
        raise BadInput(
            f"--ssl-model {path}: its weights (SHA-256 {ssl.sha256[:12]}) are not the ones "
            f"the cache or model was made with ({sha256[:12]}); pass that WavLM's folder"
        )
    return ssl


def ssl_frames(
    audio: np.ndarray, path: str, sha256: str, layers: Sequence[int], device: str = "cpu"
) -> np.ndarray:
    """WavLM features of one clip, as the cache stores them (kind "wavlm").

    Args:
        audio: float32 [samples], mono, 16 kHz.
        path: the model folder; sha256: its weights' SHA-256 (checked).
        layers: which of the L + 1 hidden states to keep, in this order.
        device: "cpu" or "cuda" (the model moves there once per process; float32).

    Returns:
        float32 [T, len(layers) * D]: per frame (50 per second), the chosen states one
        after the other.
    """
    ssl = cached_model(path, sha256)
    if next(ssl.model.parameters()).device.type != device:
        ssl.model.to(device)
    x = torch.from_numpy(np.ascontiguousarray(audio))[None].to(device)
    try:
        with torch.inference_mode():
            states = hidden_states(ssl.model, x)
    except torch.cuda.OutOfMemoryError:
        raise BadInput(
            "WavLM ran out of GPU memory in a preprocess worker (each holds a copy of the "
            "model and one clip): rerun with fewer --jobs, or --device cpu"
        ) from None
    picked = states[list(layers), 0]  # (L', T, D)
    return picked.permute(1, 0, 2).reshape(picked.shape[1], -1).float().cpu().numpy()
