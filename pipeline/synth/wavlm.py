"""A tiny WavLM with random weights, saved in Hugging Face's format (config.json and
pytorch_model.bin, as microsoft/wavlm-base-plus is distributed): what `mrnet demo
--features wavlm` runs the pipeline with, since the real weights cannot be downloaded
here and a full-size model is too slow for a demo on a CPU. Its features carry no
knowledge; only the pipeline is shown.

The architecture is WavLM's (the convolutions of base-plus, 320 samples a frame, so 50
frames per second at 16 kHz) at a small width: built with torchaudio and saved under
the names Hugging Face uses (pipeline.ssl reads them back; tests check that transformers
reads the same folder to the same hidden states).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from pipeline.atomic import write_atomic
from pipeline.deps import load_torchaudio
from pipeline.ssl import torchaudio_args

NOTE = "random weights (mrnet demo): not a trained WavLM"


def tiny_config(layers: int = 3, dim: int = 32) -> dict:
    """config.json of a small WavLM in Hugging Face's fields (base-plus's convolutions)."""
    return {
        "model_type": "wavlm",
        "architectures": ["WavLMModel"],
        "_mrnet_note": NOTE,
        "hidden_size": dim,
        "num_hidden_layers": layers,
        "num_attention_heads": 2,
        "intermediate_size": 2 * dim,
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-5,
        "conv_dim": [16] * 7,
        "conv_kernel": [10, 3, 3, 3, 3, 2, 2],
        "conv_stride": [5, 2, 2, 2, 2, 2, 2],
        "conv_bias": False,
        "feat_extract_norm": "group",
        "feat_extract_activation": "gelu",
        "num_conv_pos_embeddings": 16,
        "num_conv_pos_embedding_groups": 4,
        "num_buckets": 32,
        "max_bucket_distance": 80,
        "do_stable_layer_norm": False,
        "feat_proj_dropout": 0.0,
        "hidden_dropout": 0.1,
        "attention_dropout": 0.1,
        "activation_dropout": 0.0,
        "layerdrop": 0.1,
    }


def huggingface_state(state: dict[str, torch.Tensor], n_layers: int) -> dict[str, torch.Tensor]:
    """torchaudio's WavLM state dict under Hugging Face's names (pipeline.ssl's inverse):
    the in-projection split into q/k/v, the positional convolution's weight norm as
    weight_g/weight_v."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        key = key.replace("parametrizations.weight.original0", "weight_g")
        key = key.replace("parametrizations.weight.original1", "weight_v")
        if key.startswith("encoder.feature_projection."):
            key = key.removeprefix("encoder.")
        elif key.startswith("encoder.transformer."):
            key = "encoder." + key.removeprefix("encoder.transformer.")
        out[key] = value.detach().clone().contiguous()
    for i in range(n_layers):
        p = f"encoder.layers.{i}.attention."
        for part in ("weight", "bias"):
            q, k, v = out.pop(f"{p}attention.in_proj_{part}").chunk(3)
            out.update({f"{p}q_proj.{part}": q, f"{p}k_proj.{part}": k, f"{p}v_proj.{part}": v})
            out[f"{p}out_proj.{part}"] = out.pop(f"{p}attention.out_proj.{part}")
    return out


def write_random_wavlm(path: Path, seed: int = 0, layers: int = 3, dim: int = 32) -> Path:
    """Write a random tiny WavLM into folder ``path`` (created; files replaced atomically).

    Returns:
        ``path``, a folder `mrnet preprocess --ssl-model` reads.
    """
    config = tiny_config(layers, dim)
    models = load_torchaudio("torchaudio.models")
    torch.manual_seed(seed)
    model = models.wavlm_model(**torchaudio_args(config), aux_num_out=None)
    state = huggingface_state(model.state_dict(), layers)
    path.mkdir(parents=True, exist_ok=True)
    write_atomic(path / "pytorch_model.bin", lambda f: torch.save(state, f))
    write_atomic(path / "config.json", json.dumps(config, indent=2).encode())
    return path
