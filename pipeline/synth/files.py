"""Encoding synthetic audio into the files a dataset holds."""

from __future__ import annotations

import numpy as np


def encode_mp3(audio: np.ndarray, sample_rate: int, bit_rate: int, quality: int = 7) -> bytes:
    """Float32 [frames, channels] -> CBR MP3 bytes (LAME via lameenc).

    Args:
        audio: float32 [frames, channels] in [-1, 1] (clipped to 16-bit PCM).
        sample_rate: its rate (Hz).
        bit_rate: the MP3's bit rate (kbit/s).
        quality: LAME quality, 2 (best) .. 7 (fastest).

    Returns:
        The MP3 file's bytes.
    """
    import lameenc

    pcm = np.clip(np.round(audio * 32767), -32768, 32767).astype("<i2")
    enc = lameenc.Encoder()
    enc.set_bit_rate(int(bit_rate))
    enc.set_in_sample_rate(int(sample_rate))
    enc.set_channels(int(audio.shape[1]))
    enc.set_quality(int(quality))
    enc.silence()
    return bytes(enc.encode(pcm.tobytes()) + enc.flush())
