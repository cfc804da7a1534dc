"""Settings as data: each command's settings are the fields of one dataclass, and each
field holds its default, help text and choices, written once.

    epochs: int = setting(30, "Epochs in total (a resumed run continues up to this).")
    arch: str = setting("mrnet", "Model.", choices=ARCHITECTURES)

cli.py generates every command's options from these fields. `Registry` is a named set of
choices (architectures, datasets, devices, ...) that feeds --help and refuses an unknown
value in one line; `parse` and `coerce` turn `key=value` text and recipe values into a
field's type; `command_line` turns a filled dataclass back into the equivalent command.

Field metadata (all optional): ``help``; ``flag`` (a boolean's --flag form); ``choices``
(a Registry); ``option`` (False: set only by a recipe or --set, not a command-line
option of its own); ``resume`` ("keep": a resumed run keeps its recorded value);
``legacy`` (the value that records made before the setting existed imply).
"""

from __future__ import annotations

import dataclasses
import importlib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import BadInput


@dataclass(frozen=True)
class Registry:
    """The names a setting may take, each with a one-line description, in --help order;
    ``targets``: where each name's object lives ("module:attribute"), imported on use."""

    what: str  # e.g. "architecture"
    entries: dict[str, str]
    targets: dict[str, str] = field(default_factory=dict)

    def names(self) -> tuple[str, ...]:
        """The valid names, in --help order."""
        return tuple(self.entries)

    def __contains__(self, name: object) -> bool:
        return name in self.entries

    def __iter__(self):
        return iter(self.entries)

    def check(self, value: object, flag: str) -> None:
        """BadInput naming the valid values when ``value`` is not one of them."""
        if value not in self.entries:
            raise BadInput(f"unknown {flag} {value!r}; use one of {', '.join(self.entries)}")

    def get(self, name: str, flag: str | None = None) -> Any:
        """The object registered as ``name`` (imported now)."""
        self.check(name, flag or self.what)
        module, attr = self.targets[name].split(":")
        return getattr(importlib.import_module(module), attr)

    def help(self) -> str:
        """The names with their descriptions, for --help: "name: description; ..."."""
        return "; ".join(f"{n}: {d}" if d else n for n, d in self.entries.items())


def setting(
    default: Any = dataclasses.MISSING,
    help: str = "",
    flag: str | None = None,
    *,
    choices: Registry | None = None,
    option: bool = True,
    resume: str | None = None,
    legacy: Any = dataclasses.MISSING,
) -> Any:
    """A dataclass field with its help and metadata (see the module docstring).

    A list, dict or set default becomes a default factory (each instance gets a copy).

    Args:
        default: the field's default; MISSING: a required field.
        help: the --help text.
        flag: a boolean's --flag form.
        choices: the Registry its value must be in.
        option: False: set only by a recipe or --set, not a command-line option.
        resume: "keep": a resumed run keeps its recorded value.
        legacy: the value records made before the setting existed imply.

    Returns:
        A dataclasses.Field with that metadata.
    """
    meta = {
        "help": help,
        "flag": flag,
        "choices": choices,
        "option": option,
        "resume": resume,
        "legacy": legacy,
    }
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def default_of(f: dataclasses.Field) -> Any:
    """The field's default (a factory's made now), or dataclasses.MISSING for none."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def from_values(cls: type, values: dict) -> Any:
    """``cls(**values)`` keeping only the keys that are fields of ``cls``."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in names})


def flag_of(name: str) -> str:
    """The command-line flag of field ``name``: "--" and its dashed form."""
    return "--" + name.replace("_", "-")


def check_choices(obj: Any) -> None:
    """Refuse, in one line, a field value outside its registry (None passes where None
    is the default)."""
    for f in dataclasses.fields(obj):
        registry = f.metadata.get("choices") if f.metadata else None
        value = getattr(obj, f.name)
        if registry is not None and not (value is None and default_of(f) is None):
            registry.check(value, flag_of(f.name))


def field_types(cls: type) -> dict[str, Any]:
    """The resolved type hints of ``cls``'s fields, by name."""
    return typing.get_type_hints(cls)


