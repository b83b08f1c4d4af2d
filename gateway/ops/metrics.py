"""Prometheus metrics for the gateway daemon, served over HTTP from its own event loop.

Hand-written rather than `prometheus_client`: the daemon must stay within 64 MB at 10,000
clients, and what it needs (counters, one histogram, callbacks read at scrape time, the text
format 0.0.4) is a page of code with no import cost, no threads and no global registry.

Cardinality is bounded by construction: labels come from small fixed sets (client state,
control op, end reason, refusal kind); nothing is labelled by client. Labelled counters also
cap their series (`MAX_SERIES`) so a bug cannot turn a label into a per-client one.

Other modules add their own families with `register_collector(callable)`: the callable runs at
each scrape and returns `Family` objects, e.g. accounting's `plaza_client_bytes_total`.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import math
import os
import platform
import resource
import time
from collections import Counter as _Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from plaza.logs import LEVEL_COUNTS, RateLimitedLog

if TYPE_CHECKING:
    from gateway.garden.queue import GardenInspector
    from gateway.gateway import Gateway

log = logging.getLogger("plaza.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DEFAULT_LISTEN = "127.0.0.1:9100"
MAX_SERIES = 64  # per labelled counter; further label sets all go to one "other" series
# Authorize is a SQLite write plus one nft element add: ~1 ms when healthy; 1 s is broken.
AUTH_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
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


def _start_time() -> float:
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


def _version() -> str:
    """This package's version; importlib.metadata is imported only here, once per start."""
    try:
        from importlib.metadata import version

        return version("plaza")
    except Exception:
        return "unknown"


