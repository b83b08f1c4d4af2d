"""OpenWrt's UCI file syntax (`/etc/config/<package>`), read the way libuci reads it.

Why a port and not a simpler reader: a technician edits the file by hand, by `uci set` and by
LuCI, and the router's own `uci` must see the same sections and values as Plaza, or a file
that `uci show` displays one way would configure Plaza another. So this follows libuci's
parser (file.c: `uci_parse_line`, `parse_str`, `next_arg`; util.c: `uci_validate_str`) rule
for rule, in strict mode as the `uci` command runs it:

- a line holds commands `package NAME`, `config TYPE ['NAME']`, `option NAME 'VALUE'`,
  `list NAME 'VALUE'` (or their first letters `p`, `c`, `o`, `l`), several separated by `;`;
- an argument is unquoted, '…' (no escapes) or "…" (backslash keeps the next character),
  pieces written together join (`'a'"b"c` is `abc`); a quoted value may span lines and keeps
  its newlines; a backslash ending a line, unquoted or in "…", joins the next line;
- `#` outside quotes ends the line; blank lines are nothing;
- section and option names are letters, digits and `_`; types any printable ASCII;
- a `config` with the name of an earlier section reopens it (same type only); an `option`
  replaces an earlier value in place, a `list` appends (turning an earlier option into the
  list's first item), and an `option` with an empty value changes nothing;
- anything else is an error carrying the line number.

Pure: text in, sections out, nothing of the gateway's meaning (that is gateway/config_uci.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

SPACE = " \t\n\v\f\r"  # C isspace() in the "C" locale
NUL = "\0"  # where libuci ends a string in its buffer


class UciError(ValueError):
    """A line the UCI grammar refuses; `line` is 1-based."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"line {line}: {reason}")
        self.line = line
        self.reason = reason


@dataclass
class Option:
    name: str
    value: str | list[str]  # a str from `option`, a list from `list`
    line: int  # where it was last set

    @property
    def is_list(self) -> bool:
        return isinstance(self.value, list)


@dataclass
class Section:
    type: str
    name: str  # "" for an anonymous section
    line: int
    index: int = 0  # among the sections of its type, as `@type[index]` counts
    options: dict[str, Option] = field(default_factory=dict)

    @property
    def ref(self) -> str:
        """How `uci` addresses it: the name, or `@type[index]` when anonymous."""
        return self.name or f"@{self.type}[{self.index}]"


def valid_name(text: str, package: bool = False) -> bool:
    """libuci's uci_validate_str for names: ASCII letters, digits, `_` (and `-` in a package
    name)."""
    extra = "_-" if package else "_"
    return bool(text) and all(c.isascii() and (c.isalnum() or c in extra) for c in text)


def valid_type(text: str) -> bool:
    return bool(text) and all(33 <= ord(c) <= 126 for c in text)


class _Reader:
    """libuci's parse context, kept as libuci keeps it: one buffer (a line, or several joined
    by a quote or a trailing backslash) that arguments are unquoted into in place, NUL ("\\0")
    ending each. In place matters: an unquoted argument written right before a `;` overwrites
    it with its terminator, so the rest of that line is silently dropped, as by `uci` itself."""

    def __init__(self, text: str) -> None:
        self.lines = re.findall(r"[^\n]*\n|[^\n]+\Z", text)  # fgets: lines end at \n only
        self.next_line = 0
        self.buf: list[str] = []
        self.pos = 0
        self.line = 0
        self.filled = 0

    def getln(self, offset: int) -> None:
        """Replace the buffer from `offset` on with the next line (nothing at the end)."""
        text = ""
        if self.next_line < len(self.lines):
            text = self.lines[self.next_line]
            self.next_line += 1
            self.line += 1
        self.buf[offset:] = list(text)
        self.filled = offset + len(text)  # libuci's buf_filled

    def at(self, i: int) -> str:
        return self.buf[i] if i < len(self.buf) else NUL

    def put(self, i: int, c: str) -> None:
        if i < len(self.buf):
            self.buf[i] = c
        else:
            self.buf.append(c)

    @property
    def cur(self) -> str:
        return self.at(self.pos)

    def text(self, start: int) -> str:
        """The NUL-terminated string at `start`."""
        out = []
        while (c := self.at(start)) != NUL:
            out.append(c)
            start += 1
        return "".join(out)

    def error(self, reason: str) -> UciError:
        return UciError(self.line, reason)

    def skip_space(self) -> None:
        while self.cur in SPACE:
            self.pos += 1

    def backslash(self) -> bool:
        """Past a backslash: False (and the next line joined) when it ends the line."""
        self.pos += 1
        c = self.cur
        if c in (NUL, "\n") or (c == "\r" and self.at(self.pos + 1) == "\n" and self.ended(2)):
            self.getln(self.pos)
            return False
        return True

    def ended(self, ahead: int) -> bool:
        return self.at(self.pos + ahead) == NUL

    def quoted(self, quote: str, target: int) -> int:
        self.pos += 1
        while True:
            c = self.cur
            if c == quote:
                self.pos += 1
                return target
            if c == NUL:
                self.getln(self.pos)
                if self.cur == NUL:
                    raise self.error(f"EOF with unterminated {quote}")
                continue
            if c == "\\" and quote == '"' and not self.backslash():
                continue
            self.put(target, self.cur)
            target += 1
            self.pos += 1

    def string(self, target: int) -> None:
        """One argument unquoted into the buffer at `target` (libuci's parse_str)."""
        skip_end = True
        while True:
            c = self.cur
            if c in ("'", '"'):
                target = self.quoted(c, target)
            elif c == "#":
                self.put(self.pos, NUL)  # a comment: the rest of the line is gone
                break
            elif c == NUL:
                break
            elif c == ";":
                skip_end = False
                break
            elif c == "\\" and not self.backslash():
                pass
            else:
                self.put(target, self.cur)
                target += 1
                self.pos += 1
            if self.cur == NUL or self.cur in SPACE:
                break
        if self.cur != NUL and skip_end:
            self.pos += 1
        self.put(target, NUL)

    def arg(self, required: bool, name: bool = False, package: bool = False) -> str:
        """The next argument (libuci's next_arg); `;` alone is an empty one."""
        self.skip_space()
        start = self.pos
        if self.cur == ";":
            self.put(self.pos, NUL)
            self.pos += 1
        else:
            self.string(start)
        value = self.text(start)
        if not value:
            if required:
                raise self.error("insufficient arguments")
            return ""
        if name and not valid_name(value, package):
            raise self.error("invalid character in name field")
        return value

    def end(self) -> None:
        self.skip_space()
        if self.arg(False):
            raise self.error("too many arguments")

    def command(self) -> tuple[str, bool]:
        """The next command word (strtok on space and tab; "" at the end of the line) and
        whether the buffer ends with it, so that libuci cannot step past it to an argument."""
        while self.cur in " \t":
            self.pos += 1
        end = self.pos
        while self.at(end) not in " \t" + NUL:
            end += 1
        word = "".join(self.buf[self.pos : end])
        if not word:
            return "", False
        if self.at(end) != NUL:
            self.put(end, NUL)
        self.pos = end + 1
        return word, end + 1 > self.filled