_TRUE, _FALSE = {"true", "yes", "on", "1"}, {"false", "no", "off", "0"}


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    """(the type inside ``X | None``, whether None is allowed)."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0], True
    return tp, False


def type_name(tp: Any) -> str:
    """A type in words for messages ("path", "comma-separated ints", "... or none")."""
    inner, optional = _unwrap_optional(tp)
    origin = typing.get_origin(inner)
    if origin in (tuple, list):
        args = [a for a in typing.get_args(inner) if a is not Ellipsis]
        name = f"comma-separated {getattr(args[0], '__name__', 'value')}s" if args else "list"
    else:
        name = {Path: "path", bool: "true/false"}.get(inner, getattr(inner, "__name__", "value"))
    return name + (" or none" if optional else "")


def parse(tp: Any, text: str) -> Any:
    """``text`` as a value of type ``tp``: bool (true/false/yes/no/1/0), int, float, str,
    Path, ``X | None`` ("none" or nothing is None), tuples and lists (comma-separated).
    ValueError when it does not fit."""
    inner, optional = _unwrap_optional(tp)
    if optional and text.strip().lower() in ("none", "null", ""):
        return None
    origin = typing.get_origin(inner)
    if origin in (tuple, list):
        args = typing.get_args(inner)
        item = args[0] if args else str
        parts = [parse(item, p.strip()) for p in text.split(",") if p.strip()]
        if origin is tuple and args and Ellipsis not in args and len(parts) != len(args):
            raise ValueError(f"needs {len(args)} values")
        return tuple(parts) if origin is tuple else parts
    if inner is bool:
        low = text.strip().lower()
        if low not in _TRUE | _FALSE:
            raise ValueError("not true or false")
        return low in _TRUE
    if inner is int:
        return int(text)
    if inner is float:
        return float(text)
    if inner is Path:
        return Path(text)
    return text


def coerce(tp: Any, value: Any) -> Any:
    """A recipe's (TOML) value as type ``tp``; ValueError when it does not fit (an int
    is a float, a list a tuple, a string a path or a number; None for ``X | None``, as a
    checkpoint records an unset optional setting)."""
    inner, optional = _unwrap_optional(tp)
    if value is None and optional:
        return None
    if isinstance(value, str):
        return parse(tp, value)
    origin = typing.get_origin(inner)
    if origin in (tuple, list):
        if not isinstance(value, list):
            raise ValueError("not a list")
        return parse(tp, ",".join(str(v) for v in value))
    if inner is bool:
        if not isinstance(value, bool):
            raise ValueError("not true or false")
        return value
    if inner is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError("not an integer")
        return value
    if inner is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError("not a number")
        return float(value)
    raise ValueError(f"not a {type_name(tp)}")


def apply(obj: Any, values: dict[str, Any], source: str, text: bool = False) -> Any:
    """``obj`` with ``values`` put into its fields, each converted to its field's type.

    BadInput naming ``source`` for an unknown key or a value of the wrong type.

    Args:
        obj: a settings dataclass instance (not changed).
        values: setting name -> value.
        source: where the values come from, for the error (a recipe, --set).
        text: the values are text from --set (`parse`), else recipe values (`coerce`).

    Returns:
        A copy of ``obj`` with the values set.
    """
    types_ = field_types(type(obj))
    out = {}
    for key, value in values.items():
        if key not in types_:
            raise BadInput(
                f"{source}: unknown setting {key!r}; `mrnet train --print-config` lists them"
            )
        try:
            out[key] = parse(types_[key], value) if text else coerce(types_[key], value)
        except (ValueError, TypeError) as e:
            raise BadInput(
                f"{source}: {key} = {value!r} is not a {type_name(types_[key])} ({e})"
            ) from None
    return dataclasses.replace(obj, **out)


def command_line(command: str, obj: Any, positional: tuple[str, ...] = ()) -> str:
    """``mrnet COMMAND --name value ...`` for the command-line settings of ``obj`` that
    differ from their defaults (required fields always), in field order; booleans as
    their flag."""
    parts = ["mrnet", command]
    for f in dataclasses.fields(obj):
        if not f.metadata or not f.metadata.get("option", True):
            continue  # not a command-line setting
        value = getattr(obj, f.name)
        default = default_of(f)
        if f.name in positional:
            parts.append(str(value))
            continue
        if default is not dataclasses.MISSING and value == default:
            continue
        flag = flag_of(f.name)
        if isinstance(value, bool):
            parts.append(f.metadata.get("flag") or flag if value else "--no-" + flag[2:])
        elif value is not None:
            parts += [flag, str(value)]
    return " ".join(parts)
