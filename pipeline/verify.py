"""`mrnet verify`: every shard of a cache checked against the manifest and its checksum
(pipeline.cache.verify); --repair deletes the damaged ones for preprocess to rebuild."""

from __future__ import annotations

from pipeline.cache.verify import VerifyReport, verify_cache
from pipeline.options import VerifyOptions


def run(opts: VerifyOptions) -> VerifyReport:
    """`mrnet verify`."""
    return verify_cache(opts.cache, repair=opts.repair, progress=opts.progress)
