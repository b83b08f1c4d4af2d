"""gateway/ops/metrics.py: the exposition format, the histogram, the gateway's metrics, the
endpoint."""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter as TallyCounter
from pathlib import Path
from types import SimpleNamespace

import pytest

from gateway.config import Config
from gateway.garden.queue import kernel_queue_stats
from gateway.gateway import Gateway
from gateway.listen import parse_listen
from gateway.ops import metrics
from gateway.ops.metrics import (
    AUTH_BUCKETS,
    Counter,
    Family,
    GatewayMetrics,
    Histogram,
    Registry,
)
from gateway.ops.prometheus import render
from tests.promtext import buckets, parse
from tests.unit.conftest import MakeGateway

MAC = "02:50:4c:00:00:01"
MAC2 = "02:50:4c:00:00:02"
IP = "198.19.0.100"
IP2 = "198.19.0.101"


class FakeClock:
    """perf_counter stand-in: each call advances by the next step."""

    def __init__(self) -> None:
        self.now = 0.0
        self.steps: list[float] = []

    def __call__(self) -> float:
        if self.steps:
            self.now += self.steps.pop(0)
        return self.now


@pytest.fixture
def gateway(make_gateway: MakeGateway) -> Gateway:
    return make_gateway(clock=lambda: 1000.0)


# -- the text format -------------------------------------------------------------------------
def test_exposition_parses_back_with_escaped_labels_and_help() -> None:
    family = Family("plaza_x_total", "counter", 'help with "quotes", \\ and\nnewline')
    family.add(3, kind='a "quoted" \\ back\nslash').add(0.25, kind="plain")
    gauge = Family("plaza_y", "gauge", "special values").add(math.inf, v="inf").add(-0.0, v="z")
    text = render([family, gauge])
    parsed = parse(text)
    assert parsed["plaza_x_total"].type == "counter"
    assert parsed["plaza_x_total"].help == 'help with "quotes", \\ and\nnewline'
    assert parsed["plaza_x_total"].value(kind='a "quoted" \\ back\nslash') == 3
    assert parsed["plaza_x_total"].value(kind="plain") == 0.25
    assert parsed["plaza_y"].value(v="inf") == math.inf
    assert 'plaza_y{v="z"} 0\n' in text  # integers print without a fraction, -0 as 0
    assert text.count("\n") == len(text.splitlines())  # no raw newline inside a line


def test_counter_labels_are_capped_and_never_go_down() -> None:
    c = Counter("plaza_c_total", "c", ("op",), max_series=3)
    for op in ("a", "b", "c", "d", "e"):
        c.inc(op=op)
    parsed = parse(render(c.collect()))["plaza_c_total"]
    assert len(parsed.samples) == 4 and parsed.value(op="other") == 2  # 3 kept, + "other"
    with pytest.raises(ValueError):
        c.inc(-1, op="a")


def test_histogram_buckets_are_cumulative_and_le_inclusive() -> None:
    h = Histogram("plaza_h_seconds", "h", AUTH_BUCKETS)
    for value in (0.0001, 0.0005, 0.0007, 0.02, 1.0, 3.0):
        h.observe(value)
    parsed = parse(render(h.collect()))["plaza_h_seconds"]
    got = dict(buckets(parsed))
    assert list(got) == [*AUTH_BUCKETS, math.inf]
    assert got[0.0005] == 2  # 0.0001 and exactly 0.0005: le means "less than or equal"
    assert got[0.001] == 3
    assert got[0.025] == 4
    assert got[1.0] == 5  # exactly 1 s is still in the last finite bucket
    assert got[math.inf] == 6
    assert parsed.value("_count") == 6
    assert parsed.value("_sum") == pytest.approx(4.0213)


def test_auth_buckets_span_half_a_millisecond_to_a_second() -> None:
    assert AUTH_BUCKETS[0] == 0.0005 and AUTH_BUCKETS[-1] == 1.0
    assert list(AUTH_BUCKETS) == sorted(set(AUTH_BUCKETS))
    with pytest.raises(ValueError):
        Histogram("plaza_bad", "bad", (0.1, 0.01))


# -- the registry and the collector hook ------------------------------------------------------
def test_register_collector_adds_families_and_can_be_removed() -> None:
    registry = Registry()
    tally = {"up": 10, "down": 250}

    def accounting() -> list[Family]:
        family = Family("plaza_client_bytes_total", "counter", "Bytes by direction.")
        for direction, n in tally.items():
            family.add(n, direction=direction)
        return [family]

    remove = registry.register_collector(accounting)
    parsed = parse(registry.exposition())
    assert parsed["plaza_client_bytes_total"].value(direction="down") == 250
    tally["down"] = 300  # read at scrape time, not at registration
    assert parse(registry.exposition())["plaza_client_bytes_total"].value(direction="down") == 300
    remove()
    assert "plaza_client_bytes_total" not in registry.exposition()


