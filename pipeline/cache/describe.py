"""A cache in words (`mrnet info CACHE`; runs and checkpoints are described by
mrnet.info, which knows models)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline.cache.layout import FAILURES, SHARDS_DIR, Manifest, dir_bytes
from pipeline.cache.reader import open_cache
from pipeline.sources import SPLITS


def describe_cache(path: Path) -> str:
    """What `mrnet info` prints for a cache: source, features, shards, tracks per label
    and split, failures; for an unfinished cache, how far it got."""
    m = Manifest.read(path)
    if m.status != "complete":
        done = len(list((path / SHARDS_DIR).glob("*.h5")))
        return (
            f"cache {path} ({m.status}): {m.dataset} {m.subset}, {done} shards of up to "
            f"{m.plan.get('shard_size')} tracks written so far; rerun the same "
            "`mrnet preprocess` command to finish it"
        )
    cache = open_cache(path, check_shards=False)
    m = cache.manifest
    fc = m.feature_config
    source = " ".join(f"{k.replace('_dir', '')}={v}" for k, v in m.source.items())
    lines = [
        f"cache {path} ({m.status}, format {m.format_version}, mrnet {m.tool_version})",
        f"  source   {m.dataset} {m.subset} ({m.split_scheme} split) {source}".rstrip(),
        f"  features {_features(fc)}; {_clip(fc)}",
        f"  shards   {len(m.shards)} of up to {m.plan.get('shard_size')} tracks; "
        f"size {dir_bytes(path) / 2**20:.1f} MiB",
    ]
    t = cache.tracks
    if m.multi_label:  # a track counts once for each of its labels
        rows = t.assign(name=t["labels"].str.split("|")).explode("name")
        names, splits = rows["name"].to_numpy(), rows["split"].to_numpy()
    else:
        names, splits = pd.Series(m.labels).iloc[t["label"]].to_numpy(), t["split"].to_numpy()
    table = pd.crosstab(pd.Series(names, name="label"), pd.Series(splits, name=""))
    table = table.reindex(index=m.labels, fill_value=0)
    table = table.reindex(columns=[s for s in SPLITS if s in table.columns])
    table.loc["total"] = table.sum()
    per_split = ", ".join(f"{k} {v}" for k, v in t["split"].value_counts().items())
    how = " (multi-label: a track counts for each of its labels)" if m.multi_label else ""
    lines.append(f"  tracks   {len(t)} cached ({per_split}); per label and split{how}:")
    lines += ["    " + line for line in table.to_string().splitlines()]
    fails = pd.read_csv(path / FAILURES) if (path / FAILURES).exists() else pd.DataFrame()
    by_reason = fails["reason"].value_counts().to_dict() if len(fails) else {}
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(by_reason.items())) or "none"
    lines.append(f"  failures {len(fails)} ({reasons})")
    skipped = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in m.skipped.items()) or "none"
    lines.append(f"  skipped  {skipped} (tracks of the source that are not examples)")
    if m.dropped_labels:
        dropped = ", ".join(m.dropped_labels)
        lines.append(f"  dropped  labels with too few training tracks: {dropped}")
    if m.summary:
        lines.append(f"  audio    {m.summary.get('hours_of_audio', 0):.2f} h")
    return "\n".join(lines)


def _features(fc: dict) -> str:
    kind = fc.get("kind", "logmel")
    sr, hop = fc["sample_rate"], fc["hop_length"]
    fps = f"hop {hop} ({sr / hop:g} frames/s)"
    if kind == "wavlm":
        layers = fc["ssl_layers"]
        return (
            f"wavlm hidden states {','.join(map(str, layers))} x {fc['n_mels'] // len(layers)} "
            f"features of the model with weights SHA-256 {fc['ssl_sha256'][:12]}, {sr} Hz, {fps}"
        )
    if kind == "wave":
        channels = "stereo" if fc["n_mels"] // hop == 2 else "mono"
        return f"waveform, {channels}, {sr} Hz, float16 frames of {hop} samples ({fps})"
    what = "log-mel" if kind == "logmel" else f"{kind} (precomputed, not from audio)"
    return (
        f"{what} {fc['n_mels']} bands, {sr} Hz, n_fft {fc['n_fft']}, {fps}, "
        f"f {fc['f_min']:.0f}-{fc['f_max']:.0f} Hz"
    )


def _clip(fc: dict) -> str:
    if fc.get("kind", "logmel") not in ("logmel", "wavlm", "wave"):
        return "as the dataset cut them"
    if not fc["max_seconds"]:
        return "whole tracks"
    return f"the {fc.get('clip', 'start')} {fc['max_seconds']:g} s of each track"
