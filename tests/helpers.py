"""Builders and checks the tests share: small caches without audio, training settings
that run in seconds, the one-line error check, and fault injection in child processes
(tests/fault_site/sitecustomize.py, by environment: nothing in the library knows of it).
Fixtures live in conftest.py."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
from typer.testing import CliRunner

from cli import app
from mrnet.options import TrainConfig
from pipeline.cache import Manifest, Track, write_cache
from pipeline.features import FeatureConfig

ROOT = Path(__file__).resolve().parents[1]
FAULT_SITE = Path(__file__).resolve().parent / "fault_site"
SPLITS = ("training", "validation", "test")
runner = CliRunner()


def fault_env(**points: str) -> dict[str, str]:
    """The environment of a child process with faults injected (see
    tests/fault_site/sitecustomize.py): ``hold="POINT:MARK"``, ``step_delay="0.3"``,
    ``track_delay="0.25"``, ``kill_after="last.pt:4"``."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(FAULT_SITE), str(ROOT)])}
    env.update({f"MRNET_TEST_{k.upper()}": v for k, v in points.items()})
    return env


def make_cache(
    root: Path,
    n_per_class: tuple[int, int, int] = (8, 2, 2),
    n_classes: int = 3,
    frames: tuple[int, ...] = (150,),
    n_mels: int = 16,
    shard_size: int = 5,
    seed: int = 0,
    status: str = "complete",
    **features,
) -> Path:
    """A finished cache without audio: ``n_per_class`` tracks of every class per split
    (training, validation, test); track i has ``frames[i % len(frames)]`` frames of
    log-mel-like noise around -4, a +2 band at class-dependent mel bins and +3 pulses
    every 3 + 2 * label frames (MRNet's InstanceNorm erases static per-band offsets)."""
    fc = FeatureConfig(n_mels=n_mels, **features).to_dict()
    rng = np.random.default_rng(seed)
    band = n_mels // n_classes
    period = 3 + 2 * np.arange(n_classes)  # frames between class-specific pulses

    def tracks():
        tid = 1
        for split, n in zip(SPLITS, n_per_class):
            for c in [c for c in range(n_classes) for _ in range(n)]:
                length = frames[(tid - 1) % len(frames)]
                mel = rng.normal(-4.0, 1.0, (length, n_mels))
                mel[:, c * band : (c + 1) * band] += 2.0
                mel[rng.integers(period[c]) :: period[c], c * band :] += 3.0
                yield Track(tid, split, c, mel, length / 50)
                tid += 1

    write_cache(root, fc, [f"g{c}" for c in range(n_classes)], tracks(), shard_size, subset="small")
    if status != "complete":
        m = Manifest.read(root)
        m.status = status
        m.write(root)
    return root


def make_multi_cache(
    root: Path, n: tuple[int, int, int] = (24, 8, 4), n_mels: int = 16, seed: int = 0
) -> Path:
    """A finished multi-label cache without audio: 3 labels, each track has 1-2 of them;
    label c adds a +2 band at its mel bins."""
    fc = FeatureConfig(n_mels=n_mels).to_dict()
    rng = np.random.default_rng(seed)

    def tracks():
        tid = 1
        for split, count in zip(SPLITS, n):
            for k in range(count):
                labels = (k % 3,) if k % 2 else tuple(sorted({k % 3, (k + 1) % 3}))
                mel = rng.normal(-4.0, 1.0, (120, n_mels))
                for c in labels:
                    mel[:, c * 5 : c * 5 + 5] += 2.0
                yield Track(tid, split, labels, mel, 2.4)
                tid += 1

    write_cache(root, fc, ["a", "b", "c"], tracks(), 8, subset="large", task="multi")
    return root


def h5_track(cache, split: str, i: int) -> np.ndarray:
    """Reference read through h5py: float32 [frames, n_mels] of the i-th track of a split."""
    r = cache.split(split).iloc[i]
    with h5py.File(cache.root / r["shard"], "r") as f:
        a, b = f["offsets"][r["row"]], f["offsets"][r["row"] + 1]
        return f["mel"][a:b].astype(np.float32)


def reference_crop(track: np.ndarray, start: int, frames: int) -> np.ndarray:
    """[n_mels, frames]: the crop by plain indexing, wrapping past the end."""
    return track[(start + np.arange(frames)) % len(track)].T


def tiny(cache: Path, out: Path, **kw) -> TrainConfig:
    """A small, fast run for tests of the mechanics: one crop per track an epoch, whole
    validation tracks, no mixup or SpecAugment (so a dozen steps visibly learn)."""
    base = dict(
        arch="mrnet",
        channels=16,
        epochs=1,
        batch_size=6,
        lr=3e-3,
        crop_seconds=2.0,
        workers=0,
        device="cpu",
        progress=False,
        min_steps=0,
        val_crops=0,
        mixup=0.0,
        specaugment=False,
    )
    return TrainConfig(cache=cache, out=out, **{**base, **kw})


def cli_train(cache: Path, out: Path, *extra: str):
    return runner.invoke(
        app,
        [
            "train",
            "--cache",
            str(cache),
            "--out",
            str(out),
            "--device",
            "cpu",
            "--arch",
            "mrnet",
            *tiny_args(),
            *extra,
        ],
    )


def cli_preprocess_folder(audio: Path, out: Path, *extra: str):
    """`mrnet preprocess --dataset folder` of ``audio`` into ``out``, one job, no progress
    bar (CliRunner result)."""
    args = ["preprocess", "--dataset", "folder", "--audio-dir", str(audio), "--out", str(out)]
    return runner.invoke(app, [*args, "--jobs", "1", "--no-progress", *extra])


