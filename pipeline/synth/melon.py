"""A miniature Melon Playlist Dataset: mel arrays at Melon's parameters, no audio.

    OUT/arena_mel/{id // 1000}/{id}.npy   float32 [48, frames]: 16 kHz, n_fft 512, hop 256
    OUT/song_meta.json                    id, song_gn_gnr_basket, song_gn_dtl_gnr_basket,
                                          artist_id_basket, song_name, artist_name_basket
    OUT/genre_gn_all.json                 code -> name (Melon's codes and Korean names)

Each song is a synthetic clip (`pipeline.synth.sound.render`, one fma_small recipe per
top genre, so the genres are learnable) turned into a 48-band Slaney mel power
spectrogram and stored log-compressed, log10(1 + 10^4 x) (``scale="log"``) or as the
power itself (``scale="linear"``). Artists keep to one genre and sing a few songs each;
some songs have two artists, one has two top genres and one has none, as in the real file.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.atomic import write_atomic
from pipeline.features import FeatureConfig, mel_filterbank, power_spectrogram
from pipeline.sources.melon import FEATURES, GENRE_NAMES, SONG_META, array_path
from pipeline.synth.sound import render

# top genre code -> (Melon's name, fma_small recipe, two sub-genres)
GENRES = {
    "GN0200": ("댄스", "Electronic", {"GN0201": "국내댄스", "GN0202": "해외댄스"}),
    "GN0300": ("랩/힙합", "Hip-Hop", {"GN0301": "국내랩/힙합", "GN0302": "해외랩/힙합"}),
    "GN0600": ("록/메탈", "Rock", {"GN0601": "국내록/메탈", "GN0602": "해외록/메탈"}),
    "GN0800": ("포크/블루스", "Folk", {"GN0801": "국내포크/블루스", "GN0802": "해외포크/블루스"}),
}
CONFIG = FeatureConfig(**FEATURES, max_seconds=0)


@dataclass(frozen=True)
class SynthMelon:
    """Where the dataset went: ``audio_dir`` (arena_mel/) and ``metadata_dir``."""

    audio_dir: Path
    metadata_dir: Path
    song_ids: list[int]


def mel_array(audio: np.ndarray, scale: str = "log") -> np.ndarray:
    """Float32 [48, frames] of mono 16-kHz ``audio`` at Melon's parameters, on ``scale``."""
    power = mel_filterbank(CONFIG).T @ power_spectrogram(audio, CONFIG.n_fft, CONFIG.hop_length)
    if scale == "linear":
        return power.astype(np.float32)
    return np.log10(1.0 + 1e4 * power).astype(np.float32)


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


def generate(
    out_dir: Path,
    n_per_genre: int = 8,
    seconds: float = 6.0,
    seed: int = 0,
    scale: str = "log",
) -> SynthMelon:
    """Write the dataset (see the module docstring).

    Args:
        out_dir: the dataset folder (created as needed).
        n_per_genre: songs per top genre (the song with two genres comes on top).
        seconds: excerpt length (s; Melon's are 30).
        seed: seed of the whole dataset.
        scale: "log" (log-compressed) or "linear" (mel power).

    Returns:
        Where the arrays and the metadata are, and the song ids with arrays.
    """
    out_dir = Path(out_dir)
    rng = np.random.default_rng([seed, 0x3E10])
    meta, ids = [], []
    song_id = 1000 - 3 * len(GENRES)  # ids straddle a thousand: two array folders
    for g, (code, (_, recipe, subs)) in enumerate(GENRES.items()):
        for i in range(n_per_genre):
            artist = 100 + g * 10 + i // 2  # two songs an artist, one genre each
            artists = [artist] + ([artist + 1] if i % 5 == 4 else [])  # some duets
            top = [code] + (["GN0200"] if (g, i) == (1, 0) else [])  # one song, two genres
            meta.append(
                {
                    "id": song_id,
                    "song_gn_gnr_basket": top,
                    "song_gn_dtl_gnr_basket": [str(rng.choice(list(subs)))],
                    "artist_id_basket": artists,
                    "song_name": f"{recipe} song {i}",
                    "artist_name_basket": [f"artist {a}" for a in artists],
                }
            )
            audio = render(recipe, seconds, CONFIG.sample_rate, 1, int(rng.integers(2**31)))
            path = array_path(out_dir / "arena_mel", song_id)
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, _npy(mel_array(audio[:, 0], scale)))
            ids.append(song_id)
            song_id += 3
    meta.append(
        {
            "id": song_id,
            "song_gn_gnr_basket": [],
            "song_gn_dtl_gnr_basket": [],
            "artist_id_basket": [999],
            "song_name": "no genre",
            "artist_name_basket": ["artist 999"],
        }
    )
    names = {"GN0100": "발라드"} | {
        k: v for code, (name, _, subs) in GENRES.items() for k, v in {code: name, **subs}.items()
    }
    write_atomic(out_dir / SONG_META, json.dumps(meta, ensure_ascii=False).encode())
    write_atomic(out_dir / GENRE_NAMES, json.dumps(names, ensure_ascii=False).encode())
    return SynthMelon(out_dir / "arena_mel", out_dir, ids)