_WORDS = {"p": "package", "c": "config", "o": "option", "l": "list"}


class _Parser:
    def __init__(self, text: str) -> None:
        self.r = _Reader(text)
        self.sections: list[Section] = []
        self.by_name: dict[str, Section] = {}
        self.section: Section | None = None

    def run(self) -> list[Section]:
        r = self.r
        while r.next_line < len(r.lines):
            r.buf, r.pos = [], 0
            r.getln(0)
            self.line()
        counts: dict[str, int] = {}
        for s in self.sections:
            s.index = counts.get(s.type, 0)
            counts[s.type] = s.index + 1
        return self.sections

    def line(self) -> None:
        r = self.r
        r.skip_space()
        while True:
            word, alone = r.command()
            if not word or word.startswith("#"):
                return
            kind = _WORDS.get(word[0])
            if kind is None or word not in (word[0], kind):
                raise r.error("invalid command")
            if kind in ("option", "list") and self.section is None:
                raise r.error("option/list command found before the first section")
            if alone:  # libuci steps past the word's terminator, which is not there
                raise r.error(f"{'option' if kind == 'list' else kind} without name")
            if kind == "package":
                r.arg(True, name=True, package=True)  # checked; the file's name wins
                r.end()
            elif kind == "config":
                self.config()
            else:
                self.option(kind == "list")

    def config(self) -> None:
        r = self.r
        kind = r.arg(True)
        if not valid_type(kind):
            raise r.error("invalid character in type field")
        name = r.arg(False, name=True)
        r.end()
        old = self.by_name.get(name) if name else None
        if old is None:
            self.section = Section(kind, name, r.line)
            self.sections.append(self.section)
            if name:
                self.by_name[name] = self.section
        elif old.type != kind:
            raise r.error("section of different type overwrites prior section with same name")
        else:
            self.section = old

    def option(self, is_list: bool) -> None:
        r = self.r
        assert self.section is not None
        name = r.arg(True, name=True)
        value = r.arg(False)
        r.end()
        options = self.section.options
        old = options.get(name)
        if is_list:
            if old is None:
                options[name] = Option(name, [value], r.line)
            else:
                old.value = (
                    [*old.value, value] if isinstance(old.value, list) else [old.value, value]
                )
                old.line = r.line
        elif value:  # libuci: setting an empty value while parsing changes nothing
            if old is None:
                options[name] = Option(name, value, r.line)
            else:
                old.value, old.line = value, r.line


def parse(text: str) -> list[Section]:
    """The sections of one package file, in file order; UciError on the first bad line."""
    return _Parser(text).run()


def _quote(value: str) -> str:
    return "'" + value.replace("'", "'\\''") + "'"


def export(package: str, sections: list[Section]) -> str:
    """The package as `uci export` prints it: a file that parses back to the same sections."""
    out = [f"package {package}\n"]
    for s in sections:
        out.append(f"\nconfig {s.type}" + (f" {_quote(s.name)}" if s.name else "") + "\n")
        for o in s.options.values():
            for value in o.value if isinstance(o.value, list) else [o.value]:
                out.append(f"\t{'list' if o.is_list else 'option'} {o.name} {_quote(value)}\n")
    return "".join(out) + "\n"