def cli_evaluate(checkpoint: Path, cache: Path, out: Path, *extra: str):
    """`mrnet evaluate` of ``checkpoint`` on ``cache`` into ``out`` (CliRunner result)."""
    args = ["evaluate", "--checkpoint", str(checkpoint), "--cache", str(cache), "--out", str(out)]
    return runner.invoke(app, [*args, *extra])


def tiny_args(crop_seconds: float = 1.0, workers: int = 0) -> list[str]:
    """CLI arguments of a small, fast training run for tests of everything but learning:
    MRNet C=8, one epoch of one crop per track, whole validation tracks, no progress bar."""
    return [
        "--channels",
        "8",
        "--min-steps",
        "0",
        "--val-crops",
        "0",
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--crop-seconds",
        str(crop_seconds),
        "--workers",
        str(workers),
        "--no-progress",
    ]


def one_line_error(r, *words: str, alone: bool = False) -> str:
    """Exit 2 with one `error:` line naming ``words``, and no traceback; ``alone``: it is
    all that was printed (else a run may have said what it started before it stopped).
    Returns the line."""
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == 1 and (not alone or len(lines) == 1), r.output
    assert "Traceback" not in r.output
    for w in words:
        assert w in errors[0], (w, errors[0])
    return errors[0]


def args(synth, out, *extra) -> list[str]:
    """`mrnet preprocess` arguments for the synthetic small subset into ``out``."""
    return [
        "preprocess",
        "--audio-dir",
        str(synth.audio_dir),
        "--metadata-dir",
        str(synth.metadata_dir),
        "--subset",
        "small",
        "--out",
        str(out),
        *extra,
    ]


def cache_content(root: Path) -> dict:
    """Everything a reader sees, minus timings: shard arrays and attrs, CSVs, manifest."""
    m = json.loads((root / "manifest.json").read_text())
    m["summary"].pop("last_run")
    m["summary"].pop("cache_bytes")
    m.pop("source")
    content = {
        "manifest": m,
        "tracks": (root / "tracks.csv").read_text(),
        "failures": (root / "failures.csv").read_text().replace(str(root), ""),
    }
    for p in sorted((root / "shards").iterdir()):
        with h5py.File(p, "r") as f:
            arrays = {k: f[k][()] for k in f}
            content[p.name] = {
                k: a.tolist() if a.dtype == object else a.tobytes() for k, a in arrays.items()
            } | dict(f.attrs)
    return content


# One job runs in-process, so slowing decoding there makes a kill land mid-run.
# decoding slowed to 0.08 s a track, and to 1 s a track once the shards the test waits
# for (8 tracks each) and one more are written: a test process that is starved for a
# few seconds on a busy machine still signals a run that is not finished. Ctrl-C as in a
# terminal: a shell that starts the tests in the background hands them SIGINT ignored.
_SLOW_PREPROCESS = (
    "import os, signal, sys, time, pipeline.audio as a\n"
    "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
    "orig, calls = a.load_audio, []\n"
    "fast = 8 * (int(os.environ['MRNET_TEST_MIN_SHARDS']) + 1)\n"
    "def slow(*x, **k):\n"
    "    calls.append(1)\n"
    "    time.sleep(0.08 if len(calls) <= fast else 1.0)\n"
    "    return orig(*x, **k)\n"
    "a.load_audio = slow\n"
    "from cli import app\n"
    "sys.argv[0] = 'mrnet'\n"
    "app()\n"
)


def interrupt_mid_run(
    synth, out: Path, sig: int, min_shards: int = 2, *extra: str
) -> tuple[int, str]:
    """Start `mrnet preprocess` (1 job, 8-track shards, decoding slowed, ``extra``
    arguments) into ``out``, send ``sig`` once ``min_shards`` shards are written;
    returns (exit code, stderr)."""
    argv = [
        sys.executable,
        "-c",
        _SLOW_PREPROCESS,
        *args(synth, out, "--jobs", "1", "--shard-size", "8", *extra),
    ]
    env = {**os.environ, "MRNET_TEST_MIN_SHARDS": str(min_shards)}
    proc = subprocess.Popen(
        argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env
    )
    deadline = time.time() + 60
    while time.time() < deadline and len(list((out / "shards").glob("*.h5"))) < min_shards:
        time.sleep(0.02)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    return proc.returncode, err


def kill_mid_run(synth, out: Path, min_shards: int = 2, *extra: str) -> None:
    """SIGKILL a preprocess run into ``out`` once ``min_shards`` shards are written."""
    interrupt_mid_run(synth, out, signal.SIGKILL, min_shards, *extra)


def fill(disk: Path, leave: int) -> Path:
    """A file taking all but ``leave`` bytes of ``disk``."""
    free = shutil.disk_usage(disk).free
    filler = disk / "filler"
    with open(filler, "wb") as f:
        f.write(b"\0" * max(0, free - leave))
    return filler


def tiny_wavlm_dir(path: Path, seed: int = 0, stable: bool = False, layers: int = 3) -> Path:
    """A tiny random WavLM saved by transformers in Hugging Face's format (config.json,
    model.safetensors), the format microsoft/wavlm-base-plus is distributed in; with
    ``stable``, the "stable layer norm" variant of WavLM large. Returns ``path``."""
    import torch
    from transformers import WavLMConfig, WavLMModel

    torch.manual_seed(seed)
    config = WavLMConfig(
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(16,) * 7,  # WavLM's convolutions, narrow: 320 samples a frame (50/s)
        conv_kernel=(10, 3, 3, 3, 3, 2, 2),
        conv_stride=(5, 2, 2, 2, 2, 2, 2),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
        num_buckets=32,
        max_bucket_distance=80,
        do_stable_layer_norm=stable,
        feat_extract_norm="layer" if stable else "group",
    )
    WavLMModel(config).eval().save_pretrained(path)
    return path
