"""Faults a user meets around `mrnet preprocess` and `mrnet verify`, reproduced as they
happen: kill -9 and SIGTERM of the real process, a real full disk (tmpfs), truncated and
damaged metadata, corrupted shards, a reader during a rerun. Each asks what the user
sees afterwards and whether any result is silently wrong."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile
from helpers import ROOT, args, cache_content, cli_train, fault_env, fill, one_line_error
from typer.testing import CliRunner

from cli import app
from pipeline.cache.shards import read_shard
from pipeline.sources import fma

runner = CliRunner()
SAME = ("--jobs", "2", "--shard-size", "8")  # the arguments of conftest's `cache`


def error_line(output: str, *words: str) -> str:
    lines = [ln for ln in output.splitlines() if ln.strip() and not ln.startswith("preprocess:")]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in output, output
    for w in words:
        assert w in errors[0], (w, errors[0])
    return errors[0]


def popen_preprocess(synth, out: Path, *extra: str, env: dict | None = None, **kw):
    return subprocess.Popen(
        [sys.executable, str(ROOT / "cli.py"), *args(synth, out, *extra)],
        cwd=ROOT,
        env=env or dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def children(pid: int) -> list[int]:
    """Live child processes of ``pid`` (zombies count as gone)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == pid and stat[0] != "Z":
                found.append(int(entry))
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return stat[0] != "Z"


def shard_files(out: Path) -> set[str]:
    return {p.name for p in (out / "shards").iterdir()} if (out / "shards").is_dir() else set()


# ---------------------------------------------------------------- 8. a run that dies


@pytest.mark.parametrize("delete_cache", [False, True], ids=["kept", "deleted after the kill"])
def test_kill_9_stops_the_workers_and_they_write_nothing(synth, tmp_path, delete_cache):
    out = tmp_path / "c"
    p = popen_preprocess(synth, out, *SAME, env=fault_env(track_delay="0.25"))
    try:
        deadline = time.time() + 60
        while len([n for n in shard_files(out) if n.endswith(".h5")]) < 1:
            assert p.poll() is None and time.time() < deadline, p.communicate()
            time.sleep(0.02)
        workers = children(p.pid)
        assert len(workers) >= 2, workers  # loky workers (and resource trackers)
        p.send_signal(signal.SIGKILL)
        p.wait()
        if delete_cache:
            shutil.rmtree(out)
        before = {n for n in shard_files(out) if n.endswith(".h5")}
        died = time.time()
        while any(alive(w) for w in workers):
            assert time.time() - died < 5.0, "workers outlived their run by 5 s"
            time.sleep(0.05)
        time.sleep(3.0)  # a worker that went on would have finished a shard by now
        assert shard_files(out) == before  # no new shard, and no temporary file left
        assert out.exists() != delete_cache
    finally:
        if p.poll() is None:
            p.kill()
    if not delete_cache:
        r = runner.invoke(app, args(synth, out, *SAME))
        assert r.exit_code == 0 and "resuming" in r.output, r.output


def test_sigterm_is_handled_like_ctrl_c(synth, cache, tmp_path):
    out = tmp_path / "c"
    p = popen_preprocess(synth, out, *SAME, env=fault_env(track_delay="0.25"))
    deadline = time.time() + 60
    while not any(n.endswith(".h5") for n in shard_files(out)):
        assert p.poll() is None and time.time() < deadline, p.communicate()
        time.sleep(0.02)
    workers = children(p.pid)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=30)
    assert p.returncode == 143, err
    assert "interrupted" in err and "rerun the same command to resume" in err
    assert "Traceback" not in err
    time.sleep(2.0)
    assert not any(alive(w) for w in workers)
    r = runner.invoke(app, args(synth, out, *SAME))
    assert r.exit_code == 0 and "resuming" in r.output, r.output
    assert cache_content(out) == cache_content(cache)


# ---------------------------------------------------------------- 9. a full disk


def test_disk_full_mid_run_then_rerun_completes(synth, cache, small_disk):
    out = small_disk / "cache"
    r = runner.invoke(app, args(synth, out, *SAME))  # the cache needs ~2 MiB of 1 MiB
    line = error_line(r.output, "no space left on device writing", "free space and rerun")
    assert r.exit_code == 2 and str(small_disk) in line
    subprocess.run(["mount", "-o", "remount,size=16m", str(small_disk)], check=True)
    r = runner.invoke(app, args(synth, out, *SAME))
    assert r.exit_code == 0, r.output
    assert cache_content(out) == cache_content(cache)


