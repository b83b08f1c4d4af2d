"""dnsmasq's lease file as DHCP events (gateway/stations/leases.py) and the daemon's watch on it
(gateway/stations/lease_watch.py): what dnsmasq's per-event script was told, with no process."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.config import Config
from gateway.control_client import ControlClient
from gateway.daemon import Daemon
from gateway.stations import dnsmasq, lease_watch, leases
from gateway.stations.lease_watch import LeaseWatch
from gateway.stations.leases import Event, Lease
from tests.unit.conftest import MakeGateway

A = b"1765000000 02:50:4c:00:00:01 198.19.0.100 phone1 01:02:50:4c:00:00:01\n"
B = b"1765000100 02:50:4c:00:00:02 198.19.0.101 * *\n"
LEASE_A = Lease("02:50:4c:00:00:01", "198.19.0.100", "phone1", 1765000000)
LEASE_B = Lease("02:50:4c:00:00:02", "198.19.0.101", "", 1765000100)


def test_dnsmasq_lines_become_leases() -> None:
    reading = leases.parse(A + B)
    assert reading.complete and reading.bad == []
    assert list(reading.leases.values()) == [LEASE_A, LEASE_B]


def test_a_replay_marks_every_lease_and_gives_a_stations_newest_last() -> None:
    """At start: every lease `old` and `replayed`; of one station's two leases, in whatever
    order the file has them, the one with the later expiry (given last) comes last."""
    newer = b"1765000900 02:50:4c:00:00:01 198.19.0.110 phone1 ff:aa\n"
    events = leases.replay(leases.parse(newer + A))
    assert [(e.action, e.replayed, e.lease.ip) for e in events] == [
        ("old", True, "198.19.0.100"),
        ("old", True, "198.19.0.110"),
    ]


def test_an_infinite_lease_and_upper_case_mac() -> None:
    (lease,) = leases.parse(b"0 02:50:4C:00:00:0A 198.19.0.9 tv *\n").leases.values()
    assert lease == Lease("02:50:4c:00:00:0a", "198.19.0.9", "tv", 0)


def test_dhcpv6_leases_after_the_duid_line_are_skipped_not_bad() -> None:
    v6 = b"duid 00:01:00:01:2c:aa:bb:cc:02:00:00:00:00:01\n1765000000 1234 2001:db8::5 pc 00:01\n"
    reading = leases.parse(A + v6)
    assert list(reading.leases.values()) == [LEASE_A] and reading.bad == []


@pytest.mark.parametrize(
    "line, reason",
    [
        (b"garbage", "expected at least 4 fields, got 1"),
        (b"soon 02:50:4c:00:00:03 198.19.0.102 x *", "expiry is not a number"),
        (b"1765000000 06-02:50:4c:00:00:03 198.19.0.102 x *", "not an Ethernet MAC address"),
        (b"1765000000 02:50:4c:00:00:03 198.19.0.999 x *", "not an IPv4 address"),
        (b"1765000000 02:50:4c:00:00:03 \xff\xfe x *", "not an IPv4 address"),
    ],
)
def test_a_bad_line_is_named_and_loses_nothing_else(line: bytes, reason: str) -> None:
    reading = leases.parse(A + line + b"\n" + B)
    assert list(reading.leases.values()) == [LEASE_A, LEASE_B]
    (bad,) = reading.bad
    assert (bad.number, bad.reason, bad.line) == (2, reason, line)
    assert str(bad).startswith(f"line 2: {reason}: ") and "\n" not in str(bad)


def test_a_half_written_file_is_incomplete_and_its_last_line_waits() -> None:
    reading = leases.parse(A + B[:20])
    assert not reading.complete
    assert list(reading.leases.values()) == [LEASE_A] and reading.bad == []
    assert leases.parse(b"").complete


def test_a_bad_host_name_is_dropped_the_lease_kept() -> None:
    (lease,) = leases.parse(b"1 02:50:4c:00:00:01 198.19.0.100 a\x1b[2Jb *\n").leases.values()
    assert lease.hostname == "" and lease.ip == "198.19.0.100"
    utf8 = "王美的-iPhone".encode()
    (lease,) = leases.parse(b"1 02:50:4c:00:00:01 198.19.0.100 " + utf8 + b" *\n").leases.values()
    assert lease.hostname == "王美的-iPhone"


def test_diff_says_what_the_script_was_told() -> None:
    before = leases.parse(A + B).leases
    renewed_a = A.replace(b"1765000000", b"1765003600")
    c = b"1765000200 02:50:4c:00:00:03 198.19.0.102 tablet *\n"
    after = leases.parse(renewed_a + c).leases
    events = leases.diff(before, after)
    assert [(e.action, e.lease.mac) for e in events] == [
        ("del", "02:50:4c:00:00:02"),
        ("add", "02:50:4c:00:00:03"),
        ("old", "02:50:4c:00:00:01"),
    ]
    assert leases.diff(after, after) == []
    renamed = leases.parse(A.replace(b"phone1", b"phone-one")).leases
    assert leases.diff(leases.parse(A).leases, renamed) == [
        Event("old", Lease(LEASE_A.mac, LEASE_A.ip, "phone-one", LEASE_A.expiry))
    ]


def test_of_one_stations_two_leases_the_newest_comes_last() -> None:
    """The VM lab's crash scenario: after the power cut the daemon's first reading held the
    phone's lease (newest, first in the file) and an older one from its first boot; the older
    one, applied last, moved the station to an address it no longer holds and ended its
    restored session ("address-changed")."""
    newest = b"1765003600 02:50:4c:00:00:01 198.19.0.188 phone1 01:02:50:4c:00:00:01\n"
    older = b"1765000000 02:50:4c:00:00:01 198.19.0.187 plaza-router ff:90:ed\n"
    events = leases.diff({}, leases.parse(newest + older).leases)
    assert [(e.action, e.lease.ip) for e in events] == [
        ("add", "198.19.0.187"),
        ("add", "198.19.0.188"),
    ]
    forever = b"0 02:50:4c:00:00:01 198.19.0.190 static *\n"  # expiry 0: never, so newest
    events = leases.diff({}, leases.parse(forever + newest).leases)
    assert [e.lease.ip for e in events] == ["198.19.0.188", "198.19.0.190"]


def test_an_address_moved_to_another_station_is_released_then_added() -> None:
    moved = b"1765000300 02:50:4c:00:00:09 198.19.0.100 other *\n"
    events = leases.diff(leases.parse(A).leases, leases.parse(moved).leases)
    assert [(e.action, e.lease.mac) for e in events] == [
        ("del", LEASE_A.mac),
        ("add", "02:50:4c:00:00:09"),
    ]


def test_inotify_events_are_parsed_by_name() -> None:
    def event(name: bytes, mask: int = lease_watch.IN_MODIFY) -> bytes:
        padded = name + b"\0" * (16 - len(name))
        return lease_watch.HEADER.pack(1, mask, 0, len(padded)) + padded

    names, overflow = lease_watch.names_changed(event(b"dnsmasq.leases") + event(b"plaza.db"))
    assert names == {b"dnsmasq.leases", b"plaza.db"} and not overflow
    assert lease_watch.names_changed(event(b"", lease_watch.IN_Q_OVERFLOW))[1]


def run_watch(tmp_path: Path, steps: Callable[[Path, list[Event]], object], **kw) -> LeaseWatch:
    """A LeaseWatch on tmp_path/dnsmasq.leases on a real loop while `steps` (a coroutine
    function) writes the file."""
    path = tmp_path / "dnsmasq.leases"
    seen: list[Event] = []
    watch = LeaseWatch(path, seen.append, **kw)

    async def main() -> None:
        watch.start(asyncio.get_running_loop())
        try:
            await steps(path, seen)  # type: ignore[misc]
        finally:
            watch.close()

    asyncio.run(main())
    return watch


async def until(check: Callable[[], bool], timeout: float = 3.0) -> None:
    for _ in range(int(timeout / 0.005)):
        if check():
            return
        await asyncio.sleep(0.005)
    assert check()


def rewrite_in_place(path: Path, data: bytes) -> None:
    """As dnsmasq writes: the same file, rewound, written, truncated."""
    with path.open("r+b" if path.exists() else "w+b") as f:
        f.write(data)
        f.truncate()


def test_the_watch_replays_the_file_then_follows_it(tmp_path: Path) -> None:
    (tmp_path / "dnsmasq.leases").write_bytes(A)

    async def steps(path: Path, seen: list[Event]) -> None:
        assert seen == [Event("old", LEASE_A, replayed=True)]  # at start, as dnsmasq replays
        rewrite_in_place(path, A + B)
        await until(lambda: len(seen) == 2)
        assert seen[1] == Event("add", LEASE_B)
        (path.parent / "plaza.db").write_bytes(b"x")  # another file in the directory
        rewrite_in_place(path, B)
        await until(lambda: len(seen) == 3)
        assert seen[2] == Event("del", LEASE_A)
        await asyncio.sleep(0.05)
        assert len(seen) == 3

    watch = run_watch(tmp_path, steps)
    assert dict(watch.events) == {"old": 1, "add": 1, "del": 1}


def test_a_file_created_later_or_replaced_is_followed(tmp_path: Path) -> None:
    async def steps(path: Path, seen: list[Event]) -> None:
        assert seen == []  # no file yet: nothing, no error
        path.write_bytes(A)
        await until(lambda: seen == [Event("add", LEASE_A)])
        fresh = path.with_name("new")
        fresh.write_bytes(A + B)
        os.replace(fresh, path)  # a restore, or a tool that writes a new file and renames it
        await until(lambda: len(seen) == 2)
        assert seen[1] == Event("add", LEASE_B)
        path.unlink()  # gone: nothing is taken for released
        await asyncio.sleep(0.05)
        assert len(seen) == 2

    run_watch(tmp_path, steps)


def test_a_half_written_file_waits_for_the_rest(tmp_path: Path) -> None:
    async def steps(path: Path, seen: list[Event]) -> None:
        with path.open("wb") as f:
            f.write(A + B[:15])
            f.flush()
            await asyncio.sleep(0.012)  # past the debounce: the watch reads half a line
            assert seen == [Event("add", LEASE_A)] or seen == []
            f.write(B[15:])
        await until(lambda: Event("add", LEASE_B) in seen)
        assert seen == [Event("add", LEASE_A), Event("add", LEASE_B)]

    run_watch(tmp_path, steps)


def test_a_lease_is_released_only_when_missing_for_a_while(tmp_path: Path) -> None:
    """dnsmasq truncates its file before writing it: a reading in between is empty, or a
    prefix of the new file cut at a line's end, and dnsmasq may stay off the CPU there for a
    while. A missing lease counts only when a reading RELEASE_AFTER later still lacks it."""
    path = tmp_path / "dnsmasq.leases"
    seen: list[Event] = []
    now = [1000.0]
    watch = LeaseWatch(path, seen.append, clock=lambda: now[0])  # readings made here, by hand
    path.write_bytes(A + B)
    watch.read()
    assert seen == [Event("add", LEASE_A), Event("add", LEASE_B)]
    for torn in (b"", A, b"", B):  # caught mid-write, again 0.9 s later, then the whole file
        path.write_bytes(torn)
        watch.read()
        now[0] += 0.9
        watch.read()
        path.write_bytes(A + B)
        watch.read()
    assert len(seen) == 2 and watch.leases == {
        (LEASE_A.mac, LEASE_A.ip): LEASE_A,
        (LEASE_B.mac, LEASE_B.ip): LEASE_B,
    }
    path.write_bytes(B)  # A released
    watch.read()
    now[0] += lease_watch.RELEASE_AFTER - 0.01
    watch.read()
    assert len(seen) == 2
    now[0] += 0.01
    watch.read()
    assert seen[2:] == [Event("del", LEASE_A)]
    assert list(watch.leases.values()) == [LEASE_B]
    watch.read()
    assert len(seen) == 3


def test_a_bad_line_is_logged_once_and_the_rest_applied(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "plaza.gateway")

    async def steps(path: Path, seen: list[Event]) -> None:
        rewrite_in_place(path, A + b"not a lease\n")
        await until(lambda: seen == [Event("add", LEASE_A)])
        rewrite_in_place(path, A + b"not a lease\n" + B)  # the same bad line again
        await until(lambda: len(seen) == 2)

    watch = run_watch(tmp_path, steps, debounce=0.002)
    logged = [r.getMessage() for r in caplog.records]
    assert logged == [
        f"lease file {tmp_path / 'dnsmasq.leases'}: skipped line 2: "
        "expected at least 4 fields, got 3: 'not a lease'"
    ]
    assert watch.bad_lines == 1


def test_without_inotify_the_file_is_polled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refused(directory: Path) -> int:
        raise OSError(24, "inotify_init1: Too many open files")

    monkeypatch.setattr(lease_watch, "inotify_watch", refused)
    monkeypatch.setattr(lease_watch, "POLL_SECONDS", 0.01)

    async def steps(path: Path, seen: list[Event]) -> None:
        path.write_bytes(A)
        await until(lambda: seen == [Event("add", LEASE_A)])

    run_watch(tmp_path, steps)
    assert "polled every" in caplog.text and "Too many open files" in caplog.text


def test_the_lease_file_is_the_state_dirs_unless_lan_lease_file_names_one(config: Config) -> None:
    """One path for dnsmasq and the daemon: the dnsmasq config Plaza renders writes where the
    daemon reads; on OpenWrt, whose dnsmasq Plaza does not configure, [lan] lease_file names
    OpenWrt's (/tmp/dhcp.leases, set by the overlay)."""
    default = Path(config.gateway.state_dir) / "dnsmasq.leases"
    assert dnsmasq.lease_file(config) == default
    assert f"dhcp-leasefile={default}\n" in dnsmasq.render_conf(config)
    openwrt = dataclasses.replace(config.lan, lease_file="/tmp/dhcp.leases")
    named = dataclasses.replace(config, lan=openwrt)
    assert dnsmasq.lease_file(named) == Path("/tmp/dhcp.leases")
    assert "dhcp-leasefile=/tmp/dhcp.leases\n" in dnsmasq.render_conf(named)


