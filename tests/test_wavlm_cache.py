"""`mrnet preprocess --features wavlm`: a frozen WavLM's hidden states cached in the usual
shards, trained on by MRNet through learned layer weights; everything after the cache
refuses a model of the other input kind in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mrnet import checkpoint
from pipeline.audio import load_audio
from pipeline.cache import open_cache
from pipeline.ssl import hidden_states, load_wavlm
from tests.helpers import (
    cli_evaluate,
    cli_preprocess_folder,
    cli_train,
    h5_track,
    one_line_error,
    runner,
    tiny_wavlm_dir,
)

pytest.importorskip("transformers")
from cli import app  # noqa: E402
from pipeline.synth import folder  # noqa: E402


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("wavlm-data")
    folder.generate(root / "audio", n_per_label=6, seconds=3.0, splits=True)
    return root


@pytest.fixture(scope="module")
def model(data):
    return tiny_wavlm_dir(data / "model")


def preprocess(data, out, *extra):
    return cli_preprocess_folder(data / "audio", out, *extra)


@pytest.fixture(scope="module")
def wavlm_cache(data, model):
    out = data / "cache-wavlm"
    r = preprocess(data, out, "--features", "wavlm", "--ssl-model", str(model))
    assert r.exit_code == 0, r.output
    return out


def test_cache_holds_the_hidden_states_of_each_clip(data, model, wavlm_cache):
    cache = open_cache(wavlm_cache)
    fc = cache.feature_config
    ssl = load_wavlm(model)
    assert fc["kind"] == "wavlm" and fc["ssl_layers"] == [0, 1, 2, 3]
    assert fc["ssl_sha256"] == ssl.sha256 and fc["n_mels"] == 4 * 32
    assert "ssl_path" not in fc  # the cache does not depend on where the model lies
    assert len(cache.tracks) == 18  # every track cached
    track_id = cache.split("training").iloc[0]["track_id"]
    (path,) = (data / "audio").glob(f"{track_id}.*")
    x = load_audio(path, 16000, 30.0, 0.0, "middle")
    with torch.no_grad():
        states = hidden_states(ssl.model, torch.from_numpy(x)[None])[:, 0]  # (4, T, 32)
    expected = states.permute(1, 0, 2).reshape(states.shape[1], -1).numpy()
    stored = h5_track(cache, "training", 0)
    assert stored.shape == expected.shape and 140 < len(stored) < 160  # 3 s at 50 frames/s
    np.testing.assert_allclose(stored, expected, atol=2e-2, rtol=2e-3)  # float16


def test_layers_keep_a_subset_in_order(data, model, wavlm_cache, tmp_path):
    r = preprocess(
        data, tmp_path / "c", "--features", "wavlm", "--ssl-model", str(model), "--layers", "3,0"
    )
    assert r.exit_code == 0, r.output
    fc = open_cache(tmp_path / "c").feature_config
    assert fc["ssl_layers"] == [3, 0] and fc["n_mels"] == 64
    full = h5_track(open_cache(wavlm_cache), "training", 0)
    part = h5_track(open_cache(tmp_path / "c"), "training", 0)
    np.testing.assert_array_equal(part, np.concatenate([full[:, 96:], full[:, :32]], axis=1))


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--features", "wavlm"], ["needs --ssl-model DIR", "wavlm-base-plus"]),
        (["--features", "wavlm", "--ssl-model", "MISSING"], ["no such folder"]),
        (["--features", "wavlm", "--ssl-model", "MODEL", "--layers", "1,7"], ["among 0..3"]),
        (["--features", "wavlm", "--ssl-model", "MODEL", "--layers", "a"], ["e.g. 0,6,12"]),
        (["--features", "wavlm", "--ssl-model", "MODEL", "--max-seconds", "0"], ["on clips"]),
        (["--ssl-model", "MODEL"], ["for --features wavlm"]),
        (["--features", "wavlm", "--ssl-model", "TRUNCATED"], ["model.safetensors does not load"]),
        (["--device", "cuda"], ["for --features wavlm"]),
        (["--stereo"], ["for --features wave"]),
        pytest.param(
            ["--features", "wavlm", "--ssl-model", "MODEL", "--device", "cuda"],
            ["sees no GPU"],
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here"),
        ),
    ],
)
def test_bad_options_are_one_line(data, model, tmp_path, extra, words):
    """Refused before the cache folder exists: a rerun with a good model starts afresh."""
    truncated = tmp_path / "truncated"  # an interrupted download of the weights
    truncated.mkdir()
    (truncated / "config.json").write_bytes((model / "config.json").read_bytes())
    weights = (model / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    named = {"MODEL": str(model), "MISSING": str(tmp_path / "missing"), "TRUNCATED": str(truncated)}
    extra = [named.get(a, a) for a in extra]
    r = preprocess(data, tmp_path / "c", *extra)
    one_line_error(r, *words)
    assert not (tmp_path / "c").exists()


def test_another_model_does_not_resume_the_cache(data, wavlm_cache, tmp_path):
    before = (wavlm_cache / "manifest.json").read_bytes()
    other = tiny_wavlm_dir(tmp_path / "other", seed=7)
    r = preprocess(data, wavlm_cache, "--features", "wavlm", "--ssl-model", str(other))
    one_line_error(r, "ssl_sha256")
    assert (wavlm_cache / "manifest.json").read_bytes() == before


def test_train_evaluate_and_the_refusals(data, wavlm_cache, tmp_path):
    r = cli_train(wavlm_cache, tmp_path / "run", "--input-norm", "instance", "--epochs", "3")
    assert r.exit_code == 0, r.output
    best = tmp_path / "run" / "best.pt"
    ck = checkpoint.load(best)
    assert ck.model_config.input_layers == 4 and ck.model_config.n_mels == 128
    assert ck.feature_config == open_cache(wavlm_cache).feature_config
    weights = checkpoint.load(tmp_path / "run" / "last.pt").model["layer_weights.weight"]
    assert weights.shape == (4,) and not torch.equal(weights, torch.ones(4))  # they learn
    r = cli_evaluate(best, wavlm_cache, tmp_path / "report")
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert 0 <= report["accuracy"] <= 1
    # the same tracks as log-mels: another input kind
    mel = tmp_path / "cache-mel"
    assert preprocess(data, mel).exit_code == 0
    one_line_error(cli_evaluate(best, mel, tmp_path / "r2"), "other features", "kind")
    # predict runs the files through the same WavLM: the cached track's probabilities
    test = data / "audio" / "test"
    predict = ["predict", "--checkpoint", str(best), str(test), "--json", "--top", "3"]
    one_line_error(runner.invoke(app, predict), "trained on WavLM features", "--ssl-model DIR")
    other = tiny_wavlm_dir(tmp_path / "other", seed=9)
    r = runner.invoke(app, [*predict, "--ssl-model", str(other)])
    one_line_error(r, "SHA-256", load_wavlm(other).sha256[:12])
    r = runner.invoke(app, [*predict, "--ssl-model", str(data / "model")])
    assert r.exit_code == 0, r.output
    rows = pd.read_csv(tmp_path / "report" / "predictions.csv").set_index("track_id")
    lines = [json.loads(line) for line in r.output.splitlines()]
    assert len(lines) == len(rows) == 3
    for line in lines:
        track_id = Path(line["path"]).relative_to(data / "audio").with_suffix("").as_posix()
        for name, p in line["top"]:
            assert p == pytest.approx(rows.loc[track_id, f"p_{name}"], abs=1e-4), track_id
    r = runner.invoke(app, ["export", "--checkpoint", str(best), "--out", str(tmp_path / "m.onnx")])
    one_line_error(r, "WavLM features")
    assert not (tmp_path / "m.onnx").exists()
    # a log-mel model refuses the WavLM cache
    assert cli_train(mel, tmp_path / "run-mel").exit_code == 0
    r = cli_evaluate(tmp_path / "run-mel" / "best.pt", wavlm_cache, tmp_path / "r3")
    one_line_error(r, "other features")
    r = cli_train(wavlm_cache, tmp_path / "run-cnn", "--arch", "cnn")
    one_line_error(r, "--arch cnn", "--arch mrnet")


def test_wavlm_cache_trains_with_the_authors_input_settings_by_default(wavlm_cache, tmp_path):
    """recipes/wavlm.toml's input settings unless set: InstanceNorm, no SpecAugment, noise
    or mixup; a setting given explicitly wins."""
    from mrnet.recipe import load

    recipe = load("wavlm")
    r = cli_train(wavlm_cache, tmp_path / "a", "--mixup", "0.4", "--specaugment")
    assert r.exit_code == 0, r.output
    assert "note: a cache of wavlm features: input_norm instance" in r.output
    tc = checkpoint.load(tmp_path / "a" / "best.pt").train_config
    assert tc["input_norm"] == recipe["input_norm"] == "instance"
    assert tc["noise_prob"] == recipe["noise_prob"] == 0.0
    assert (tc["mixup"], tc["specaugment"]) == (0.4, True)  # given explicitly