def test_disk_full_at_the_first_manifest_write(synth, cache, small_disk):
    out = small_disk / "cache"
    filler = fill(small_disk, leave=4096)  # a page: the lock file fits, the manifest not
    r = runner.invoke(app, args(synth, out, *SAME))
    error_line(r.output, "no space left on device writing", "manifest.json")
    assert r.exit_code == 2
    filler.unlink()
    subprocess.run(["mount", "-o", "remount,size=16m", str(small_disk)], check=True)
    (out / "manifest.json.tmp").write_bytes(b"")  # what mrnet 0.1 left in this case
    r = runner.invoke(app, args(synth, out, *SAME))  # our leftovers never block a rerun
    assert r.exit_code == 0, r.output
    assert cache_content(out) == cache_content(cache)


def test_disk_full_while_training_and_evaluating(cache, small_disk, tmp_path):
    run = small_disk / "run"
    fill(small_disk, leave=50_000)  # a checkpoint of this model is ~600 KB
    r = cli_train(cache, run, "--batch-size", "8")
    one_line_error(r, "no space left on device writing", "free space")
    assert not list(run.glob("*.tmp*")) and not (run / "last.pt").exists()
    ok = tmp_path / "run"
    assert cli_train(cache, ok, "--batch-size", "8").exit_code == 0
    (small_disk / "filler").unlink()
    fill(small_disk, leave=1000)
    r = runner.invoke(
        app,
        [
            "evaluate",
            "--checkpoint",
            str(ok / "best.pt"),
            "--cache",
            str(cache),
            "--out",
            str(small_disk / "rep"),
            "--device",
            "cpu",
        ],
    )
    assert r.exit_code == 2
    error_line(r.output, "no space left on device writing", "free space and rerun")
    # a rerun (another checkpoint) into a complete report keeps it whole on a full disk:
    # never a new report.json beside the previous run's predictions
    (small_disk / "filler").unlink()
    rep = small_disk / "rep"
    r = runner.invoke(
        app,
        [
            "evaluate",
            "--checkpoint",
            str(ok / "best.pt"),
            "--cache",
            str(cache),
            "--out",
            str(rep),
            "--device",
            "cpu",
        ],
    )
    assert r.exit_code == 0, r.output
    before = {f.name: f.read_bytes() for f in rep.iterdir()}
    fill(small_disk, leave=20_000)  # the CSVs and report.json fit, the figure (~30 KB) not
    r = runner.invoke(
        app,
        [
            "evaluate",
            "--checkpoint",
            str(ok / "last.pt"),
            "--cache",
            str(cache),
            "--out",
            str(rep),
            "--device",
            "cpu",
        ],
    )
    assert r.exit_code == 2
    error_line(r.output, "no space left on device writing", "free space and rerun")
    assert {f.name: f.read_bytes() for f in rep.iterdir()} == before


# ---------------------------------------------------------------- 10. reruns and readers


def test_noop_rerun_keeps_the_cache_complete_for_readers(synth, cache, tmp_path):
    out = tmp_path / "c"
    shutil.copytree(cache, out)
    manifest = out / "manifest.json"
    stamp = manifest.stat().st_mtime_ns
    p = popen_preprocess(synth, out, *SAME)
    seen = set()
    while p.poll() is None:
        seen.add(json.loads(manifest.read_text())["status"])
    _, err = p.communicate()
    assert p.returncode == 0, err
    assert seen == {"complete"} and "nothing to do" in err
    assert manifest.stat().st_mtime_ns == stamp


# ---------------------------------------------------------------- 1. non-finite audio


