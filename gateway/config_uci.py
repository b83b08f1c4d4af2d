"""The router's config as UCI (`/etc/config/plaza` on OpenWrt), both ways: a UCI file's
sections into the same tables gateway/config_toml.py reads from TOML (each value's type checked
against its field, unknown sections and options refused), and a config back into UCI.

Why a second format: on OpenWrt every service is configured with UCI (`uci set`, LuCI,
`reload_config`), and a technician expects Plaza to be too. Why the same tables: one set of
dataclasses and one `verify()` judge both files, so a rule holds whatever the format.

The mapping, documented in docs/gateway-config.md and shown in
firmware_overlay/etc/config/plaza: each TOML section is a UCI section of that type, named after
it (`config policy 'policy'`; never anonymous: the init script and `uci set plaza.policy.x`
address it by that name), each key an option of the same name, except that `[session]`'s two
keys live in `policy` (`session_minutes`, `max_session_minutes`: on OpenWrt a session's length
is policy), and each `[[offers]]` table is an `offer` section. Lists are `list` lines.
`lan.interface` has no default here: the interface to capture is always named on purpose.

Like config_toml, it imports nothing of gateway/config.py (which imports it): the sections are
passed in, errors are ValueError naming `plaza.<section>.<option>`, and `rename()` turns
gateway.config's own messages (`[session] default_minutes ...`) into UCI names.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

from plaza import uci

PACKAGE = "plaza"
# UCI (section, option) -> TOML (section, key), where they differ.
RENAMED = {
    ("policy", "session_minutes"): ("session", "default_minutes"),
    ("policy", "max_session_minutes"): ("session", "max_minutes"),
}
LIST_TYPES = {"offers": "offer"}  # TOML array of tables -> UCI section type (may repeat)
REQUIRED_SECTIONS = ("gateway", "lan", "portal", "wallet")  # the lab defaults fit no venue
REQUIRED_OPTIONS = {
    ("lan", "interface"): "name the interface whose clients are captive (e.g. 'br-guest'), "
    "never the LAN the router is managed from",
}
TRUE = ("1", "true", "yes", "on", "enabled")  # what OpenWrt's config_get_bool accepts
FALSE = ("0", "false", "no", "off", "disabled")
EXIT_DISABLED = 3  # `run` on a config with enabled '0' (a config error is 2)


def is_uci(path: Path) -> bool:
    """Which reader a path gets: a `.toml` file is TOML, any other file in a `config`
    directory (`/etc/config/plaza`) UCI; any other is UCI when its first command is `config`
    or `package` (a `[table]` or `key = value` line never is)."""
    if path.suffix == ".toml":
        return False
    if path.parent.name == "config":
        return True
    try:
        with path.open(encoding="utf-8", errors="replace") as file:
            for line in file:
                words = line.split()
                if words and not words[0].startswith("#"):
                    return words[0] in ("config", "package") and "=" not in words[1:2]
    except OSError:
        pass
    return False


def schema(sections: dict[str, type], lists: dict[str, type]) -> dict[str, dict[str, Any]]:
    """UCI section type -> option -> (TOML section, key, field type, required)."""
    back = {toml: opt for opt, toml in RENAMED.items()}
    out: dict[str, dict[str, Any]] = {}
    for name, cls in [*sections.items(), *lists.items()]:
        for f in fields(cls):
            kind, option = back.get((name, f.name), (LIST_TYPES.get(name, name), f.name))
            needed = f.default is MISSING and f.default_factory is MISSING
            needed = needed or (kind, option) in REQUIRED_OPTIONS
            out.setdefault(kind, {})[option] = (name, f.name, f.type, needed)
    return out


def read(path: Path, sections: dict[str, type], lists: dict[str, type]) -> dict[str, Any]:
    """The UCI file as TOML-shaped tables of typed values; ValueError naming the file, and
    the section and option (with its line) at fault."""
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise ValueError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 (byte {exc.start})") from None
    try:
        parsed = uci.parse(text)
    except uci.UciError as exc:
        raise ValueError(f"{path}: not valid UCI: {exc}") from None
    try:
        return tables(parsed, schema(sections, lists))
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def tables(parsed: list[uci.Section], known: dict[str, dict[str, Any]]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    seen: dict[str, uci.Section] = {}
    repeats = set(LIST_TYPES.values())
    for section in parsed:
        where = f"{PACKAGE}.{section.ref}"
        if section.type not in known:
            raise ValueError(
                f"{where} (line {section.line}): unknown section type '{section.type}'"
                f"{_hint(section.type, known)} (known: {', '.join(sorted(known))})"
            )
        if section.type not in repeats:
            if section.type in seen:
                raise ValueError(
                    f"{where} (line {section.line}): a second '{section.type}' section (the "
                    f"first is at line {seen[section.type].line}); only 'offer' may repeat"
                )
            if section.name != section.type:
                raise ValueError(
                    f"{where} (line {section.line}): name it after its type, `config "
                    f"{section.type} '{section.type}'`, so `uci set {PACKAGE}.{section.type}."
                    f"<option>` reaches it"
                )
            seen[section.type] = section
        _section(section, known[section.type], data)
    for kind in REQUIRED_SECTIONS:
        if kind not in seen:
            raise ValueError(
                f"no '{kind}' section: add `config {kind} '{kind}'` (every option is in "
                f"firmware_overlay/etc/config/plaza, installed as /etc/config/plaza)"
            )
    for (kind, option), why in REQUIRED_OPTIONS.items():
        if option not in seen[kind].options:
            raise ValueError(f"{PACKAGE}.{kind}.{option}: not set: {why}")
    return data


def _section(section: uci.Section, known: dict[str, Any], data: dict[str, Any]) -> None:
    """One UCI section's options into `data`: the TOML table(s) they belong to."""
    where = f"{PACKAGE}.{section.ref}"
    item: dict[str, Any] = {}
    for name, option in section.options.items():
        if name not in known:
            raise ValueError(
                f"{where}.{name} (line {option.line}): unknown option{_hint(name, known)} "
                f"(known in '{section.type}': {', '.join(known)})"
            )
        table, key, kind, _ = known[name]
        value = _value(f"{where}.{name}", option, kind)
        if section.type in LIST_TYPES.values():
            item[key] = value
        else:
            data.setdefault(table, {})[key] = value
    if section.type in LIST_TYPES.values():
        for name, (_, _, _, needed) in known.items():
            if needed and name not in item:
                raise ValueError(f"{where}.{name}: required in every '{section.type}' section")
        table = next(iter(known.values()))[0]
        data.setdefault(table, []).append(item)


