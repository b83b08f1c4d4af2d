"""Validators both ends apply to the same values: the router when it reads its config or a
station's DHCP event, the cloud when a router or a merchant sends it the same value. One
definition, so the two can never disagree about what a MAC, a host name or a walled-garden
entry is."""

from __future__ import annotations

import re
from collections.abc import Iterable

MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}\Z")  # lower case, colons: as stored
HOSTNAME_RE = re.compile(
    r"^(?=.{1,253}\Z)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
    r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\Z"
)

# Bounds of a venue's session policy: the router's [policy] and the cloud's editor.
MAX_MB = 10_000_000  # 10 TB: far beyond any plan, small enough to catch a unit mistake
MAX_KBIT = 100_000_000  # 100 Gbit/s


MAX_GARDEN_DOMAINS = 200  # names the cloud may add to a venue's walled garden


def garden_name(raw: object) -> str | None:
    """A walled-garden entry normalised (lower case, no trailing dot), or None if it is not
    one: a host name, or `*.` and a domain of two labels or more (`*.com` would open a whole
    top-level domain before login). Checked before lower-casing, which maps a few non-ASCII
    letters to ASCII. The one check for the TOML, the cloud, its editor and the router."""
    if not isinstance(raw, str):
        return None
    name = raw.rstrip(".")  # whitespace is refused, not stripped: it is not part of a name
    base = name.removeprefix("*.")
    if not HOSTNAME_RE.match(base) or (base != name and "." not in base):
        return None
    return name.lower()


def public_suffix_wildcards(names: Iterable[str]) -> list[str]:
    """The entries of `names` (garden names as garden_name gives them) that are `*.` and a
    public suffix: `*.co.uk`, `*.com.cn`, `*.github.io` would open thousands of unrelated
    sites before login. The one check for the cloud (refused at the merchant's save) and the
    router (refused again when the cloud's list arrives: a compromised cloud must not open
    them either).

    The public suffix list is the publicsuffixlist package's bundled copy, never fetched.
    Only its rules that could match these names are parsed (one pass over the file, ~15 ms),
    so the router does not keep the whole list's ~2 MB in memory for a rare check; the
    package's own matcher then decides, wildcard and exception rules included.
    """
    wildcards = [name for name in names if name.startswith("*.")]
    if not wildcards:
        return []
    from publicsuffixlist import PSLFILE, PublicSuffixList

    # A domain is a public suffix by a rule naming it, or `*.` its parent (unless `!` it).
    wanted = {d for name in wildcards for d in (name[2:], name[2:].partition(".")[2])}
    rules = []
    with open(PSLFILE, encoding="utf-8") as source:
        for line in source:
            rule = line.split()[0] if line.strip() else ""
            if not rule or rule.startswith("//"):
                continue
            if not rule.isascii():  # garden names are ASCII: IDNs come as xn-- labels
                try:
                    rule = rule.encode("idna").decode("ascii")
                except UnicodeError:
                    continue
            rule = rule.lower()
            if rule.lstrip("!").removeprefix("*.") in wanted:
                rules.append(rule)
    suffixes = PublicSuffixList("\n".join(rules))
    return [name for name in wildcards if suffixes.is_public(name[2:])]
