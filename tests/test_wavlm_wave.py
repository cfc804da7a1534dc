"""The authors' input on the fly: `mrnet preprocess --features wave [--stereo]` caches the
16-kHz waveform in the usual shards, and `mrnet train --frontend wavlm --ssl-model DIR`
runs a frozen WavLM inside each step; everything after the cache needs that WavLM (and
no other) in one line."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from mrnet import checkpoint
from mrnet.frames import to_model_layout
from mrnet.model import ModelConfig, build_model
from mrnet.model.wavlm import WaveFrontEnd
from pipeline.audio import load_audio
from pipeline.cache import open_cache
from pipeline.features import FeatureConfig, wave_frames
from pipeline.ssl import hidden_states, load_wavlm, ssl_frames
from tests.helpers import (
    args,
    cache_content,
    cli_evaluate,
    cli_preprocess_folder,
    cli_train,
    h5_track,
    kill_mid_run,
    one_line_error,
    runner,
    tiny_wavlm_dir,
)

pytest.importorskip("transformers")
from cli import app  # noqa: E402
from pipeline.synth import folder  # noqa: E402

WAVE = FeatureConfig(hop_length=320, n_mels=320, kind="wave", max_seconds=3.0)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("wave-data")
    folder.generate(root / "audio", n_per_label=6, seconds=3.0, splits=True)
    tiny_wavlm_dir(root / "model")
    tiny_wavlm_dir(root / "other", seed=1)
    return root


def preprocess(data, out, *extra):
    return cli_preprocess_folder(data / "audio", out, "--features", "wave", *extra)


@pytest.fixture(scope="module")
def stereo(data):
    out = data / "cache-stereo"
    r = preprocess(data, out, "--stereo")
    assert r.exit_code == 0, r.output
    return out


@pytest.fixture(scope="module")
def run(data, stereo):
    out = data / "run"
    r = cli_train(
        stereo, out, "--frontend", "wavlm", "--ssl-model", str(data / "model"), "--epochs", "2"
    )
    assert r.exit_code == 0, r.output
    return out


def test_wave_frames_lay_out_each_channel_in_wavlm_frames():
    x = np.random.default_rng(0).uniform(-1, 1, (1000, 2)).astype(np.float32)
    cfg = FeatureConfig(hop_length=320, n_mels=640, kind="wave")
    f = wave_frames(x, cfg).astype(np.float32)
    assert f.shape == (4, 640) and cfg.n_frames(1000) == 4 and cfg.frames_per_second == 50
    np.testing.assert_allclose(f[1, :320], x[320:640, 0], atol=1e-3)
    np.testing.assert_allclose(f[1, 320:], x[320:640, 1], atol=1e-3)
    np.testing.assert_allclose(f[3, :40], x[960:, 0], atol=1e-3)
    assert not f[3, 40:320].any()  # the last frame is zero-padded


def test_stereo_cache_holds_the_clip_samples(data, stereo):
    cache = open_cache(stereo)
    assert cache.feature_config["kind"] == "wave" and cache.feature_config["n_mels"] == 640
    assert len(cache.tracks) == 18
    row = cache.split("test").iloc[0]
    (path,) = (data / "audio").glob(f"{row['track_id']}.*")
    x = load_audio(path, 16000, 30.0, clip="middle", channels=2)  # a stereo file
    frames = h5_track(cache, "test", 0)
    assert len(frames) == -(-len(x) // 320)
    for c in (0, 1):
        wave = frames[:, 320 * c : 320 * (c + 1)].reshape(-1)[: len(x)]
        np.testing.assert_allclose(wave, x[:, c], atol=1e-3)  # float16: 11 significant bits
    assert not np.array_equal(x[:, 0], x[:, 1])
    mono = load_audio(path, 16000, 30.0, clip="middle")
    np.testing.assert_allclose(x.mean(axis=1), mono, atol=1e-5)
    r = runner.invoke(app, ["verify", str(stereo)])
    assert r.exit_code == 0 and "all sound" in r.output, r.output


def test_wave_preprocess_resumes_and_accounts_failures_as_log_mels(synth, tmp_path):
    """SIGKILL mid-run, rerun: the same cache as an unbroken run; the broken tracks of the
    synthetic FMA fail with the reasons a log-mel cache gives them."""
    extra = ("--features", "wave", "--max-seconds", "2", "--no-progress")
    whole = tmp_path / "whole"
    r = runner.invoke(app, args(synth, whole, "--jobs", "1", "--shard-size", "8", *extra))
    assert r.exit_code == 0, r.output
    killed = tmp_path / "killed"
    kill_mid_run(synth, killed, 2, *extra)
    r = runner.invoke(app, args(synth, killed, "--jobs", "2", "--shard-size", "8", *extra))
    assert r.exit_code == 0 and "resuming" in r.output, r.output
    assert cache_content(killed) == cache_content(whole)
    logmel = tmp_path / "logmel"
    r = runner.invoke(app, args(synth, logmel, "--jobs", "2", "--max-seconds", "2"))
    assert r.exit_code == 0, r.output
    reasons = [pd.read_csv(c / "failures.csv")["reason"].tolist() for c in (whole, logmel)]
    assert reasons[0] == reasons[1] and reasons[0]
    r = runner.invoke(app, args(synth, whole, "--jobs", "1", "--no-progress"))
    one_line_error(r, "settings")  # other features into the same cache: refused


def test_front_end_frames_stack_each_channels_states(data):
    ssl = load_wavlm(data / "model")
    x = torch.randn(2, 2, 4800)  # 2 crops, stereo, 15 frames
    frames = x.unflatten(2, (15, 320)).permute(0, 1, 3, 2).reshape(2, 640, 15)
    out = WaveFrontEnd(ssl, layers=[0, 3])(frames)
    assert out.shape == (2, 2 * 2 * 32, 14)
    states = hidden_states(ssl.model, x[:, 1])  # channel 1 of both crops
    torch.testing.assert_close(out[:, 32:64], states[0].transpose(1, 2))  # layer 0, channel 1
    torch.testing.assert_close(out[:, 96:], states[3].transpose(1, 2))  # layer 3, channel 1
    assert not list(WaveFrontEnd(ssl).state_dict())  # WavLM's weights are not the model's


def test_cached_and_on_the_fly_features_give_the_same_logits(data):
    """One MRNet, fed the cached WavLM features of a clip (float16, as preprocess stores
    them) or its waveform through the front-end: the same logits to float16 precision."""
    ssl = load_wavlm(data / "model")
    layers = tuple(range(ssl.n_states))
    cfg = ModelConfig(
        "mrnet", len(layers) * ssl.dim, 3, 16, input_layers=len(layers), input_norm="instance"
    )
    live = ModelConfig(
        **{**cfg.__dict__, "frontend": "wavlm", "ssl_sha256": ssl.sha256, "ssl_layers": layers}
    )
    torch.manual_seed(0)
    model = build_model(live, ssl).eval()
    x = load_audio(next((data / "audio" / "test").rglob("*.wav")), 16000, 3.0)
    assert len(x) % 320 == 0  # whole frames: both paths see the same samples
    wave = wave_frames(x, WAVE)  # what the cache holds
    cached = ssl_frames(
        wave.reshape(-1).astype(np.float32), str(data / "model"), ssl.sha256, layers
    )
    with torch.no_grad():
        on_the_fly = model(to_model_layout(wave[None]))
        from_cache = model.net(to_model_layout(cached.astype(np.float16)[None]))
    torch.testing.assert_close(on_the_fly, from_cache, rtol=2e-2, atol=2e-2)


def test_layer_weights_train_and_wavlm_stays_frozen(data, run):
    ssl = load_wavlm(data / "model")
    ckpt = checkpoint.load(run / "last.pt")
    w = ckpt.model["net.layer_weights.weight"]
    assert w.shape == (ssl.n_states,) and not torch.equal(w, torch.ones_like(w))
    assert not [k for k in ckpt.model if "wavlm" in k or k.startswith("front")]
    mc = ckpt.model_config
    assert mc.frontend == "wavlm" and mc.ssl_sha256 == ssl.sha256 and mc.n_mels == 4 * 2 * 32
    assert mc.ssl_config["hidden_size"] == 32
    fresh = load_wavlm(data / "model").model.state_dict()
    used = checkpoint.load_model(ckpt, data / "model").front.ssl.model.state_dict()
    assert all(torch.equal(fresh[k], used[k]) for k in fresh)


def test_evaluate_predict_embed_need_the_same_wavlm(data, stereo, run, tmp_path):
    best = run / "best.pt"
    one_line_error(cli_evaluate(best, stereo, tmp_path / "r0"), "--ssl-model DIR", "SHA-256")
    r = cli_evaluate(best, stereo, tmp_path / "r1", "--ssl-model", str(data / "other"))
    one_line_error(r, "--ssl-model", "not the ones")
    r = cli_evaluate(best, stereo, tmp_path / "r2", "--ssl-model", str(data / "model"))
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "r2" / "report.json").read_text())
    files = sorted((data / "audio" / "test").rglob("*.wav"))
    r = runner.invoke(
        app,
        ["predict", "--checkpoint", str(best), "--ssl-model", str(data / "model"), "--csv"]
        + [str(f) for f in files],
    )
    assert r.exit_code == 0 and len(r.output.strip().splitlines()) == len(files) + 1, r.output
    r = runner.invoke(app, ["predict", "--checkpoint", str(best), str(files[0])])
    one_line_error(r, "--ssl-model DIR")
    r = runner.invoke(
        app,
        ["embed", "--checkpoint", str(best), "--cache", str(stereo), "--out", str(tmp_path / "e")]
        + ["--ssl-model", str(data / "model"), "--no-progress"],
    )
    assert r.exit_code == 0, r.output
    assert np.load(tmp_path / "e" / "embeddings.npy").shape == (18, 128)
    r = runner.invoke(app, ["export", "--checkpoint", str(best), "--out", str(tmp_path / "m")])
    one_line_error(r, "ONNX")
    # the same weights under another config.json (another position bias): other features
    edited = tmp_path / "edited"
    shutil.copytree(data / "model", edited)
    config = json.loads((edited / "config.json").read_text())
    config["max_bucket_distance"] += 100
    (edited / "config.json").write_text(json.dumps(config))
    r = cli_evaluate(best, stereo, tmp_path / "r3", "--ssl-model", str(edited))
    one_line_error(r, "config.json differs", "max_distance")
    assert 0 <= report["accuracy"] <= 1


def test_resume_is_exact_and_needs_the_same_wavlm(data, stereo, run, tmp_path):
    model = ("--frontend", "wavlm", "--ssl-model", str(data / "model"))
    out = tmp_path / "resumed"
    # the first epoch of the 2-epoch run (same cosine cycle), stopped there
    assert cli_train(stereo, out, *model, "--epochs", "1", "--set", "t0=2").exit_code == 0
    r = cli_train(stereo, out, "--resume", "--epochs", "2")
    one_line_error(r, "--ssl-model")
    r = cli_train(stereo, out, "--resume", "--epochs", "2", "--ssl-model", str(data / "other"))
    one_line_error(r, "not the ones")
    r = cli_train(stereo, out, "--resume", "--epochs", "2", "--ssl-model", str(data / "model"))
    assert r.exit_code == 0, r.output
    a, b = checkpoint.load(run / "last.pt").model, checkpoint.load(out / "last.pt").model
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_input_kind_and_front_end_must_agree(data, stereo, tmp_path):
    logmel = tmp_path / "logmel"
    r = runner.invoke(
        app,
        ["preprocess", "--dataset", "folder", "--audio-dir", str(data / "audio")]
        + ["--out", str(logmel), "--jobs", "1", "--no-progress"],
    )
    assert r.exit_code == 0, r.output
    model = ("--ssl-model", str(data / "model"))
    one_line_error(cli_train(stereo, tmp_path / "a"), "waveforms", "--frontend wavlm")
    r = cli_train(logmel, tmp_path / "b", "--frontend", "wavlm", *model)
    one_line_error(r, "--features wave")
    one_line_error(cli_train(stereo, tmp_path / "c", "--frontend", "wavlm"), "--ssl-model DIR")
    r = cli_train(stereo, tmp_path / "c2", "--frontend", "wavlm", "--ssl-model", str(tmp_path))
    one_line_error(r, "config.json")
    assert not (tmp_path / "c").exists() and not (tmp_path / "c2").exists()  # nothing written
    r = cli_train(stereo, tmp_path / "d", "--frontend", "wavlm", "--specaugment", *model)
    one_line_error(r, "SpecAugment")
    one_line_error(cli_train(logmel, tmp_path / "e", *model), "--ssl-model")
    assert cli_train(logmel, tmp_path / "plain").exit_code == 0  # a model needing no WavLM
    best = tmp_path / "plain" / "best.pt"
    one_line_error(cli_evaluate(best, logmel, tmp_path / "r", *model), "drop it")
    wav = next((data / "audio" / "test").rglob("*.wav"))
    r = runner.invoke(app, ["predict", "--checkpoint", str(best), *model, str(wav)])
    one_line_error(r, "drop it")
    r = preprocess(data, tmp_path / "f", "--max-seconds", "0")
    one_line_error(r, "max_seconds")


def test_demo_wave_runs_the_front_end_on_a_waveform_cache(tmp_path):
    from mrnet.demo import RANDOM_WAVLM, resolved, stage_options
    from mrnet.options import DemoOptions

    opts = resolved(DemoOptions(out=tmp_path, dataset="gtzan", features="wave"))
    pre, fit, score = stage_options(opts, tmp_path / "audio", None)
    assert pre.features == "wave" and pre.feature_config().kind == "wave"
    assert fit.frontend == "wavlm" and fit.ssl_model == tmp_path / RANDOM_WAVLM
    assert not fit.specaugment and fit.input_norm == "instance" and fit.channels == 64
    assert score.ssl_model == fit.ssl_model
