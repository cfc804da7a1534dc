"""The boundaries of the code: which package may import which, and the runnable
examples in the model's docstrings."""

from __future__ import annotations

import ast
import doctest
import re
from pathlib import Path

import pytest
from helpers import ROOT


def imports_of(path: Path) -> set[str]:
    """Every module name that ``path`` imports (at any depth of the file)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}  # from pkg import module
    return names


def command_modules() -> dict[str, list[Path]]:
    """Each command's module (as cli.py names it: "module:run") and its source files."""
    names = re.findall(r'"([a-z_.]+):run"', (ROOT / "cli.py").read_text())
    found = {}
    for name in names:
        path = ROOT.joinpath(*name.split("."))
        found[name] = sorted(path.rglob("*.py")) if path.is_dir() else [path.with_suffix(".py")]
    return found


# the feature kind "wavlm" runs a torch model in preprocess workers: only these modules
# import torch, and only the workers of that kind import them (see the worker test below)
TORCH_IN_PIPELINE = {"pipeline/ssl.py", "pipeline/deps.py", "pipeline/synth/wavlm.py"}


def test_pipeline_never_imports_mrnet_or_torch():
    """pipeline/ is everything before training: preprocess workers must stay small
    (no torch, but for WavLM features), and the cache knows nothing of models."""
    for path in (ROOT / "pipeline").rglob("*.py"):
        rel = path.relative_to(ROOT).as_posix()
        banned = ("mrnet", "cli") if rel in TORCH_IN_PIPELINE else ("mrnet", "cli", "torch")
        bad = {n for n in imports_of(path) if n.split(".")[0] in banned}
        assert not bad, f"{rel} imports {sorted(bad)}"


@pytest.mark.parametrize("module", ["evaluate", "predict", "info", "demo"])
def test_scoring_does_not_import_the_training_loop(module):
    names = imports_of(ROOT / "mrnet" / f"{module}.py")
    assert "mrnet.train" not in names or module == "demo", names
    assert {"mrnet.checkpoint", "mrnet.runtime"} & names or module in ("demo",), names


def test_command_modules_do_not_import_each_other():
    """What two commands share lives in a module of its own (mrnet.reports, mrnet.inputs,
    mrnet.linear, mrnet.scoring), so a change to one command cannot break another. The
    demo is the one exception: running the other commands end to end is its job."""
    commands = command_modules()
    assert len(commands) == 11, sorted(commands)
    for name, files in commands.items():
        if name == "mrnet.demo":
            continue
        others = {c for c in commands if c != name}
        for path in files:
            bad = {n for n in imports_of(path) for c in others if n == c or n.startswith(c + ".")}
            assert not bad, f"{path.relative_to(ROOT)} (command {name}) imports {sorted(bad)}"


def test_cli_loads_no_torch_until_a_command_needs_it():
    import subprocess
    import sys

    code = "import sys, cli; print('torch' in sys.modules, 'pandas' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.stdout.split() == ["False", "False"], out.stderr


def test_preprocess_workers_load_no_pandas_or_torch():
    """A shard job's module starts light: each fresh worker would pay ~0.2 s for pandas."""
    import subprocess
    import sys

    code = (
        "import sys, pipeline.extract, pipeline.workers\n"
        "print('pandas' in sys.modules, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.stdout.split() == ["False", "False"], out.stderr


def test_info_on_a_cache_loads_no_torch(cache):
    """`mrnet info CACHE` answers in a fraction of a second, even at FMA's full size."""
    import subprocess
    import sys

    code = (
        "import sys; from typer.testing import CliRunner; from cli import app\n"
        f"r = CliRunner().invoke(app, ['info', {str(cache)!r}])\n"
        "print(r.exit_code, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.stdout.split() == ["0", "False"], out.stderr


@pytest.mark.parametrize(
    "module", ["mrnet.model.mrnet", "mrnet.model.cnn", "mrnet.augment", "mrnet.scoring"]
)
def test_docstring_examples_run(module):
    import importlib

    mod = importlib.import_module(module)
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
