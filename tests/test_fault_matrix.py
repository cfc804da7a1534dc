"""Every command that writes, under every fault a user meets: Ctrl-C and SIGTERM to the
whole process group (as a terminal sends them), kill -9, a read-only --out, a full disk
and a missing input. Each ends with its documented exit code and one line, and leaves
nothing half-written behind; after a signal, rerunning the same command completes.

The signals land while a temporary file exists (a write is being flushed, or a shard is
being filled), held there by tests/fault_site/sitecustomize.py in the child processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import ROOT, fault_env, fill, tiny_args
from typer.testing import CliRunner

from cli import app
from pipeline.atomic import is_temp
from pipeline.synth import folder as folder_synth

runner = CliRunner()
CPU = ("--device", "cpu", "--no-progress")
TINY = (*tiny_args(crop_seconds=0.5, workers=2), *CPU)
COMMANDS = ("preprocess", "train", "evaluate", "embed", "export", "compare")


@dataclass
class World:
    audio: Path
    cache: Path
    run: Path
    reports: tuple[Path, Path]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    """A folder dataset, its cache, a tiny run and two reports (two seeds) to compare."""
    tmp = tmp_path_factory.mktemp("world")
    folder_synth.generate(tmp / "audio", n_per_label=6, seconds=1.0)
    r = runner.invoke(app, argv("preprocess", None, tmp / "cache", audio=tmp / "audio"))
    assert r.exit_code == 0, r.output
    reports = []
    for seed in (0, 1):
        run = tmp / f"run{seed}"
        r = runner.invoke(
            app,
            ["train", "--cache", str(tmp / "cache"), "--out", str(run), *TINY, "--seed", str(seed)],
        )
        assert r.exit_code == 0, r.output
        reports.append(tmp / f"report{seed}")
        r = runner.invoke(
            app,
            [
                "evaluate",
                "--checkpoint",
                str(run / "best.pt"),
                "--cache",
                str(tmp / "cache"),
                "--out",
                str(reports[-1]),
                *CPU,
            ],
        )
        assert r.exit_code == 0, r.output
    return World(tmp / "audio", tmp / "cache", tmp / "run0", tuple(reports))


def argv(
    command: str, w: World | None, out: Path, audio: Path | None = None, missing: Path | None = None
) -> list[str]:
    """The command writing into ``out``; ``missing``: its input replaced by that path."""

    def given(path: Path) -> str:
        return str(missing or path)

    if command == "preprocess":
        return [
            "preprocess",
            "--dataset",
            "folder",
            "--audio-dir",
            given(audio or w.audio),
            "--out",
            str(out),
            "--min-seconds",
            "0.1",
            "--jobs",
            "2",
            "--no-progress",
        ]
    if command == "train":
        return ["train", "--cache", given(w.cache), "--out", str(out), *TINY]
    checkpoint = given(w.run / "best.pt")
    if command == "evaluate":
        return [
            "evaluate",
            "--checkpoint",
            checkpoint,
            "--cache",
            str(w.cache),
            "--out",
            str(out),
            *CPU,
        ]
    if command == "embed":
        return [
            "embed",
            "--checkpoint",
            checkpoint,
            "--cache",
            str(w.cache),
            "--out",
            str(out),
            *CPU,
        ]
    if command == "export":
        return ["export", "--checkpoint", checkpoint, "--out", str(out / "model.onnx")]
    return ["compare", str(w.reports[0]), given(w.reports[1]), "--out", str(out)]


def complete(command: str, out: Path) -> bool:
    """The command's result is there and marked complete."""
    marker = (
        out
        / {
            "preprocess": "manifest.json",
            "train": "last.pt",
            "evaluate": "report.json",
            "embed": "index.csv",
            "export": "model.onnx",
            "compare": "compare.csv",
        }[command]
    )
    if command == "preprocess":
        return marker.is_file() and json.loads(marker.read_text())["status"] == "complete"
    return marker.is_file()


def temps(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if is_temp(p.name)] if folder.exists() else []


def errors(text: str) -> list[str]:
    """The lines a user reads as the outcome (progress and notes aside)."""
    return [ln for ln in text.splitlines() if ln.startswith(("error:", "interrupted:"))]


# ---------------------------------------------------------------- signals


SIGNALS = {
    "ctrl-c": (signal.SIGINT, 130),
    "sigterm": (signal.SIGTERM, 143),
    "kill -9": (signal.SIGKILL, -signal.SIGKILL),
}


