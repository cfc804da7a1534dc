"""MPEG audio container facts: what a file is (by content), where its audio bytes lie.

Used only to judge whether a decode stopped early (pipeline.audio): an MP3 cannot carry
more than 320 kbit/s, and its Layer III frame headers add up to its duration. Both need
the bytes that are audio, so every tag is excluded:

- leading ID3v2 tags, any number of them back to back (each with an optional footer);
- trailing tags in any order: ID3v1 (128 B, "TAG"), its "TAG+" extension (227 B),
  APEv2 (footer "APETAGEX", optional header), Lyrics3 v2 ("LYRICS200"), and ID3v2 tags
  appended at the end, with a "3DI" footer or without one (found by their header, whose
  size must reach exactly the end).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

# kbit/s by bit-rate index (Layer III), Hz by sample-rate index, by MPEG version bits
_KBPS = {
    3: (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),  # MPEG-1
    2: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),  # MPEG-2 / 2.5
}
_HZ = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}
_SNIFF_BYTES = 8192  # where the first two frames of an MP3 must lie, after its tags
_ID3_SEARCH_LIMIT = 256 * 2**20  # the largest ID3v2 tag (28-bit size)


@dataclass(frozen=True)
class Frame:
    """One Layer III frame header: its length in bytes and duration in seconds."""

    length: int
    seconds: float


def parse_frame(h: bytes | memoryview) -> Frame | None:
    """The frame whose 4 header bytes are ``h``, or None when they are not a Layer III header."""
    if len(h) < 4 or h[0] != 0xFF or h[1] & 0xE0 != 0xE0:
        return None
    version, layer = (h[1] >> 3) & 3, (h[1] >> 1) & 3
    rate_idx, br_idx = (h[2] >> 2) & 3, h[2] >> 4
    if version == 1 or layer != 1 or br_idx in (0, 15) or rate_idx == 3:
        return None
    rate = _HZ[version][rate_idx]
    mpeg1 = version == 3
    kbps = _KBPS[3 if mpeg1 else 2][br_idx]
    length = (144 if mpeg1 else 72) * kbps * 1000 // rate + ((h[2] >> 1) & 1)
    return Frame(length, (1152 if mpeg1 else 576) / rate)


def _syncsafe(b: bytes) -> int:
    return (b[0] & 127) << 21 | (b[1] & 127) << 14 | (b[2] & 127) << 7 | (b[3] & 127)


def _id3v2_total(header: bytes) -> int:
    """Bytes of the ID3v2 tag whose 10-byte header is ``header`` (0 if it is none)."""
    if len(header) < 10 or header[:3] != b"ID3" or header[3] not in (2, 3, 4) or header[4] == 255:
        return 0
    if any(b & 0x80 for b in header[6:10]):
        return 0
    footer = 10 if header[5] & 0x10 else 0
    return 10 + _syncsafe(header[6:10]) + footer


def _read_at(f, offset: int, n: int) -> bytes:
    f.seek(offset)
    return f.read(n)


def leading_tags_end(f) -> int:
    """Offset of the first byte after every leading ID3v2 tag of open binary file ``f``."""
    pos = 0
    while True:
        size = _id3v2_total(_read_at(f, pos, 10))
        if not size:
            return pos
        pos += size


def _trailing_tags_start(f, end: int, start: int) -> int:
    """Offset where the trailing tags before ``end`` begin (``end`` if there are none);
    never below ``start``. Repeats until no known tag ends there."""
    while end - start >= 10:
        tail = _read_at(f, max(start, end - 32), end - max(start, end - 32))
        if end - start >= 128 and _read_at(f, end - 128, 3) == b"TAG":
            end -= 128
            if end - start >= 227 and _read_at(f, end - 227, 4) == b"TAG+":
                end -= 227
            continue
        if len(tail) == 32 and tail[:8] == b"APETAGEX":
            size = int.from_bytes(tail[12:16], "little")  # items + footer
            has_header = int.from_bytes(tail[20:24], "little") & 0x80000000
            new_end = end - size - (32 if has_header else 0)
            if start <= new_end < end:
                end = new_end
                continue
        if tail[-9:] == b"LYRICS200" and end - start >= 15:
            digits = _read_at(f, end - 15, 6)
            if digits.isdigit() and start <= end - 15 - int(digits) < end:
                end -= 15 + int(digits)
                continue
        footer = tail[-10:]
        if footer[:3] == b"3DI":
            size = 20 + _syncsafe(footer[6:10])
            if start <= end - size and _read_at(f, end - size, 3) == b"ID3":
                end -= size
                continue
        return end
    return end


def _appended_id3v2_start(f, end: int, start: int) -> int | None:
    """Start of an ID3v2 tag without footer that ends exactly at ``end``, else None.

    Searched backwards chunk by chunk; it costs a read of the tag, so `audio_region`
    only asks for it when the cheaper estimate already looks implausible."""
    chunk = 4 * 2**20
    hi = end
    lowest = max(start, end - _ID3_SEARCH_LIMIT - 10)
    while hi > lowest:
        lo = max(lowest, hi - chunk)
        data = _read_at(f, lo, hi - lo + 9)  # overlap: a header may straddle chunks
        i = len(data)
        while (i := data.rfind(b"ID3", 0, i)) >= 0:
            if _id3v2_total(data[i : i + 10]) == end - (lo + i):
                return lo + i
        hi = lo
    return None


def is_mp3(f) -> bool:
    """True when open binary file ``f`` holds MPEG audio: after its leading ID3v2 tags,
    two consecutive Layer III frame headers within the first few KB (by content, not by
    suffix: a WAV or FLAC named .mp3 is not an MP3)."""
    start = leading_tags_end(f)
    head = _read_at(f, start, _SNIFF_BYTES)
    i = head.find(b"\xff")
    while 0 <= i < len(head) - 4:
        frame = parse_frame(head[i : i + 4])
        if frame is not None:
            nxt = _read_at(f, start + i + frame.length, 4)
            if parse_frame(nxt) is not None:
                return True
        i = head.find(b"\xff", i + 1)
    return False


def audio_region(f, size: int, thorough: bool = False) -> tuple[int, int]:
    """(start, end) byte offsets of the audio of an MP3 of ``size`` bytes, tags excluded.

    ``thorough`` also looks for an ID3v2 tag appended without a footer (a read of up to
    the whole tag); otherwise only tags found from the last few bytes are excluded.
    """
    start = leading_tags_end(f)
    end = _trailing_tags_start(f, size, start)
    if thorough:
        appended = _appended_id3v2_start(f, end, start)
        if appended is not None:
            end = _trailing_tags_start(f, appended, start)
    return start, max(start, end)


def frame_seconds(f, start: int, end: int) -> float:
    """Duration that the Layer III frame headers in bytes [start, end) add up to.

    Resynchronises on the next 0xFF after bytes that are not a header (damaged frames).
    libsndfile guesses a VBR file's length from its first frame when there is no Xing
    header and stops there; counting frames tells such an early stop from a short file.
    """
    data = memoryview(_read_at(f, start, end - start))
    i, seconds, n = 0, 0.0, len(data)
    raw = data.obj
    while i + 4 <= n:
        frame = parse_frame(data[i : i + 4])
        if frame is None:
            nxt = raw.find(b"\xff", i + 1)  # resynchronise on the next 0xFF
            if nxt < 0:
                break
            i = nxt
            continue
        i += frame.length
        seconds += frame.seconds
    return seconds


@dataclass(frozen=True)
class FrameTable:
    """Where the Layer III frames of an MP3 lie: ``offsets`` int64 [frames + 1] (byte
    offset of each frame, then the end of the last), all frames ``samples`` long at
    ``sample_rate`` Hz (the stream's first frame decides both)."""

    offsets: np.ndarray
    samples: int
    sample_rate: int

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def seconds(self) -> float:
        """Duration (s): frames times samples per frame over the sample rate."""
        return len(self) * self.samples / self.sample_rate


def frame_table(source: bytes | BinaryIO, start: int, end: int) -> FrameTable | None:
    """The frames of ``source[start:end]`` (the audio region: tags excluded), walking from
    header to header and resynchronising on the next 0xFF after damaged bytes; None when
    there is no frame. ~1 µs a frame (11,500 frames for 5 minutes). ``source``: the
    file's bytes, or the open file itself (hours of audio), read in 8-MB chunks."""
    walk = _FrameWalk(end)
    if isinstance(source, bytes):
        walk(source, 0, start)
    else:
        i = start
        while i + 4 <= end:
            source.seek(i)
            buf = source.read(min(_TABLE_CHUNK, end - i))
            if len(buf) < 4:
                break
            i = walk(buf, i, i)
    return walk.table()


_TABLE_CHUNK = 8 * 2**20


class _FrameWalk:
    """The state of `frame_table`'s walk over consecutive buffers of one region."""

    def __init__(self, end: int) -> None:
        self.end, self.offsets, self.rate, self.after = end, [], 0, 0
        self.first: Frame | None = None
        self.frames: dict[bytes, Frame | None] = {}  # parsed headers, by their 3 bytes

    def __call__(self, buf: bytes, base: int, i: int) -> int:
        """Walk ``buf`` (which holds bytes ``base`` on) from ``i``; returns where the
        next buffer must start (absolute)."""
        stop = min(base + len(buf), self.end)
        while i + 4 <= stop:
            key = buf[i - base : i - base + 3]
            frame = self.frames.get(key, False)
            if frame is False:
                frame = self.frames[key] = parse_frame(key + b"\x00")
            if frame is None or i + frame.length > self.end + 3:
                nxt = buf.find(b"\xff", i + 1 - base, stop - base)  # resynchronise
                if nxt < 0:
                    return stop if stop < self.end else self.end
                i = base + nxt
                continue
            if self.first is None:
                self.first = frame
                version, rate_idx = (key[1] >> 3) & 3, (key[2] >> 2) & 3
                self.rate = _HZ[version][rate_idx]
            self.offsets.append(i)
            i += frame.length
            self.after = i  # the end of the last frame
        return i

    def table(self) -> FrameTable | None:
        """The frames walked so far (the last one cut at the region's end); None if none."""
        if self.first is None:
            return None
        offsets = np.array([*self.offsets, min(self.after, self.end)], np.int64)
        return FrameTable(offsets, round(self.first.seconds * self.rate), self.rate)
