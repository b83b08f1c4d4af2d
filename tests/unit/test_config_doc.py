"""docs/gateway-config.md stays in step with gateway/config.py.

The doc's contract, which these tests hold it to:
- its first ```toml block is a valid config (the example a technician copies);
- every section has a heading that starts with `[section]` (or `[[list]]` for an array of
  tables), and under it, before the next heading of the same or a higher level, every key of
  that section has a table row whose first cell is `key` (or a sub-heading starting with
  `key`). Table rows naming a key the loader does not know fail too;
- a table row's type cell names the key's TOML type, and the first `...` span of its default
  cell is the dataclass default written as a TOML value (`required` when there is none).
Prose is free: only headings and table rows are read.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
import typing
from pathlib import Path
from typing import Any

import pytest

from gateway import config as cfg

DOC = Path(__file__).resolve().parents[2] / "docs" / "gateway-config.md"

TYPE_WORDS = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    tuple[str, ...]: "list of strings",
}
HEADING = re.compile(r"^(#{1,6})\s+(.*)$")
KEY_CELL = re.compile(r"`([a-z][a-z0-9_]*)`")


def doc_text() -> str:
    return DOC.read_text(encoding="utf-8")


# -- what the loader knows -----------------------------------------------------------------
def _dataclass_of(hint: Any) -> tuple[type, bool] | None:
    """(dataclass, is an array of tables) for a Config field's type, else None."""
    if dataclasses.is_dataclass(hint):
        return hint, False
    args = typing.get_args(hint)
    is_tuple = typing.get_origin(hint) is tuple and len(args) == 2 and args[1] is Ellipsis
    if is_tuple and dataclasses.is_dataclass(args[0]):
        return args[0], True
    return None


def walk(cls: type, prefix: str = "") -> list[tuple[str, type, list[dataclasses.Field]]]:
    """(heading, class, its plain keys) for every table below `cls`, as the loader reads them:
    a dataclass field is a section `[name]`, a tuple of dataclasses an array `[[name]]`,
    a dataclass inside a section would be `[name.sub]`."""
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        inner = _dataclass_of(hints[f.name])
        if inner is None:
            continue
        sub, is_list = inner
        name = prefix + f.name
        sub_hints = typing.get_type_hints(sub)
        keys = [g for g in dataclasses.fields(sub) if _dataclass_of(sub_hints[g.name]) is None]
        out.append((f"[[{name}]]" if is_list else f"[{name}]", sub, keys))
        out += walk(sub, name + ".")
    return out


SECTIONS = [pytest.param(name, cls, keys, id=name) for name, cls, keys in walk(cfg.Config)]


def test_the_walk_matches_the_loader() -> None:
    """The tables walked from Config are the ones the loader and to_toml use, and Config has
    no top-level keys of its own."""
    walked = {name: cls for name, cls, _ in walk(cfg.Config)}
    expected = {f"[{s}]": c for s, c in cfg.SECTIONS.items()}
    expected |= {f"[[{s}]]": c for s, c in cfg.LISTS.items()}
    assert walked == expected
    assert len(dataclasses.fields(cfg.Config)) == len(expected)


# -- what the doc says ---------------------------------------------------------------------
def section_body(text: str, name: str) -> list[str]:
    """The lines under the one heading starting with `name`, up to the next heading of the same
    or a higher level."""
    lines = text.splitlines()
    found = [
        (i, len(m.group(1)))
        for i, line in enumerate(lines)
        if (m := HEADING.match(line)) and m.group(2).startswith(f"`{name}`")
    ]
    assert len(found) == 1, f"expected one heading starting with `{name}`, found {len(found)}"
    start, level = found[0]
    body = []
    for line in lines[start + 1 :]:
        m = HEADING.match(line)
        if m and len(m.group(1)) <= level:
            break
        body.append(line)
    return body