def test_the_daemon_learns_leases_from_the_file(config: Config, make_gateway: MakeGateway) -> None:
    """dnsmasq's file to the session table: add, release, and the metrics."""
    path = dnsmasq.lease_file(config)
    gw = make_gateway(clock=time.time)
    daemon = Daemon(config, gw, lan_ifindex=None)

    def script() -> None:
        client = ControlClient(config.gateway.control_socket, timeout=2)
        rewrite_in_place(path, A + B)
        wait_for(lambda: len(client.clients()) == 2)
        found = {c["mac"]: (c["ip"], c["hostname"], c["state"]) for c in client.clients()}
        assert found == {
            LEASE_A.mac: (LEASE_A.ip, "phone1", "captive"),
            LEASE_B.mac: (LEASE_B.ip, "", "captive"),
        }
        rewrite_in_place(path, B + b"1 02:50:4c:00:00:01\n")  # A released; a bad line
        wait_for(lambda: [c["mac"] for c in client.clients()] == [LEASE_B.mac])

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
    text = daemon.metrics.registry.exposition()
    assert 'plaza_lease_events_total{action="add"} 2' in text
    assert 'plaza_lease_events_total{action="del"} 1' in text
    assert "plaza_lease_file_bad_lines_total 1" in text
    assert 'plaza_control_requests_total{op="lease"' not in text  # no process, no request


def wait_for(check: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not check() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert check()


def test_a_line_read_before_is_not_parsed_again(monkeypatch: pytest.MonkeyPatch) -> None:
    first = leases.parse(A + B)
    assert set(first.lines) == {A.strip(), B.strip()}
    parsed: list[list[bytes]] = []
    real = leases.parse_line
    monkeypatch.setattr(leases, "parse_line", lambda f: parsed.append(f) or real(f))
    c = b"1765000200 02:50:4c:00:00:03 198.19.0.102 tablet *\n"
    again = leases.parse(c + A + B, first.lines)
    assert [f[1] for f in parsed] == [b"02:50:4c:00:00:03"]  # only the new line
    assert list(again.leases.values())[1:] == [LEASE_A, LEASE_B]