def _hint(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def _value(where: str, option: uci.Option, kind: Any) -> Any:
    """One option's value, typed as its field is."""
    at = f" (line {option.line})"
    if kind == "tuple[str, ...]":
        if not isinstance(option.value, list):
            raise ValueError(
                f"{where}: a list{at}: write one `list {option.name} '...'` line per value, "
                f"not `option {option.name}`"
            )
        return list(option.value)  # as TOML gives it: config_toml makes the tuple
    if isinstance(option.value, list):
        raise ValueError(
            f"{where}: takes one value{at}: write `option {option.name} '...'`, not `list`"
        )
    text = option.value
    if kind in ("bool", bool):
        if text.lower() in TRUE:
            return True
        if text.lower() in FALSE:
            return False
        raise ValueError(f"{where}: expected '1' or '0', got {text!r}{at}")
    if kind in ("int", int):
        if not re.fullmatch(r"-?[0-9]+", text):
            raise ValueError(f"{where}: expected an integer, got {text!r}{at}")
        return int(text)
    if kind in ("float", float):
        if not re.fullmatch(r"-?[0-9]+(\.[0-9]+)?", text):
            raise ValueError(f"{where}: expected a number, got {text!r}{at}")
        return float(text)
    return text


def uci_name(section: str, key: str) -> str:
    """`plaza.<section>.<option>` for a TOML section and key."""
    back = {toml: opt for opt, toml in RENAMED.items()}
    kind, option = back.get((section, key), (section, key))
    return f"{PACKAGE}.{kind}.{option}"


# `[[offers]] #N`, or `[section]` and a key if one follows (not a MAC's first pair: `ab:cd:..`)
_TOML_NAME = re.compile(
    r"\[\[offers\]\] #(\d+)|\[([a-z]+)\](?: ([a-z_][a-z_0-9]*)(?!\w|:[0-9a-f]))?"
)
_BARE = {toml[1]: opt[1] for opt, toml in RENAMED.items()}


def rename(message: str) -> str:
    """gateway.config's message with TOML names (`[lan] dhcp_start`, `[[offers]] #2`) given
    their UCI names (`plaza.lan.dhcp_start`, `plaza.@offer[1]`), so a UCI user reads the
    names of the file they edit."""

    def one(m: re.Match[str]) -> str:
        if m.group(1):
            return f"{PACKAGE}.@offer[{int(m.group(1)) - 1}]"
        section, key = m.group(2), m.group(3)
        if key is None:
            return f"{PACKAGE}.{'policy' if section == 'session' else section}"
        return uci_name(section, key)

    renamed = _TOML_NAME.sub(one, message)
    return re.sub(r"\b(" + "|".join(_BARE) + r")\b", lambda m: _BARE[m.group(1)], renamed)


def name_in(path: str | Path, section: str, key: str) -> str:
    """How the file at `path` names a key: `plaza.lan.interface` or `[lan] interface`."""
    return uci_name(section, key) if is_uci(Path(path)) else f"[{section}] {key}"


def dump(config: Any, sections: dict[str, type], lists: dict[str, type]) -> str:
    """`config` as a UCI file: every value written, but empty ones, which UCI cannot hold
    (an empty string or list is the default of every field that may be empty)."""
    back = {toml: opt for opt, toml in RENAMED.items()}
    out: dict[str, uci.Section] = {}
    for name in sections:
        for f in fields(sections[name]):
            kind, option = back.get((name, f.name), (name, f.name))
            section = out.setdefault(kind, uci.Section(kind, kind, 0))
            _put(section, option, getattr(getattr(config, name), f.name))
    offers = []
    for name in lists:
        for item in getattr(config, name):
            section = uci.Section(LIST_TYPES[name], "", 0)
            for f in fields(item):
                _put(section, f.name, getattr(item, f.name))
            offers.append(section)
    return uci.export(PACKAGE, [*out.values(), *offers])


def _put(section: uci.Section, option: str, value: Any) -> None:
    if isinstance(value, tuple):
        if value:
            section.options[option] = uci.Option(option, list(value), 0)
        return
    if isinstance(value, bool):
        value = "1" if value else "0"
    if value != "":
        section.options[option] = uci.Option(option, str(value), 0)
