"""Track-level outputs from windows, so that memory does not grow with track length.

A track of n frames is cut into windows of W frames (W: the frames of a clip of
``--window`` seconds, 1501 for 30 s at 50 frames/s) at a hop of W // 2; the last
window ends at the track's end. A track of at most W frames is one window: the whole
track. A track's output is the mean over its windows of the per-window outputs
(probabilities, embeddings).

    window_starts  where a track's windows start
    cache_windows  batches of windows of a cache split (memmapped, shortest first)
    WindowStream   the same windows of a track whose frames arrive in chunks (predict)
    track_means    mean per track of per-window outputs
    file_means     the same for one file's frames as they are read
    cache_means    mean per track of a cache split's window outputs
    score          per-track probabilities of a cache split (validation)
    split_means    cache_means for a command: progress bar, non-finite check
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import torch

from mrnet.frames import to_model_layout
from mrnet.runtime import autocast
from mrnet.task import Task
from pipeline.cache.reader import FrameStore, SplitIndex
from pipeline.features import FeatureConfig

Windows = tuple[np.ndarray, torch.Tensor]  # track positions int64 [b], x float32 [b, mels, n]


def window_frames(seconds: float, feature_config: dict) -> int:
    """Frames of a window of ``seconds`` (as many as a clip of that length has); 0 for
    ``seconds`` 0 (every track whole, in one window)."""
    if seconds == 0:
        return 0
    cfg = FeatureConfig.from_dict(feature_config)
    return cfg.n_frames(round(seconds * cfg.sample_rate))


def window_starts(n: int, window: int) -> np.ndarray:
    """Start frames (int64) of the windows of a track of ``n`` frames: every hop
    (``window // 2``) while a window fits, then one ending at the track's end; [0] when
    ``n <= window`` or ``window`` is 0 (the whole track)."""
    if window == 0 or n <= window:
        return np.zeros(1, np.int64)
    starts = np.arange(0, n - window + 1, max(1, window // 2), dtype=np.int64)
    if starts[-1] + window < n:
        starts = np.append(starts, n - window)
    return starts


def crop_starts(n: int, frames: int, crops: int) -> np.ndarray:
    """Start frames (int64) of ``crops`` evenly spaced crops of ``frames`` in a track of
    ``n`` frames, the first at its start and the last at its end; [0] (the whole track)
    when it is no longer than a crop."""
    if n <= frames:
        return np.zeros(1, np.int64)
    return np.unique(np.round(np.linspace(0, n - frames, crops)).astype(np.int64))


def count_windows(lengths: np.ndarray, window: int) -> int:
    """How many windows `window_starts` gives tracks of these lengths (frames), in all."""
    if window == 0:
        return len(lengths)
    over = np.maximum(np.asarray(lengths, np.int64) - window, 0)
    return int((-(-over // max(1, window // 2)) + 1).sum())


def cache_windows(
    index: SplitIndex, window: int, max_frames: int, crops: int = 0
) -> Iterator[Windows]:
    """Batches of the windows of every track of ``index``, grouped by length, shortest first.

    A long track's windows follow one another; the rows say whose window each is.

    Args:
        index: the cache split whose tracks are cut into windows.
        window: window length (frames); 0: every track whole, in one window.
        max_frames: frames per batch: a batch of length-m windows holds
            max(1, max_frames // m) of them.
        crops: when > 0, ``crops`` evenly spaced windows per track (`crop_starts`)
            instead of every hop (`window_starts`).

    Returns:
        An iterator of (rows int64 [b]: track positions in ``index``,
        x float32 [b, n_mels, m]: the windows, model layout).
    """
    store = FrameStore(index.shards)
    groups: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for t, n in enumerate(index.length.tolist()):
        m = n if window == 0 or n <= window else window
        starts = crop_starts(n, window, crops) if crops else window_starts(n, window)
        groups[m] += [(t, int(s)) for s in starts]
    for m, members in sorted(groups.items()):
        per_batch = max(1, max_frames // m)
        for i in range(0, len(members), per_batch):
            part = np.array(members[i : i + per_batch], np.int64)
            rows, starts = part[:, 0], part[:, 1]
            yield rows, to_model_layout(store.read(index, rows, starts, m))


class WindowStream:
    """The windows of `window_starts` for a track whose frames (float16 [k, n_mels])
    arrive in chunks: `push` returns those the frames so far complete, `finish` the
    rest. Holds about one window plus one chunk of frames.

    >>> s = WindowStream(4)
    >>> frames = np.arange(11)[:, None]
    >>> out = s.push(frames[:5]) + s.push(frames[5:]) + s.finish()
    >>> [w[0, 0].item() for w in out] == window_starts(11, 4).tolist()
    True
    """

    def __init__(self, window: int) -> None:
        self.window, self.hop = window, max(1, window // 2)
        self.buf: np.ndarray | None = None  # frames from frame `offset` on
        self.offset = 0
        self.n = 0  # frames pushed so far
        self.next = 0  # start of the next window
        self.emitted = 0  # windows returned so far

    def push(self, frames: np.ndarray) -> list[np.ndarray]:
        """Add a chunk of frames; return the windows (float16 [window, n_mels]) it completes."""
        self.buf = frames if self.buf is None else np.concatenate([self.buf, frames])
        self.n += len(frames)
        out = []
        while self.window and self.next + self.window <= self.n:
            at = self.next - self.offset
            out.append(self.buf[at : at + self.window])
            self.next += self.hop
        self.emitted += len(out)
        keep = max(0, min(self.next, self.n - self.window)) if self.window else 0
        self.buf, self.offset = self.buf[keep - self.offset :], keep
        return out

    def finish(self) -> list[np.ndarray]:
        """The remaining window: the whole track if none was returned, else one at its end."""
        if self.buf is None:
            return []
        if self.emitted == 0:  # at most one window long: the whole track
            return [self.buf]
        last = self.next - self.hop  # start of the last window returned
        if last + self.window < self.n:
            return [self.buf[len(self.buf) - self.window :]]
        return []


def track_means(
    batches: Iterable[Windows], n_tracks: int, forward: Callable[[torch.Tensor], np.ndarray]
) -> np.ndarray:
    """Float64 [n_tracks, d]: per track, the mean of ``forward`` (float [b, d] per window
    batch) over its windows. NaN rows for tracks that got no window."""
    sums: np.ndarray | None = None
    counts = np.zeros(n_tracks, np.int64)
    for rows, x in batches:
        out = np.asarray(forward(x), np.float64)
        if sums is None:
            sums = np.zeros((n_tracks, out.shape[1]), np.float64)
        np.add.at(sums, rows, out)
        np.add.at(counts, rows, 1)
    if sums is None:
        return np.full((n_tracks, 0), np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts[:, None]


def file_means(
    frames: Iterable[np.ndarray],
    window: int,
    forward: Callable[[torch.Tensor], np.ndarray],
    batch_size: int = 16,
) -> np.ndarray:
    """The mean of ``forward`` over the windows of one track whose frames arrive in chunks.

    Args:
        frames: the track's frames, float16 [k, n_mels] chunks (a file read by
            pipeline.extract.TrackFeatures).
        window: window length (frames); 0: the whole track in one call.
        forward: a window batch's outputs, float [b, d] (see `track_means`).
        batch_size: windows per ``forward`` call.

    Returns:
        Float64 [d]: the track's mean output.
    """

    def batch(windows: list[np.ndarray]) -> Windows:
        """One window batch of the track (row 0 for every window)."""
        return np.zeros(len(windows), np.int64), to_model_layout(np.stack(windows))

    def batches() -> Iterator[Windows]:
        """The track's window batches, as its frames arrive."""
        if window == 0:
            yield batch([np.concatenate(list(frames))])
            return
        stream, pending = WindowStream(window), []
        for chunk in frames:
            pending += stream.push(chunk)
            while len(pending) >= batch_size:
                yield batch(pending[:batch_size])
                pending = pending[batch_size:]
        pending += stream.finish()
        for i in range(0, len(pending), batch_size):
            yield batch(pending[i : i + batch_size])

    return track_means(batches(), 1, forward)[0]


def model_forward(model: torch.nn.Module, device: torch.device, task: Task):
    """A `track_means` forward: a window batch's probabilities under ``model``."""

    def forward(x: torch.Tensor) -> np.ndarray:
        """The task's probabilities for window batch ``x``."""
        with torch.no_grad(), autocast(device):
            logits = model(x.to(device)).float()
        return task.probabilities(logits)

    return forward


def embedding_forward(model: torch.nn.Module, device: torch.device):
    """A `track_means` forward: a window batch's embeddings (``model.embedding``),
    float64 [b, d]; rows with a non-finite value are NaN."""

    def forward(x: torch.Tensor) -> np.ndarray:
        """Embeddings, float64 [b, d], for window batch ``x``; non-finite rows become NaN."""
        with torch.no_grad(), autocast(device):
            e = model.embedding(x.to(device)).double().cpu()
        e[~torch.isfinite(e).all(dim=1)] = float("nan")
        return e.numpy()

    return forward


@torch.no_grad()
def cache_means(
    index: SplitIndex,
    forward: Callable[[torch.Tensor], np.ndarray],
    window: int,
    max_frames: int,
    progress: Callable[[int], None] | None = None,
    crops: int = 0,
) -> np.ndarray:
    """Each track's mean ``forward`` output over its windows (`cache_windows`).

    Args:
        index: the cache split, not empty.
        forward: a window batch's outputs, float [b, d] (see `track_means`).
        window: window length (frames); 0: every track whole.
        max_frames: frames per batch (see `cache_windows`).
        progress: called with each batch's number of windows.
        crops: see `cache_windows`.

    Returns:
        Float64 [len(index), d]; a track's row is not finite where one of its outputs was
        not.
    """

    def batches() -> Iterator[Windows]:
        """`cache_windows`' batches, reporting each to ``progress``."""
        for rows, x in cache_windows(index, window, max_frames, crops):
            yield rows, x
            if progress:
                progress(len(rows))

    return track_means(batches(), len(index), forward)


def score(
    model: torch.nn.Module,
    index: SplitIndex,
    task: Task,
    device: torch.device,
    window: int,
    max_frames: int,
    progress: Callable[[int], None] | None = None,
    crops: int = 0,
) -> np.ndarray:
    """Each track's mean window probability under ``model`` (put in eval mode); see
    `cache_means`.

    Args:
        model: the classifier.
        index: the cache split, not empty.
        task: turns logits into probabilities.
        device: where the model runs.
        window: window length (frames); 0: every track whole.
        max_frames: frames per batch (see `cache_windows`).
        progress: called with each batch's number of windows.
        crops: see `cache_windows`.

    Returns:
        Float64 [len(index), n_labels].
    """
    model.eval()
    forward = model_forward(model, device, task)
    return cache_means(index, forward, window, max_frames, progress, crops)


def split_means(
    index: SplitIndex,
    forward: Callable[[torch.Tensor], np.ndarray],
    window: int,
    batch_size: int,
    what: str,
    desc: str,
    progress: bool = True,
) -> np.ndarray:
    """`cache_means` of a whole split for a command, with a progress bar and a finiteness check.

    Args:
        index: the cache split, not empty.
        forward: a window batch's outputs, float [b, d] (see `track_means`).
        window: window length (frames); 0: every track whole.
        batch_size: windows' worth of frames per forward pass (the longest window's).
        what: what the outputs are, for the error ("outputs", "embeddings").
        desc: the progress bar's label.
        progress: show a progress bar (counting windows).

    Returns:
        Float64 [len(index), d]: each track's mean output, all finite.

    Raises:
        BadInput: naming (up to 10 of) the tracks whose output is not finite.
    """
    from tqdm import tqdm

    from pipeline.errors import BadInput

    longest = int(index.length.max())
    per_pass = batch_size * (min(longest, window) if window else longest)
    with tqdm(
        total=count_windows(index.length, window), unit="window", desc=desc, disable=not progress
    ) as bar:
        means = cache_means(index, forward, window, per_pass, bar.update)
    bad = ~np.isfinite(means).all(axis=1)
    if bad.any():
        ids = " ".join(str(t) for t in index.track_id[bad][:10].tolist())
        raise BadInput(
            f"the model's {what} are NaN or infinite for {int(bad.sum())} tracks (e.g. "
            f"{ids}); check the cache with `mrnet verify`"
        )
    return means
