"""`mrnet baseline`: the built-in baseline (mrnet.linear) fitted on a cache and reported
on a split, in the same files as `mrnet evaluate`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mrnet.linear import DESCRIPTION, fit, has_statistics, report
from mrnet.options import BaselineOptions
from mrnet.reports import Evaluated, write_report
from pipeline.cache.reader import open_cache, split_index
from pipeline.cache.verify import check_checksums
from pipeline.errors import BadInput


@dataclass
class Fitted:
    """The report `run` wrote (the same files as `mrnet evaluate`)."""

    report: dict
    out: Path
    computed: bool  # the statistics came from the frames (a cache made before they were stored)

    def summary(self) -> str:
        """The report's table and files, after a note when the statistics were computed."""
        note = (
            "note: this cache holds no track statistics (made by mrnet 0.2): they were "
            "computed from its frames; nothing was written into the cache\n"
            if self.computed
            else ""
        )
        return note + Evaluated(self.report, self.out).summary()


def run(opts: BaselineOptions) -> Fitted:
    """`mrnet baseline`: fit the baseline and report on ``opts.split``."""
    opts.check()
    cache = open_cache(opts.cache)
    if cache.split(opts.split).empty:
        known = sorted(set(cache.tracks["split"]))
        raise BadInput(
            f"split {opts.split!r} of cache {opts.cache} has no tracks; use one of {known}"
        )
    computed = not has_statistics(cache)
    # statistics and frames are both under the shard checksums: figures only from sound
    # bytes, as evaluate
    check_checksums(cache.root, cache.shards.values(), opts.progress)
    b = fit(cache, opts.progress)
    index = split_index(cache, opts.split)
    rep, probs = report(b, cache, index, opts.progress)
    rep["source"] = {
        "cache": str(opts.cache),
        "split": opts.split,
        "arch": "baseline",
        "feature_config": cache.feature_config,
        "model_config": {"model": DESCRIPTION, "C": b.c, "chosen_on": "validation"},
        "train_config": {"arch": "baseline"},
    }
    write_report(opts.out, opts.split, rep, cache, index, probs)
    return Fitted(rep, opts.out, computed)
