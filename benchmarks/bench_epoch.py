"""What an epoch of `mrnet train` costs, split into training and validation, and its peak
memory: mrnet 0.2's epoch rules (one crop per track, whole-track validation) against
today's (at least --min-steps steps, validation on --val-crops fixed crops), each one
`mrnet train` process on the same cache.

    python benchmarks/bench_epoch.py CACHE [--channels 512 64] [--min-steps 10]

Each configuration runs 1 epoch in a fresh process (DataLoader in the main process, so
the peak RSS is the whole run's); training seconds come from metrics.csv's samples/s,
validation seconds are the rest of the epoch.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
RULES = {
    "0.2 rules (1 crop/track, whole-track validation)": ["--min-steps", "0", "--val-crops", "0"],
    "today (min steps, 3 validation crops)": [],
}


def child(argv: list[str]) -> None:
    """Run `mrnet train argv` in this process, then print the peak RSS (MiB)."""
    sys.path.insert(0, str(ROOT))
    from typer.testing import CliRunner

    from cli import app

    r = CliRunner().invoke(app, ["train", *argv])
    if r.exit_code != 0:
        print(r.output, file=sys.stderr)
        raise SystemExit(r.exit_code)
    print(f"PEAK_MIB {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}")


def measure(cache: Path, channels: int, extra: list[str], out: Path) -> dict:
    argv = [
        "--cache",
        str(cache),
        "--out",
        str(out),
        "--channels",
        str(channels),
        "--epochs",
        "1",
        "--workers",
        "0",
        "--device",
        "cpu",
        "--no-progress",
        *extra,
    ]
    p = subprocess.run(
        [sys.executable, __file__, "--child", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    peak = float(p.stdout.split("PEAK_MIB")[-1].split()[0])
    m = pd.read_csv(out / "metrics.csv").iloc[0]
    train_s = m["train_samples"] / m["samples_per_s"]
    return {
        "samples": int(m["train_samples"]),
        "epoch_s": m["seconds"],
        "train_s": train_s,
        "val_s": m["seconds"] - train_s,
        "peak_mib": peak,
        "val_scoring": m["val_scoring"],
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cache", type=Path)
    ap.add_argument("--channels", type=int, nargs="+", default=[512, 64])
    ap.add_argument("--min-steps", type=int, default=10, help="today's rule, kept short here")
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for c in a.channels:
            for name, extra in RULES.items():
                extra = extra or ["--min-steps", str(a.min_steps)]
                r = measure(a.cache, c, extra, Path(tmp) / f"{c}-{len(rows)}")
                rows.append({"channels": c, "rules": name, **r})
                print(
                    f"C={c:4d} {name:50s} samples {r['samples']:5d}  epoch "
                    f"{r['epoch_s']:7.1f} s (training {r['train_s']:6.1f} s, validation "
                    f"{r['val_s']:6.1f} s)  peak {r['peak_mib']:6.0f} MiB  [{r['val_scoring']}]",
                    flush=True,
                )
    table = pd.DataFrame(rows)
    for c, part in table.groupby("channels"):
        old, new = part.iloc[0], part.iloc[1]
        print(
            f"C={c}: validation {old['val_s']:.1f} s -> {new['val_s']:.1f} s "
            f"({new['val_s'] / old['val_s']:.2f}x); peak memory {old['peak_mib']:.0f} -> "
            f"{new['peak_mib']:.0f} MiB; training per sample "
            f"{old['train_s'] / old['samples']:.3f} -> "
            f"{new['train_s'] / new['samples']:.3f} s"
        )


if __name__ == "__main__":
    main()
