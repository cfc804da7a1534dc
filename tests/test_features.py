"""The log-mel definition and the shard schema (no audio decoding needed)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
import torchaudio

from pipeline.cache.shards import ShardError, ShardWriter, is_complete, read_shard
from pipeline.features import FeatureConfig, log_mel, mel_filterbank


def test_default_filterbank_has_no_empty_filter():
    fb = mel_filterbank(FeatureConfig())
    assert fb.shape == (513, 128)
    assert (fb.max(axis=0) > 0).all(), "a mel filter covers no FFT bin"


@pytest.mark.parametrize(
    "cfg",
    [
        FeatureConfig(),
        FeatureConfig(
            sample_rate=22050, n_fft=2048, hop_length=512, n_mels=96, f_min=30.0, f_max=11025.0
        ),
    ],
)
def test_filterbank_equals_torchaudio(cfg):
    ref = torchaudio.functional.melscale_fbanks(
        cfg.n_fft // 2 + 1,
        cfg.f_min,
        cfg.f_max,
        cfg.n_mels,
        cfg.sample_rate,
        norm="slaney",
        mel_scale="slaney",
    )
    np.testing.assert_allclose(mel_filterbank(cfg), ref.numpy(), atol=1e-6)


@pytest.mark.parametrize(
    "cfg",
    [
        FeatureConfig(),
        FeatureConfig(
            sample_rate=22050, n_fft=2048, hop_length=512, n_mels=96, f_min=30.0, f_max=11025.0
        ),
    ],
)
def test_filterbank_equals_librosa(cfg):
    """librosa.filters.mel is the reference filterbank; we compute the same matrix
    without importing librosa in the workers (0.8 s and 134 MB each)."""
    librosa = pytest.importorskip("librosa")
    ref = librosa.filters.mel(
        sr=cfg.sample_rate,
        n_fft=cfg.n_fft,
        n_mels=cfg.n_mels,
        fmin=cfg.f_min,
        fmax=cfg.f_max,
        norm="slaney",
        htk=False,
    )
    np.testing.assert_allclose(mel_filterbank(cfg), ref.T, atol=1e-6)


def test_log_mel_equals_torchaudio_melspectrogram():
    cfg = FeatureConfig()
    x = np.random.default_rng(0).standard_normal(3 * cfg.sample_rate).astype(np.float32) * 0.1
    ref = torchaudio.transforms.MelSpectrogram(
        sample_rate=cfg.sample_rate,
        n_fft=cfg.n_fft,
        hop_length=cfg.hop_length,
        n_mels=cfg.n_mels,
        f_min=cfg.f_min,
        f_max=cfg.f_max,
        norm="slaney",
        mel_scale="slaney",
    )(torch.from_numpy(x))
    ours = log_mel(x, cfg)
    assert ours.shape == (cfg.n_frames(len(x)), cfg.n_mels) == (151, 128)
    np.testing.assert_allclose(ours, np.log(ref.numpy().T + cfg.log_eps), atol=1e-4)


def test_log_mel_cuts_at_max_seconds():
    cfg = FeatureConfig(max_seconds=2.0)
    x = np.zeros(5 * cfg.sample_rate, np.float32)
    assert log_mel(x, cfg).shape[0] == cfg.n_frames(2 * cfg.sample_rate)


def test_feature_config_rejects_f_max_above_nyquist():
    with pytest.raises(ValueError, match="Nyquist"):
        FeatureConfig(sample_rate=16000, f_max=11025)


def _write(path, n_tracks=3):
    cfg = FeatureConfig().to_dict()
    w = ShardWriter(path, cfg, "training")
    rng = np.random.default_rng(1)
    mels = [rng.standard_normal((50 + 7 * i, 128)).astype(np.float32) for i in range(n_tracks)]
    for i, m in enumerate(mels):
        w.add(100 + i, i % 2, m, 1.0 + i)
    w.fail(999, "undecodable")
    w.commit()
    return mels


def test_shard_memmap_equals_h5py_read(tmp_path):
    path = tmp_path / "training-00000.h5"
    mels = _write(path)
    idx = read_shard(path)
    assert list(idx.track_id) == [100, 101, 102] and list(idx.label) == [0, 1, 0]
    assert list(idx.failed_track_id) == [999] and idx.failed_reason == ["undecodable"]
    mm = idx.memmap()
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(mm, f["mel"][()])
        assert f["mel"].chunks is None and f["mel"].compression is None
    for i, m in enumerate(mels):
        np.testing.assert_array_equal(idx.track(i, mm), m.astype(np.float16))
    assert not list(tmp_path.glob("*.partial*")), "temporary file left behind"


def test_truncated_or_incomplete_shard_is_rejected(tmp_path):
    path = tmp_path / "s.h5"
    _write(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert not is_complete(path)
    with pytest.raises(ShardError):
        read_shard(path)
    _write(path)
    with h5py.File(path, "a") as f:
        f.attrs["complete"] = 0
    with pytest.raises(ShardError, match="incomplete"):
        read_shard(path)
    with pytest.raises(ShardError, match="missing"):
        read_shard(tmp_path / "absent.h5")


def test_empty_shard_is_valid(tmp_path):
    path = tmp_path / "s.h5"
    w = ShardWriter(path, FeatureConfig().to_dict(), "test")
    w.fail(5, "missing")
    w.commit()
    idx = read_shard(path)
    assert len(idx) == 0 and idx.memmap().shape == (0, 128)
