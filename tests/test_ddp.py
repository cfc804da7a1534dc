"""`mrnet train` under torchrun: DistributedDataParallel on the CPU (gloo, loopback only).

The torchrun jobs use ``--standalone`` (rendezvous on localhost) and gloo bound to the
loopback interface; processes launched by hand use MASTER_ADDR=127.0.0.1 and a free port.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from helpers import ROOT, fault_env, make_cache

from mrnet.checkpoint import ModelConfig, build_model, load_model
from mrnet.checkpoint import load as load_checkpoint
from mrnet.data import CropPlan, CropPlanSampler, crop_plan
from mrnet.runtime import Torchrun
from mrnet.task import TASKS
from mrnet.train import TIMING_COLUMNS
from mrnet.train.steps import validate
from pipeline.cache import open_cache, split_index

CPU = torch.device("cpu")
BIN = Path(sys.executable).parent
MRNET, TORCHRUN = BIN / "mrnet", BIN / "torchrun"
LOOPBACK = {"GLOO_SOCKET_IFNAME": "lo"} if Path("/sys/class/net/lo").exists() else {}
pytestmark = pytest.mark.skipif(
    not (MRNET.exists() and TORCHRUN.exists() and dist.is_available()),
    reason="needs the mrnet and torchrun console scripts and torch.distributed",
)
# 24 training tracks (12 per rank: 3 steps of 4), 6 validation tracks
TRAIN_ARGS = (
    "--arch",
    "mrnet",
    "--channels",
    "16",
    "--min-steps",
    "0",
    "--val-crops",
    "0",
    "--epochs",
    "2",
    "--batch-size",
    "4",
    "--crop-seconds",
    "2",
    "--workers",
    "0",
    "--device",
    "cpu",
    "--seed",
    "3",
    "--no-progress",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(cache: Path, out: Path, *extra: str, logs: Path | None = None, env=None, **kw):
    """Popen of `torchrun --standalone --nproc-per-node 2 --no-python mrnet train ...`."""
    redirect = ["--log-dir", str(logs), "--redirects", "3"] if logs else []
    launcher = [str(TORCHRUN), "--standalone", "--nproc-per-node", "2", *redirect]
    train = ["train", "--cache", str(cache), "--out", str(out), *TRAIN_ARGS, *extra]
    cmd = [*launcher, "--no-python", str(MRNET), *train]
    env = {**os.environ, **LOOPBACK, **(env or {})}
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, **kw)


def rank_logs(logs: Path, rank: int, stream: str) -> str:
    """What local rank ``rank`` wrote to ``stream`` (torchrun --log-dir ... --redirects 3)."""
    (path,) = logs.glob(f"*/attempt_0/{rank}/{stream}.log")
    return path.read_text()


def metrics(run: Path) -> pd.DataFrame:
    return pd.read_csv(run / "metrics.csv").drop(columns=list(TIMING_COLUMNS))


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return make_cache(tmp_path_factory.mktemp("cache") / "c", frames=(150, 40, 150))


@pytest.fixture(scope="module")
def ddp_run(cache_dir, tmp_path_factory) -> tuple[Path, Path, str]:
    """A 2-process, 2-epoch run logging to W&B offline: (RUN, torchrun log dir, stdout)."""
    tmp = tmp_path_factory.mktemp("ddp")
    p = torchrun(
        cache_dir,
        tmp / "run",
        "--wandb",
        "ddp",
        logs=tmp / "logs",
        env={"WANDB_MODE": "offline"},
        stderr=subprocess.PIPE,
    )
    stdout, stderr = p.communicate(timeout=120)
    assert p.returncode == 0, stderr.decode()[-3000:]
    return tmp / "run", tmp / "logs", stdout.decode()


# ---------------------------------------------------------------- crops


@pytest.mark.parametrize("n,batch", [(24, 4), (23, 3)])
def test_rank_crop_plans_are_disjoint_and_cover_the_epoch(n, batch):
    lengths = np.random.default_rng(0).integers(20, 300, n)
    world = 2
    plans = [crop_plan(lengths, 100, batch, seed=1, epoch=5, rank=r, world=world) for r in (0, 1)]
    tracks = [np.concatenate([t for t, _ in plan]) for plan in plans]
    assert len(plans[0]) == len(plans[1]) == n // world // batch  # equal DDP step counts
    assert not set(tracks[0]) & set(tracks[1])
    union = np.concatenate(tracks)
    assert len(union) == len(set(union)) == world * (n // world // batch * batch)
    assert n - len(union) < world * batch  # only incomplete batches are dropped
    if n % (world * batch) == 0:  # the ranks' shares are the single-process epoch
        single = np.concatenate([t for t, _ in crop_plan(lengths, 100, batch, 1, 5)])
        assert sorted(union) == sorted(single) == list(range(n))
    for plan in plans:
        for t, s in plan:
            assert ((s >= 0) & (s <= np.maximum(lengths[t] - 100, 0))).all()
    # the DataLoader sampler yields exactly the plan of its rank
    for r in (0, 1):
        sampler = CropPlanSampler(CropPlan(lengths, 100, batch, 1, rank=r, world=world))
        sampler.set_epoch(5)
        specs = list(sampler)
        assert len(specs) == len(sampler) == len(plans[r])
        assert all(np.array_equal(a[:, 0], t) for a, (t, _) in zip(specs, plans[r]))


# ---------------------------------------------------------------- validation


def _validate_share(rank: int, world: int, port: int, cache: str, out: str) -> None:
    """One gloo process: validate its share; also try SyncBatchNorm on the CPU."""
    os.environ.update(LOOPBACK)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        member = Torchrun(rank, world, rank, enabled=True)
        loss, acc = single_label(*untrained(Path(cache)), 0, 200, member)
        sync = torch.nn.SyncBatchNorm.convert_sync_batchnorm(torch.nn.BatchNorm1d(4)).train()
        try:
            sync(torch.randn(3, 4))
            refused = ""
        except ValueError as e:
            refused = str(e)
        torch.save({"loss": loss, "acc": acc, "refused": refused}, f"{out}/{rank}.pt")
    finally:
        dist.destroy_process_group()


def single_label(model, index, weight, device, window, max_frames, torchrun=Torchrun()):
    """(validation loss, accuracy) of a single-label model."""
    figures, _ = validate(
        model, TASKS["single"], index, weight, device, window, max_frames, torchrun
    )
    return figures["val_loss"], figures["val_acc"]


def untrained(cache: Path) -> tuple:
    """(model, validation index, class weights, device) for validate(), seeded."""
    torch.manual_seed(0)
    c = open_cache(cache)
    weight = TASKS["single"].loss_weights(split_index(c, "training").label, 3)
    model = build_model(ModelConfig("mrnet", 16, 3, channels=16))
    return model, split_index(c, "validation"), weight, CPU


def test_validation_over_ranks_equals_one_process(tmp_path):
    """4 gloo processes, 3 validation tracks of 3 lengths: shares of 1, 1, 1 and 0."""
    cache = make_cache(tmp_path / "c", n_per_class=(2, 1, 1), frames=(150, 40, 90))
    index = split_index(open_cache(cache), "validation")
    world = 4
    assert sorted(np.unique(index.length)) == [40, 90, 150]
    assert [len(index.share(r, world)) for r in range(world)] == [1, 1, 1, 0]
    shares = np.concatenate([index.share(r, world).track_id for r in range(world)])
    assert sorted(shares) == sorted(index.track_id)
    mp.spawn(
        _validate_share,
        args=(world, free_port(), str(cache), str(tmp_path)),
        nprocs=world,
        join=True,
    )
    loss, acc = single_label(*untrained(cache), 0, 200)
    for r in range(world):
        got = torch.load(tmp_path / f"{r}.pt", weights_only=True)
        assert got["loss"] == pytest.approx(loss, rel=1e-6) and got["acc"] == acc, (r, got)
        # why `--sync-bn` is refused on the CPU: torch itself refuses SyncBatchNorm there
        assert "SyncBatchNorm expected input tensor to be on GPU" in got["refused"]


# ---------------------------------------------------------------- torchrun


def test_torchrun_two_processes(ddp_run, cache_dir):
    run, logs, stdout = ddp_run
    files = ["best.pt", "curves.png", "last.pt", "metrics.csv", "wandb"]
    assert sorted(p.name for p in run.iterdir()) == files
    assert len(list((run / "wandb").glob("offline-run-*"))) == 1  # only rank 0 logs
    m = pd.read_csv(run / "metrics.csv")
    assert list(m["epoch"]) == [1, 2]  # one row per epoch, written once
    assert (m["train_samples"] == 24).all() and (m["val_tracks"] == 6).all()
    for name in ("last.pt", "best.pt"):
        ckpt = torch.load(run / name, map_location="cpu", weights_only=True)
        assert not any(k.startswith(("module.", "_orig_mod.")) for k in ckpt["model"])
        assert ckpt["world"] == 2 and ckpt["train_config"]["batch_size"] == 4
    # the reduced validation figures are those of the saved model scored by one process
    ckpt = load_checkpoint(run / "last.pt")
    index = split_index(open_cache(cache_dir), "validation")
    weight = TASKS["single"].loss_weights(split_index(open_cache(cache_dir), "training").label, 3)
    loss, acc = single_label(load_model(ckpt), index, weight, CPU, 0, 400)
    assert m["val_loss"].iloc[-1] == pytest.approx(loss, rel=1e-6)
    assert m["val_acc"].iloc[-1] == acc
    # rank 0 alone prints: what it starts, its epoch lines and the summary; rank 1 nothing
    assert stdout == ""  # --redirects 3: the ranks' output went to the log dir
    lines = rank_logs(logs, 0, "stdout").splitlines()
    assert lines[0].startswith("training mrnet") and "x 2 processes" in lines[0]
    epochs = [ln.split()[1] for ln in lines if ln.startswith("epoch ")]
    assert epochs == ["1/2", "2/2"] and any(ln.startswith("2 epochs in") for ln in lines)
    assert rank_logs(logs, 1, "stdout") == rank_logs(logs, 1, "stderr") == ""


def test_torchrun_stop_and_resume(ddp_run, cache_dir, tmp_path):
    """SIGTERM to torchrun during epoch 2, then `--resume` under torchrun: the same
    weights and metrics as the unbroken 2-process run."""
    run = tmp_path / "run"
    p = torchrun(cache_dir, run, env=fault_env(step_delay="0.5"), stderr=subprocess.PIPE)
    try:  # 3 steps of 0.5 s: epoch 2 lasts 1.5 s after metrics.csv appears
        deadline = time.time() + 120
        while not (run / "metrics.csv").exists():
            assert p.poll() is None and time.time() < deadline, p.stderr.read().decode()
            time.sleep(0.02)
        p.send_signal(signal.SIGTERM)  # torchrun stops its workers
        p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode != 0
    assert load_checkpoint(run / "last.pt").epoch == 1 and len(metrics(run)) == 1
    q = torchrun(cache_dir, run, "--resume", stderr=subprocess.PIPE)
    _, stderr = q.communicate(timeout=120)
    assert q.returncode == 0, stderr.decode()[-3000:]
    pd.testing.assert_frame_equal(metrics(run), metrics(ddp_run[0]))
    a, b = load_checkpoint(run / "last.pt"), load_checkpoint(ddp_run[0] / "last.pt")
    assert a.epoch == b.epoch == 2
    for k, v in a.model.items():
        assert torch.allclose(v.float(), b.model[k].float(), atol=1e-6), k


def launch_ranks(cache: Path, out: Path, *extra: str, caches: tuple[Path, Path] | None = None):
    """Two `mrnet train` processes started as torchrun would (RANK, WORLD_SIZE, ...), so
    each one's exit code and output can be read; ``caches`` gives each rank its --cache."""
    env = {
        **os.environ,
        **LOOPBACK,
        "WORLD_SIZE": "2",
        "LOCAL_WORLD_SIZE": "2",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
    }
    procs = []
    for r in (0, 1):
        args = ["train", "--cache", str(caches[r] if caches else cache), "--out", str(out)]
        procs.append(
            subprocess.Popen(
                [str(MRNET), *args, *TRAIN_ARGS, *extra],
                env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        )
    results = []
    for p in procs:
        out_, err = p.communicate(timeout=120)
        results.append((p.returncode, out_.decode(), err.decode()))
    return results


def assert_rank_error(result: tuple[int, str, str], *words: str) -> None:
    code, stdout, stderr = result
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert code == 2 and stdout == "" and len(lines) == 1, result
    assert lines[0].startswith("error: ") and "Traceback" not in stderr
    for w in words:
        assert w in lines[0], (w, lines[0])


@pytest.mark.skipif(torch.cuda.is_available(), reason="tests --sync-bn refused on the CPU")
def test_sync_bn_on_cpu_is_bad_input_on_every_rank(tmp_path, cache_dir):
    for result in launch_ranks(cache_dir, tmp_path / "run", "--sync-bn"):
        assert_rank_error(result, "--sync-bn", "CUDA")
    assert not (tmp_path / "run").exists()


def test_bad_input_on_one_rank_stops_every_rank(tmp_path, cache_dir):
    """Rank 1 cannot open its cache: it names the problem, rank 0 names rank 1."""
    r0, r1 = launch_ranks(cache_dir, tmp_path / "run", caches=(cache_dir, tmp_path / "absent"))
    assert_rank_error(r1, "does not exist", "mrnet preprocess")
    assert_rank_error(r0, "process 1", "bad input")
    assert not (tmp_path / "run" / "last.pt").exists()


def test_torchrun_multi_label_validation_equals_one_process(tmp_path):
    """Multi-label validation gathers every process's logits: the logged mAP is that of
    the saved model scored by one process."""
    from helpers import make_multi_cache

    cache = make_multi_cache(tmp_path / "c")
    p = torchrun(cache, tmp_path / "run", "--epochs", "1", stderr=subprocess.PIPE)
    _, stderr = p.communicate(timeout=120)
    assert p.returncode == 0, stderr.decode()[-3000:]
    m = pd.read_csv(tmp_path / "run" / "metrics.csv")
    c = open_cache(cache)
    train, val = split_index(c, "training"), split_index(c, "validation")
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    task = TASKS["multi"]
    figures, thresholds = validate(
        load_model(ckpt),
        task,
        val,
        task.loss_weights(train.label, 3),
        CPU,
        0,
        400,
        prior=train.label.mean(axis=0),
    )
    assert m["val_map"].iloc[-1] == pytest.approx(figures["val_map"], rel=1e-6)
    assert m["val_macro_auc"].iloc[-1] == pytest.approx(figures["val_macro_auc"], rel=1e-6)
    assert ckpt.thresholds == pytest.approx(thresholds, rel=1e-6)