def test_a_broken_or_duplicate_collector_does_not_break_the_page() -> None:
    registry = Registry()
    registry.register_collector(lambda: [Family("plaza_ok", "gauge", "ok").add(1)])

    def broken() -> list[Family]:
        raise RuntimeError("boom")

    registry.register_collector(broken)
    registry.register_collector(lambda: [Family("plaza_ok", "gauge", "again").add(2)])
    parsed = parse(registry.exposition())
    assert parsed["plaza_ok"].value() == 1


# -- the gateway's metrics ---------------------------------------------------------------------
def test_gateway_metrics_count_requests_time_authorize_and_sessions(gateway: Gateway) -> None:
    clock = FakeClock()
    m = GatewayMetrics(gateway, clock=clock)
    assert m.handle({"op": "lease", "action": "add", "mac": MAC, "ip": IP})["ok"]
    assert m.handle({"op": "lease", "action": "add", "mac": MAC2, "ip": IP2})["ok"]
    clock.steps = [0, 0.0015]  # the authorize took 1.5 ms
    assert m.handle({"op": "auth", "client": IP})["ok"]
    assert not m.handle({"op": "auth", "client": "198.19.0.9"})["ok"]  # refused: not timed
    assert m.handle({"op": "deauth", "client": IP, "reason": "logout"})["ok"]
    assert not m.handle({"op": "x" * 30})["ok"]
    assert not m.handle(["not", "a", "dict"])["ok"]
    m.invalid_request()
    gateway.repairs = 4

    page = parse(m.registry.exposition())
    requests = page["plaza_control_requests_total"]
    assert requests.value(op="lease", outcome="ok") == 2
    assert requests.value(op="auth", outcome="ok") == 1
    assert requests.value(op="auth", outcome="error") == 1
    assert requests.value(op="deauth", outcome="ok") == 1
    assert requests.value(op="unknown", outcome="error") == 2  # no label per made-up op
    assert requests.value(op="none", outcome="invalid") == 1
    auth = page["plaza_authorize_duration_seconds"]
    assert auth.value("_count") == 1
    assert dict(buckets(auth))[0.001] == 0 and dict(buckets(auth))[0.0025] == 1
    assert page["plaza_clients"].value(state="captive") == 2
    assert page["plaza_clients"].value(state="authorized") == 0
    ended = page["plaza_sessions_ended_total"]
    assert ended.value(reason="logout") == 1 and ended.value(reason="session-timeout") == 0
    assert page["plaza_reconciler_repairs_total"].value() == 4
    assert page["plaza_garden_inspector_up"].value() == 0
    assert page["plaza_build_info"].samples  # version and python labels
    assert page["process_resident_memory_bytes"].value() > 1_000_000
    assert page["process_open_fds"].value() >= 3


def test_sessions_ended_by_timeout_are_counted_from_ticks(gateway: Gateway) -> None:
    now = [1000.0]
    gateway.clock = lambda: now[0]
    m = GatewayMetrics(gateway)
    m.handle({"op": "lease", "action": "add", "mac": MAC, "ip": IP})
    m.handle({"op": "auth", "client": IP, "minutes": 1})
    now[0] += 61
    gateway.tick()
    page = parse(m.registry.exposition())
    assert page["plaza_sessions_ended_total"].value(reason="session-timeout") == 1
    assert page["plaza_clients"].value(state="authorized") == 0


def test_a_gateway_tally_of_ended_sessions_is_used_when_it_has_one(gateway: Gateway) -> None:
    gateway.ended_by_reason = TallyCounter({"left": 7})  # type: ignore[attr-defined]
    page = parse(GatewayMetrics(gateway).registry.exposition())
    ended = page["plaza_sessions_ended_total"]
    assert ended.value(reason="left") == 7 and ended.value(reason="admin") == 0


