"""Settings as data: the stage dataclasses hold each setting's default and help text.

    epochs: int = setting(30, "Epochs in total (a resumed run continues up to this).")

cli.py builds every command option from these fields (same name, same default, same
help), and `command_line` turns a filled dataclass back into the equivalent command,
so the two cannot drift apart.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any


def setting(default: Any = dataclasses.MISSING, help: str = "", flag: str | None = None) -> Any:
    """A dataclass field with its CLI help (and, for booleans, the ``--flag`` form)."""
    meta = {"help": help, "flag": flag}
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def from_values(cls: type, values: dict) -> Any:
    """``cls(**values)`` keeping only the keys that are fields of ``cls``."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in names})


def command_line(command: str, obj: Any, positional: tuple[str, ...] = ()) -> str:
    """``mrnet COMMAND --name value ...`` for the fields of ``obj`` that differ from their
    defaults (required fields always), in field order; booleans as their flag."""
    parts = ["mrnet", command]
    for f in dataclasses.fields(obj):
        if not f.metadata or "help" not in f.metadata:
            continue  # not a command-line setting
        value = getattr(obj, f.name)
        default = f.default
        if f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        if f.name in positional:
            parts.append(str(value))
            continue
        if default is not dataclasses.MISSING and value == default:
            continue
        flag = "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            parts.append(f.metadata.get("flag") or flag if value else "--no-" + flag[2:])
        elif value is not None:
            parts += [flag, str(value) if not isinstance(value, Path) else str(value)]
    return " ".join(parts)
