"""Real, freely licensed recorded music as style-labelled folder datasets for mrnet.

    python benchmarks/real_music.py [--out data/real] [--downloads data/real/_debs]
                                    [--folds 5] [--seed 0]

Every track is a game-soundtrack recording shipped by a Debian package under a free
licence (GPL, CC-BY(-SA), BSD, EFF OAL, public domain). The script

1. downloads the packages named in PACKAGES with ``apt-get download`` (a .deb already in
   the downloads folder is reused) and extracts only the music RULES label, plus credit
   files, into OUT/_extract/<pkg>/ (a zip inside a package, e.g. a .pk3, is opened too);
2. labels the tracks with RULES: (package, glob, style, group, evidence) rows, the first
   matching row wins; style None excludes the file; files no row matches are not used.
   Every label is auditable there: the evidence says where it comes from (the track's own
   GENRE tag, a title, the game's credits / culture tables, the composer's known genre);
3. drops tracks shorter than 30 s and byte-identical duplicates;
4. writes each dataset of DATASETS (its own cut of the labelled tracks) as

       OUT/<dataset>/all/<style>/<file>                             every track
       OUT/<dataset>/fold<k>/{train,valid,test}/<style>/<file>      one folder dataset a fold
       OUT/<dataset>/tracks.csv        path, style, group, source_package, licence,
                                       duration_s, fold, (source_file, title, artist,
                                       evidence)
       OUT/<dataset>/summary.txt       the table printed at the end

   Folds are grouped (no group, i.e. composer or album/source, on two sides), stratified
   by style as far as the groups allow and seeded: fold k's test split is fold k, its
   validation split fold (k+1) mod K, its training split the rest. The files are
   relative symlinks into OUT/_extract; ``mrnet preprocess --dataset folder --audio-dir
   OUT/<dataset>/fold<k>`` reads a fold as-is. Rerunning rebuilds the dataset trees.

See benchmarks/REAL_MUSIC.md for the sources, the label evidence and the caveats.
"""

from __future__ import annotations

import argparse
import csv
import fnmatch
import hashlib
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
import zipfile
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path

import soundfile as sf

MIN_SECONDS = 30.0
AUDIO_SUFFIXES = (".ogg", ".flac", ".mp3", ".wav")

# --- sources ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Package:
    """Where a package keeps its music: ``root`` (a folder in the .deb) or, with ``zip``,
    the zip file ``root/zip``; ``members`` are the globs (relative to root, or to the zip)
    of what is extracted (audio files only when a rule labels them); ``licence`` is that
    of its music per usr/share/doc/<pkg>/copyright (a rule can override it); ``docs`` are
    credit files copied next to the music."""

    licence: str
    root: str
    members: tuple[str, ...] = ("*",)
    zip: str | None = None
    docs: tuple[str, ...] = ()


