"""A strict reader of the Prometheus text format 0.0.4, for tests that scrape /metrics.

Strict on purpose: a sample without a preceding TYPE, a family declared twice, a histogram
whose buckets are not cumulative or lack +Inf, or an unparsable line fails the test, as it
would fail a real Prometheus scrape.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_SAMPLE_RE = re.compile(rf"^(?P<name>{_NAME})(?:\{{(?P<labels>.*)\}})? (?P<value>\S+)$")
_LABEL_RE = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*(,|$)')
_SUFFIXES = {"histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count", "")}

Labels = frozenset[tuple[str, str]]


@dataclass
class Parsed:
    name: str
    type: str
    help: str
    samples: dict[tuple[str, Labels], float] = field(default_factory=dict)

    def value(self, suffix: str = "", **labels: str) -> float:
        return self.samples[(self.name + suffix, frozenset(labels.items()))]


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", lambda m: "\n" if m[1] == "n" else m[1], text)


def _labels(text: str | None) -> Labels:
    if not text:
        return frozenset()
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        m = _LABEL_RE.match(text, pos)
        if m is None:
            raise ValueError(f"bad labels: {text!r}")
        out.append((m[1], _unescape(m[2])))
        pos = m.end()
    if len({k for k, _ in out}) != len(out):
        raise ValueError(f"repeated label in {text!r}")
    return frozenset(out)


def _value(text: str) -> float:
    return {"+Inf": math.inf, "-Inf": -math.inf, "NaN": math.nan}.get(text) or float(text)


def parse(text: str) -> dict[str, Parsed]:
    if not text.endswith("\n"):
        raise ValueError("the exposition must end with a newline")
    families: dict[str, Parsed] = {}
    helps: dict[str, str] = {}
    current: Parsed | None = None
    for line in text.splitlines():
        if not line.strip():
            continue
        if line.startswith("# HELP "):
            name, _, doc = line[7:].partition(" ")
            helps[name] = _unescape(doc)
            continue
        if line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            if name in families:
                raise ValueError(f"family {name} declared twice")
            if kind not in ("counter", "gauge", "histogram", "summary", "untyped"):
                raise ValueError(f"bad type {kind!r} for {name}")
            current = families[name] = Parsed(name, kind, helps.get(name, ""))
            continue
        if line.startswith("#"):
            continue
        m = _SAMPLE_RE.match(line)
        if m is None:
            raise ValueError(f"bad sample line: {line!r}")
        if current is None:
            raise ValueError(f"sample before any TYPE: {line!r}")
        allowed = [current.name + s for s in _SUFFIXES.get(current.type, ("",))]
        if m["name"] not in allowed:
            raise ValueError(f"sample {m['name']} outside its family {current.name}")
        key = (m["name"], _labels(m["labels"]))
        if key in current.samples:
            raise ValueError(f"duplicate sample {line!r}")
        current.samples[key] = _value(m["value"])
    for family in families.values():
        if family.type == "histogram":
            _check_histogram(family)
    return families


def _check_histogram(family: Parsed) -> None:
    buckets = sorted(
        (_value(dict(labels)["le"]), v)
        for (name, labels), v in family.samples.items()
        if name.endswith("_bucket")
    )
    if not buckets or buckets[-1][0] != math.inf:
        raise ValueError(f"{family.name}: no +Inf bucket")
    counts = [v for _, v in buckets]
    if counts != sorted(counts):
        raise ValueError(f"{family.name}: buckets are not cumulative")
    if family.value("_count") != buckets[-1][1]:
        raise ValueError(f"{family.name}: _count differs from the +Inf bucket")


def buckets(family: Parsed) -> list[tuple[float, float]]:
    """(le, cumulative count) in increasing order of le."""
    return sorted(
        (_value(dict(labels)["le"]), v)
        for (name, labels), v in family.samples.items()
        if name == family.name + "_bucket"
    )