def test_track_with_nan_samples_is_a_non_finite_failure(synth, tmp_path):
    audio = tmp_path / "audio"
    shutil.copytree(synth.audio_dir, audio)
    tid = synth.ids("small", healthy=True)[2]
    x = np.random.default_rng(0).standard_normal((4 * 44100, 2)).astype(np.float32) * 0.1
    x[1000:1100] = np.nan
    soundfile.write(fma.audio_path(audio, tid), x, 44100, format="WAV", subtype="FLOAT")
    argv = args(synth, tmp_path / "c", *SAME)
    argv[argv.index("--audio-dir") + 1] = str(audio)
    r = runner.invoke(app, argv)
    assert r.exit_code == 0, r.output
    fails = pd.read_csv(tmp_path / "c" / "failures.csv").set_index("track_id")
    assert fails.loc[tid, "reason"] == "non_finite"
    assert tid not in set(pd.read_csv(tmp_path / "c" / "tracks.csv")["track_id"])
    r = runner.invoke(app, ["verify", str(tmp_path / "c"), "--no-progress"])
    assert r.exit_code == 0 and "all sound" in r.output, r.output


# ---------------------------------------------------------------- 4. damaged metadata


def metadata_copy(synth, tmp_path: Path) -> Path:
    meta = tmp_path / "meta"
    shutil.copytree(synth.metadata_dir, meta)
    return meta


def with_metadata(synth, out: Path, meta: Path) -> list[str]:
    argv = args(synth, out, *SAME)
    argv[argv.index("--metadata-dir") + 1] = str(meta)
    return argv