KENTA_CHO = "BSD-2-clause"
PACKAGES: dict[str, Package] = {
    "wesnoth-1.16-music": Package("GPL-2+", "usr/share/games/wesnoth/1.16/data/core/music"),
    "megaglest-data": Package(
        "CC-BY-SA-3.0",
        "usr/share/games/megaglest/techs/megapack/factions",
        members=("*/music/*",),
        docs=("usr/share/games/megaglest/docs/AUTHORS.data.txt",),
    ),
    "freedink-data": Package(
        "see README-REPLACEMENTS",
        "usr/share/games/dink/dink/Sound",
        members=("1.ogg", "106.ogg", "denube.ogg"),
        docs=("usr/share/doc/freedink-data/README-REPLACEMENTS.txt.gz",),
    ),
    "naev-data": Package(
        "see SOUND_LICENSE.yaml",
        "usr/share/naev/dat/snd/music",
        docs=("usr/share/naev/dat/snd/SOUND_LICENSE.yaml",),
    ),
    "openclonk-data": Package("CC-BY-3.0 or CC0-1.0", "usr/share/games/openclonk/Music.ocg"),
    "supertux-data": Package("GPL-2+", "usr/share/games/supertux2/music"),
    "supertuxkart-data": Package("CC-BY-SA-3.0", "usr/share/games/supertuxkart/data/music"),
    "widelands-data": Package("GPL-2+", "usr/share/games/widelands/data/music"),
    "hedgewars-data": Package("GPL-2", "usr/share/games/hedgewars/Data/Music"),
    "marsshooter-data": Package(
        "CC-BY-SA-3.0",
        "usr/share/games/marsshooter/audio",
        members=("menu.ogg", "tutorial.ogg", "music/*"),
    ),
    "nexuiz-music": Package(
        "GPL-2+", "usr/share/games/nexuiz/data", zip="music.pk3", members=("sound/cdtracks/*",)
    ),
    "singularity-music": Package("CC-BY-SA-3.0", "usr/share/games/singularity/music"),
    "freedroidrpg-data": Package("GPL-2+", "usr/share/freedroidrpg/data/sound/music"),
    "starfighter-data": Package("GPL-2+", "usr/share/starfighter/music"),
    "0ad-data": Package(
        "CC-BY-SA-3.0",
        "usr/share/games/0ad/mods/public",
        zip="public.zip",
        members=(
            "audio/music/*",
            "audio/LICENSE.txt",
            "simulation/data/civs/*.json",
            "gui/credits/texts/audio.json",
        ),
    ),
    "parsec47-data": Package(KENTA_CHO, "usr/share/games/parsec47/sounds", members=("ptn*",)),
    "noiz2sa-data": Package(KENTA_CHO, "usr/share/games/noiz2sa/sounds", members=("stg*.ogg",)),
    "rrootage-data": Package(KENTA_CHO, "usr/share/games/rrootage/sounds", members=("stg_*",)),
    "torus-trooper-data": Package(KENTA_CHO, "usr/share/games/torus-trooper/sounds/musics"),
    "titanion-data": Package(KENTA_CHO, "usr/share/games/titanion/sounds/musics"),
    "gunroar-data": Package(KENTA_CHO, "usr/share/games/gunroar/sounds/musics"),
    "mu-cade-data": Package(KENTA_CHO, "usr/share/games/mu-cade/sounds/musics"),
    "tumiki-fighters-data": Package(
        KENTA_CHO, "usr/share/games/tumiki-fighters/sounds", members=("*.ogg",)
    ),
}

