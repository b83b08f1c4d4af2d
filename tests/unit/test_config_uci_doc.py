"""The UCI names stay in step with the code: the reference file
(firmware_overlay/etc/config/plaza) carries every option the loader knows, as `option` or
`list` as its type is, and nothing else; its commented examples are valid; and
docs/gateway-config.md's UCI tables name every section and every renamed option."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway import config as cfg
from gateway import config_uci
from plaza import uci

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "firmware_overlay" / "etc" / "config" / "plaza"
DOC = ROOT / "docs" / "gateway-config.md"
COMMENTED = re.compile(r"^(\s*)#(\s*(?:config|option|list)\s)", re.MULTILINE)
OPTION_LINE = re.compile(r"\s*#?\s*(option|list)\s")


def known() -> dict[str, dict[str, tuple]]:
    return config_uci.schema(cfg.SECTIONS, cfg.LISTS)


def uncommented(text: str) -> str:
    """The file with its commented `config`/`option`/`list` examples made live."""
    return COMMENTED.sub(r"\1\2", text)


def options_in(text: str) -> dict[tuple[str, str], bool]:
    """(section type, option) -> is a list, for every option of the file."""
    return {(s.type, o.name): o.is_list for s in uci.parse(text) for o in s.options.values()}


def test_every_option_is_in_the_reference_file_and_nothing_else() -> None:
    text = uncommented(REFERENCE.read_text(encoding="utf-8"))
    found = options_in(text)
    expected = {
        (kind, option): entry[2] == "tuple[str, ...]"
        for kind, options in known().items()
        for option, entry in options.items()
    }
    assert set(found) - set(expected) == set(), "in the file, unknown to the loader"
    assert set(expected) - set(found) == set(), "known to the loader, not in the file"
    assert found == expected, "an `option` where a `list` belongs, or the other way"


def test_every_option_has_a_comment_above_it() -> None:
    """Documented in the file itself: each option's block of lines starts with a comment."""
    lines = REFERENCE.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if OPTION_LINE.match(line):
            j = i
            while OPTION_LINE.match(lines[j - 1]):
                j -= 1
            if lines[j - 1].startswith("#config "):  # a commented example section
                j -= 1
            assert re.match(r"\s*# ", lines[j - 1]), f"line {i + 1} has no comment: {line}"


def test_the_commented_examples_are_valid(tmp_path: Path) -> None:
    """Uncommenting any example gives a file the loader accepts (all at once: they agree)."""
    path = tmp_path / "config" / "plaza"
    path.parent.mkdir()
    path.write_text(uncommented(REFERENCE.read_text(encoding="utf-8")), encoding="utf-8")
    config = cfg.load(path)
    assert config.lan.interface == "br-guest" and config.portal.tls and len(config.offers) == 1


def test_the_reference_file_is_disabled_and_names_no_interface() -> None:
    """As shipped, nothing is captured: enabled '0' and no interface until a technician
    chooses one."""
    sections = {s.type: s for s in uci.parse(REFERENCE.read_text(encoding="utf-8"))}
    assert sections["gateway"].options["enabled"].value == "0"
    assert "interface" not in sections["lan"].options
    assert all(s.name in ("", s.type) for s in sections.values())


def doc_table(header: str) -> list[list[str]]:
    """The rows of the doc table whose header row starts with `| header |`."""
    lines = DOC.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {header} |"))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    return rows


def test_the_doc_maps_every_uci_section() -> None:
    rows = {re.search(r"`config (\w+)", r[0]).group(1): r[1] for r in doc_table("UCI section")}
    assert set(rows) == set(known())
    for kind, options in known().items():
        tables = {entry[0] for entry in options.values()}
        named = {f"[[{t}]]" if t in cfg.LISTS else f"[{t}]" for t in tables}
        assert set(re.findall(r"`(\[[^`]+\])`", rows[kind])) == named, kind
        required = "(required)" in next(r[0] for r in doc_table("UCI section") if kind in r[0])
        assert required == (kind in config_uci.REQUIRED_SECTIONS), kind


def test_the_doc_lists_every_renamed_option() -> None:
    rows = {
        re.fullmatch(r"`plaza\.(\w+)\.(\w+)`", r[0]).groups(): re.fullmatch(
            r"`\[(\w+)\] (\w+)`", r[1]
        ).groups()
        for r in doc_table("UCI option")
    }
    assert rows == config_uci.RENAMED


@pytest.mark.parametrize("name", ["on-openwrt-etcconfigplaza-uci"])
def test_the_doc_links_to_its_uci_section(name: str) -> None:
    text = DOC.read_text(encoding="utf-8")
    assert f"(#{name})" in text and "## On OpenWrt: `/etc/config/plaza` (UCI)" in text
