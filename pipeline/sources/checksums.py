"""SHA-1 sums of the audio files, in sha1sum's format, as the FMA maintainers publish them
(the remedy for downloads that are corrupt yet still decode):

    <40 hex digits>  000/000002.mp3        (or " *" before the path: binary mode)

Paths are relative to the audio folder. Each worker hashes a file from the very bytes
it decodes (pipeline.audio.open_audio); a mismatch is the failure "checksum_mismatch".
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from pipeline.errors import BadInput

DEFAULT_NAME = "checksums"  # AUDIO_DIR/checksums, as in FMA's archives
_LINE = re.compile(r"^([0-9a-fA-F]{40}) [ *](.+)$")


def read_checksums(path: Path) -> dict[str, str]:
    """Relative path (with '/') -> lowercase SHA-1; BadInput when the file is absent or
    holds no line of sha1sum's format."""
    if not path.is_file():
        raise BadInput(
            f"--verify-checksums but there is no checksums file {path}; put FMA's checksums "
            "there (sha1sum format: '<sha1>  000/000002.mp3') or pass --checksums FILE"
        )
    sums = {}
    for line in path.read_text(errors="replace").splitlines():
        m = _LINE.match(line.strip())
        if m:
            sums[m.group(2).strip().removeprefix("./")] = m.group(1).lower()
    if not sums:
        raise BadInput(f"{path} holds no line of sha1sum's format ('<sha1>  000/000002.mp3')")
    return sums


def expected_sha1s(
    paths: list[str], audio_dir: Path, sums: dict[str, str], where: Path
) -> list[str | None]:
    """The listed SHA-1 of each file; BadInput when none of them is listed (a checksums
    file for other files).

    Args:
        paths: the selected tracks' audio files.
        audio_dir: the folder the listed paths are relative to.
        sums: relative path ("000/000002.mp3") -> SHA-1 (lower-case hex), as read.
        where: the checksums file, for the error.

    Returns:
        Per path, its SHA-1, or None where the file is not listed.
    """
    prefix = str(Path(audio_dir)) + os.sep
    out = [sums.get(_relative(p, prefix)) for p in paths]
    if not any(out):
        raise BadInput(
            f"{where} lists none of the {len(paths)} selected tracks (paths relative to "
            f"{audio_dir}, like 000/000002.mp3); pass the checksums of this audio folder"
        )
    return out


def _relative(path: str, prefix: str) -> str:
    rel = path[len(prefix) :] if path.startswith(prefix) else path
    return rel.replace(os.sep, "/") if os.sep != "/" else rel