@pytest.mark.parametrize("fault", list(SIGNALS))
@pytest.mark.parametrize("command", COMMANDS)
def test_signal_to_the_process_group(world, tmp_path, command, fault):
    sig, code = SIGNALS[fault]
    out, mark = tmp_path / "out", tmp_path / "held"
    point = "shard" if command == "preprocess" else "fsync"
    env = {**fault_env(hold=f"{point}:{mark}"), "OMP_NUM_THREADS": "1"}
    p = subprocess.Popen(
        [sys.executable, str(ROOT / "cli.py"), *argv(command, world, out)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 120
        while not mark.exists():
            assert p.poll() is None, p.communicate()
            assert time.time() < deadline, "the hold point was never reached"
            time.sleep(0.05)
        assert temps(out), "a signal should land while a temporary file exists"
        os.killpg(p.pid, sig)
        stdout, stderr = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    assert p.returncode == code, stderr
    assert "Traceback" not in stderr, stderr
    time.sleep(0.5)  # loky workers notice their run's death
    if sig != signal.SIGKILL:
        shown = errors(stderr)
        assert len(shown) == 1 and shown[0].startswith("interrupted: "), stderr
        assert temps(out) == []  # nothing half-written stays
        resume = "--resume" in shown[0]
    else:
        resume = (out / "last.pt").exists()
    assert not complete(command, out) or command == "train"
    r = runner.invoke(app, argv(command, world, out) + (["--resume"] if resume else []))
    assert r.exit_code == 0, r.output
    assert complete(command, out) and temps(out) == [], temps(out)


# ---------------------------------------------------------------- the file system


def test_preprocess_workers_leave_ctrl_c_to_the_main_process(world, tmp_path):
    """Ctrl-C reaches the whole process group: a worker still importing its modules would
    print a KeyboardInterrupt traceback of its own (seen under load). Workers start with
    SIGINT blocked; the main process stops the run and terminates them."""
    out, mark = tmp_path / "out", tmp_path / "held"
    env = {**fault_env(hold=f"shard:{mark}"), "OMP_NUM_THREADS": "1"}
    p = subprocess.Popen(
        [sys.executable, str(ROOT / "cli.py"), *argv("preprocess", world, out)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 120
        while not mark.exists():
            assert p.poll() is None and time.time() < deadline
            time.sleep(0.05)
        blocked = {}
        for status in Path("/proc").glob("[0-9]*/status"):
            try:
                fields = dict(ln.split(":\t", 1) for ln in status.read_text().splitlines())
            except (OSError, ValueError):
                continue  # a process that ended meanwhile
            if (
                int(fields.get("PPid", "0")) == p.pid
                and "popen_loky_posix" in (status.parent / "cmdline").read_text()
            ):
                blocked[status.parent.name] = int(fields["SigBlk"], 16) >> (signal.SIGINT - 1) & 1
        assert blocked and all(blocked.values()), blocked
    finally:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()


@pytest.fixture
def read_only(tmp_path) -> Path:
    """A real read-only file system (a tmpfs mounted ro; root can write everywhere else)."""
    mnt = tmp_path / "ro"
    mnt.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


@pytest.mark.parametrize("command", COMMANDS)
def test_read_only_out(world, read_only, command):
    out = read_only / "out"
    r = runner.invoke(app, argv(command, world, out))
    shown = errors(r.output)
    assert r.exit_code == 2 and len(shown) == 1 and "Traceback" not in r.output, r.output
    assert "Read-only file system" in shown[0] or "read-only" in shown[0], shown[0]
    assert not out.exists()


@pytest.mark.parametrize("command", COMMANDS)
def test_full_disk(world, small_disk, command):
    out = small_disk / "out"
    filler = fill(small_disk, leave=4096)
    r = runner.invoke(app, argv(command, world, out))
    shown = errors(r.output)
    assert r.exit_code == 2 and len(shown) == 1 and "Traceback" not in r.output, r.output
    assert "no space left on device" in shown[0] and "free space and" in shown[0], shown[0]
    assert temps(small_disk) == [] and not complete(command, out)
    filler.unlink()  # space freed: the same command completes
    r = runner.invoke(
        app,
        argv(command, world, out)
        + (["--resume"] if (command == "train" and (out / "last.pt").exists()) else []),
    )
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize("command", COMMANDS)
def test_missing_input(world, tmp_path, command):
    out = tmp_path / "out"
    r = runner.invoke(app, argv(command, world, out, missing=tmp_path / "nowhere"))
    shown = errors(r.output)
    assert r.exit_code == 2 and len(shown) == 1 and "Traceback" not in r.output, r.output
    assert str(tmp_path / "nowhere") in shown[0] and "not exist" in shown[0], shown[0]
    assert not out.exists()