def test_garden_verdicts_and_kernel_queue_drops(
    gateway: Gateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    proc = tmp_path / "nfnetlink_queue"
    proc.write_text("    0  99     0 2  4016     0     0        5  1\n"
                    "    1  12345     3 2  4016    11     2      900  1\n")  # fmt: skip
    monkeypatch.setattr("gateway.garden.queue.QUEUE_PROC", str(proc))
    stats = TallyCounter(
        {"packets": 20, "allowed": 5, "passed": 9, "duplicates": 1, "refused:not-garden": 4,
         "refused:not-tls": 1, "held": 2}
    )  # fmt: skip
    garden = SimpleNamespace(
        inspector=SimpleNamespace(stats=stats, held={"flow": object()}),
        hook=SimpleNamespace(num=1),
    )
    page = parse(GatewayMetrics(gateway, garden=lambda: garden).registry.exposition())  # type: ignore[arg-type]
    assert page["plaza_garden_inspector_up"].value() == 1
    assert page["plaza_garden_packets_total"].value() == 20
    verdicts = page["plaza_garden_verdicts_total"]
    assert verdicts.value(verdict="allow", reason="garden") == 5
    assert verdicts.value(verdict="refuse", reason="not-garden") == 4
    assert verdicts.value(verdict="refuse", reason="not-tls") == 1
    assert verdicts.value(verdict="pass", reason="no-payload") == 9
    assert verdicts.value(verdict="drop", reason="retransmission") == 1
    assert page["plaza_garden_held_connections"].value() == 1
    drops = page["plaza_garden_queue_dropped_total"]
    assert drops.value(cause="queue-full") == 11 and drops.value(cause="socket-full") == 2
    assert page["plaza_garden_queue_length"].value() == 3


def test_kernel_queue_stats_reads_one_queue(tmp_path: Path) -> None:
    proc = tmp_path / "q"
    proc.write_text("    1  12345     3 2  4016    11     2      900  1\n")
    assert kernel_queue_stats(1, str(proc)) == {
        "queue_total": 3,
        "queue_dropped": 11,
        "user_dropped": 2,
    }
    assert kernel_queue_stats(2, str(proc)) is None
    assert kernel_queue_stats(1, str(tmp_path / "missing")) is None


def test_scrape_is_bounded_with_many_clients(gateway: Gateway) -> None:
    """10,000 stations are totals, not 10,000 series."""
    for i in range(10_000):
        gateway.table.seen(f"02:00:00:00:{i // 256:02x}:{i % 256:02x}", None, 1000.0)
    page = parse(GatewayMetrics(gateway).registry.exposition())
    assert page["plaza_clients"].value(state="captive") == 10_000
    assert sum(len(f.samples) for f in page.values()) < 100


# -- the endpoint ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "want"),
    [
        ("127.0.0.1:9100", ("127.0.0.1", 9100)),
        ("[::1]:9100", ("::1", 9100)),
        ("off", None),
        ("", None),
    ],
)
def test_parse_listen(value: str, want: tuple[str, int] | None) -> None:
    assert parse_listen(value) == want


@pytest.mark.parametrize("value", ["9100", "host:", "::1:9100", "h:0", "h:70000", ":9100"])
def test_parse_listen_refuses(value: str) -> None:
    with pytest.raises(ValueError):
        parse_listen(value)


async def _http(port: int, raw: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return data


def test_http_endpoint_serves_get_metrics_only() -> None:
    registry = Registry()
    registry.register_collector(lambda: [Family("plaza_ok", "gauge", "ok").add(1)])

    async def main() -> list[bytes]:
        server = await metrics.serve(registry, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            return [
                await _http(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
                await _http(port, b"GET /metrics?x=1 HTTP/1.0\r\n\r\n"),
                await _http(port, b"GET / HTTP/1.1\r\n\r\n"),
                await _http(port, b"POST /metrics HTTP/1.1\r\n\r\n"),
                await _http(port, b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 9000 + b"\r\n\r\n"),
            ]
        finally:
            server.close()
            await server.wait_closed()

    ok, query, root, post, big = asyncio.run(main())
    head, _, body = ok.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert b"Content-Type: text/plain; version=0.0.4; charset=utf-8" in head
    assert f"Content-Length: {len(body)}".encode() in head
    assert parse(body.decode())["plaza_ok"].value() == 1
    assert query.startswith(b"HTTP/1.1 200")
    assert root.startswith(b"HTTP/1.1 404")
    assert post.startswith(b"HTTP/1.1 405")
    assert big.startswith(b"HTTP/1.1 431")


def test_the_daemon_counts_what_comes_over_the_control_socket(
    config: Config, make_gateway: MakeGateway
) -> None:
    import socket

    from gateway.control_client import ControlClient
    from gateway.daemon import Daemon

    gw = make_gateway(clock=time.time)
    daemon = Daemon(config, gw, lan_ifindex=None)

    def script() -> None:
        client = ControlClient(config.gateway.control_socket, timeout=2)
        client.call("lease", action="add", mac=MAC, ip=IP)
        client.auth(IP)
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(config.gateway.control_socket)
            s.sendall(b"{not json\n")
            s.shutdown(socket.SHUT_WR)
            s.recv(1000)

    async def main() -> None:
        task = asyncio.create_task(daemon.run())
        for _ in range(200):
            if Path(config.gateway.control_socket).exists():
                break
            await asyncio.sleep(0.01)
        try:
            await asyncio.to_thread(script)
        finally:
            daemon.stopping.set()
            await task

    asyncio.run(main())
    page = parse(daemon.metrics.registry.exposition())
    requests = page["plaza_control_requests_total"]
    assert requests.value(op="auth", outcome="ok") == 1
    assert requests.value(op="none", outcome="invalid") == 1
    assert page["plaza_authorize_duration_seconds"].value("_count") == 1
    assert page["plaza_clients"].value(state="authorized") == 1