# --- labels -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """Files of ``package`` whose path (relative to its music root) matches ``glob`` get
    ``style`` (None: excluded) and ``group`` (composer, or album/source when unknown)."""

    package: str
    glob: str
    style: str | None
    group: str
    evidence: str
    licence: str | None = None


def each(
    package: str,
    style: str | None,
    group: str,
    evidence: str,
    *globs: str,
    licence: str | None = None,
) -> list[Rule]:
    """One rule per glob, sharing everything else."""
    return [Rule(package, g, style, group, evidence, licence) for g in globs]


ORCH, ELEC, ROCK = "orchestral", "electronic", "rock_metal"
AMB, CELT, WORLD = "ambient", "celtic_folk", "world"
WES, GLEST, DINK, NAEV = "wesnoth-1.16-music", "megaglest-data", "freedink-data", "naev-data"
CLONK, TUX, STK, WL = "openclonk-data", "supertux-data", "supertuxkart-data", "widelands-data"
HEDGE, NEX, SING, OAD = "hedgewars-data", "nexuiz-music", "singularity-music", "0ad-data"
WES_TAG = "GENRE tag 'Romantic Classical' (The Battle for Wesnoth OST); ARTIST tag"
K_PONE = "K-Pone (Martin Strohmeier)"
OAD_GROUP = "0 A.D. (Omri Lahav et al.)"
OAD_CELT = "0 A.D. plays it for its Celtic civs (civs/brit.json, civs/gaul.json)"
OAD_WORLD = (
    "0 A.D. plays it for its Egyptian, Kushite, Persian, Mauryan, Han, Seleucid or "
    "Carthaginian civs (civs/*.json)"
)
KENTA = "Kenta Cho"
KENTA_EV = "Kenta Cho's shmup soundtracks: loop-based techno made with ACID (file comments)"
ELYSIS = "electronic producer elysis (ARTIST/ALBUM tags: elysis.de, loopnet.de)"

# One row a rule (fmt: off keeps the table layout): each(package, style, group, evidence,
# *globs) gives one rule per glob; Rule(package, glob, style, group, evidence[, licence]).
# fmt: off
RULES: list[Rule] = [
    # -- orchestral / classical ------------------------------------------------------------
    Rule(WES, "frantic-old.ogg", None, "", "older version of frantic.ogg, GENRE tag 'Game'"),
    *each(WES, ORCH, "Doug Kaufman", WES_TAG, "battle-epic.ogg", "elvish-theme.ogg",
          "heroes_rite.ogg", "siege_of_laurelmor.ogg", "the_city_falls.ogg",
          "weight_of_revenge.ogg"),
    *each(WES, ORCH, "Aleksi Aubry-Carlson", WES_TAG, "battle.ogg", "elf-land.ogg",
          "main_menu.ogg", "transience.ogg", "underground.ogg"),
    *each(WES, ORCH, "Mattias Westlund", WES_TAG, "breaking_the_chains.ogg", "journeys_end.ogg",
          "legends_of_the_north.ogg", "northern_mountains.ogg", "return_to_wesnoth.ogg",
          "silvan_sanctuary.ogg", "the_king_is_dead.ogg", "traveling_minstrels.ogg"),
    *each(WES, ORCH, "Tyler Johnson", WES_TAG, "casualties_of_war.ogg", "into_the_shadows.ogg",
          "sad.ogg"),
    *each(WES, ORCH, "Stephen Rozanc", WES_TAG, "frantic.ogg", "northerners.ogg"),
    *each(WES, ORCH, "Ryan Reilly", WES_TAG, "knalgan_theme.ogg", "love_theme.ogg", "suspense.ogg"),
    *each(WES, ORCH, "Timothy Pinkham", WES_TAG, "knolls.ogg", "wanderer.ogg"),
    *each(WES, ORCH, "Joseph G. Toscano", WES_TAG, "loyalists.ogg", "revelation.ogg"),
    *each(WES, ORCH, "Jeremy Nicoll", WES_TAG, "nunc_dimittis.ogg", "vengeful.ogg"),
    *each(WES, ORCH, "Gianmarco Leone", WES_TAG, "the_dangerous_symphony.ogg", "the_deep_path.ogg"),
    Rule(GLEST, "romans/music/romans.ogg", ORCH, "Mattias Westlund",
         "GENRE tag 'Classical'; AUTHORS.data.txt: from Westlund's album Chronicles III"),
    Rule(DINK, "1.ogg", ORCH, "John Michel (cello)",
         "classical recording: Gounod/Bach Ave Maria, cello (README-REPLACEMENTS)",
         licence="CC-BY-SA-3.0"),
    Rule(DINK, "106.ogg", ORCH, "Fulda Symphonic Orchestra",
         "classical recording: Mendelssohn violin concerto op. 64 (README-REPLACEMENTS)",
         licence="EFF-OAL-1.0"),
    Rule(DINK, "denube.ogg", ORCH, "Rytmi-Pojat orchestra (1936)",
         "classical recording: J. Strauss II, Blue Danube (README-REPLACEMENTS)",
         licence="public-domain"),
    *each(NAEV, ORCH, "Matthew Pablo", "orchestral OpenGameArt composer (SOUND_LICENSE.yaml)",
          "blackmoor_tides.ogg", "imminent_threat.ogg", licence="CC-BY-3.0"),
    Rule(NAEV, "pirates_orchestra.ogg", ORCH, "Dizzy Crow", "title (SOUND_LICENSE.yaml)",
         licence="CC0-1.0"),
    Rule(CLONK, "UrbanBolero.ogg", ORCH, K_PONE, "GENRE tag 'Orchestral'"),
    Rule(TUX, "antarctic/airship_remix.ogg", ORCH, "Bart Kelsey",
         "TITLE tag 'Airship Song Orchestral Mix'"),
    Rule(WL, "ingame_18.ogg", ORCH, "widelands-data (unattributed)",
         "TITLE tag 'orchestralsample'"),
    # -- electronic ------------------------------------------------------------------------
    *each(NEX, ELEC, "elysis (Gerd Raudenbusch)", ELYSIS, *(f"sound/cdtracks/{n}.ogg" for n in (
          "brainsukker", "breakdown-easy", "calling-bogus", "chaos-fog", "infight",
          "neuronal-diving", "subcities", "thru-the-mirror"))),
    *each(NEX, ELEC, "blkrbt", "Nexuiz electronic soundtrack (ARTIST tag blkrbt)",
          *(f"sound/cdtracks/{n}.ogg" for n in ("brokenlight", "desert3", "ninesix",
          "sixtyfour_", "sixtyfour_revisited", "stairs"))),
    Rule(NEX, "sound/cdtracks/digital-pursuit.ogg", ELEC, "Parapraxis", "GENRE tag 'Electronic'"),
    Rule(NEX, "sound/cdtracks/thunder.ogg", None, "", "a thunder sound effect"),
    Rule("parsec47-data", "ptn*.ogg", ELEC, KENTA, KENTA_EV),
    Rule("noiz2sa-data", "stg*.ogg", ELEC, KENTA, KENTA_EV),
    Rule("rrootage-data", "stg_*.ogg", ELEC, KENTA, KENTA_EV),
    Rule("torus-trooper-data", "tt*.ogg", ELEC, KENTA, KENTA_EV),
    Rule("titanion-data", "ttn*.ogg", ELEC, KENTA, KENTA_EV),
    Rule("gunroar-data", "gr*.ogg", ELEC, KENTA, KENTA_EV),
    Rule("mu-cade-data", "mcd*.ogg", ELEC, KENTA, KENTA_EV),
    Rule("tumiki-fighters-data", "*.ogg", ELEC, KENTA, KENTA_EV),
    *each(SING, None, "", "short win / lose jingles", "lose/*", "win/*"),
    Rule(SING, "*.ogg", ELEC, "Maxstack",
         "tracker-made electronic soundtrack (README: Psycle and Renoise sources)"),
    *each(STK, ELEC, "DJ Helium", "GENRE tag 'Electronic' (valley.ogg)", "valley.ogg",
          "garden.ogg"),
    Rule(STK, "SkyVibe-HighFrequency.ogg", ELEC, "Speedsound",
         "GENRE tag 'Psychedelic' (psytrance, album Friendship Vol.01)"),
    Rule(CLONK, "@CrushedIceCocktail.ogg", ELEC, K_PONE, "GENRE tag 'House'"),
    *each(NAEV, ELEC, "Askyel", "GENRE tag 'Electronic' (Naev Soundtrack)", "eureka.ogg",
          "terminal.ogg", licence="CC-BY-SA-3.0"),
    Rule("freedroidrpg-data", "temple.ogg", ELEC, "Arvid Picciani", "GENRE tag 'dnb'"),
    Rule("starfighter-data", "sound_and_silence.ogg", ELEC, "JunglistMilitia",
         "drum and bass artist (ARTIST tag JunglistMilitia)"),
    # -- rock / metal ----------------------------------------------------------------------
    *each("marsshooter-data", ROCK, "Obsidian Shell",
          "GENRE tag 'Female Fronted Metal' (albums Elysia, Angelic Asylum)",
          "menu.ogg", "tutorial.ogg", "music/*.ogg"),
    *each(WL, ROCK, "MiddleFinger", "GENRE tag 'Thrash Metal'", "ingame_15.ogg",
          "ingame_16.ogg", "ingame_17.ogg"),
    *each(CLONK, ROCK, K_PONE, "GENRE tag 'Rock'", "Motorway.ogg", "TheSkylands.ogg"),
    Rule(HEDGE, "Rock.ogg", ROCK, "HSR (elhombresinremedio)",
         "title 'Rock', played on the Stage and Hoggywood (concert) themes; credits.txt"),
    Rule(NAEV, "combat3.ogg", ROCK, "Askyel", "TITLE tag \"Eridani's Rock\"",
         licence="CC-BY-SA-3.0"),
    # -- ambient ---------------------------------------------------------------------------
    *each(NAEV, AMB, "Nikola Whallon", "file name ambient* (SOUND_LICENSE.yaml)",
          "ambient1.ogg", "ambient2.ogg", "ambient2_5.ogg", "ambient3.ogg",
          licence="GPL-3 or CC-BY-3.0"),
    Rule(NAEV, "ambient4.ogg", AMB, "Askyel", "file name ambient4", licence="CC-BY-SA-3.0"),
    Rule(NAEV, "ambiphonic.ogg", AMB, "Zeropage", "ALBUM tag 'Ambient Pills'",
         licence="CC-BY-3.0"),
    Rule(NAEV, "void_sensor.ogg", None, "Zeropage",
         "ALBUM 'Ambient Pills' but a steady-beat cut (percussive share 0.41): unclear"),
    Rule(CLONK, "LucidDream.ogg", AMB, K_PONE, "GENRE tag 'Ambient'"),
    Rule("freedroidrpg-data", "TheBeginning.ogg", AMB, "4T Thieves",
         "GENRE tag 'ambient' (kahvi.org netlabel)"),
    Rule("freedroidrpg-data", "Ambience.ogg", AMB, "freedroidrpg-data (unattributed)",
         "file name 'Ambience'"),
    # -- celtic / folk ---------------------------------------------------------------------
    *each(OAD, CELT, OAD_GROUP, OAD_CELT, *(f"audio/music/{n}.ogg" for n in (
          "The_Fledgling_Kingdom", "Solstice_Festival", "Whistler", "As_Seasons_Change",
          "Highland_Mist", "Celtica", "Mountain_Idyll", "Albian_Nocturne", "Celtic_Pride",
          "Cisalpine_Gaul", "Harvest_Festival", "Water's_Edge", "Sunrise", "Harvest_Moon"))),
    Rule(STK, "celtic.ogg", CELT, "0zone0ne", "title 'Scottish bagpipes' (celtic.music)"),
    *each(STK, None, "", "sped-up duplicate of another track", "*_fast.ogg", "farm_f.ogg"),
    Rule(WL, "ingame_28.ogg", CELT, "Klaus Halfmann", "GENRE tag 'folk'"),
    Rule(GLEST, "norsemen/music/manolo_camp-medieval.ogg", CELT, "manolo camp",
         "medieval folk (file name; Norsemen faction music, AUTHORS.data.txt)"),
    # -- world (non-European traditional instruments and scales) ---------------------------
    *each(OAD, WORLD, OAD_GROUP, OAD_WORLD, *(f"audio/music/{n}.ogg" for n in (
          "Ammon-Ra", "Sands_of_Time", "Land_between_the_two_Seas", "Valley_of_the_Nile",
          "Along_the_Nile", "Bandit_Country", "Mirage", "Point_of_No_Return",
          "Eastern_Dreams", "Karmic_Confluence", "Beyond_The_Indus", "Red_Dawn",
          "Hill_of_Sorrows", "Cradle_of_Civilization", "Land_Between_Rivers",
          "From_Every_Corner"))),
    *each(OAD, WORLD, OAD_GROUP, "title: Japanese taiko drums", "audio/music/Taiko_1.ogg",
          "audio/music/Taiko_2.ogg"),
    Rule(GLEST, "egypt/music/*.ogg", WORLD, "Margaras", "Egypt faction music (AUTHORS.data.txt)"),
    *each(GLEST, WORLD, "Aminos", "Indian / Persian faction music (AUTHORS.data.txt)",
          "indian/music/*.ogg", "persian/music/*.ogg"),
    Rule(HEDGE, "oriental.ogg", WORLD, "Jonatan Nilsson",
         "title 'oriental', Bamboo theme (credits.txt)"),
    Rule(STK, "egypt.ogg", WORLD, "0zone0ne", "title 'Egypt' (egypt.music)"),
]
# fmt: on


@dataclass(frozen=True)
class DatasetSpec:
    """A cut of the labelled tracks: at most ``max_per_group`` tracks of one group in one
    style (a seeded choice), then only styles with ``min_groups`` groups or more."""

    description: str
    max_per_group: int | None = None
    min_groups: int = 1


DATASETS: dict[str, DatasetSpec] = {
    "styles": DatasetSpec("every labelled track: 6 styles, composer/source as group"),
    "multisource": DatasetSpec(
        "at most 10 tracks per group and style, styles with 4+ groups only",
        max_per_group=10,
        min_groups=4,
    ),
}

# --- download and extraction ------------------------------------------------------------


def _deb_in(downloads: Path, package: str) -> Path | None:
    found = sorted(downloads.glob(f"{package}_*.deb"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def download(package: str, downloads: Path) -> Path:
    """The package's .deb in ``downloads``: reused when there, else ``apt-get download``."""
    deb = _deb_in(downloads, package)
    if deb is None:
        downloads.mkdir(parents=True, exist_ok=True)
        print(f"  apt-get download {package}", flush=True)
        subprocess.run(
            ["apt-get", "download", package],
            cwd=downloads,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deb = _deb_in(downloads, package)
    if deb is None:
        raise RuntimeError(f"apt-get download {package} left no {package}_*.deb")
    return deb


def _matches(rel: str, globs: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(rel, g) for g in globs)


def _write(stream, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "wb") as f:
        shutil.copyfileobj(stream, f, 1 << 20)


def _deb_members(deb: Path, wanted) -> None:
    """Stream the .deb's files through ``wanted(path) -> target | None``."""
    proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
        for member in tar:
            target = wanted(member.name.removeprefix("./")) if member.isfile() else None
            if target is not None:
                _write(tar.extractfile(member), target)
    if proc.wait() != 0:
        raise RuntimeError(f"dpkg-deb failed on {deb}")


def _keep(package: str, rel: str, globs: tuple[str, ...]) -> bool:
    """Extract ``rel``: it matches the package's members, and audio only when a rule
    labels it."""
    if not _matches(rel, globs):
        return False
    if Path(rel).suffix.lower() not in AUDIO_SUFFIXES:
        return True
    rule = rule_for(package, rel)
    return rule is not None and rule.style is not None


def extract(package: str, deb: Path, dest: Path) -> None:
    """The package's labelled music (and credit files) into ``dest``; skipped when done
    before with the same .deb, package spec and rules."""
    spec = PACKAGES[package]
    marker = dest / ".extracted"
    stamp = f"{deb.name} {spec!r} {[r for r in RULES if r.package == package]!r}"
    if marker.exists() and marker.read_text() == stamp:
        return
    shutil.rmtree(dest, ignore_errors=True)
    print(f"  extracting {deb.name}", flush=True)
    docs = {f"usr/share/doc/{package}/copyright", *spec.docs}
    zip_path = dest / "_zip" / spec.zip if spec.zip else None

    def wanted(name: str) -> Path | None:
        if name in docs:
            return dest / "_doc" / Path(name).name
        rel = name.removeprefix(spec.root + "/")
        if rel == name:
            return None
        if spec.zip:
            return zip_path if rel == spec.zip else None
        return dest / rel if _keep(package, rel, spec.members) else None

    _deb_members(deb, wanted)
    if zip_path is not None:
        with zipfile.ZipFile(zip_path) as z:
            for info in z.infolist():
                if not info.is_dir() and _keep(package, info.filename, spec.members):
                    with z.open(info) as stream:
                        _write(stream, dest / info.filename)
        shutil.rmtree(zip_path.parent)
    marker.write_text(stamp)


# --- selection ----------------------------------------------------------------------------


@dataclass
class Track:
    package: str
    rel: str
    source: Path
    style: str
    group: str
    evidence: str
    licence: str
    duration: float = 0.0
    title: str = ""
    artist: str = ""
    fold: int = -1
    name: str = field(default="", repr=False)


def rule_for(package: str, rel: str) -> Rule | None:
    return next(
        (r for r in RULES if r.package == package and fnmatch.fnmatchcase(rel, r.glob)), None
    )


def link_name(package: str, rel: str) -> str:
    """A unique, shell-friendly file name: <source>__<path>."""
    short = re.sub(r"-(data|music)$", "", package).replace("-1.16", "")
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", rel.replace("/", "_")).strip("_")
    return f"{short}__{stem}"


def _sha1(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _describe(track: Track) -> None:
    with sf.SoundFile(str(track.source)) as f:
        track.duration = f.frames / f.samplerate
        track.title = (f.title or "").strip()
        track.artist = (f.artist or "").strip()


def collect(extract_dir: Path) -> tuple[list[Track], Counter]:
    """Every labelled track (sorted by package, path), and a tally of what was left out."""
    tracks, skipped, seen = [], Counter(), set()
    for package in sorted(PACKAGES):
        root = extract_dir / package
        for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES):
            rel = path.relative_to(root).as_posix()
            rule = rule_for(package, rel)
            if rule is None or rule.style is None:
                skipped["no rule" if rule is None else "excluded by a rule"] += 1
                continue
            digest = _sha1(path)
            if digest in seen:
                skipped["duplicate file"] += 1
                continue
            seen.add(digest)
            licence = rule.licence or PACKAGES[package].licence
            track = Track(package, rel, path, rule.style, rule.group, rule.evidence, licence)
            _describe(track)
            if track.duration < MIN_SECONDS:
                skipped[f"shorter than {MIN_SECONDS:.0f} s"] += 1
                continue
            track.name = link_name(package, rel)
            tracks.append(track)
    names = Counter(t.name for t in tracks)
    assert max(names.values()) == 1, [n for n, c in names.items() if c > 1]
    return tracks, skipped


def cut(tracks: list[Track], spec: DatasetSpec, seed: int) -> list[Track]:
    """The dataset's tracks (copies): capped per (group, style), then styles with enough
    groups."""
    by_cell: dict[tuple[str, str], list[Track]] = defaultdict(list)
    for t in tracks:
        by_cell[(t.group, t.style)].append(t)
    kept = []
    rng = random.Random(seed)
    for key in sorted(by_cell):
        cell = by_cell[key]
        if spec.max_per_group is not None and len(cell) > spec.max_per_group:
            cell = rng.sample(cell, spec.max_per_group)
        kept += cell
    groups = defaultdict(set)
    for t in kept:
        groups[t.style].add(t.group)
    chosen = [t for t in kept if len(groups[t.style]) >= spec.min_groups]
    return sorted((replace(t) for t in chosen), key=lambda t: (t.style, t.name))


def assign_folds(tracks: list[Track], k: int, seed: int) -> None:
    """Grouped, style-stratified folds: groups, largest first (ties in seeded order), each
    go to the fold that keeps every style's share per fold most even (then the smallest
    fold)."""
    per_group: dict[str, Counter] = defaultdict(Counter)
    for t in tracks:
        per_group[t.group][t.style] += 1
    totals = Counter(t.style for t in tracks)
    order = sorted(per_group)
    random.Random(seed).shuffle(order)
    order.sort(key=lambda g: -sum(per_group[g].values()))
    counts = [Counter() for _ in range(k)]

    def cost(fold: int, group: str) -> tuple[float, int, int]:
        trial = [c + per_group[group] if i == fold else c for i, c in enumerate(counts)]
        spread = sum(statistics.pstdev(c[s] / n for c in trial) for s, n in totals.items())
        return spread, sum(trial[fold].values()), fold

    fold_of = {}
    for group in order:
        fold_of[group] = min(range(k), key=lambda f: cost(f, group))
        counts[fold_of[group]] += per_group[group]
    for t in tracks:
        t.fold = fold_of[t.group]


# --- output -------------------------------------------------------------------------------

SPLIT_OF = {0: "test", 1: "valid"}  # offset from the fold being tested


def _link(target: Path, link: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(os.path.relpath(target, link.parent))


def write_dataset(ds_dir: Path, tracks: list[Track], k: int) -> None:
    """all/, fold<k>/{train,valid,test}/ and tracks.csv under a fresh ``ds_dir``."""
    shutil.rmtree(ds_dir, ignore_errors=True)
    for t in tracks:
        _link(t.source, ds_dir / "all" / t.style / t.name)
        for fold in range(k):
            split = SPLIT_OF.get((t.fold - fold) % k, "train")
            _link(t.source, ds_dir / f"fold{fold}" / split / t.style / t.name)
    columns = [
        "path",
        "style",
        "group",
        "source_package",
        "licence",
        "duration_s",
        "fold",
        "source_file",
        "title",
        "artist",
        "evidence",
    ]
    with open(ds_dir / "tracks.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(columns)
        for t in tracks:
            w.writerow(
                [
                    f"all/{t.style}/{t.name}",
                    t.style,
                    t.group,
                    t.package,
                    t.licence,
                    f"{t.duration:.1f}",
                    t.fold,
                    t.rel,
                    t.title,
                    t.artist,
                    t.evidence,
                ]
            )


def style_table(tracks: list[Track]) -> list[str]:
    """Tracks, groups, packages and hours per style, and which are confounded."""
    lines = [
        f"{'style':<12} {'tracks':>6} {'groups':>6} {'pkgs':>4} {'hours':>5}  "
        f"{'largest group (share)':<38} note"
    ]
    for style in sorted({t.style for t in tracks}):
        ts = [t for t in tracks if t.style == style]
        groups = Counter(t.group for t in ts)
        packages = {t.package for t in ts}
        top, n_top = groups.most_common(1)[0]
        share = n_top / len(ts)
        if len(groups) == 1 or len(packages) == 1:
            note = "SINGLE-SOURCE: style = source"
        elif share > 0.5:
            note = "dominated by one group"
        else:
            note = ""
        hours = sum(t.duration for t in ts) / 3600
        lines.append(
            f"{style:<12} {len(ts):>6} {len(groups):>6} {len(packages):>4} "
            f"{hours:>5.2f}  {f'{top[:30]} ({share:.0%})':<38} {note}"
        )
    hours = sum(t.duration for t in tracks) / 3600
    n_groups = len({t.group for t in tracks})
    n_pkgs = len({t.package for t in tracks})
    lines.append(f"{'total':<12} {len(tracks):>6} {n_groups:>6} {n_pkgs:>4} {hours:>5.2f}")
    return lines


def fold_table(tracks: list[Track], k: int) -> list[str]:
    """Split sizes per fold and the styles a split lacks."""
    styles = sorted({t.style for t in tracks})
    lines = [f"{'fold':<4} {'train':>5} {'valid':>5} {'test':>5}  styles missing"]
    for fold in range(k):
        split_of = {f: SPLIT_OF.get((f - fold) % k, "train") for f in range(k)}
        sizes = Counter(split_of[t.fold] for t in tracks)
        missing = []
        for split in ("train", "valid", "test"):
            present = {t.style for t in tracks if split_of[t.fold] == split}
            missing += [f"{s} ({split})" for s in styles if s not in present]
        lines.append(
            f"{fold:<4} {sizes['train']:>5} {sizes['valid']:>5} {sizes['test']:>5}  "
            f"{', '.join(missing) or '-'}"
        )
    return lines


def du(path: Path) -> int:
    """Bytes in files under ``path`` (symlinks not followed)."""
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


# --- main ---------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("data/real"))
    ap.add_argument(
        "--downloads", type=Path, default=None, help="folder of the .deb files (default: OUT/_debs)"
    )
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    downloads = args.downloads or args.out / "_debs"
    extract_dir = args.out / "_extract"
    print(f"sources: {len(PACKAGES)} Debian packages", flush=True)
    for package in sorted(PACKAGES):
        extract(package, download(package, downloads), extract_dir / package)
    tracks, skipped = collect(extract_dir)
    print(
        f"labelled tracks: {len(tracks)}; left out: "
        f"{', '.join(f'{n} {why}' for why, n in sorted(skipped.items()))}"
    )
    for name, spec in DATASETS.items():
        chosen = cut(tracks, spec, args.seed)
        assign_folds(chosen, args.folds, args.seed)
        write_dataset(args.out / name, chosen, args.folds)
        lines = [
            f"dataset {name}: {spec.description}",
            f"{args.folds} grouped folds, seed {args.seed}",
            "",
            *style_table(chosen),
            "",
            *fold_table(chosen, args.folds),
        ]
        (args.out / name / "summary.txt").write_text("\n".join(lines) + "\n")
        print("\n" + "\n".join(lines))
    print(
        f"\ndisk: {du(extract_dir) / 1e6:.0f} MB extracted music, "
        f"{du(downloads) / 1e6:.0f} MB of .deb files in {downloads}"
    )
    print(f"done in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
