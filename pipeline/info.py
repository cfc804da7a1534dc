"""A human-readable account of a cache (`mrnet info CACHE`; runs and checkpoints are
described by mrnet.info, which knows models)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline.manifest import FAILURES, Manifest, dir_bytes, open_cache


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
    lines.append(f"  failures {len(fails)} ({reasons})")
    skipped = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in m.skipped.items()) or "none"
    lines.append(f"  skipped  {skipped} (tracks of the subset that are not examples)")
    if m.summary:
        lines.append(f"  audio    {m.summary.get('hours_of_audio', 0):.2f} h")
    return "\n".join(lines)
