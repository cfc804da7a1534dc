"""`mrnet demo`: the whole pipeline on the synthetic FMA-format dataset, on CPU.

synth dataset ─preprocess─▶ OUT/cache ─train─▶ OUT/run ─evaluate─▶ OUT/report
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import BadInput


@dataclass
class DemoOptions:
    out: Path = Path("demo")
    n_per_genre: int = 40
    seconds: float = 30.0
    epochs: int = 20
    channels: int = 64
    batch_size: int = 32
    crop_seconds: float = 6.0
    jobs: int | None = None
    device: str = "cpu"
    progress: bool = True


def run_demo(opts: DemoOptions, echo=print) -> dict:
    """Run every stage; returns the evaluation report (test split)."""
    from mrnet.evaluate import EvalOptions, evaluate, format_table
    from mrnet.train import TrainConfig, train
    from pipeline import synth
    from pipeline.preprocess import PreprocessOptions, format_summary, run_preprocess

    if opts.out.exists() and not opts.out.is_dir():
        raise BadInput(f"--out {opts.out} is a file; pass a directory for the demo")
    if opts.n_per_genre < 3:
        raise BadInput(
            f"--n-per-genre must be at least 3 (got {opts.n_per_genre}): "
            "each genre needs training, validation and test tracks"
        )
    jobs = opts.jobs or len(os.sched_getaffinity(0))
    t0 = time.perf_counter()
    data = opts.out / "fma"
    echo(f"[1/4] generating the synthetic FMA dataset in {data} ...")
    ds = synth.generate(
        data, n_per_genre=opts.n_per_genre, seconds=opts.seconds, jobs=jobs, reuse=True
    )
    cache = opts.out / "cache"
    echo(
        f"[2/4] mrnet preprocess --audio-dir {ds.audio_dir} --metadata-dir {ds.metadata_dir} "
        f"--subset small --out {cache}"
    )
    manifest = run_preprocess(
        PreprocessOptions(
            audio_dir=ds.audio_dir,
            metadata_dir=ds.metadata_dir,
            out=cache,
            subset="small",
            jobs=jobs,
            shard_size=32,
            progress=opts.progress,
        )
    )
    echo(format_summary(manifest))
    run = opts.out / "run"
    echo(
        f"[3/4] mrnet train --cache {cache} --out {run} --arch mrnet --channels "
        f"{opts.channels} --epochs {opts.epochs} --device {opts.device}"
    )
    train(
        TrainConfig(
            cache=cache,
            out=run,
            arch="mrnet",
            channels=opts.channels,
            epochs=opts.epochs,
            batch_size=min(opts.batch_size, manifest.splits["training"]["tracks"]),
            crop_seconds=opts.crop_seconds,
            device=opts.device,
            workers=0,
            resume=(run / "last.pt").exists(),
            progress=opts.progress,
        )
    )
    report_dir = opts.out / "report"
    echo(
        f"[4/4] mrnet evaluate --checkpoint {run / 'best.pt'} --cache {cache} --split test "
        f"--out {report_dir}"
    )
    rep = evaluate(
        EvalOptions(
            checkpoint=run / "best.pt",
            cache=cache,
            out=report_dir,
            split="test",
            device=opts.device,
            progress=opts.progress,
        )
    )
    echo(format_table(rep))
    echo(
        f"\ndemo finished in {time.perf_counter() - t0:.0f} s; test accuracy "
        f"{rep['accuracy']:.3f} (chance {1 / len(rep['per_genre']):.3f})\n"
        f"  dataset     {data}\n  cache       {cache}  (mrnet info {cache})\n"
        f"  checkpoint  {run / 'best.pt'}  (metrics: {run / 'metrics.csv'})\n"
        f"  report      {report_dir}/report.json, confusion.png, predictions.csv\n"
        f"  try         mrnet predict --checkpoint {run / 'best.pt'} {ds.audio_dir}/000"
    )
    return rep
