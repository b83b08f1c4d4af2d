"""Prometheus metrics of the gateway daemon: its instruments (control requests, authorize
time, periodic work) and collectors that read the gateway's state at each scrape.

The format, the instruments and the HTTP endpoint are gateway/ops/prometheus.py; this module
is what the gateway shows through them. Labels come from small fixed sets (client state,
control op, end reason, refusal kind); nothing is labelled by client.

Metrics observe the gateway only through what it offers for the purpose (its session table,
`ended_by_reason`, `repairs`, `handle`); they wrap none of its methods. Other modules add
their own families with `register_collector(callable)`: the callable runs at each scrape and
returns `Family` objects, e.g. accounting's `plaza_client_bytes_total`.
"""

from __future__ import annotations

import asyncio
import platform
import time
from collections import Counter as _Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gateway.ops.prometheus import (
    Counter,
    Family,
    Histogram,
    Registry,
    process_families,
    serve,
    start_time,
)
from plaza.logs import LEVEL_COUNTS

if TYPE_CHECKING:
    from gateway.garden.queue import GardenInspector
    from gateway.gateway import Gateway

DEFAULT_LISTEN = "127.0.0.1:9100"
# Authorize is a SQLite write plus one nft element add: ~1 ms when healthy; 1 s is broken.
AUTH_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


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
        from gateway.stations.station import Reason, State

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
        self.reasons = [r.value for r in Reason]  # each shown from 0 before its first end
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
        self.start_time = start_time()
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

    # -- collectors ------------------------------------------------------------------------
    def _clients(self) -> list[Family]:
        counts = _Counter(str(c.state) for c in self.gateway.table.clients.values())
        family = Family("plaza_clients", "gauge", "Known stations by session state.")
        for state in self.states:
            family.add(counts.get(state, 0), state=state)
        return [family]

    def _sessions(self) -> list[Family]:
        """Sessions ended, by reason, as the gateway tallies them where it applies EndSession
        operations (`Gateway.ended_by_reason`)."""
        family = Family("plaza_sessions_ended_total", "counter", "Sessions ended, by reason.")
        merged = dict.fromkeys(self.reasons, 0)
        merged.update((str(k), v) for k, v in self.gateway.ended_by_reason.items())
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
