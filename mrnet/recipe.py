"""Training recipes: TOML files of `TrainConfig` settings, and the order in which a run's
settings are decided.

    built-in defaults  <  recipe (--config)  <  command-line flags  <  --set KEY=VALUE

The input settings (INPUT_SETTINGS) have one more step for caches of another input kind
than log-mels: a WavLM cache takes them from recipes/wavlm.toml (the authors' InstanceNorm,
no SpecAugment, noise or mixup), a waveform cache from recipes/wavlm_wave.toml (the same,
with the authors' noise on the waveform) unless they were set explicitly (`input_defaults`).

A recipe is a flat TOML table whose keys are `TrainConfig` fields (`mrnet train
--print-config` writes one): numbers, booleans, strings and arrays (for tuples such as
``noise_std = [0.05, 0.1]``); a setting that is None is left out. Under --resume the
run's recorded value of every ``resume="keep"`` setting wins, and a value set explicitly
(recipe, flag or --set) that differs from it is refused (see `resumed`).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from mrnet.options import RecipeArgs, TrainConfig
from pipeline.errors import BadInput
from pipeline.settings import apply, default_of, flag_of

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
INPUT_SETTINGS = ("input_norm", "specaugment", "noise_prob", "mixup")
# feature kind -> the recipe of its input settings
KIND_RECIPES = {"wavlm": "wavlm", "wave": "wavlm_wave"}


def input_defaults(cfg: TrainConfig, kind: str, source: dict) -> tuple[TrainConfig, list[str]]:
    """``cfg`` with the input settings of feature ``kind``'s recipe (KIND_RECIPES) for
    those not set explicitly (``source``); returns it and the names changed."""
    name = KIND_RECIPES.get(kind)
    if name is None:
        return cfg, []
    values = {k: v for k, v in load(name).items() if k in INPUT_SETTINGS and k not in source}
    values = {k: v for k, v in values.items() if getattr(cfg, k) != v}
    return apply(cfg, values, f"recipe {find(name)}"), sorted(values)


def find(name: Path | str) -> Path:
    """A recipe file: the path as given, else ``recipes/NAME.toml``."""
    path = Path(name)
    if path.is_file():
        return path
    shipped = RECIPES / f"{path.stem}.toml"
    if path.parent == Path(".") and shipped.is_file():
        return shipped
    known = ", ".join(sorted(p.stem for p in RECIPES.glob("*.toml")))
    raise BadInput(f"recipe {name} does not exist; pass a TOML file or one of: {known}")


def load(name: Path | str) -> dict:
    """The settings of a recipe file (BadInput in one line when it is not valid TOML)."""
    path = find(name)
    try:
        values = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise BadInput(f"recipe {path} is not valid TOML ({str(e).splitlines()[0]})") from None
    nested = [k for k, v in values.items() if isinstance(v, dict)]
    if nested:
        raise BadInput(f"recipe {path}: [{nested[0]}] tables are not settings; keep it flat")
    return values


def sets(pairs: list[str]) -> dict[str, str]:
    """``KEY=VALUE`` strings as a dict (later ones win)."""
    out = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key.strip():
            raise BadInput(f"--set {pair!r} is not KEY=VALUE; e.g. --set weight_decay=0.001")
        out[key.strip()] = value.strip()
    return out


def resolve(cli: TrainConfig, recipe: RecipeArgs, given: set[str]) -> tuple[TrainConfig, dict]:
    """The run's settings from the built-in defaults, the recipe, the flags given on the
    command line (``given``: their names; their values are in ``cli``) and --set, in that
    order; returns them and where each explicitly set one came from (name -> source)."""
    cfg, source = TrainConfig(), {}
    if recipe.config is not None:
        values = load(recipe.config)
        cfg = apply(cfg, values, f"recipe {find(recipe.config)}")
        source.update(dict.fromkeys(values, f"recipe {find(recipe.config)}"))
    flags = {name: getattr(cli, name) for name in given if hasattr(cli, name)}
    cfg = dataclasses.replace(cfg, **flags)
    source.update({name: flag_of(name) for name in flags})
    overrides = sets(recipe.set)
    cfg = apply(cfg, overrides, "--set", text=True)
    source.update({name: f"--set {name}" for name in overrides})
    return cfg, source


def resumed(cfg: TrainConfig, stored: dict, source: dict) -> TrainConfig:
    """``cfg`` with the recorded value of every setting a resumed run keeps; a setting
    recorded before it existed takes its ``legacy`` value. BadInput when one was set
    explicitly (``source``) to another value than the run's."""
    kept = {}
    for f in dataclasses.fields(TrainConfig):
        if f.metadata.get("resume") != "keep":
            continue
        if f.name in stored:
            value = stored[f.name]
        elif f.metadata.get("legacy", dataclasses.MISSING) is not dataclasses.MISSING:
            value = f.metadata["legacy"]
        else:
            continue
        value = apply(TrainConfig(), {f.name: value}, "the run's last.pt")
        kept[f.name] = getattr(value, f.name)
    conflicts = [
        f"{name} {kept[name]!r} (given {getattr(cfg, name)!r} by {source[name]})"
        for name in kept
        if name in source and getattr(cfg, name) != kept[name]
    ]
    if conflicts:
        raise BadInput(
            f"--resume keeps the run's settings, and these differ: {'; '.join(conflicts)}; "
            "drop them, or start a new --out"
        )
    return dataclasses.replace(cfg, **kept)


def to_toml(cfg: TrainConfig) -> str:
    """The settings as a recipe that `load` reads back to the same `TrainConfig`."""
    lines = ["# mrnet train settings (mrnet train --config FILE reads this back)"]
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        mark = "" if value == default_of(f) else "  # changed from the default"
        if value is None:
            lines.append(f"# {f.name} = (none)")
            continue
        if isinstance(value, Path):
            value = str(value)
        text = json.dumps(list(value) if isinstance(value, tuple) else value)
        lines.append(f"{f.name} = {text}{mark}")
    return "\n".join(lines) + "\n"
