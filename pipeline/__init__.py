"""Everything before training: FMA metadata, decoding, log-mel features, HDF5 shards."""

__version__ = "0.2.0"
