"""`mrnet compare`: runs or reports side by side, with mean ± std over them.

An input is an evaluate report (a folder holding report.json, or the file itself): its
figures on the split it scored; or a run directory (metrics.csv, best.pt): its figures
on the validation split at its best epoch. All inputs must share the label set, the
split and the task. std is the sample standard deviation (n - 1 in the denominator),
the spread one reports over seeds; undefined (shown "-") for one input.

OUT/ (with --out):
  compare.csv     one row per input, then mean and std rows; one column per figure
  per_label.csv   per genre (label) F1: one column per input (reports only), mean, std
  compare.png     mean with std error bars and each input as a dot: the figures, and
                  F1 per genre (label)
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from mrnet.options import CompareOptions
from mrnet.task import TASKS
from pipeline.atomic import AGAIN, write_together, writing
from pipeline.errors import BadInput


@dataclass
class Entry:
    """One input's figures (None where undefined) and per-label F1 (reports only)."""

    name: str
    kind: str  # "report" | "run"
    task: str
    split: str
    labels: list[str]
    figures: dict[str, float | None]
    per_label: dict[str, float | None] = field(default_factory=dict)
    n_tracks: int | None = None
    settings: dict[str, object] = field(default_factory=dict)  # what produced it (flat)


def read_entry(path: Path) -> Entry:
    """A report folder (or report.json) or a run directory; BadInput for anything else."""
    if not path.exists():
        raise BadInput(f"{path} does not exist; pass evaluate report folders or run directories")
    if path.is_dir() and (path / "report.json").is_file():
        path = path / "report.json"
    if path.is_file() and path.name.endswith(".json"):
        return _report(path)
    if path.is_dir() and (path / "best.pt").is_file():
        return _run(path)
    raise BadInput(
        f"{path} is neither an evaluate report (report.json) nor a run directory (best.pt); "
        "pass the --out folders of `mrnet evaluate` or `mrnet train`"
    )


