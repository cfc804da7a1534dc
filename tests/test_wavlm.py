"""The WavLM front-end (mrnet.model.wavlm): a local Hugging Face folder read into
torchaudio's WavLM gives transformers' hidden states; bad folders are one line; the
front-end's layer weights train while WavLM stays frozen."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from mrnet.model import ModelConfig, build_model
from mrnet.model.wavlm import WaveFrontEnd
from pipeline.errors import BadInput
from pipeline.ssl import hidden_states, load_wavlm
from tests.helpers import tiny_wavlm_dir

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def wavlm_dir(tmp_path_factory):
    return tiny_wavlm_dir(tmp_path_factory.mktemp("wavlm") / "tiny")


def reference(path, wave):
    model = transformers.WavLMModel.from_pretrained(path).eval()
    with torch.no_grad():
        return model(wave, output_hidden_states=True)


@pytest.mark.parametrize("stable", [False, True], ids=["base", "stable-layer-norm"])
def test_hidden_states_match_transformers(tmp_path, stable):
    path = tiny_wavlm_dir(tmp_path / "m", seed=1, stable=stable)
    wave = torch.randn(2, 8000, generator=torch.Generator().manual_seed(0))
    ref = reference(path, wave)
    with torch.no_grad():
        got = hidden_states(load_wavlm(path).model, wave)
    assert got.shape == (4, 2, 24, 32)  # embedding output + 3 layers; 0.5 s at 50 frames/s
    # the last state is the encoder's output (after its final norm in the stable variant)
    expected = [*ref.hidden_states[:-1], ref.last_hidden_state]
    for i, (g, r) in enumerate(zip(got, expected)):
        torch.testing.assert_close(g, r, atol=1e-5, rtol=1e-4, msg=f"hidden state {i}")


def test_legacy_pickle_with_a_task_head_loads_the_same(tmp_path, wavlm_dir):
    """pytorch_model.bin of older hub uploads: weight_g/weight_v names, and a ``wavlm.``
    prefix with head tensors when saved from a task model."""
    from safetensors.torch import load_file

    state = load_file(str(wavlm_dir / "model.safetensors"))
    legacy = {}
    for key, value in state.items():
        key = key.replace("parametrizations.weight.original0", "weight_g")
        key = key.replace("parametrizations.weight.original1", "weight_v")
        legacy["wavlm." + key] = value
    legacy["lm_head.weight"] = torch.zeros(5, 32)
    old = tmp_path / "old"
    old.mkdir()
    (old / "config.json").write_bytes((wavlm_dir / "config.json").read_bytes())
    torch.save(legacy, old / "pytorch_model.bin")
    wave = torch.randn(1, 4000)
    with torch.no_grad():
        a = hidden_states(load_wavlm(wavlm_dir).model, wave)
        b = hidden_states(load_wavlm(old).model, wave)
    assert torch.equal(a, b)


def test_weights_fingerprint(tmp_path, wavlm_dir):
    a, b = load_wavlm(wavlm_dir), load_wavlm(wavlm_dir)
    other = load_wavlm(tiny_wavlm_dir(tmp_path / "other", seed=5))
    assert a.sha256 == b.sha256 and len(a.sha256) == 64
    assert other.sha256 != a.sha256
    assert (a.n_states, a.dim) == (4, 32)


def copy_dir(src, dst):
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


@pytest.mark.parametrize(
    "damage, words",
    [
        ("missing", ["no such folder", "wavlm-base-plus"]),
        ("no-config", ["has no config.json"]),
        ("not-json", ["does not read as JSON"]),
        ("other-model", ["model_type 'wav2vec2'", "not 'wavlm'"]),
        ("no-weights", ["has no weights", "model.safetensors or pytorch_model.bin"]),
        ("truncated", ["model.safetensors does not load"]),
        ("other-size", ["does not match config.json"]),
        ("foreign-weights", ["lacks", "WavLM tensors"]),
        ("other-hop", ["advance 160 samples a frame, not 320"]),
    ],
)
def test_bad_model_folder_is_one_line(tmp_path, wavlm_dir, damage, words):
    import json

    path = tmp_path / "m"
    if damage != "missing":
        copy_dir(wavlm_dir, path)
    config = path / "config.json"
    weights = path / "model.safetensors"
    if damage == "no-config":
        config.unlink()
    elif damage == "not-json":
        config.write_text("{ half")
    elif damage in ("other-model", "other-size", "other-hop"):
        c = json.loads(config.read_text())
        c.update(
            {
                "other-model": {"model_type": "wav2vec2"},
                "other-size": {"hidden_size": 48},
                "other-hop": {"conv_stride": [5, 2, 2, 2, 2, 2, 1]},
            }[damage]
        )
        config.write_text(json.dumps(c))
    elif damage == "no-weights":
        weights.unlink()
    elif damage == "truncated":  # an interrupted download
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif damage == "foreign-weights":
        from safetensors.torch import save_file

        save_file({"classifier.weight": torch.zeros(2, 2)}, str(weights))
    with pytest.raises(BadInput) as e:
        load_wavlm(path)
    message = str(e.value)
    assert "\n" not in message and str(path) in message
    for w in words:
        assert w in message


def frames_of(wave: torch.Tensor) -> torch.Tensor:
    """(B, C, T x 320) waveform -> (B, C x 320, T) frames, as a waveform cache holds them."""
    b, c, s = wave.shape
    return wave.unflatten(2, (s // 320, 320)).transpose(2, 3).reshape(b, c * 320, s // 320)


def test_front_end_computes_each_channel_alone(wavlm_dir):
    ssl = load_wavlm(wavlm_dir)
    wave = torch.randn(3, 2, 4160)  # 13 frames
    front = WaveFrontEnd(ssl)
    with torch.no_grad():
        left, right = front(frames_of(wave[:, :1])), front(frames_of(wave[:, 1:]))
        both = front(frames_of(wave))
    assert left.shape == (3, 4 * 32, 12) and both.shape == (3, 4 * 64, 12)
    for layer in range(4):  # per layer: channel 0's features, then channel 1's
        torch.testing.assert_close(
            both[:, layer * 64 : layer * 64 + 32], left[:, layer * 32 :][:, :32]
        )
        torch.testing.assert_close(
            both[:, layer * 64 + 32 : (layer + 1) * 64], right[:, layer * 32 :][:, :32]
        )
    states = hidden_states(ssl.model, wave[:, 0])
    with torch.no_grad():
        picked = WaveFrontEnd(ssl, layers=[3, 0])(frames_of(wave[:, :1]))
    torch.testing.assert_close(picked, torch.cat([states[3], states[0]], 2).transpose(1, 2))


@pytest.mark.parametrize("layers", [[4], [-1], []])
def test_layers_out_of_range_is_one_line(wavlm_dir, layers):
    with pytest.raises(BadInput, match=r"hidden states 0\.\.3"):
        WaveFrontEnd(load_wavlm(wavlm_dir), layers=layers)


def test_layer_weights_train_and_wavlm_stays_frozen(wavlm_dir):
    torch.manual_seed(0)
    ssl = load_wavlm(wavlm_dir)
    cfg = ModelConfig("mrnet", 4 * 32, 2, 8, input_layers=4, input_norm="instance")
    live = ModelConfig(**{**cfg.__dict__, "frontend": "wavlm", "ssl_sha256": ssl.sha256})
    live = dataclasses.replace(live, ssl_layers=(0, 1, 2, 3))
    model = build_model(live, ssl).train()
    frozen = {k: v.clone() for k, v in ssl.model.state_dict().items()}
    assert not any(p.requires_grad for p in ssl.model.parameters())
    assert "net.layer_weights.weight" in dict(model.named_parameters())
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    wave, target = frames_of(torch.randn(4, 1, 4160)), torch.tensor([0, 1, 0, 1])
    first = model.front(wave)
    for _ in range(3):
        loss = torch.nn.functional.cross_entropy(model(wave), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert not ssl.model.training  # no dropout or layer drop inside WavLM
    assert not torch.equal(model.net.layer_weights.weight.detach(), torch.ones(4))
    for k, v in ssl.model.state_dict().items():
        assert torch.equal(v, frozen[k]), k
    torch.testing.assert_close(model.front(wave), first)  # deterministic in train mode


def test_random_demo_model_is_read_alike_by_transformers(tmp_path):
    """The demo's tiny random WavLM (written without transformers) is a valid Hugging
    Face folder: transformers and mrnet read it to the same hidden states."""
    from pipeline.synth.wavlm import NOTE, write_random_wavlm

    path = write_random_wavlm(tmp_path / "random", seed=3)
    ssl = load_wavlm(path)
    assert ssl.config["_mrnet_note"] == NOTE and (ssl.n_states, ssl.dim) == (4, 32)
    wave = torch.randn(2, 8000, generator=torch.Generator().manual_seed(1))
    ref = reference(path, wave)
    with torch.no_grad():
        got = hidden_states(ssl.model, wave)
    for i, (g, r) in enumerate(zip(got, ref.hidden_states)):
        torch.testing.assert_close(g, r, atol=1e-5, rtol=1e-4, msg=f"hidden state {i}")
    again = load_wavlm(write_random_wavlm(tmp_path / "again", seed=3))
    assert again.sha256 != "" and torch.equal(hidden_states(again.model, wave), got)
