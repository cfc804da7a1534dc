"""Precomputed mel arrays (Melon's ``arena_mel/{id // 1000}/{id}.npy``): read, check and
convert one file into frames as the cache stores them, with no decoding.

A Melon array is float [n_mels, frames] (48 bands first, about 1,876 frames for its 30-s
excerpt). `read_array` and `convert` (used by `pipeline.extract.ArrayFeatures`, as
TrackFeatures reads audio) classify failures (missing, empty_file, undecodable for a
file np.load cannot read, checksum_mismatch, bad_array for a wrong shape or dtype,
non_finite) and give float16 [frames, n_mels]. The feature kind says the scale:
"melon-log" frames are stored as they are, "melon-linear" ones as log(x + eps) (mrnet's
log scale).

`array_scale` decides the kind of a dataset from a sample of its arrays (`--array-scale
auto`): negative values mean a logarithmic scale (dB, log); a non-negative array on a
linear scale (power or amplitude) holds most of its values far below its loud ones,
while a log-compressed one (such as log10(1 + 10^4 x)) does not.
"""

from __future__ import annotations

import io
import os

import numpy as np

from pipeline.audio import DecodeError, open_audio
from pipeline.errors import TrackFailed
from pipeline.features import FeatureConfig, finite_float16

FLOATS = (np.float16, np.float32, np.float64)
QUIET = 0.1  # "far below": under 10 % of the array's 99th percentile (10 dB in power)
LINEAR_SHARE = 0.5  # a linear array holds more than this share of such quiet values


def read_array(path: str | os.PathLike, n_mels: int, sha1: str | None = None) -> np.ndarray:
    """The [frames, n_mels] array of one file; TrackFailed with its reason.

    Args:
        path: an .npy file holding float [n_mels, frames] (Melon's layout).
        n_mels: the bands every array of the dataset has.
        sha1: the file's expected SHA-1, checked before loading.

    Returns:
        float [frames, n_mels] (a transposed view, dtype as stored), values as stored
        (not yet converted, maybe not finite).
    """
    try:
        if sha1 is not None:  # the bytes are read for the hash anyway: load from them
            with open_audio(path, sha1).reader() as f:
                a = np.load(io.BytesIO(f.read()), allow_pickle=False)
        else:
            size = os.stat(path).st_size
            if size == 0:
                raise DecodeError("empty_file", str(path))
            a = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DecodeError("missing", str(path)) from None
    except (ValueError, OSError, EOFError) as e:  # truncated, not .npy, pickled objects
        raise DecodeError("undecodable", f"{path}: {e}") from None
    if a.dtype not in FLOATS:
        raise TrackFailed("bad_array", f"{path}: dtype {a.dtype}, expected float")
    if a.ndim != 2 or a.shape[0] != n_mels:
        raise TrackFailed("bad_array", f"{path}: shape {a.shape}, expected ({n_mels}, frames)")
    return a.T


def convert(a: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """Frames of ``cfg.kind``'s scale as the cache stores them: float16 [frames, n_mels],
    C order, finite (TrackFailed non_finite otherwise); "melon-linear" values become
    log(x + log_eps)."""
    if cfg.kind == "melon-linear":
        if (a < 0).any():
            raise TrackFailed("bad_array", "negative values in an array on a linear scale")
        a = np.log(a.astype(np.float32) + np.float32(cfg.log_eps))
    return finite_float16(a)


def quiet_share(arrays: list[np.ndarray]) -> float:
    """The share of values under QUIET times their array's 99th percentile (see the
    module docstring), over non-negative arrays."""
    quiet = total = 0
    for a in arrays:
        top = float(np.percentile(a, 99))
        quiet += int((a < QUIET * top).sum()) if top > 0 else a.size
        total += a.size
    return quiet / max(total, 1)


def array_scale(arrays: list[np.ndarray]) -> tuple[str, str]:
    """("log" or "linear", the evidence in words) for a sample of a dataset's arrays
    (finite values only are looked at)."""
    finite = [a[np.isfinite(a)] for a in arrays]
    finite = [a for a in finite if a.size]
    if not finite:
        return "log", "no finite values in the sample: assumed logarithmic"
    low = min(float(a.min()) for a in finite)
    if low < 0:
        return "log", f"negative values (down to {low:.3g}) in {len(finite)} sampled arrays"
    share = quiet_share(finite)
    words = (
        f"{share:.0%} of the values of {len(finite)} sampled arrays are under "
        f"{QUIET:.0%} of their 99th percentile"
    )
    return ("linear" if share > LINEAR_SHARE else "log"), words
