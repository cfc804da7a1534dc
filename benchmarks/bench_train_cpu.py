"""Training throughput of `mrnet train` on the CPU (whole loop: loader, augmentation,
forward, backward, AdamW; validation is timed separately by the loop and excluded).

    python benchmarks/bench_train_cpu.py [--tracks 192] [--epochs 2] [--channels 64]

Synthetic cache of 30-s tracks with 128 mels (benchmarks/bench_loader.py), 6-s crops;
one run per configuration in a temporary directory; prints training samples/s of the
last epoch (the first includes one-off warm-up) as logged in metrics.csv.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_loader import synthetic_cache  # noqa: E402

from mrnet.train import TrainConfig, train  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tracks", type=int, default=192)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--channels", type=int, default=64, help="MRNet width C (paper: 512)")
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    configs = [
        ("mrnet", args.channels, False),
        ("mrnet", args.channels, True),
        ("cnn", 0, False),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        cache = synthetic_cache(Path(tmp) / "cache", args.tracks, n_val=16)
        for arch, channels, spec in configs:
            cfg = TrainConfig(
                cache=cache,
                out=Path(tmp) / f"run-{arch}-{channels}-{spec}",
                arch=arch,
                channels=channels or 512,
                epochs=args.epochs,
                batch_size=args.batch,
                workers=args.workers,
                device="cpu",
                specaugment=spec,
                progress=False,
            )
            t0 = time.perf_counter()
            s = train(cfg)
            name = f"{arch} C={channels}" if channels else arch
            name += " +specaugment" if spec else ""
            print(
                f"{name:<26} batch {args.batch}, 6-s crops: "
                f"{s['last']['samples_per_s']:7.1f} train samples/s "
                f"({time.perf_counter() - t0:.0f} s for {args.epochs} epochs of {args.tracks})"
            )


if __name__ == "__main__":
    main()
