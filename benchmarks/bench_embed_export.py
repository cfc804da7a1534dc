"""`mrnet embed` throughput on 30-s cache tracks, and ONNX Runtime vs torch latency for
one 30-s track (1,501 frames), CPU, one run.

    python benchmarks/bench_embed_export.py [--n-per-genre 12]

Models: MRNet at the demo's width (C=64) and the paper's (C=512), untrained weights
(speed does not depend on them). The cache: a synthetic fma_small of 30-s clips.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mrnet.checkpoint import Checkpoint, ModelConfig, build_model, save  # noqa: E402
from mrnet.embed import run as run_embed  # noqa: E402
from mrnet.export import export  # noqa: E402
from mrnet.options import EmbedOptions, ExportOptions  # noqa: E402
from pipeline import synth  # noqa: E402
from pipeline.cache.reader import open_cache  # noqa: E402
from pipeline.options import PreprocessOptions  # noqa: E402
from pipeline.preprocess import run as run_preprocess  # noqa: E402


def checkpoint(cache, channels: int, path: Path) -> Path:
    cfg = ModelConfig("mrnet", int(cache.feature_config["n_mels"]), len(cache.labels), channels)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    save(Checkpoint(cfg, cache.feature_config, list(cache.labels), model.state_dict()), path)
    return path


def median_ms(fn, n: int = 20) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n-per-genre", type=int, default=12)
    ap.add_argument("--data", type=Path, help="keep the dataset here (default: a temp dir)")
    a = ap.parse_args()
    root = a.data or Path(tempfile.mkdtemp(prefix="mrnet-bench-embed-"))
    cores = len(os.sched_getaffinity(0))
    ds = synth.generate(root / "fma", a.n_per_genre, 30.0, jobs=cores, reuse=True)
    cache_dir = root / "cache"
    if not (cache_dir / "tracks.csv").exists():
        run_preprocess(
            PreprocessOptions(
                audio_dir=ds.audio_dir, metadata_dir=ds.metadata_dir, out=cache_dir, progress=False
            )
        )
    cache = open_cache(cache_dir)
    n = len(cache.tracks)
    print(
        f"{n} cached 30-s tracks; torch {torch.__version__}, {torch.get_num_threads()} "
        f"threads, {cores} cores"
    )
    import onnxruntime as ort

    for channels in (64, 512):
        ck = checkpoint(cache, channels, root / f"c{channels}.pt")
        run_embed(
            EmbedOptions(
                checkpoint=ck,
                out=root / "warm",
                cache=cache_dir,
                split="test",
                device="cpu",
                progress=False,
            )
        )
        t = time.perf_counter()
        done = run_embed(
            EmbedOptions(
                checkpoint=ck,
                out=root / f"emb{channels}",
                cache=cache_dir,
                device="cpu",
                progress=False,
            )
        )
        s = time.perf_counter() - t
        print(
            f"\nC={channels}: mrnet embed, {len(done.embeddings)} tracks in {s:.2f} s = "
            f"{len(done.embeddings) / s:.1f} tracks/s (CPU)"
        )
        onnx_path = root / f"c{channels}.onnx"
        t = time.perf_counter()
        export(ExportOptions(checkpoint=ck, out=onnx_path))
        print(
            f"  mrnet export: {time.perf_counter() - t:.1f} s, "
            f"{onnx_path.stat().st_size / 1e6:.1f} MB"
        )
        from mrnet.checkpoint import load, load_model

        model = load_model(load(ck))
        x = np.random.default_rng(0).normal(-4, 3, (1, 128, 1501)).astype(np.float32)
        xt = torch.from_numpy(x)

        def run_torch(model=model, xt=xt):
            with torch.no_grad():
                model(xt)

        session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])

        def run_ort(session=session, x=x):
            session.run(["logits"], {"log_mel": x})

        a_ms, b_ms = median_ms(run_torch), median_ms(run_ort)
        print(
            f"  one 30-s track (batch 1, 1,501 frames), median of 20: torch {a_ms:.1f} ms, "
            f"onnxruntime {b_ms:.1f} ms ({a_ms / b_ms:.2f}x)"
        )


if __name__ == "__main__":
    main()
