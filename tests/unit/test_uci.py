"""plaza/uci.py: UCI's grammar as libuci reads it, case by case, and the same files fed to
OpenWrt's own `uci` (built from upstream by ../shared/tools/openwrt-host/build.sh) must give
the same sections and values, or the same error."""

from __future__ import annotations

import os
import random
import re
import subprocess
from pathlib import Path

import pytest

from plaza import uci
from tests.openwrt.host import NOT_BUILT, PREFIX

UCI_BIN = PREFIX / "usr" / "bin" / "uci"


def parsed(text: str) -> list[tuple[str, str, dict[str, str | list[str]]]]:
    return [
        (s.type, s.name, {o.name: o.value for o in s.options.values()}) for s in uci.parse(text)
    ]


# -- the grammar, case by case: (text, sections) -------------------------------------------
GOOD = {
    "quoting": (
        "config t 'n'\n\toption a 'single'\n\toption b \"double\"\n\toption c bare\n",
        [("t", "n", {"a": "single", "b": "double", "c": "bare"})],
    ),
    "pieces join": ("config t\n option a 'x'\"y\"z\n", [("t", "", {"a": "xyz"})]),
    "escapes": (
        "config t\n option a \"q\\\"b\\\\s\\n\"\n option b it\\'s\n option c 'no\\escape'\n",
        [("t", "", {"a": 'q"b\\sn', "b": "it's", "c": "no\\escape"})],
    ),
    "export's quote escape": ("config t\n option a 'it'\\''s'\n", [("t", "", {"a": "it's"})]),
    "comments": (
        "# top\n\nconfig t 'n' # after\n\t# indented\n\toption a 'v' # note\n\toption b x#y\n",
        [("t", "n", {"a": "v", "b": "x"})],
    ),
    "hash inside quotes": (
        "config t\n option a '#not a comment'\n",
        [("t", "", {"a": "#not a comment"})],
    ),
    "lists": (
        "config t\n list l 'one'\n list l 'two words'\n list l ''\n",
        [("t", "", {"l": ["one", "two words", ""]})],
    ),
    "option then list": ("config t\n option l a\n list l b\n", [("t", "", {"l": ["a", "b"]})]),
    "list then option": ("config t\n list l a\n list l b\n option l c\n", [("t", "", {"l": "c"})]),
    "option replaced in place": (
        "config t\n option a 1\n option b 2\n option a 3\n",
        [("t", "", {"a": "3", "b": "2"})],
    ),
    "empty option changes nothing": (
        "config t\n option a 1\n option a ''\n option b ''\n option c\n",
        [("t", "", {"a": "1"})],
    ),
    "anonymous sections": (
        "config offer\n option t a\nconfig offer\n option t b\n",
        [("offer", "", {"t": "a"}), ("offer", "", {"t": "b"})],
    ),
    "named section reopened": (
        "config t 'n'\n option a 1\nconfig u\nconfig t 'n'\n option b 2\n",
        [("t", "n", {"a": "1", "b": "2"}), ("u", "", {})],
    ),
    "short keywords": ("c t n\no a 1\nl b 2\n", [("t", "n", {"a": "1", "b": ["2"]})]),
    "package line": ("package plaza\n\nconfig t\n", [("t", "", {})]),
    "semicolons": ("config t 'n'; option a 'b'; option c d\n", [("t", "n", {"a": "b", "c": "d"})]),
    "bare type before ; ends the line": ("config t; option a b\n", [("t", "", {})]),
    "bare word before ; ends the line": ("config t n; option a b\n", [("t", "n", {})]),
    "multi-line quoted value": (
        "config t\n option a 'line 1\nline 2'\n option b \"x\ny\"\n",
        [("t", "", {"a": "line 1\nline 2", "b": "x\ny"})],
    ),
    "backslash continues a line": (
        'config t\n option a abc\\\ndef\n option b "12\\\n34"\n',
        [("t", "", {"a": "abcdef", "b": "1234"})],
    ),
    "CRLF and tabs": ("config\tt\t'n'\r\n\toption\ta\t'v'\r\n", [("t", "n", {"a": "v"})]),
    "no final newline": ("config t\n option a v", [("t", "", {"a": "v"})]),
    "unicode value": ("config t\n option a 'Café 咖啡'\n", [("t", "", {"a": "Café 咖啡"})]),
    "type with punctuation": ("config my-type.x\n", [("my-type.x", "", {})]),
}