def _report(path: Path) -> Entry:
    try:
        rep = json.loads(path.read_text())
        task = TASKS[rep.get("task", "single")]
        labels, f1 = task.per_label_f1(rep)
        split = rep.get("source", {}).get("split", "test")
        figures = {k: rep.get(k) for k in task.report_figures}
        n_tracks = rep.get("n_tracks")
        source = rep.get("source", {})
        settings = _settings(
            source.get("train_config", {"arch": source.get("arch")}),
            source.get("model_config", {}),
            source.get("feature_config", {}),
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise BadInput(
            f"{path} is not a report of `mrnet evaluate` ({type(e).__name__}: "
            f"{str(e)[:80]}); rerun mrnet evaluate"
        ) from None
    name = str(path.parent if path.name == "report.json" else path)
    return Entry(name, "report", task.name, split, labels, figures, f1, n_tracks, settings)


def _run(path: Path) -> Entry:
    from mrnet import checkpoint

    ck = checkpoint.load(path / "best.pt")
    row = ck.history[ck.epoch - 1] if 0 < ck.epoch <= len(ck.history) else {}
    figures = {k: _number(row.get(k)) for k in TASKS[ck.task].run_figures}
    settings = _settings(ck.train_config, ck.model_config.to_dict(), ck.feature_config)
    return Entry(
        str(path),
        "run",
        ck.task,
        "validation",
        list(ck.labels),
        figures,
        n_tracks=row.get("val_tracks"),
        settings=settings,
    )


# settings that say where or how a run ran, not what it computed (the seed is what
# comparisons over seeds vary)
_NOT_COMPARED = {
    *("cache", "out", "seed", "resume", "progress", "workers", "device", "verify"),
    *("tensorboard", "wandb", "wandb_name", "data_on_gpu", "compile", "sync_bn"),
    "ssl_model",  # where the WavLM folder lies; the model's ssl_sha256 says which it is
}


def _settings(train: dict, model: dict, features: dict) -> dict[str, object]:
    """One flat dict of what decides a run's result: its training settings (but the
    seed and where it ran), model settings and feature settings."""
    out = {k: v for k, v in train.items() if k not in _NOT_COMPARED and v is not None}
    out.update({k: v for k, v in model.items() if k not in ("n_classes", "ssl_config")})
    out.update({f"features.{k}": v for k, v in features.items()})
    return out


def differences(entries: list[Entry]) -> list[str]:
    """``name (a, b, ...)`` for each setting whose recorded values differ between inputs
    (a setting an input does not record is not compared)."""
    keys = sorted(set().union(*(e.settings for e in entries)))
    out = []
    for k in keys:
        values = [e.settings[k] for e in entries if k in e.settings]
        distinct = list(dict.fromkeys(json.dumps(v) for v in values))
        if len(values) == len(entries) and len(distinct) > 1:
            out.append(f"{k} ({', '.join(distinct)})")
    return out


def _number(v: object) -> float | None:
    return float(v) if isinstance(v, int | float) and math.isfinite(v) else None


def check_comparable(entries: list[Entry]) -> None:
    """One line naming the first input that differs from the first one."""
    first = entries[0]
    for e in entries[1:]:
        for what, a, b in (
            ("task", first.task, e.task),
            ("split", first.split, e.split),
            ("labels", first.labels, e.labels),
        ):
            if a != b:
                shown = (
                    f"{len(a)} vs {len(b)} labels"
                    if what == "labels" and len(a) != len(b)
                    else f"{a} vs {b}"
                    if what != "labels"
                    else "another label order"
                )
                raise BadInput(
                    f"{e.name} and {first.name} differ in {what} ({shown}); compare runs "
                    "of one task, scored on the same split with the same labels"
                )


def _mean_std(values: list[float | None]) -> tuple[float | None, float | None]:
    v = np.array([x for x in values if x is not None], dtype=np.float64)
    if len(v) == 0:
        return None, None
    return float(v.mean()), (float(v.std(ddof=1)) if len(v) > 1 else None)


def tables(entries: list[Entry]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(figures: one row per input + mean + std; per-label F1: one row per label, one
    column per report + mean + std; empty when no input is a report)."""
    names = [e.name for e in entries]
    figures = pd.DataFrame([e.figures for e in entries], index=pd.Index(names, name="input"))
    stats = [_mean_std(figures[c].tolist()) for c in figures.columns]
    figures.loc["mean"] = [m for m, _ in stats]
    figures.loc["std"] = [s for _, s in stats]
    reports = [e for e in entries if e.kind == "report"]
    per = pd.DataFrame({e.name: e.per_label for e in reports}, index=entries[0].labels)
    per.index.name = "label"
    if len(reports):
        pairs = [_mean_std(per.loc[n].tolist()) for n in per.index]
        per["mean"], per["std"] = [m for m, _ in pairs], [s for _, s in pairs]
    return figures.astype(float), per.astype(float)


def _pm(mean: float, std: float) -> str:
    if math.isnan(mean):
        return "-"
    return f"{mean:.3f} ± {std:.3f}" if not math.isnan(std) else f"{mean:.3f} ± -"


def format_tables(figures: pd.DataFrame, per: pd.DataFrame, split: str) -> str:
    """The two tables for the terminal; mean ± std in the last row/column."""
    runs = figures.drop(index=["mean", "std"])
    shown = runs.map(lambda v: "-" if math.isnan(v) else f"{v:.3f}")
    shown.loc["mean ± std"] = [
        _pm(figures.loc["mean", c], figures.loc["std", c]) for c in figures.columns
    ]
    lines = [f"{split} figures of {len(runs)} inputs:", shown.to_string()]
    if len(per.columns):
        cols = [c for c in per.columns if c not in ("mean", "std")]
        f1 = per[cols].map(lambda v: "-" if math.isnan(v) else f"{v:.3f}")
        f1["mean ± std"] = [_pm(per.loc[n, "mean"], per.loc[n, "std"]) for n in per.index]
        lines += ["", "F1 per label:", f1.to_string()]
    return "\n".join(lines)


@dataclass
class Compared:
    """The tables `run` printed and, with ``out``, wrote."""

    text: str
    entries: list[Entry]
    out: Path | None

    def summary(self) -> str:
        """The printed tables, and where they were written (with ``out``)."""
        written = f"\nwritten to {self.out}/ (compare.csv, per_label.csv, compare.png)"
        return self.text + (written if self.out is not None else "")


def run(opts: CompareOptions) -> Compared:
    """`mrnet compare`."""
    opts.check()
    text, entries = compare(opts.inputs, opts.out)
    return Compared(text, entries, opts.out)


def compare(paths: list[Path], out: Path | None = None) -> tuple[str, list[Entry]]:
    """Read, check and tabulate ``paths``; write OUT/ when given. Returns the text."""
    if out is not None and out.exists() and not out.is_dir():
        raise BadInput(f"--out {out} is a file; pass a directory for the comparison")
    entries = [read_entry(Path(p)) for p in paths]
    seen: dict[Path, Path] = {}
    for p, e in zip(paths, entries):
        key = Path(e.name).resolve()
        if key in seen:
            raise BadInput(f"{p} and {seen[key]} are the same input; pass each report or run once")
        seen[key] = Path(p)
    check_comparable(entries)
    figures, per = tables(entries)
    text = format_tables(figures, per, entries[0].split)
    sizes = {e.n_tracks for e in entries if e.n_tracks is not None}
    if len(sizes) > 1:
        text += f"\nnote: the inputs scored different numbers of tracks ({sorted(sizes)})"
    differ = differences(entries)
    if differ:
        text += "\nnote: the inputs differ in more than the seed: " + "; ".join(differ)
    if out is not None:
        with writing(out, rerun=AGAIN):
            out.mkdir(parents=True, exist_ok=True)
        from mrnet.plots import plot_compare

        png = plot_compare(figures, per, f"{entries[0].split} split, {len(entries)} inputs")
        write_together(
            [
                (out / "per_label.csv", per.to_csv(float_format="%.6g")),
                (out / "compare.png", png),
                (out / "compare.csv", figures.to_csv(float_format="%.6g")),
            ],
            rerun=AGAIN,
        )
    return text, entries
