"""The cache format end to end: one writer, one reader, verification.

    layout    the directory, manifest.json, tracks.csv / failures.csv columns, path rules
    shards    one HDF5 shard file: atomic streaming writer, index, memmap, checksum
    writer    CacheWriter: the one way a cache comes to be (preprocess, tests, benchmarks)
    reader    open_cache, split_index, FrameStore: what train, evaluate and info read
    verify    re-read every shard against its record (`mrnet verify`)
    describe  a cache in words (`mrnet info CACHE`)

The cache knows nothing of models: nothing here imports torch or mrnet.
"""

from pipeline.cache.layout import Manifest
from pipeline.cache.reader import Cache, FrameStore, SplitIndex, open_cache, split_index
from pipeline.cache.writer import CacheWriter, Track, write_cache

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
