"""The two exception types that cross module boundaries.

``BadInput``: input the user can fix; the CLI prints its one-line message, exit code 2.
``TrackFailed``: one track that cannot be cached or scored; recorded with its ``reason``
(one of ``FAILURE_REASONS``) in failures.csv or on predict's output, never fatal.
"""


class BadInput(Exception):
    """Input the user can fix: the message names the problem and the fix, in one line."""


FAILURE_REASONS = (
    "missing",  # no file at the path
    "empty_file",  # 0 bytes (or not a regular file: a FIFO, a device)
    "undecodable",  # no decoder could read it
    "no_audio",  # decoded to 0 samples
    "too_short",  # fewer seconds than asked
    "truncated_decode",  # decoded length implausibly short for the file size
    "non_finite",  # features hold NaN or infinity (e.g. a float WAV with NaN samples)
    "checksum_mismatch",  # the file's SHA-1 is not the one the checksums file lists
    "bad_array",  # a precomputed feature array (Melon) of the wrong shape or dtype
)


class TrackFailed(Exception):
    """One track that could not be turned into features; ``reason`` is in FAILURE_REASONS."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail

    def __reduce__(self):  # picklable across worker processes with both arguments
        return (type(self), (self.reason, self.detail))