def rows(body: list[str]) -> dict[str, list[str]]:
    """Table rows whose first cell is a backticked key: key -> cells."""
    out: dict[str, list[str]] = {}
    for line in body:
        if not line.startswith("|"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        m = KEY_CELL.fullmatch(cells[0])
        if m:
            assert m.group(1) not in out, f"`{m.group(1)}` has two rows"
            out[m.group(1)] = cells
    return out


def key_headings(body: list[str]) -> set[str]:
    return {
        m2.group(1)
        for line in body
        if (m := HEADING.match(line)) and (m2 := KEY_CELL.match(m.group(2)))
    }


def coverage(text: str, name: str, keys: list[dataclasses.Field]) -> tuple[set[str], set[str]]:
    """(keys of the section the doc does not document, keys it documents that do not exist)."""
    body = section_body(text, name)
    table = rows(body)
    known = {f.name for f in keys}
    return known - set(table) - key_headings(body), set(table) - known


@pytest.mark.parametrize(("name", "cls", "keys"), SECTIONS)
def test_every_key_is_documented_under_its_section(
    name: str, cls: type, keys: list[dataclasses.Field]
) -> None:
    missing, unknown = coverage(doc_text(), name, keys)
    assert not missing, f"{name}: not documented: {sorted(missing)}"
    assert not unknown, f"{name}: documented but the loader refuses them: {sorted(unknown)}"


@pytest.mark.parametrize(("name", "cls", "keys"), SECTIONS)
def test_types_and_defaults_match_the_dataclasses(
    name: str, cls: type, keys: list[dataclasses.Field]
) -> None:
    table = rows(section_body(doc_text(), name))
    hints = typing.get_type_hints(cls)
    for f in keys:
        if f.name not in table:
            continue  # documented under a heading instead
        cells = table[f.name]
        assert len(cells) >= 4, f"{name} `{f.name}`: expected | key | type | default | ... |"
        word = TYPE_WORDS.get(hints[f.name], repr(hints[f.name]))
        assert cells[1].lower() == word, f"{name} `{f.name}`: type is {word}, not {cells[1]}"
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            assert "required" in cells[2], f"{name} `{f.name}`: has no default: say required"
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        literal = re.search(r"`([^`]*)`", cells[2])
        assert literal, f"{name} `{f.name}`: default cell has no `value`"
        try:
            written = tomllib.loads(f"v = {literal.group(1)}")["v"]
        except tomllib.TOMLDecodeError:
            pytest.fail(f"{name} `{f.name}`: default {literal.group(1)} is not a TOML value")
        expected = list(default) if isinstance(default, tuple) else default
        types = (float, int) if isinstance(expected, float) else (type(expected),)  # 5 for 5.0
        assert written == expected and type(written) in types, (
            f"{name} `{f.name}`: the doc says {literal.group(1)}, the default is {default!r}"
        )


def test_the_example_config_loads(tmp_path: Path) -> None:
    """The first ```toml block passes the loader (types, unknown keys, every verify rule).
    The loader opens none of the files a config names, so the example's paths need not exist."""
    match = re.search(r"^```toml\n(.*?)^```", doc_text(), re.DOTALL | re.MULTILINE)
    assert match, "no ```toml block in the doc"
    path = tmp_path / "gateway.toml"
    path.write_text(match.group(1), encoding="utf-8")
    example = cfg.load(path)
    assert example != cfg.Config()  # an example, not the lab defaults


def test_the_check_catches_a_missing_and_a_stray_key() -> None:
    """The check itself: a key whose row is gone, or a row for a key that is not there."""
    lan = next(keys for name, _, keys in walk(cfg.Config) if name == "[lan]")
    gone = doc_text().replace("| `lease_time` |", "| lease time |", 1)
    assert coverage(gone, "[lan]", lan) == ({"lease_time"}, set())
    renamed = doc_text().replace("| `lease_time` |", "| `lease_secs` |", 1)
    assert coverage(renamed, "[lan]", lan) == ({"lease_time"}, {"lease_secs"})
    moved = doc_text().replace("| `lease_time` |", "", 1) + "\n| `lease_time` | string |\n"
    assert coverage(moved, "[lan]", lan)[0] == {"lease_time"}  # under another section
