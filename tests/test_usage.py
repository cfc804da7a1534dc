"""Using and comparing models: embed, export (ONNX), W&B tracking, curves, compare,
--input-norm."""

from __future__ import annotations

import glob
import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import ROOT, fill
from typer.testing import CliRunner

from cli import app
from mrnet.checkpoint import load as load_checkpoint
from mrnet.checkpoint import load_model
from pipeline.cache.reader import FrameStore, open_cache, split_index
from pipeline.sources import fma

runner = CliRunner()
CPU = ("--device", "cpu", "--no-progress")


def train_args(cache: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train",
        "--cache",
        str(cache),
        "--out",
        str(out),
        "--epochs",
        "2",
        "--channels",
        "16",
        "--batch-size",
        "8",
        "--crop-seconds",
        "2",
        "--workers",
        "0",
        "--min-steps",
        "0",
        "--val-crops",
        "0",
        *CPU,
        *extra,
    ]


@pytest.fixture(scope="module")
def run(cache, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("usage") / "run"
    r = runner.invoke(app, train_args(cache, out))
    assert r.exit_code == 0, r.output
    return out


def cached_frames(cache: Path, split: str) -> tuple[np.ndarray, list[np.ndarray]]:
    index = split_index(open_cache(cache), split)
    store = FrameStore(index.shards)
    frames = [store.track(index, i) for i in range(len(index))]
    return index.track_id, frames


# ---------------------------------------------------------------- 1. embed


def embed(*argv: str):
    return runner.invoke(app, ["embed", *argv, *CPU])


def test_embed_a_cache_rows_follow_index_csv_and_repeat_exactly(run, cache, tmp_path):
    out = tmp_path / "e"
    r = embed("--checkpoint", str(run / "best.pt"), "--cache", str(cache), "--out", str(out))
    assert r.exit_code == 0, r.output
    emb = np.load(out / "embeddings.npy")
    index = pd.read_csv(out / "index.csv")
    tracks = pd.read_csv(cache / "tracks.csv")
    assert emb.dtype == np.float32 and emb.shape == (len(tracks), 128)
    assert list(index["row"]) == list(range(len(index)))
    assert sorted(index["track_id"]) == sorted(tracks["track_id"])
    assert list(index["split"].unique()) == ["training", "validation", "test"]
    genre = tracks.set_index("track_id")["genre"]
    assert (index["label"] == genre.loc[index["track_id"]].to_numpy()).all()
    # row i is the embedding of index.csv's track i
    model = load_model(load_checkpoint(run / "best.pt"))
    ids, frames = cached_frames(cache, "test")
    rows = index.set_index("track_id")["row"]
    for tid, f in zip(ids[:4], frames[:4]):
        with torch.no_grad():
            want = model.embedding(torch.from_numpy(f.astype(np.float32).T)[None])[0].numpy()
        np.testing.assert_allclose(emb[rows[tid]], want, atol=1e-5)
    again = tmp_path / "again"
    r = embed("--checkpoint", str(run / "best.pt"), "--cache", str(cache), "--out", str(again))
    assert r.exit_code == 0, r.output
    assert (again / "embeddings.npy").read_bytes() == (out / "embeddings.npy").read_bytes()
    assert (again / "index.csv").read_text() == (out / "index.csv").read_text()


def test_embed_files_equals_the_cache_and_lists_unreadable_files(run, cache, synth, tmp_path):
    ids = synth.ids("small", healthy=True)
    tracks = pd.read_csv(cache / "tracks.csv").set_index("track_id")
    ids = [t for t in ids if tracks.loc[t, "split"] == "test"][:4]
    broken = [t for t, why in synth.broken.items() if why == "undecodable"]
    files = [str(fma.audio_path(synth.audio_dir, t)) for t in ids + broken]
    e_cache, e_files = tmp_path / "c", tmp_path / "f"
    r = embed(
        "--checkpoint",
        str(run / "best.pt"),
        "--cache",
        str(cache),
        "--split",
        "test",
        "--out",
        str(e_cache),
    )
    assert r.exit_code == 0, r.output
    r = embed("--checkpoint", str(run / "best.pt"), "--out", str(e_files), *files)
    assert r.exit_code == 0, r.output
    assert "cannot read (undecodable)" in r.output and "1 unreadable" in r.output
    from_files = np.load(e_files / "embeddings.npy")
    assert list(pd.read_csv(e_files / "index.csv")["path"]) == files[:-1]
    assert list(pd.read_csv(e_files / "failures.csv")["reason"]) == ["undecodable"]
    rows = pd.read_csv(e_cache / "index.csv").set_index("track_id")["row"]
    from_cache = np.load(e_cache / "embeddings.npy")[rows.loc[ids].to_numpy()]
    np.testing.assert_allclose(from_files, from_cache, atol=1e-4)


def test_embed_refuses_bad_input_and_writes_nothing(run, cache, tmp_path):
    a_file = tmp_path / "f.txt"
    a_file.write_text("x")
    ck = str(run / "best.pt")
    cases = [
        (["--checkpoint", ck, "--cache", str(cache), "--out", str(a_file)], "is a file"),
        (["--checkpoint", ck, "--out", str(tmp_path / "o")], "pass either --cache"),
        (
            ["--checkpoint", ck, "--cache", str(cache), "--out", str(tmp_path / "o"), "x.mp3"],
            "pass either --cache",
        ),
        (
            [
                "--checkpoint",
                str(tmp_path / "no.pt"),
                "--cache",
                str(cache),
                "--out",
                str(tmp_path / "o"),
            ],
            "does not exist",
        ),
        (
            [
                "--checkpoint",
                ck,
                "--cache",
                str(tmp_path / "nocache"),
                "--out",
                str(tmp_path / "o"),
            ],
            "nocache",
        ),
        (
            ["--checkpoint", ck, "--out", str(tmp_path / "o"), str(tmp_path / "none.mp3")],
            "does not exist",
        ),
    ]
    for argv, needle in cases:
        r = embed(*argv)
        assert r.exit_code == 2 and needle in r.output, (argv, r.output)
        assert "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists() and a_file.read_text() == "x"


def test_embed_on_a_full_disk_keeps_the_previous_result(run, cache, synth, small_disk):
    """A rerun that runs out of space: one line, exit 2, the old embeddings and index
    intact (not an index beside other embeddings, not a folder without its index)."""
    out = small_disk / "emb"
    r = embed(
        "--checkpoint",
        str(run / "best.pt"),
        "--cache",
        str(cache),
        "--split",
        "test",
        "--out",
        str(out),
    )
    assert r.exit_code == 0, r.output
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    filler = fill(small_disk, leave=4096)  # the whole cache's embeddings need more
    r = embed("--checkpoint", str(run / "best.pt"), "--cache", str(cache), "--out", str(out))
    assert r.exit_code == 2 and "no space left on device" in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1 and "Traceback" not in r.output
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    filler.unlink()
    files = [str(fma.audio_path(synth.audio_dir, t)) for t in synth.ids("small", healthy=True)[:2]]
    r = embed("--checkpoint", str(run / "best.pt"), "--out", str(out), *files)
    assert r.exit_code == 0, r.output
    assert list(pd.read_csv(out / "index.csv")["path"]) == files
    assert np.load(out / "embeddings.npy").shape == (2, 128)


# ---------------------------------------------------------------- 2. export


def random_checkpoint(path: Path, **model) -> Path:
    """A checkpoint of an untrained model (random BatchNorm statistics too)."""
    from mrnet.checkpoint import Checkpoint, ModelConfig, build_model, save
    from pipeline.features import FeatureConfig

    cfg = ModelConfig(n_mels=128, n_classes=4, **{"arch": "mrnet", "channels": 16, **model})
    torch.manual_seed(0)
    net = build_model(cfg)
    for m in net.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    save(Checkpoint(cfg, FeatureConfig().to_dict(), ["a", "b", "c", "d"], net.state_dict()), path)
    return path


@pytest.mark.parametrize(
    "model",
    [{}, {"input_norm": "batch"}, {"arch": "cnn"}],
    ids=["mrnet", "mrnet-batch-norm", "cnn"],
)
def test_onnx_logits_equal_torch(tmp_path, model, run):
    import onnx
    import onnxruntime as ort

    ck = run / "best.pt" if not model else random_checkpoint(tmp_path / "m.pt", **model)
    out = tmp_path / "m.onnx"
    r = runner.invoke(app, ["export", "--checkpoint", str(ck), "--out", str(out)])
    assert r.exit_code == 0, r.output
    ckpt = load_checkpoint(ck)
    torch_model = load_model(ckpt)
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(meta["mrnet.feature_config"]) == ckpt.feature_config
    assert json.loads(meta["mrnet.labels"]) == ckpt.labels and meta["mrnet.task"] == "single"
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for batch in (1, 3):
        for frames in (300, 1500):
            x = rng.normal(-4, 3, (batch, ckpt.model_config.n_mels, frames)).astype(np.float32)
            with torch.no_grad():
                want = torch_model(torch.from_numpy(x)).numpy()
            got = session.run(["logits"], {"log_mel": x})[0]
            assert got.shape == want.shape
            np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


def test_export_refuses_bad_input(run, tmp_path):
    bad = tmp_path / "bad.pt"
    ck = torch.load(run / "best.pt", weights_only=True)
    ck["model_config"]["arch"] = "transformer"
    torch.save(ck, bad)
    for argv, needle in (
        (["--checkpoint", str(bad), "--out", str(tmp_path / "m.onnx")], "unknown arch"),
        (
            ["--checkpoint", str(tmp_path / "no.pt"), "--out", str(tmp_path / "m.onnx")],
            "does not exist",
        ),
        (["--checkpoint", str(run / "best.pt"), "--out", str(tmp_path)], "is a folder"),
    ):
        r = runner.invoke(app, ["export", *argv])
        assert r.exit_code == 2 and needle in r.output, r.output
    assert not (tmp_path / "m.onnx").exists()


def test_missing_optional_packages_name_their_extra(run, cache, tmp_path):
    """Without onnx (or wandb) installed: one line naming the extra, exit 2."""
    code = (
        "import sys; sys.modules[sys.argv[1]] = None; sys.argv = ['mrnet'] + sys.argv[2:]\n"
        "from cli import app; app()"
    )
    for module, argv, extra in (
        (
            "onnxscript",
            ["export", "--checkpoint", str(run / "best.pt"), "--out", str(tmp_path / "m.onnx")],
            "mrnet[export]",
        ),
        ("wandb", train_args(cache, tmp_path / "r", "--wandb", "p"), "mrnet[tracking]"),
    ):
        p = subprocess.run(
            [sys.executable, "-c", code, module, *argv], cwd=ROOT, capture_output=True, text=True
        )
        assert p.returncode == 2 and extra in p.stderr, p.stderr
        assert len(p.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "m.onnx").exists() and not (tmp_path / "r").exists()


# ---------------------------------------------------------------- 3./4. tracking, curves


def wandb_records(run_dir: Path) -> list:
    """The records of an offline W&B run file (LevelDB log format: 32-KiB blocks of
    chunks with a 7-byte header: CRC32, length, type FULL 1 / FIRST 2 / MIDDLE 3 / LAST 4)."""
    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = glob.glob(str(run_dir / "run-*.wandb"))
    data = Path(path).read_bytes()
    pos, out, buf = 7, [], b""  # the file starts with a 7-byte ":W&B" header
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a header is padding
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        buf += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(buf)
            out.append(record)
            buf = b""
    return out


def history(records) -> list[dict]:
    rows = []
    for r in records:
        if r.WhichOneof("record_type") == "history":
            rows.append(
                {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
            )
    return rows


def test_wandb_offline_logs_every_epoch_and_resume_continues_the_run(cache, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_DIR", raising=False)
    out = tmp_path / "run"
    r = runner.invoke(app, train_args(cache, out, "--wandb", "mrnet-test", "--wandb-name", "t"))
    assert r.exit_code == 0, r.output
    run_id = load_checkpoint(out / "last.pt").run_id
    (first,) = glob.glob(str(out / "wandb" / f"offline-run-*-{run_id}"))
    records = wandb_records(Path(first))
    run = next(x.run for x in records if x.WhichOneof("record_type") == "run")
    assert run.project == "mrnet-test" and run.display_name == "t" and run.run_id == run_id
    config = {i.key: json.loads(i.value_json) for i in run.config.update}
    assert config["channels"] == 16 and config["wandb"] == "mrnet-test"
    logged = history(records)
    metrics = pd.read_csv(out / "metrics.csv")
    assert [h["epoch"] for h in logged] == [1, 2]
    for h, (_, row) in zip(logged, metrics.iterrows()):
        assert set(metrics.columns) <= set(h)
        assert h["val_acc"] == pytest.approx(row["val_acc"]) and h["_step"] == row["epoch"]
    summary = {
        i.key: json.loads(i.value_json)
        for x in records
        if x.WhichOneof("record_type") == "summary"
        for i in x.summary.update
    }
    best = load_checkpoint(out / "best.pt")
    assert summary["best/val_acc"] == pytest.approx(best.history[-1]["val_acc"])
    r = runner.invoke(
        app, [*train_args(cache, out, "--wandb", "mrnet-test"), "--resume", "--epochs", "3"]
    )
    assert r.exit_code == 0, r.output
    runs = sorted(glob.glob(str(out / "wandb" / f"offline-run-*-{run_id}")))
    assert len(runs) == 2  # the same W&B run id, continued
    assert [h["epoch"] for h in history(wandb_records(Path(runs[1])))] == [3]


def test_curves_png_is_written_and_named_by_info(run):
    png = run / "curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    r = runner.invoke(app, ["info", str(run)])
    assert r.exit_code == 0 and str(png) in r.output, r.output


# ---------------------------------------------------------------- 5. compare


@pytest.fixture(scope="module")
def seeds(cache, tmp_path_factory) -> list[Path]:
    """Three seeds trained one epoch each and evaluated on the test split."""
    root = tmp_path_factory.mktemp("seeds")
    reports = []
    for seed in (0, 1, 2):
        out = root / f"run{seed}"
        r = runner.invoke(app, [*train_args(cache, out, "--seed", str(seed)), "--epochs", "1"])
        assert r.exit_code == 0, r.output
        reports.append(root / f"report{seed}")
        r = runner.invoke(
            app,
            [
                "evaluate",
                "--checkpoint",
                str(out / "best.pt"),
                "--cache",
                str(cache),
                "--out",
                str(reports[-1]),
                *CPU,
            ],
        )
        assert r.exit_code == 0, r.output
    return reports


def test_compare_gives_mean_and_sample_std_per_figure_and_genre(seeds, tmp_path):
    out = tmp_path / "cmp"
    r = runner.invoke(app, ["compare", *map(str, seeds), "--out", str(out)])
    assert r.exit_code == 0, r.output
    reps = [json.loads((s / "report.json").read_text()) for s in seeds]
    acc = [x["accuracy"] for x in reps]
    assert f"{np.mean(acc):.3f} ± {np.std(acc, ddof=1):.3f}" in r.output
    table = pd.read_csv(out / "compare.csv", index_col=0)
    assert list(table.index) == [*map(str, seeds), "mean", "std"]
    assert table.loc["mean", "accuracy"] == pytest.approx(np.mean(acc), abs=1e-6)
    assert table.loc["std", "accuracy"] == pytest.approx(np.std(acc, ddof=1), abs=1e-6)
    per = pd.read_csv(out / "per_label.csv", index_col=0)
    genre = per.index[0]
    f1 = [x["per_genre"][genre]["f1"] for x in reps]
    assert per.loc[genre, "mean"] == pytest.approx(np.mean(f1), abs=1e-6)
    assert (out / "compare.png").read_bytes()[:4] == b"\x89PNG"


def test_compare_runs_uses_validation_figures(seeds):
    runs = [s.parent / s.name.replace("report", "run") for s in seeds]
    r = runner.invoke(app, ["compare", *map(str, runs)])
    assert r.exit_code == 0 and "validation figures of 3 inputs" in r.output, r.output
    acc = [load_checkpoint(x / "best.pt").history[-1]["val_acc"] for x in runs]
    assert f"{np.mean(acc):.3f} ± {np.std(acc, ddof=1):.3f}" in r.output


def test_compare_refuses_other_splits_labels_and_paths(seeds, run, cache, tmp_path):
    val = tmp_path / "val"
    r = runner.invoke(
        app,
        [
            "evaluate",
            "--checkpoint",
            str(run / "best.pt"),
            "--cache",
            str(cache),
            "--split",
            "validation",
            "--out",
            str(val),
            *CPU,
        ],
    )
    assert r.exit_code == 0, r.output
    other = tmp_path / "other"
    other.mkdir()
    rep = json.loads((seeds[0] / "report.json").read_text())
    rep["confusion"]["labels"] = rep["confusion"]["labels"][::-1]
    (other / "report.json").write_text(json.dumps(rep))
    a_file = tmp_path / "f"
    a_file.write_text("x")
    for argv, needle in (
        ([seeds[0], val], "differ in split"),
        ([seeds[0], other], "differ in labels"),
        ([seeds[0], tmp_path / "missing"], "does not exist"),
        ([seeds[0], a_file], "neither an evaluate report"),
        ([seeds[0], seeds[1], "--out", a_file], "is a file"),
    ):
        r = runner.invoke(app, ["compare", *map(str, argv)])
        assert r.exit_code == 2 and needle in r.output, r.output
        assert len(r.output.strip().splitlines()) == 1
    assert a_file.read_text() == "x"


# ---------------------------------------------------------------- 6. --input-norm


def test_input_norm_batch_is_recorded_and_kept_on_resume(cache, tmp_path):
    out = tmp_path / "run"
    r = runner.invoke(app, [*train_args(cache, out, "--input-norm", "batch"), "--epochs", "1"])
    assert r.exit_code == 0, r.output
    ck = load_checkpoint(out / "last.pt")
    assert ck.model_config.input_norm == "batch" and "norm.running_mean" in ck.model
    r = runner.invoke(app, [*train_args(cache, out), "--resume"])  # default instance given
    assert r.exit_code == 0, r.output
    assert load_checkpoint(out / "last.pt").model_config.input_norm == "batch"
    r = runner.invoke(app, train_args(cache, tmp_path / "x", "--input-norm", "layer"))
    assert r.exit_code == 2 and "unknown --input-norm 'layer'" in r.output, r.output


def test_runs_from_before_input_norm_resume_with_instance_norm(cache, tmp_path):
    """A last.pt that records no input norm (mrnet 0.1, or 0.2 before the option) is an
    InstanceNorm model, and resumes as one whatever the default is."""
    out = tmp_path / "run"
    r = runner.invoke(app, [*train_args(cache, out, "--input-norm", "instance"), "--epochs", "1"])
    assert r.exit_code == 0, r.output
    ck = torch.load(out / "last.pt", weights_only=True)
    del ck["model_config"]["input_norm"], ck["train_config"]["input_norm"]
    torch.save(ck, out / "last.pt")
    assert load_checkpoint(out / "last.pt").model_config.input_norm == "instance"
    r = runner.invoke(app, [*train_args(cache, out), "--resume"])
    assert r.exit_code == 0, r.output
    assert load_checkpoint(out / "last.pt").model_config.input_norm == "instance"
    assert pd.read_csv(out / "metrics.csv")["epoch"].tolist() == [1, 2]
