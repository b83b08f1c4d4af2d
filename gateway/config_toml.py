"""The router's config file as TOML, both ways: a file's tables into the frozen dataclasses of
gateway/config.py (each value's type checked against its field, unknown keys refused) and a
config back into TOML (the lab writes its router's config this way).

Why apart from gateway/config.py, and why it imports nothing of it: the mapping is the same
for every section, so it works on any dataclass, while gateway/config.py says which sections
there are and what their values may mean. Errors here are ValueError with a message naming the
file or the key; gateway.config turns them into its ConfigError, the one error a config has,
and stays the one import its users need (`load`, `to_toml`, `Config`, `ConfigError`).
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterable
from dataclasses import fields
from pathlib import Path
from typing import Any


def read(path: Path) -> dict[str, Any]:
    """The file's parsed TOML; ValueError naming the file if it cannot be read or parsed."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML: {exc}") from None
    except RecursionError:  # tomllib recurses per level of `a = [[[[...`
        raise ValueError(f"{path}: not valid TOML: arrays nested too deeply") from None


def _coerce(section: str, key: str, expected: Any, value: Any) -> Any:
    """Check one value against its field's type; tuples come from TOML arrays."""
    where = f"[{section}] {key}"
    if expected in ("bool", bool):
        if not isinstance(value, bool):
            raise ValueError(f"{where}: expected true or false, got {value!r}")
        return value
    if expected in ("int", int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{where}: expected an integer, got {value!r}")
        return value
    if expected in ("float", float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if expected in ("str", str):
        if not isinstance(value, str):
            raise ValueError(f"{where}: expected a string, got {value!r}")
        return value
    if expected == "tuple[str, ...]":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"{where}: expected a list of strings, got {value!r}")
        return tuple(value)
    raise ValueError(f"{where}: unsupported type {expected}")  # pragma: no cover


def build(section: str, cls: type, value: dict[str, Any]) -> Any:
    """One table as an instance of `cls`: every key one of its fields, of that field's type,
    none of the required ones missing."""
    known = {f.name: f.type for f in fields(cls)}
    kwargs = {}
    for key, item in value.items():
        if key not in known:
            raise ValueError(
                f"unknown key '{key}' in [{section}] (known: {', '.join(sorted(known))})"
            )
        kwargs[key] = _coerce(section, key, known[key], item)
    try:
        return cls(**kwargs)
    except TypeError:
        required = [f.name for f in fields(cls) if f.name not in kwargs]
        raise ValueError(f"[{section}] is missing {', '.join(required)}") from None


def dump(config: Any, sections: Iterable[str], lists: Iterable[str]) -> str:
    """`config` as TOML: each of `sections` a table, each of `lists` an array of tables."""
    out: list[str] = []
    for section in sections:
        out.append(f"[{section}]")
        out += _fields(getattr(config, section))
    for section in lists:
        for item in getattr(config, section):
            out.append(f"[[{section}]]")
            out += _fields(item)
    return "\n".join(out)


def _fields(obj: Any) -> list[str]:
    return [f"{f.name} = {_value(getattr(obj, f.name))}" for f in fields(obj)] + [""]


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    # JSON string escapes are a subset of TOML's basic-string escapes.
    return json.dumps(str(value), ensure_ascii=False)