# -- the gateway's metrics ---------------------------------------------------------------------
class GatewayMetrics:
    """The daemon's instruments, and collectors reading the gateway's state at scrape time.

    `garden` is a callable because the inspector is started after the daemon is built and
    may fail to start (then the gauges say so rather than vanish).
    """

    def __init__(
        self,
        gateway: Gateway,
        garden: Callable[[], GardenInspector | None] = lambda: None,
        registry: Registry | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        from gateway.stations import control
        from gateway.stations.sessions import Reason, State

        self.gateway, self.garden, self.clock = gateway, garden, clock
        self.registry = registry or Registry()
        self.register_collector = self.registry.register_collector
        self.ops = control.OPS
        self.states = [s.value for s in State]
        self.requests = Counter(
            "plaza_control_requests_total",
            "Control-socket requests by op and outcome (ok, error: refused with a message, "
            "exception: internal error, invalid: not a JSON request).",
            ("op", "outcome"),
        )
        self.authorize = Histogram(
            "plaza_authorize_duration_seconds",
            "Time to handle a successful authorize request (database write and kernel set add).",
            AUTH_BUCKETS,
        )
        self.ended = Counter(
            "plaza_sessions_ended_total", "Sessions ended, by reason.", ("reason",)
        )
        for reason in Reason:
            self.ended.seed(reason=reason.value)
        self._ended_source = self._watch_sessions(gateway)
        self.periodic_runs = Counter(
            "plaza_periodic_runs_total",
            "Accounting polls and kernel reconciles run (reconcile: compared in a worker "
            "thread, no drift; reconcile-full: the gateway compared and repaired on the daemon's "
            "thread; reconcile-skipped: nobody else had changed the kernel since).",
            ("task",),
        )
        for task in ("poll", "reconcile", "reconcile-full", "reconcile-skipped"):
            self.periodic_runs.seed(task=task)
        self.periodic_last: dict[str, tuple[float, float]] = {}
        for metric in (self.requests, self.authorize, self.periodic_runs):
            self.registry.register(metric)
        self.build = Family("plaza_build_info", "gauge", "Version of the running gateway.").add(
            1, version=_version(), python=platform.python_version()
        )
        self.start_time = _start_time()
        for collector in (
            lambda: [self.build],
            self._clients,
            self._sessions,
            self._repairs,
            self._periodic,
            self._garden,
            self._logs,
            lambda: process_families(self.start_time),
        ):
            self.registry.register_collector(collector)

    # -- instruments fed by the daemon -----------------------------------------------------
    def handle(self, request: Any) -> dict[str, Any]:
        """`gateway.handle`, counted by op and outcome, authorize timed."""
        op = request.get("op") if isinstance(request, dict) else None
        op = op.replace("-", "_") if isinstance(op, str) else ""
        label = op if op in self.ops else "unknown"
        start = self.clock()
        try:
            response = self.gateway.handle(request)
        except Exception:
            self.requests.inc(op=label, outcome="exception")
            raise
        ok = response.get("ok") is True
        if ok and op == "auth":
            self.authorize.observe(self.clock() - start)
        self.requests.inc(op=label, outcome="ok" if ok else "error")
        return response

    def periodic(self, task: str, read_seconds: float, loop_seconds: float) -> None:
        """A poll or reconcile ran: `read_seconds` in a worker thread reading the kernel,
        `loop_seconds` on the daemon's own thread (where it holds up requests)."""
        self.periodic_runs.inc(task=task)
        self.periodic_last[task] = (read_seconds, loop_seconds)

    def reconcile_skipped(self) -> None:
        """The kernel had not been changed by anyone else: no comparison was needed."""
        self.periodic_runs.inc(task="reconcile-skipped")

    def invalid_request(self) -> None:
        """A request the daemon could not even parse (not JSON, too large)."""
        self.requests.inc(op="none", outcome="invalid")

    def _watch_sessions(self, gateway: Gateway) -> Mapping[str, int] | None:
        """Where ended sessions are counted: the gateway's own tally if it keeps one.

        Otherwise wrap this instance's `apply` (the single place EndSession ops pass) and count
        here; gateway.py is not ours to edit, and the wrapper changes nothing it does.
        """
        source = getattr(gateway, "ended_by_reason", None)
        if isinstance(source, Mapping):
            return source
        from gateway.stations.sessions import EndSession

        apply = gateway.apply

        def counting_apply(ops: list[Any]) -> None:
            apply(ops)
            for op in ops:
                if isinstance(op, EndSession):
                    self.ended.inc(reason=str(op.reason))

        gateway.apply = counting_apply  # type: ignore[method-assign]
        return None

    # -- collectors ------------------------------------------------------------------------
    def _clients(self) -> list[Family]:
        counts = _Counter(str(c.state) for c in self.gateway.table.clients.values())
        family = Family("plaza_clients", "gauge", "Known stations by session state.")
        for state in self.states:
            family.add(counts.get(state, 0), state=state)
        return [family]

    def _sessions(self) -> Iterable[Family]:
        if self._ended_source is None:
            return self.ended.collect()
        family = Family(self.ended.name, "counter", self.ended.help)
        merged = {key[0]: 0.0 for key in self.ended.values}
        merged.update((str(k), v) for k, v in self._ended_source.items())
        for reason, n in sorted(merged.items()):
            family.add(n, reason=reason)
        return [family]

    def _repairs(self) -> list[Family]:
        return [
            Family(
                "plaza_reconciler_repairs_total",
                "counter",
                "Kernel set elements (or whole tables) the reconciler had to put right.",
            ).add(self.gateway.repairs)
        ]

    def _periodic(self) -> list[Family]:
        family = Family(
            "plaza_periodic_last_seconds",
            "gauge",
            "The last accounting poll or reconcile: seconds reading the kernel in a worker "
            "thread (where=thread) and working on the daemon's own thread (where=loop).",
        )
        for task, (read, loop) in sorted(self.periodic_last.items()):
            family.add(read, task=task, where="thread").add(loop, task=task, where="loop")
        return [family]

    def _garden(self) -> list[Family]:
        """The walled-garden inspector's counters and the kernel queue's drop counters."""
        garden = self.garden()
        up = Family(
            "plaza_garden_inspector_up",
            "gauge",
            "1 if the walled-garden SNI inspector is running (else captive TLS to the garden "
            "is refused).",
        ).add(1 if garden is not None else 0)
        if garden is None:
            return [up]
        insp = garden.inspector
        packets = Family(
            "plaza_garden_packets_total", "counter", "Packets the walled-garden inspector read."
        ).add(insp.stats.get("packets", 0))
        verdicts = Family(
            "plaza_garden_verdicts_total",
            "counter",
            "Walled-garden verdicts: allow/refuse per connection (reason: garden name or why "
            "refused), pass per payload-less packet, drop per retransmitted segment.",
        )
        verdicts.add(insp.stats.get("allowed", 0), verdict="allow", reason="garden")
        verdicts.add(insp.stats.get("passed", 0), verdict="pass", reason="no-payload")
        verdicts.add(insp.stats.get("duplicates", 0), verdict="drop", reason="retransmission")
        for key, n in sorted(insp.stats.items()):
            if key.startswith("refused:"):
                verdicts.add(n, verdict="refuse", reason=key.partition(":")[2])
        held = Family(
            "plaza_garden_held_connections",
            "gauge",
            "Connections whose ClientHello is split and partly held.",
        ).add(len(insp.held))
        out = [up, packets, verdicts, held]
        from gateway.garden.queue import kernel_queue_stats

        stats = kernel_queue_stats(garden.hook.num)
        if stats is not None:
            drops = Family(
                "plaza_garden_queue_dropped_total",
                "counter",
                "Packets the kernel dropped on the way to the inspector (queue-full: more "
                "than the queue holds; socket-full: our receive buffer overran).",
            )
            drops.add(stats["queue_dropped"], cause="queue-full")
            drops.add(stats["user_dropped"], cause="socket-full")
            length = Family(
                "plaza_garden_queue_length", "gauge", "Packets waiting for a verdict now."
            ).add(stats["queue_total"])
            out += [drops, length]
        return out

    def _logs(self) -> list[Family]:
        family = Family("plaza_log_messages_total", "counter", "Log records written, by level.")
        for level in ("debug", "info", "warning", "error", "critical"):
            family.add(LEVEL_COUNTS.get(level, 0), level=level)
        return [family]

    # -- the endpoint ----------------------------------------------------------------------
    async def serve(self, host: str, port: int) -> asyncio.AbstractServer:
        return await serve(self.registry, host, port)


# -- HTTP --------------------------------------------------------------------------------------
def parse_listen(value: str) -> tuple[str, int] | None:
    """`HOST:PORT`, `[v6]:PORT`, or `off`/empty for no endpoint."""
    value = value.strip()
    if value.lower() in ("", "off", "none", "no"):
        return None
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536 or not host:
        raise ValueError(f"metrics address must be HOST:PORT or off; got {value!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"write an IPv6 metrics address as [ADDR]:PORT; got {value!r}")
    return host, int(port)


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
