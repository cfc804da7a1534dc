"""Multi-label MRNet against the label-frequency baseline, on the multi-genre demo.

    python benchmarks/bench_multilabel.py [--demo DIR]

Runs `mrnet demo --labels top-multi --out DIR` unless DIR already holds its run, then
scores RUN/best.pt on the validation and test splits (mrnet evaluate) and the constant
predictor that gives every track each label's training frequency (its ROC-AUC is 0.5,
its AP per label the label's prevalence). Averages skip labels without positives.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mrnet.metrics import average_precisions, mean_defined, roc_aucs  # noqa: E402
from mrnet.options import EvalOptions  # noqa: E402
from pipeline.cache import open_cache, split_index  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--demo", type=Path, default=Path("demo-multi"))
    a = ap.parse_args()
    if not (a.demo / "run" / "best.pt").exists():
        subprocess.run(
            [
                sys.executable,
                str(ROOT / "cli.py"),
                "demo",
                "--labels",
                "top-multi",
                "--out",
                str(a.demo),
            ],
            cwd=ROOT,
            check=True,
        )
    from mrnet.evaluate import evaluate

    cache = open_cache(a.demo / "cache")
    train = split_index(cache, "training").label
    freq = train.mean(axis=0)
    print(
        f"{len(cache.labels)} labels, {len(train)} training tracks "
        f"({(train.sum(axis=1) > 1).mean():.0%} with two or more labels)"
    )
    for split in ("validation", "test"):
        y = split_index(cache, split).label
        with tempfile.TemporaryDirectory() as tmp:
            rep = evaluate(
                EvalOptions(
                    checkpoint=a.demo / "run" / "best.pt",
                    cache=cache.root,
                    out=Path(tmp),
                    split=split,
                    device="cpu",
                    progress=False,
                )
            )
        const = np.broadcast_to(freq, y.shape)
        base_map = mean_defined(average_precisions(y, const))
        base_auc = mean_defined(roc_aucs(y, const))
        print(
            f"{split:<10} ({len(y)} tracks): MRNet mAP {rep['mean_average_precision']:.3f}, "
            f"macro ROC-AUC {rep['macro_roc_auc']:.3f} | label-frequency baseline mAP "
            f"{base_map:.3f}, macro ROC-AUC {base_auc:.3f}"
        )


if __name__ == "__main__":
    main()
