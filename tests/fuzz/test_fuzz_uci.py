"""UCI text from the grammar's own characters: plaza/uci.py raises only UciError (with a line
inside the file), export() parses back to the same sections, and the gateway's loader turns
anything into a Config or a ConfigError naming the file, never another exception."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from gateway.config import ConfigError, load
from plaza import uci

WORDS = ["config", "option", "list", "package", "gateway", "policy", "lan", "offer"]
WORDS += ["session_minutes", "enabled", "interface", "title", "'", '"', "\\", ";", "#"]
WORDS += [" ", "\t", "\n", "\r\n", "1", "x y", "é", "="]
texts = st.lists(st.sampled_from(WORDS) | st.text(max_size=3), max_size=40).map("".join)


def shape(sections: list[uci.Section]) -> list[tuple]:
    return [(s.type, s.name, {o.name: o.value for o in s.options.values()}) for s in sections]


@given(texts)
def test_parse_fails_only_with_a_line(text: str) -> None:
    try:
        sections = uci.parse(text)
    except uci.UciError as exc:
        assert 0 <= exc.line <= text.count("\n") + 1
        return
    assert shape(uci.parse(uci.export("plaza", sections))) == shape(sections)


@given(texts)
def test_load_gives_a_config_or_a_config_error(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config" / "plaza"
        path.parent.mkdir()
        path.write_text("config gateway 'gateway'\n" + text, encoding="utf-8")
        try:
            load(path)
        except ConfigError as exc:
            assert str(exc).startswith(str(path))
