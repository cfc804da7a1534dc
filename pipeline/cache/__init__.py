"""The cache format end to end: one writer, one reader, verification.

    layout    the directory, manifest.json, tracks.csv / failures.csv columns, path rules
    shards    one HDF5 shard file: atomic streaming writer, index, memmap, checksum
    writer    CacheWriter: the one way a cache comes to be (preprocess, tests, benchmarks)
    reader    open_cache, split_index, FrameStore: what train, evaluate and info read
    verify    re-read every shard against its record (`mrnet verify`)
    describe  a cache in words (`mrnet info CACHE`)

The cache knows nothing of models: nothing here imports torch or mrnet.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipeline.cache.layout import Manifest
    from pipeline.cache.reader import Cache, FrameStore, SplitIndex, open_cache, split_index
    from pipeline.cache.writer import CacheWriter, Track, write_cache

# imported on first use: a preprocess worker needs only `shards`, and `layout` (through
# the reader and writer) would cost it pandas, ~0.2 s of start-up per worker
_HOME = {
    "Manifest": "layout",
    "Cache": "reader",
    "FrameStore": "reader",
    "SplitIndex": "reader",
    "open_cache": "reader",
    "split_index": "reader",
    "CacheWriter": "writer",
    "Track": "writer",
    "write_cache": "writer",
}
__all__ = [
    "Cache",
    "CacheWriter",
    "FrameStore",
    "Manifest",
    "SplitIndex",
    "Track",
    "open_cache",
    "split_index",
    "write_cache",
]


def __getattr__(name: str) -> object:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
