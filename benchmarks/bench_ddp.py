"""Training throughput of plain `mrnet train` vs the same run under torchrun with one
process (DistributedDataParallel around a single replica: DDP's own overhead).

    python benchmarks/bench_ddp.py [--device cpu|cuda] [--tracks 96] [--epochs 3]
        [--batch 16] [--arch mrnet] [--channels 64] [--workers 1] [--nproc 1]
        [--repeats 2] [-- ARGS]

Synthetic cache of 30-s tracks, 128 mels (benchmarks/bench_loader.py), 6-s crops. Both
runs are `mrnet train` subprocesses with the same arguments (anything after `--` is
passed on, e.g. `-- --data-on-gpu --compile`); torchrun uses --standalone (localhost).
Throughput is the median training samples/s of epochs 2.. from metrics.csv (epoch 1
includes warm-up), summed over processes, best of --repeats runs (plain and torchrun
alternate, so a busy machine disturbs both alike); the ratio is torchrun / plain. With --nproc N
above 1 torchrun sets OMP_NUM_THREADS=1 per process unless it is set.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_loader import synthetic_cache  # noqa: E402

BIN = Path(sys.executable).parent
LOOPBACK = {"GLOO_SOCKET_IFNAME": "lo"} if Path("/sys/class/net/lo").exists() else {}


def samples_per_s(cmd: list[str], run: Path) -> float:
    """Run ``cmd`` (it trains into ``run``); median samples/s of epochs after the first."""
    r = subprocess.run(cmd, cwd=ROOT, env={**os.environ, **LOOPBACK}, capture_output=True)
    if r.returncode != 0:
        sys.exit(f"failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr.decode()[-2000:]}")
    m = pd.read_csv(run / "metrics.csv")
    return float(m["samples_per_s"].iloc[1:].median() if len(m) > 1 else m["samples_per_s"][0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--tracks", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--batch", type=int, default=16, help="crops per step and process")
    ap.add_argument("--arch", default="mrnet")
    ap.add_argument("--channels", type=int, default=64, help="MRNet width C (paper: 512)")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--nproc", type=int, default=1, help="torchrun --nproc-per-node")
    ap.add_argument("--repeats", type=int, default=2)
    args, extra = ap.parse_known_args()
    extra = [a for a in extra if a != "--"]
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda but no GPU is visible")
    where = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    print(f"torch {torch.__version__}, {where}, {torch.get_num_threads()} threads")
    mrnet = str(BIN / "mrnet")
    torchrun = [str(BIN / "torchrun"), "--standalone", "--nproc-per-node", str(args.nproc)]
    with tempfile.TemporaryDirectory() as tmp:
        cache = synthetic_cache(Path(tmp) / "cache", args.tracks, n_val=8)
        common = [
            "--cache",
            str(cache),
            "--arch",
            args.arch,
            "--channels",
            str(args.channels),
            "--epochs",
            str(args.epochs),
            "--batch-size",
            str(args.batch),
            "--workers",
            str(args.workers),
            "--device",
            args.device,
            "--no-progress",
            *extra,
        ]
        runs = {
            "plain": [mrnet, "train"],
            f"torchrun x{args.nproc}": [*torchrun, "--no-python", mrnet, "train"],
        }
        rates: dict[str, list[float]] = {name: [] for name in runs}
        for i in range(args.repeats):
            for name, cmd in runs.items():
                out = Path(tmp) / f"{name.replace(' ', '-')}-{i}"
                rates[name].append(samples_per_s([*cmd, *common, "--out", str(out)], out))
        for name, r in rates.items():
            print(
                f"{name:<13} {args.arch} C={args.channels}, batch {args.batch}, 6-s crops: "
                f"{max(r):8.1f} train samples/s (runs: {', '.join(f'{x:.1f}' for x in r)})"
            )
        plain, ddp = (max(r) for r in rates.values())
        print(f"torchrun x{args.nproc} / plain: {ddp / plain:.3f}")


if __name__ == "__main__":
    main()