BAD = {
    "unknown command": ("config t\n opt a b\n", 2, "invalid command"),
    "option before section": (
        "option a b\n",
        1,
        "option/list command found before the first section",
    ),
    "config without type": ("config \n", 1, "insufficient arguments"),
    "config alone on the last line": ("config", 1, "config without name"),
    "keyword glued to newline": ("config t\noption\n", 2, "invalid command"),
    "too many arguments": ("config t n extra\n", 1, "too many arguments"),
    "option with three words": ("config t\n option a b c\n", 2, "too many arguments"),
    "bad section name": ("config t 'my-name'\n", 1, "invalid character in name field"),
    "bad option name": ("config t\n option a.b c\n", 2, "invalid character in name field"),
    "bad type": ("config 'a b'\n", 1, "invalid character in type field"),
    "unterminated single quote": ("config t\n option a 'open\n", 2, "EOF with unterminated '"),
    "unterminated double quote": (
        'config t\n\n option a "open\nmore\n',
        4,
        'EOF with unterminated "',
    ),
    "retyped section": ("config t 'n'\nconfig u 'n'\n", 2, "section of different type overwrites"),
    "bad package name": ("package 'a b'\n", 1, "invalid character in name field"),
}


@pytest.mark.parametrize(("text", "expected"), GOOD.values(), ids=GOOD.keys())
def test_the_grammar(text: str, expected: list) -> None:
    assert parsed(text) == expected


@pytest.mark.parametrize(("text", "line", "reason"), BAD.values(), ids=BAD.keys())
def test_errors_carry_the_line(text: str, line: int, reason: str) -> None:
    with pytest.raises(uci.UciError) as caught:
        uci.parse(text)
    assert caught.value.line == line and caught.value.reason.startswith(reason)
    assert str(caught.value).startswith(f"line {line}: ")


def test_references_and_lines() -> None:
    sections = uci.parse("config a 'x'\nconfig b\n\nconfig b\n\toption o 'v'\n")
    assert [(s.ref, s.line) for s in sections] == [("x", 1), ("@b[0]", 2), ("@b[1]", 4)]
    assert sections[2].options["o"].line == 5


@pytest.mark.parametrize(("text", "expected"), GOOD.values(), ids=GOOD.keys())
def test_export_parses_back_to_the_same(text: str, expected: list) -> None:
    assert parsed(uci.export("p", uci.parse(text))) == expected


# -- against OpenWrt's own uci -------------------------------------------------------------
needs_uci = pytest.mark.skipif(
    not UCI_BIN.exists(),
    reason=NOT_BUILT,
)


def real_uci(tmp_path: Path, text: str) -> tuple[bool, str]:
    """(parsed?, `uci export` output or the parse error's reason and line) from the real
    binary. The line only where the file ends with a newline: libuci counts a line when it
    sees its end, so an error on a last line without one is a line earlier there (Plaza's
    count is the file's own)."""
    (tmp_path / "p").write_text(text, encoding="utf-8")
    env = dict(os.environ, LD_LIBRARY_PATH=str(PREFIX / "usr" / "lib"))
    run = subprocess.run(
        [str(UCI_BIN), "-c", str(tmp_path), "export", "p"],
        capture_output=True,
        text=True,
        env=env,
        timeout=10,
    )
    if run.returncode == 0:
        return True, run.stdout
    found = re.search(r"Parse error \((.*)\) at line (\d+)", run.stderr)
    assert found, run.stderr
    return False, _reason(text, found.group(1), int(found.group(2)))


def _reason(text: str, reason: str, line: int) -> str:
    return f"{reason} at line {line}" if text.endswith("\n") else reason


def ours(text: str) -> tuple[bool, str]:
    try:
        return True, uci.export("p", uci.parse(text))
    except uci.UciError as exc:
        return False, _reason(text, exc.reason, exc.line)


CASES = {**{k: v[0] for k, v in GOOD.items()}, **{f"bad: {k}": v[0] for k, v in BAD.items()}}


@needs_uci
@pytest.mark.parametrize("text", CASES.values(), ids=CASES.keys())
def test_the_real_uci_reads_it_the_same(tmp_path: Path, text: str) -> None:
    assert ours(text) == real_uci(tmp_path, text)


@needs_uci
def test_the_reference_config_reads_the_same(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    text = (root / "firmware_overlay" / "etc" / "config" / "plaza").read_text(encoding="utf-8")
    assert ours(text) == real_uci(tmp_path, text)


PIECES = ["config", "option", "list", "c", "o", " ", "\t", "\n", "'", '"', "\\", ";", "#"]
PIECES += ["a", "b c", "n_1", "-", ".", "\r", "é", "=", "package"]


@needs_uci
def test_random_files_read_the_same(tmp_path: Path) -> None:
    """Files made of the grammar's own characters, with a fixed seed: any disagreement shows
    a rule the port misses."""
    rng = random.Random(15)
    starts = ["config t", "config t n", "config t2 n", "option o", "list o", "c t", "o o"]
    for _ in range(600):
        lines = [
            rng.choice(["", "\t"])
            + rng.choice(starts)
            + " "
            + "".join(rng.choice(PIECES) for _ in range(rng.randint(0, 6)))
            for _ in range(rng.randint(1, 5))
        ]
        text = "\n".join(lines) + rng.choice(["", "\n"])
        assert ours(text) == real_uci(tmp_path, text), repr(text)
