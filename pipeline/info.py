"""`mrnet info`: a human-readable account of a cache, a run directory or a checkpoint."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline.errors import BadInput
from pipeline.manifest import FAILURES, MANIFEST, Manifest, dir_bytes, open_cache


def describe(path: Path) -> str:
    """Dispatch on what ``path`` is: cache dir (manifest.json), run dir (last.pt) or *.pt."""
    if not path.exists():
        raise BadInput(f"{path} does not exist; pass a cache directory, run directory or .pt file")
    if path.is_dir() and (path / MANIFEST).exists():
        return describe_cache(path)
    if path.is_dir() and ((path / "last.pt").exists() or (path / "best.pt").exists()):
        return describe_run(path)
    if path.is_file() and path.suffix == ".pt":
        return describe_checkpoint(path)
    raise BadInput(
        f"{path} is neither a cache (manifest.json), a run directory (last.pt) nor a checkpoint"
    )


def describe_cache(path: Path) -> str:
    m = Manifest.read(path)
    if m.status != "complete":
        done = len(list((path / "shards").glob("*.h5")))
        return (
            f"cache {path} ({m.status}): subset {m.subset}, {done} shards of up to "
            f"{m.plan.get('shard_size')} tracks written so far; rerun the same "
            "`mrnet preprocess` command to finish it"
        )
    cache = open_cache(path, check_shards=False)
    m = cache.manifest
    fc = m.feature_config
    lines = [
        f"cache {path} ({m.status}, format {m.format_version}, mrnet {m.tool_version})",
        f"  source   subset={m.subset} audio={m.source.get('audio_dir')} "
        f"metadata={m.source.get('metadata_dir')}",
        f"  features log-mel {fc['n_mels']} bands, {fc['sample_rate']} Hz, n_fft {fc['n_fft']}, "
        f"hop {fc['hop_length']} ({fc['sample_rate'] / fc['hop_length']:.0f} frames/s), "
        f"f {fc['f_min']:.0f}-{fc['f_max']:.0f} Hz, max {fc['max_seconds']} s",
        f"  shards   {len(m.shards)} of up to {m.plan.get('shard_size')} tracks; "
        f"size {dir_bytes(path) / 2**20:.1f} MiB",
    ]
    t = cache.tracks
    table = pd.crosstab(t["genre"], t["split"]).reindex(index=m.genres, fill_value=0)
    table = table.reindex(
        columns=[s for s in ("training", "validation", "test") if s in table.columns]
    )
    table.loc["total"] = table.sum()
    per_split = ", ".join(f"{k} {v}" for k, v in table.loc["total"].items())
    lines.append(f"  tracks   {len(t)} cached ({per_split}); per genre and split:")
    lines += ["    " + line for line in table.to_string().splitlines()]
    fails = pd.read_csv(path / FAILURES) if (path / FAILURES).exists() else pd.DataFrame()
    by_reason = fails["reason"].value_counts().to_dict() if len(fails) else {}
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(by_reason.items())) or "none"
    lines.append(f"  failures {len(fails)} ({reasons}); skipped without genre {m.skipped_no_genre}")
    if m.summary:
        lines.append(f"  audio    {m.summary.get('hours_of_audio', 0):.2f} h")
    return "\n".join(lines)


def describe_checkpoint(path: Path) -> str:
    from mrnet.train import load_checkpoint

    ck = load_checkpoint(path)
    cfg = ck.get("config", {})
    fc = ck.get("feature_config", {})
    n_params = sum(v.numel() for v in ck["model"].values() if hasattr(v, "numel"))
    lines = [
        f"checkpoint {path}",
        f"  model    {ck.get('arch')} channels={ck.get('channels')} n_mels={ck.get('n_mels')} "
        f"classes={ck.get('n_classes')} ({n_params / 1e6:.2f} M weights and buffers)",
        f"  epoch    {ck.get('epoch')}  best val acc {ck.get('best')}",
        f"  genres   {', '.join(ck.get('genres', []))}",
        f"  features {fc}",
        f"  trained  on {cfg.get('cache')} batch {cfg.get('batch_size')} lr {cfg.get('lr')}",
    ]
    return "\n".join(lines)


def describe_run(path: Path) -> str:
    parts = [f"run {path}"]
    metrics = path / "metrics.csv"
    if metrics.exists():
        m = pd.read_csv(metrics)
        parts.append(f"  {len(m)} epochs logged; last:")
        parts += ["    " + line for line in m.tail(3).to_string(index=False).splitlines()]
    for name in ("best.pt", "last.pt"):
        if (path / name).exists():
            parts.append(describe_checkpoint(path / name))
    return "\n".join(parts)