def test_tracks_csv_cut_mid_row_is_refused(synth, tmp_path):
    meta = metadata_copy(synth, tmp_path)
    data = (meta / "tracks.csv").read_bytes()
    last_row = data.rstrip(b"\n").rfind(b"\n") + 1
    (meta / "tracks.csv").write_bytes(data[: last_row + (len(data) - last_row) // 2])
    r = runner.invoke(app, with_metadata(synth, tmp_path / "c", meta))
    assert r.exit_code == 2
    error_line(r.output, "tracks.csv ends mid-row: truncated download?")
    assert not (tmp_path / "c").exists()


def test_tracks_csv_cut_inside_a_genre_name_is_refused(synth, tmp_path):
    """The cut falls in the last row's genre_top ("Folk" -> "Fol"): that row has fewer
    fields than the header, and "Fol" is no genre of genres.csv."""
    meta = metadata_copy(synth, tmp_path)
    t = pd.read_csv(meta / "tracks.csv", index_col=0, header=[0, 1])
    folk = t.index[t[("track", "genre_top")] == "Folk"][0]
    t = pd.concat([t.drop(index=folk), t.loc[[folk]]])  # the Folk track last
    t.to_csv(meta / "tracks.csv")
    data = (meta / "tracks.csv").read_bytes()
    (meta / "tracks.csv").write_bytes(data[: data.rfind(b",Folk,") + len(b",Fol")])
    r = runner.invoke(app, with_metadata(synth, tmp_path / "c", meta))
    assert r.exit_code == 2
    error_line(r.output, "ends mid-row")


def test_genre_top_unknown_to_genres_csv_is_refused(synth, tmp_path):
    meta = metadata_copy(synth, tmp_path)
    t = pd.read_csv(meta / "tracks.csv", index_col=0, header=[0, 1])
    folk = t.index[t[("track", "genre_top")] == "Folk"][0]
    t.loc[folk, ("track", "genre_top")] = "Fol"
    t.to_csv(meta / "tracks.csv")
    r = runner.invoke(app, with_metadata(synth, tmp_path / "c", meta))
    assert r.exit_code == 2
    error_line(r.output, "'Fol'", "genres.csv")


# ---------------------------------------------------------------- 12. tracks without split


def test_tracks_without_a_known_split_are_counted(synth, tmp_path):
    meta = metadata_copy(synth, tmp_path)
    t = pd.read_csv(meta / "tracks.csv", index_col=0, header=[0, 1])
    small = t.index[t[("set", "subset")] == "small"]
    t.loc[small[:2], ("set", "split")] = np.nan
    t.loc[small[2:5], ("set", "split")] = "train"
    t.to_csv(meta / "tracks.csv")
    out = tmp_path / "c"
    r = runner.invoke(app, with_metadata(synth, out, meta))
    assert r.exit_code == 0, r.output
    assert "no split 5" in r.output
    m = json.loads((out / "manifest.json").read_text())
    assert m["skipped"] == {"no_genre": 0, "no_split": 5}
    assert m["summary"]["skipped"]["no_split"] == 5
    r = runner.invoke(app, ["info", str(out)])
    assert "no split 5" in r.output


# ---------------------------------------------------------------- 6. verify and repair


def flip_mel_byte(shard: Path, at: int = 1001) -> None:
    """Flip the lowest bit of one byte of `mel` in place (same size, still finite)."""
    idx = read_shard(shard)
    with open(shard, "r+b") as f:
        f.seek(idx.mel_offset + at)
        b = f.read(1)[0]
        f.seek(idx.mel_offset + at)
        f.write(bytes([b ^ 0x01]))


def test_verify_finds_flipped_bytes_and_repair_rebuilds_exactly_them(synth, cache, tmp_path):
    out = tmp_path / "c"
    shutil.copytree(cache, out)
    r = runner.invoke(app, ["verify", str(out), "--no-progress"])
    assert r.exit_code == 0 and "all sound" in r.output, r.output
    victims = sorted((out / "shards").glob("*.h5"))[1:3]
    for v in victims:
        flip_mel_byte(v)
    untouched = {
        p.name: p.stat().st_mtime_ns for p in (out / "shards").glob("*.h5") if p not in victims
    }
    r = runner.invoke(app, ["verify", str(out), "--no-progress"])
    assert r.exit_code == 2
    error_line(r.output, "2 of", "damaged", "--repair")
    for v in victims:
        assert f"shards/{v.name}: checksum mismatch" in r.output
    r = runner.invoke(app, ["verify", str(out), "--repair", "--no-progress"])
    assert r.exit_code == 0 and "deleted 2 damaged shards" in r.output, r.output
    assert not any(v.exists() for v in victims)
    r = runner.invoke(app, ["train", "--cache", str(out), "--out", str(tmp_path / "run")])
    assert r.exit_code == 2 and "unfinished" in r.output  # nothing reads it meanwhile
    r = runner.invoke(app, args(synth, out, *SAME))
    assert r.exit_code == 0 and "resuming: 6 of 8 shards" in r.output, r.output
    assert {
        p.name: p.stat().st_mtime_ns for p in (out / "shards").glob("*.h5") if p.name in untouched
    } == untouched
    assert cache_content(out) == cache_content(cache)


def test_verify_finds_non_finite_frames_in_a_shard_without_checksum(cache, tmp_path):
    """A cache of mrnet 0.1 records no checksums: verify still finds NaN frames."""
    import h5py

    out = tmp_path / "c"
    shutil.copytree(cache, out)
    shard = sorted((out / "shards").glob("*.h5"))[0]
    with h5py.File(shard, "r+") as f:
        del f.attrs["checksum"]
    m = json.loads((out / "manifest.json").read_text())
    for s in m["shards"]:
        s.pop("checksum")
    (out / "manifest.json").write_text(json.dumps(m))
    idx = read_shard(shard)
    mm = np.memmap(shard, np.float16, "r+", offset=idx.mel_offset, shape=idx.mel_shape)
    mm[10:12] = np.nan
    mm.flush()
    r = runner.invoke(app, ["verify", str(out), "--no-progress"])
    assert r.exit_code == 2 and "2 frames hold NaN or infinity" in r.output, r.output
    assert "carry no checksum" in r.output


# ---------------------------------------------------------------- 14. the warning's words


def test_fifo_and_folder_in_place_of_tracks_are_reported(synth, tmp_path):
    audio = tmp_path / "audio"
    shutil.copytree(synth.audio_dir, audio)
    fifo_id, dir_id = synth.ids("small", healthy=True)[:2]
    fma.audio_path(audio, fifo_id).unlink()
    os.mkfifo(fma.audio_path(audio, fifo_id))
    fma.audio_path(audio, dir_id).unlink()
    fma.audio_path(audio, dir_id).mkdir()
    argv = args(synth, tmp_path / "c", *SAME)
    argv[argv.index("--audio-dir") + 1] = str(audio)
    r = runner.invoke(app, argv)
    assert r.exit_code == 0, r.output
    warning = next(ln for ln in r.output.splitlines() if ln.startswith("warning:"))
    assert "2 not regular files" in warning and "recorded in failures.csv" in warning
    assert "missing" not in warning.split(";")[-1]
    fails = pd.read_csv(tmp_path / "c" / "failures.csv").set_index("track_id")["reason"]
    assert fails[fifo_id] == "empty_file" and fails[dir_id] == "undecodable"
