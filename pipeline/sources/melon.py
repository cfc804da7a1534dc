"""Melon Playlist Dataset (Kakao Arena): precomputed mel arrays and song metadata, no audio.

- ``AUDIO_DIR/{id // 1000}/{id}.npy`` (``arena_mel/``): float [48, frames], 48 mel bands
  at 16 kHz, n_fft 512, hop 256 (62.5 frames/s), the excerpt 0:20-0:50 of each song
  (about 1,876 frames). They are ingested as they are (`pipeline.arrays`): no decoding,
  nothing recomputed; the cache's feature kind says they are Melon's mels, not mrnet's,
  so `mrnet predict` on audio files refuses a model trained on them.
- ``METADATA_DIR/song_meta.json``: a list of songs with ``id``, ``song_gn_gnr_basket``
  (top genre codes, 30 in all), ``song_gn_dtl_gnr_basket`` (sub-genre codes),
  ``artist_id_basket``, ``song_name``, ``artist_name_basket``;
  ``METADATA_DIR/genre_gn_all.json``: code -> name. Labels are "CODE name"
  (``GN0100 발라드``): names repeat among sub-genres, codes do not.
- Labels: ``top`` (default) single-label on the songs with exactly one top genre (the
  others are skipped as ``several_genres``); ``top-multi`` every top genre of a song;
  ``all`` every sub-genre, dropping those with fewer than --min-label-tracks training
  songs. Songs without a genre are skipped (``no_genre``).
- Split: Melon has none. A seeded 80/10/10 split by artist: songs that share an artist
  (through any of their artists) stay on one side, each label about 80/10/10
  (`grouped_splits`). --split-file replaces it with a published one.
- Scale: --array-scale, or decided from a sample of the arrays (`pipeline.arrays.
  array_scale`) and recorded in the manifest (feature kind, and the evidence in
  ``source.array_scale``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from pipeline.arrays import array_scale, read_array
from pipeline.errors import BadInput, TrackFailed
from pipeline.features import FeatureConfig
from pipeline.sources import Selection, no_folds, sort_tracks
from pipeline.sources.split import grouped_splits

if TYPE_CHECKING:
    from pipeline.options import PreprocessOptions

SONG_META = "song_meta.json"
GENRE_NAMES = "genre_gn_all.json"
N_MELS = 48
SAMPLE = 64  # arrays read to decide their scale
# Melon's mels: 16 kHz, n_fft 512, hop 256, 48 bands, 30-s excerpts
FEATURES = {"sample_rate": 16000, "n_fft": 512, "hop_length": 256, "n_mels": N_MELS}
_FIX = "pass --metadata-dir pointing at the folder of song_meta.json and genre_gn_all.json"


def array_path(audio_dir: Path, song_id: int) -> Path:
    """Where Melon keeps song ``song_id``'s mel array."""
    return Path(audio_dir) / str(song_id // 1000) / f"{song_id}.npy"


def _read_json(path: Path, what: str):
    if not path.is_file():
        raise BadInput(f"{path} does not exist; {_FIX}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise BadInput(f"{path} is not valid JSON ({e}); download {what} again") from None


def read_songs(metadata_dir: Path) -> tuple[pd.DataFrame, dict[str, str]]:
    """(songs: id, top, detail (lists of codes), artists (list), song_name, artist_name;
    sorted by id, genre code -> name). BadInput for missing or malformed files."""
    meta = _read_json(Path(metadata_dir) / SONG_META, SONG_META)
    names = _read_json(Path(metadata_dir) / GENRE_NAMES, GENRE_NAMES)
    if not isinstance(meta, list) or not isinstance(names, dict):
        raise BadInput(
            f"{metadata_dir}: {SONG_META} must hold a list of songs and {GENRE_NAMES} an "
            f"object of code: name; {_FIX}"
        )
    rows = []
    for i, song in enumerate(meta):
        if not isinstance(song, dict) or not isinstance(song.get("id"), int):
            raise BadInput(f"{SONG_META}: entry {i} has no integer id; download it again")
        rows.append(
            (
                song["id"],
                list(song.get("song_gn_gnr_basket") or []),
                list(song.get("song_gn_dtl_gnr_basket") or []),
                [str(a) for a in song.get("artist_id_basket") or []],
                str(song.get("song_name", "")),
                ", ".join(map(str, song.get("artist_name_basket") or [])),
            )
        )
    columns = ["id", "top", "detail", "artists", "title", "artist"]
    songs = pd.DataFrame(rows, columns=columns)
    if songs["id"].duplicated().any():
        raise BadInput(
            f"{SONG_META}: song {songs['id'][songs['id'].duplicated()].iloc[0]} "
            "is listed twice; download it again"
        )
    return songs.sort_values("id").reset_index(drop=True), {
        str(k): str(v) for k, v in names.items()
    }


def artist_groups(artists: list[list[str]]) -> list[str]:
    """A group key per song: songs linked through a shared artist share it (connected
    components); a song without artists is its own group."""
    parent: dict[str, str] = {}

    def find(a: str) -> str:
        while parent.setdefault(a, a) != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for names in artists:
        for other in names[1:]:
            parent[find(other)] = find(names[0])
    return [find(names[0]) if names else f"song:{i}" for i, names in enumerate(artists)]


def label_name(code: str, names: dict[str, str]) -> str:
    """ "CODE name", or the code alone when genre_gn_all.json does not name it."""
    return f"{code} {names[code]}" if code in names else code


def read_selection(
    audio_dir: Path,
    metadata_dir: Path,
    labels: str = "top",
    seed: int = 0,
    min_label_tracks: int = 50,
    scale: str = "auto",
) -> Selection:
    """The Melon songs as a Selection (see the module docstring).

    Args:
        audio_dir: the arena_mel/ folder.
        metadata_dir: the folder of song_meta.json and genre_gn_all.json.
        labels: "top", "top-multi" or "all".
        seed: the seed of the artist-grouped split.
        min_label_tracks: with "all", the fewest training songs a sub-genre needs.
        scale: "auto", "log" or "linear": the arrays' scale (auto: decided from a sample).

    Returns:
        A Selection with ``features`` set to Melon's mels (kind melon-log or melon-linear).
    """
    songs, names = read_songs(metadata_dir)
    codes = songs["detail" if labels == "all" else "top"].map(lambda c: sorted(set(c)))
    skipped = {"no_genre": int((codes.str.len() == 0).sum())}
    keep = codes.str.len() > 0
    if labels == "top":
        skipped["several_genres"] = int((codes.str.len() > 1).sum())
        keep &= codes.str.len() == 1
    songs, codes = songs[keep].reset_index(drop=True), codes[keep].reset_index(drop=True)
    if songs.empty:
        raise BadInput(f"no song in {SONG_META} has a genre for --labels {labels}; {_FIX}")
    groups = artist_groups(songs["artists"].tolist())
    found = sorted({c for cs in codes for c in cs})
    index = {c: i for i, c in enumerate(found)}
    split = grouped_splits([tuple(index[c] for c in cs) for cs in codes], groups, seed)
    dropped: list[str] = []
    if labels == "all":
        training = pd.Series([c for cs, s in zip(codes, split) if s == "training" for c in cs])
        counts = training.value_counts()
        rare = {c for c in found if counts.get(c, 0) < min_label_tracks}
        dropped = [label_name(c, names) for c in sorted(rare)]
        codes = codes.map(lambda cs: [c for c in cs if c not in rare])
    label_names = sorted({label_name(c, names) for cs in codes for c in cs})
    if len(label_names) < 2:
        raise BadInput(
            f"--labels {labels} leaves {len(label_names)} genre(s) in {SONG_META}; a "
            "classifier needs two or more (lower --min-label-tracks or use --labels top)"
        )
    of = {n: i for i, n in enumerate(label_names)}
    tracks = pd.DataFrame(
        {
            "track_id": songs["id"].astype("int64"),
            "split": split,
            "path": [str(array_path(audio_dir, i)) for i in songs["id"]],
            "artist": songs["artist"],
            "title": songs["title"],
        }
    )
    named = codes.map(lambda cs: [label_name(c, names) for c in cs])
    if labels == "top":
        tracks["genre"] = named.str[0]
        tracks["label"] = tracks["genre"].map(of).astype("int64")
    else:
        tracks["labels"] = named.map(lambda ns: tuple(sorted(of[n] for n in ns)))
        empty = tracks["labels"].str.len() == 0
        skipped["only_dropped_genres"] = int(empty.sum())
        tracks = tracks[~empty]
    kind, evidence = _scale(tracks["path"].tolist(), scale)
    return Selection(
        tracks=sort_tracks(tracks.reset_index(drop=True)),
        labels=label_names,
        dataset="melon",
        split_scheme=f"80/10/10 grouped by artist, stratified by genre, seed {seed}",
        task="single" if labels == "top" else "multi",
        skipped={k: v for k, v in skipped.items() if v},
        dropped_labels=dropped,
        source={
            "audio_dir": str(audio_dir),
            "metadata_dir": str(metadata_dir),
            "array_scale": evidence,
            "excerpt": "Melon's 30-s excerpts (0:20-0:50 of each song)",
        },
        features=FeatureConfig(**FEATURES, kind=f"melon-{kind}"),
    )


def _scale(paths: list[str], scale: str) -> tuple[str, str]:
    """(log or linear, the evidence): as given, or decided from up to SAMPLE arrays spread
    over ``paths`` (unreadable ones are passed over: preprocess records them)."""
    if scale != "auto":
        return scale, f"{scale} (--array-scale {scale})"
    picks = np.unique(np.linspace(0, len(paths) - 1, min(SAMPLE, len(paths))).astype(int))
    arrays = []
    for i in picks:
        try:
            arrays.append(read_array(paths[i], N_MELS))
        except TrackFailed:
            continue
    kind, evidence = array_scale(arrays)
    return kind, f"{kind} (auto: {evidence})"


def selection(opts: PreprocessOptions) -> Selection:
    """`read_selection` for preprocess's options."""
    no_folds(opts, "Melon has no folds; its split is seeded by --seed, or pass --split-file")
    if opts.metadata_dir is None:
        raise BadInput(f"--dataset melon needs --metadata-dir; {_FIX}")
    return read_selection(
        opts.audio_dir,
        opts.metadata_dir,
        opts.labels,
        opts.seed,
        opts.min_label_tracks,
        opts.array_scale,
    )
