"""What the shard checksum check costs `mrnet evaluate`: the same evaluation of a
test-split-sized cache (default 800 x 30-s tracks, as fma_small's test split), timed with
the check and with it skipped, in one run, alternating.

    python benchmarks/bench_evaluate_checksums.py [--tracks 800] [--channels 64] [--repeat 2]

The check reads every byte of the scored shards once per process (SHA-256, finite
frames); scoring reads them too, so both run from the page cache after the first pass.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from bench_loader import synthetic_cache  # noqa: E402

from mrnet import evaluate as ev  # noqa: E402
from mrnet.checkpoint import Checkpoint, ModelConfig, build_model, save  # noqa: E402
from mrnet.options import EvalOptions  # noqa: E402
from pipeline.cache import verify  # noqa: E402
from pipeline.cache.reader import open_cache  # noqa: E402


def checkpoint(path: Path, cache: Path, channels: int) -> Path:
    c = open_cache(cache)
    cfg = ModelConfig("mrnet", int(c.feature_config["n_mels"]), len(c.labels), channels)
    torch.manual_seed(0)
    save(Checkpoint(cfg, c.feature_config, list(c.labels), build_model(cfg).state_dict()), path)
    return path


def timed(opts: EvalOptions, check: bool) -> float:
    verify._sound.clear()  # a fresh process: nothing checked yet
    t = time.perf_counter()
    if check:
        ev.evaluate(opts)
    else:
        with mock.patch.object(ev, "check_checksums", lambda *a, **k: None):
            ev.evaluate(opts)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tracks", type=int, default=800)
    ap.add_argument("--channels", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "cache"
        synthetic_cache(root, 16, n_val=a.tracks)  # the scored split: "validation"
        ck = checkpoint(Path(tmp) / "best.pt", root, a.channels)
        opts = EvalOptions(
            checkpoint=ck,
            cache=root,
            out=Path(tmp) / "rep",
            split="validation",
            device="cpu",
            progress=False,
        )
        gb = sum(s.mel_shape[0] * s.mel_shape[1] * 2 for s in verify_shards(root)) / 1e9
        timed(opts, True)  # warm the page cache and torch
        with_check, without = [], []
        for _ in range(a.repeat):
            with_check.append(timed(opts, True))
            without.append(timed(opts, False))
        w, wo = min(with_check), min(without)
        print(
            f"evaluate {a.tracks} x 30-s tracks ({gb:.2f} GB of frames), MRNet C={a.channels}, "
            f"CPU, {torch.get_num_threads()} threads"
        )
        print(
            f"with the checksum check {w:.1f} s, without {wo:.1f} s: the check costs "
            f"{w - wo:.1f} s, {100 * (w - wo) / wo:.1f} % ({w / wo:.3f}x)"
        )
        t = time.perf_counter()
        verify.check_checksums(root, verify_shards(root))
        verify._sound.clear()
        t = time.perf_counter()
        verify.check_checksums(root, verify_shards(root))
        alone = time.perf_counter() - t
        print(f"the check alone: {alone:.2f} s ({gb / alone:.2f} GB/s, page cache warm)")


def verify_shards(root: Path):
    from pipeline.cache.reader import split_index

    return split_index(open_cache(root), "validation").shards


if __name__ == "__main__":
    main()
