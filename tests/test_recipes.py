"""Settings written once: recipes, --set and --print-config, their precedence, what
--resume keeps, choices refused in one line, and results of mrnet 0.2 that keep their
meaning."""

from __future__ import annotations

import dataclasses
import functools
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
from helpers import one_line_error
from typer.testing import CliRunner

from cli import app
from mrnet.checkpoint import load as load_checkpoint
from mrnet.options import TrainConfig
from mrnet.recipe import RECIPES, load
from pipeline.settings import default_of

runner = CliRunner()
refused = functools.partial(one_line_error, alone=True)  # the only line printed
V02 = Path(__file__).resolve().parent / "fixtures" / "v0_2"
CPU = ("--device", "cpu", "--workers", "0", "--no-progress")


def printed(*argv: str) -> dict:
    """The settings `mrnet train ... --print-config` resolves, read back as a recipe."""
    r = runner.invoke(app, ["train", *argv, "--print-config"])
    assert r.exit_code == 0, r.output
    import tomllib

    return tomllib.loads(r.output)


def test_every_train_setting_has_help_and_every_recipe_loads():
    for f in dataclasses.fields(TrainConfig):
        assert f.metadata.get("help"), f.name
    for path in RECIPES.glob("*.toml"):
        values = load(path)
        assert set(values) <= {f.name for f in dataclasses.fields(TrainConfig)}, path


def test_precedence_defaults_recipe_flags_set(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text("epochs = 7\nlr = 0.01\nweight_decay = 0.5\nnoise_std = [0.1, 0.2]\n")
    got = printed("--config", str(recipe), "--lr", "0.02", "--set", "weight_decay=0.25")
    assert got["epochs"] == 7  # recipe over the default
    assert got["lr"] == 0.02  # the flag over the recipe
    assert got["weight_decay"] == 0.25  # --set over both
    assert got["noise_std"] == [0.1, 0.2]
    assert got["channels"] == default_of(
        next(f for f in dataclasses.fields(TrainConfig) if f.name == "channels")
    )
    got = printed("--config", str(recipe), "--set", "lr=0.03", "--lr", "0.02")
    assert got["lr"] == 0.03  # --set wins wherever it stands


def test_print_config_round_trips(tmp_path):
    r = runner.invoke(
        app,
        [
            "train",
            "--config",
            "demo",
            "--set",
            "noise_mean=-0.1,0.1",
            "--set",
            "wandb=none",
            "--print-config",
        ],
    )
    assert r.exit_code == 0, r.output
    (tmp_path / "again.toml").write_text(r.output)
    again = runner.invoke(
        app, ["train", "--config", str(tmp_path / "again.toml"), "--print-config"]
    )
    assert again.output == r.output


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--arch", "resnet"], ["unknown --arch 'resnet'; use one of mrnet, cnn"]),
        (["--input-norm", "layer"], ["unknown --input-norm 'layer'"]),
        (["--set", "lr=fast"], ["--set: lr = 'fast' is not a float"]),
        (["--set", "noise_std=0.1"], ["noise_std", "needs 2 values"]),
        (["--set", "epochs=2.5"], ["epochs = '2.5' is not a int"]),
        (["--set", "nonsense=1"], ["unknown setting 'nonsense'"]),
        (["--set", "lr"], ["is not KEY=VALUE"]),
        (["--config", "nowhere"], ["recipe nowhere does not exist", "demo"]),
    ],
)
def test_bad_settings_are_refused_in_one_line_before_any_work(tmp_path, argv, words):
    out = tmp_path / "run"
    r = runner.invoke(app, ["train", "--cache", str(tmp_path / "nope"), "--out", str(out), *argv])
    refused(r, *words)
    assert not out.exists()


def test_a_recipe_with_a_wrong_type_or_bad_toml_is_one_line(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('epochs = "many"\n')
    refused(
        runner.invoke(app, ["train", "--config", str(bad), "--print-config"]),
        f"recipe {bad}: epochs = 'many' is not a int",
    )
    bad.write_text("epochs = \n")
    refused(
        runner.invoke(app, ["train", "--config", str(bad), "--print-config"]), "is not valid TOML"
    )


def test_resume_keeps_the_runs_settings_and_refuses_a_conflicting_one(tmp_path):
    run, cache = tmp_path / "run", tmp_path / "cache"
    shutil.copytree(V02 / "run", run)
    shutil.copytree(V02 / "cache", cache)
    base = ["train", "--cache", str(cache), "--out", str(run), *CPU]
    r = runner.invoke(app, [*base, "--resume", "--epochs", "3", "--set", "lr=0.5"])
    refused(r, "--resume keeps the run's settings", "lr 0.01 (given 0.5 by --set lr)")
    r = runner.invoke(app, [*base, "--resume", "--epochs", "3", "--channels", "32"])
    refused(r, "channels 8 (given 32 by --channels)")
    assert load_checkpoint(run / "last.pt").epoch == 2  # untouched
    got = printed("--cache", str(cache), "--out", str(run), "--resume", "--epochs", "3")
    assert got["channels"] == 8 and got["lr"] == 0.01 and got["epochs"] == 3


# ---------------------------------------------------------------- results of mrnet 0.2


def test_a_checkpoint_of_mrnet_0_2_evaluates(tmp_path):
    r = runner.invoke(
        app,
        [
            "evaluate",
            "--checkpoint",
            str(V02 / "run" / "best.pt"),
            "--cache",
            str(V02 / "cache"),
            "--out",
            str(tmp_path / "rep"),
            "--device",
            "cpu",
            "--no-progress",
        ],
    )
    assert r.exit_code == 0, r.output
    pred = pd.read_csv(tmp_path / "rep" / "predictions.csv")
    assert len(pred) == 6 and set(pred["true"]) == {"g0", "g1", "g2"}


def test_a_run_of_mrnet_0_2_resumes_with_its_recorded_settings(tmp_path):
    run, cache = tmp_path / "run", tmp_path / "cache"
    shutil.copytree(V02 / "run", run)
    shutil.copytree(V02 / "cache", cache)
    before = load_checkpoint(run / "last.pt")
    r = runner.invoke(
        app, ["train", "--cache", str(cache), "--out", str(run), "--resume", "--epochs", "3", *CPU]
    )
    assert r.exit_code == 0, r.output
    after = load_checkpoint(run / "last.pt")
    assert after.epoch == 3 and after.history[:2] == before.history
    assert after.model_config == before.model_config  # instance norm, C=8 as recorded
    assert after.model_config.input_norm == "instance" and after.model_config.channels == 8
    for name in ("lr", "batch_size", "crop_seconds", "seed"):
        assert after.train_config[name] == before.train_config[name], name
    assert pd.read_csv(run / "metrics.csv")["epoch"].tolist() == [1, 2, 3]
    assert (
        torch.load(run / "best.pt", weights_only=True)["epoch"]
        == load_checkpoint(run / "best.pt").epoch
    )
