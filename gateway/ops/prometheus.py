"""The Prometheus side of the metrics, with nothing of the gateway in it: the data model
(families, counters, a histogram, a registry of scrape-time collectors), the text exposition
format 0.0.4, the standard `process_*` facts, and a tiny HTTP endpoint.

Hand-written rather than `prometheus_client`: the daemon must stay within 64 MB at 10,000
clients, and what it needs is a page of code with no import cost, no threads and no global
registry. What the gateway exposes through it is gateway/ops/metrics.py.

Cardinality is bounded by construction: labelled counters cap their series (`MAX_SERIES`) so
a bug cannot turn a label into a per-client one.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import math
import os
import resource
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from plaza.logs import RateLimitedLog

log = logging.getLogger("plaza.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MAX_SERIES = 64  # per labelled counter; further label sets all go to one "other" series
MAX_HEAD = 8 * 1024  # bytes of an HTTP request head
READ_TIMEOUT = 5.0
MAX_CONNECTIONS = 8  # scrapes in flight; more are closed at once (fds are finite on a router)

Labels = tuple[tuple[str, str], ...]


# -- the data model ----------------------------------------------------------------------
@dataclass(frozen=True)
class Sample:
    name: str  # the sample's full name: the family name, or with _bucket/_sum/_count
    labels: Labels
    value: float


@dataclass
class Family:
    """One metric family as exposed: name, type, help, samples.

    A collector builds these at scrape time: `Family("x_total", "counter", "...").add(3, k="v")`.
    """

    name: str
    type: str  # counter | gauge | histogram | untyped
    help: str
    samples: list[Sample] = field(default_factory=list)

    def add(self, value: float, suffix: str = "", **labels: str) -> Family:
        self.samples.append(Sample(self.name + suffix, tuple(labels.items()), float(value)))
        return self


Collector = Callable[[], Iterable[Family]]


class Counter:
    """A monotonic counter, optionally with labels from a small fixed set."""

    def __init__(
        self, name: str, help: str, labelnames: tuple[str, ...] = (), max_series: int = MAX_SERIES
    ) -> None:
        self.name, self.help, self.labelnames, self.max_series = name, help, labelnames, max_series
        self.values: dict[tuple[str, ...], float] = {}
        if not labelnames:
            self.values[()] = 0.0

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        if amount < 0:
            raise ValueError("a counter only goes up")
        key = tuple(str(labels[n]) for n in self.labelnames)
        if key not in self.values and len(self.values) >= self.max_series:
            key = ("other",) * len(self.labelnames)
        self.values[key] = self.values.get(key, 0.0) + amount

    def seed(self, **labels: str) -> None:
        """Expose a series at 0 before its first event, so rate() sees the first increase."""
        self.inc(0, **labels)

    def collect(self) -> Iterable[Family]:
        family = Family(self.name, "counter", self.help)
        for key, value in sorted(self.values.items()):
            family.samples.append(
                Sample(self.name, tuple(zip(self.labelnames, key, strict=True)), value)
            )
        return [family]


class Histogram:
    """Cumulative buckets, sum and count; `le` buckets as Prometheus expects them."""

    def __init__(self, name: str, help: str, buckets: tuple[float, ...]) -> None:
        if list(buckets) != sorted(set(buckets)) or not buckets:
            raise ValueError("histogram buckets must be increasing")
        self.name, self.help = name, help
        self.buckets = tuple(float(b) for b in buckets)
        self.counts = [0] * (len(self.buckets) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1  # value <= le
        self.sum += value
        self.count += 1

    def collect(self) -> Iterable[Family]:
        family = Family(self.name, "histogram", self.help)
        total = 0
        for bound, n in zip((*self.buckets, math.inf), self.counts, strict=True):
            total += n
            family.add(total, "_bucket", le=_number(bound))
        family.add(self.sum, "_sum").add(self.count, "_count")
        return [family]


class Registry:
    """What one endpoint exposes: instruments and collectors, read at each scrape."""

    def __init__(self) -> None:
        self._collectors: list[Collector] = []
        self.errors = RateLimitedLog(log, level=logging.WARNING)

    def register(self, metric: Counter | Histogram) -> None:
        self._collectors.append(metric.collect)

    def register_collector(self, collector: Collector) -> Callable[[], None]:
        """Add a scrape-time callback returning families; returns a function that removes it.

        A collector that raises is skipped for that scrape (and logged, rate-limited): one
        broken module must not blind the whole endpoint.
        """
        self._collectors.append(collector)
        return lambda: self._collectors.remove(collector)

    def collect(self) -> list[Family]:
        families: list[Family] = []
        seen: set[str] = set()
        for collector in list(self._collectors):
            try:
                got = list(collector())
            except Exception as exc:
                name = getattr(collector, "__qualname__", repr(collector))
                self.errors.note(name, "metrics collector %s failed: %r", name, exc)
                continue
            for family in got:
                if family.name in seen:  # a second HELP/TYPE would make the page invalid
                    self.errors.note(family.name, "duplicate metric family %s", family.name)
                    continue
                seen.add(family.name)
                families.append(family)
        return families

    def exposition(self) -> str:
        return render(self.collect())


# -- the text format -------------------------------------------------------------------------
def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(families: Iterable[Family]) -> str:
    """The Prometheus text exposition format, version 0.0.4."""
    lines: list[str] = []
    for family in families:
        help_text = family.help.replace("\\", "\\\\").replace("\n", "\\n")
        lines.append(f"# HELP {family.name} {help_text}")
        lines.append(f"# TYPE {family.name} {family.type}")
        for sample in family.samples:
            if sample.labels:
                inner = ",".join(f'{k}="{_label_value(str(v))}"' for k, v in sample.labels)
                lines.append(f"{sample.name}{{{inner}}} {_number(sample.value)}")
            else:
                lines.append(f"{sample.name} {_number(sample.value)}")
    return "\n".join(lines) + "\n"


# -- process facts ---------------------------------------------------------------------------
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def start_time() -> float:
    """When this process started (seconds since the epoch), from /proc, else now."""
    try:
        with open("/proc/self/stat") as f:
            ticks = int(f.read().rpartition(")")[2].split()[19])
        with open("/proc/stat") as f:
            btime = next(int(line.split()[1]) for line in f if line.startswith("btime "))
        return btime + ticks / _TICKS
    except (OSError, ValueError, IndexError, StopIteration):
        return time.time()


def process_families(start_time: float) -> list[Family]:
    """The standard `process_*` names, so stock dashboards and alerts work unchanged."""
    out = []
    try:
        with open("/proc/self/statm") as f:
            size, resident = (int(x) for x in f.read().split()[:2])
        out.append(
            Family("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.")
            .add(resident * _PAGE)
        )  # fmt: skip
        out.append(
            Family("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.")
            .add(size * _PAGE)
        )  # fmt: skip
    except (OSError, ValueError):
        pass
    with contextlib.suppress(OSError):
        fds = len(os.listdir("/proc/self/fd"))
        out.append(Family("process_open_fds", "gauge", "Number of open file descriptors.").add(fds))
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    out.append(Family("process_max_fds", "gauge", "Maximum number of open file descriptors.")
               .add(soft if soft != resource.RLIM_INFINITY else math.inf))  # fmt: skip
    t = os.times()
    out.append(Family("process_cpu_seconds_total", "counter", "User and system CPU time spent.")
               .add(t.user + t.system))  # fmt: skip
    out.append(Family("process_start_time_seconds", "gauge", "Start time since the epoch.")
               .add(start_time))  # fmt: skip
    return out


# -- HTTP --------------------------------------------------------------------------------------
async def serve(registry: Registry, host: str, port: int) -> asyncio.AbstractServer:
    """A tiny HTTP/1.x responder: GET /metrics, one request per connection."""
    busy = 0

    async def respond(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal busy
        if busy >= MAX_CONNECTIONS:
            writer.close()
            return
        busy += 1
        try:
            status, body, ctype = await _answer(registry, reader)
            head = (
                f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n"
                "Cache-Control: no-store\r\n\r\n"
            )
            writer.write(head.encode("ascii") + body)
            await writer.drain()
        except (ConnectionError, OSError, TimeoutError):
            pass
        finally:
            busy -= 1
            with contextlib.suppress(Exception):
                writer.close()

    return await asyncio.start_server(respond, host, port, limit=MAX_HEAD)


async def _answer(registry: Registry, reader: asyncio.StreamReader) -> tuple[str, bytes, str]:
    text = "text/plain; charset=utf-8"
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
    except (asyncio.LimitOverrunError, ValueError):
        return "431 Request Header Fields Too Large", b"request head too large\n", text
    except asyncio.IncompleteReadError as exc:
        head = exc.partial  # e.g. a bare "GET /metrics HTTP/1.0\n" from a hand-typed probe
    parts = head.split(b"\r\n", 1)[0].split()
    if len(parts) < 2:
        return "400 Bad Request", b"bad request\n", text
    method, path = parts[0], parts[1].split(b"?", 1)[0]
    if path != b"/metrics":
        return "404 Not Found", b"metrics are at /metrics\n", text
    if method != b"GET":
        return "405 Method Not Allowed", b"GET only\n", text
    return "200 OK", registry.exposition().encode(), CONTENT_TYPE
