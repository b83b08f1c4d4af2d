"""A table change and its save are all or nothing: when the database refuses the writes, the
session table in memory, the database and the (fake) kernel still agree, and no usage of the
batch is lost (issue 10, item 5)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

import pytest

from gateway.config import AccountingConfig, Config
from gateway.gateway import Gateway
from gateway.stations.outbox import Outbox
from gateway.stations.store import Store
from tests.conftest import FakeClock
from tests.unit.conftest import MakeGateway

A_MAC, A_IP = "02:50:4c:00:00:0a", "198.19.0.110"
B_MAC, B_IP = "02:50:4c:00:00:0b", "198.19.0.111"
C_MAC, C_IP = "02:50:4c:00:00:0c", "198.19.0.112"


class FailingStore(Store):
    """A store whose writes fail while `failing` is set: a full disk, a locked file, or (before
    host names were checked) a value SQLite cannot encode."""

    failing = False

    def write(self, *args, **kwargs) -> None:
        if self.failing:
            raise sqlite3.OperationalError("database or disk is full")
        super().write(*args, **kwargs)


@pytest.fixture
def config(make_config: Callable[..., Config]) -> Config:
    return make_config(accounting=AccountingConfig(poll_seconds=1, interim_seconds=60))


@pytest.fixture
def gw(config: Config, make_gateway: MakeGateway) -> Gateway:
    return make_gateway(store=FailingStore(config.db_path))


def lease(gw: Gateway, mac: str, ip: str, hostname: str = "") -> dict:
    return gw.handle({"op": "lease", "action": "add", "mac": mac, "ip": ip, "hostname": hostname})


def consistent(gw: Gateway) -> None:
    """Memory equals the database, and the kernel holds what memory wants."""
    memory = {c.mac: (c.ip, c.state, c.session_id, c.hostname) for c in gw.table.clients.values()}
    stored = {c.mac: (c.ip, c.state, c.session_id, c.hostname) for c in gw.store.load()}
    assert memory == stored
    assert gw.table.by_ip == {a: c.mac for c in gw.table.clients.values() for a in c.addresses()}
    assert gw.table.authorized_count == len(gw.table.authorized())
    assert gw.granted_as_desired()
    assert gw.firewall.allowed() == set(gw.table.elements())


def test_a_failed_save_rolls_the_batch_back_and_loses_none_of_its_usage(
    gw: Gateway, clock: FakeClock
) -> None:
    """One poll ends A (quota used up) and writes B's interim record; the write fails."""
    lease(gw, A_MAC, A_IP)
    lease(gw, B_MAC, B_IP)
    gw.handle({"op": "auth", "client": A_MAC, "quota_total_mb": 1})
    gw.handle({"op": "auth", "client": B_MAC})
    a_session = gw.table.clients[A_MAC].session_id
    fw = gw.firewall
    fw.traffic(A_IP, A_MAC, down=1_200_000)  # past A's quota: the kernel drops the rest
    fw.traffic(B_IP, B_MAC, down=4000)
    clock.advance(60)  # B's interim record is due
    gw.store.failing = True
    with pytest.raises(sqlite3.OperationalError):
        gw.poll()
    # A is still authorized everywhere: memory, database, kernel; nothing half-ended.
    a = gw.table.clients[A_MAC]
    assert (a.state.value, a.session_id) == ("authorized", a_session)
    assert a_session in gw.meters and a_session not in gw.closing
    assert Outbox(gw.store).all() == [] and gw.store.ended_sessions() == []
    consistent(gw)
    # The database is back: the same poll's work is done, with every byte of the batch.
    gw.store.failing = False
    counted = fw.counters[f"down_{a_session}"][1]  # what the kernel let A have, ~1 MB
    fw.traffic(B_IP, B_MAC, down=1000)
    clock.advance(1)
    gw.poll()
    assert gw.table.clients[A_MAC].state.value == "captive"
    assert [s.reason for s in gw.store.ended_sessions()] == ["quota"]
    recs = {(r["mac"], r["final"]): r for r in Outbox(gw.store).all()}
    assert recs[(A_MAC, True)]["bytes_down"] == counted > 990_000  # all of it, in A's final
    assert recs[(B_MAC, False)]["bytes_down"] == 5000  # the refused record's 4000 included
    consistent(gw)


def test_a_failed_lease_save_leaves_no_trace(gw: Gateway, clock: FakeClock) -> None:
    """A new station, and a lease that takes an authorized station's address: refused by the
    database, neither is in memory or the kernel; the next event goes through."""
    lease(gw, A_MAC, A_IP)
    gw.handle({"op": "auth", "client": A_MAC})
    gw.store.failing = True
    with pytest.raises(sqlite3.OperationalError):
        lease(gw, B_MAC, B_IP, "newcomer")
    with pytest.raises(sqlite3.OperationalError):
        lease(gw, C_MAC, A_IP)  # DHCP hands A's address to C: A's session would end
    assert set(gw.table.clients) == {A_MAC}
    assert gw.table.clients[A_MAC].state.value == "authorized"
    consistent(gw)
    gw.store.failing = False
    assert lease(gw, B_MAC, B_IP, "newcomer") == {"ok": True}
    assert gw.table.find(B_IP).hostname == "newcomer"
    consistent(gw)


def test_a_failed_login_is_refused_whole(gw: Gateway) -> None:
    lease(gw, A_MAC, A_IP)
    gw.store.failing = True
    with pytest.raises(sqlite3.OperationalError):
        gw.handle({"op": "auth", "client": A_MAC})
    assert gw.table.clients[A_MAC].state.value == "captive" and gw.meters == {}
    consistent(gw)
    gw.store.failing = False
    assert gw.handle({"op": "auth", "client": A_MAC})["client"]["state"] == "authorized"
    consistent(gw)


def test_hostnames_that_sqlite_or_a_terminal_would_choke_on_are_dropped(gw: Gateway) -> None:
    """The lone surrogate is what a 0xff byte of DHCP option 12 becomes on its way through
    the hook's argv or environment: it made SQLite's write fail."""
    assert lease(gw, A_MAC, A_IP, "caf\udcff") == {"ok": True}
    assert lease(gw, B_MAC, B_IP, "\x1b[2J\x1b]0;owned\x07") == {"ok": True}
    assert lease(gw, C_MAC, C_IP, "张三的 iPhone") == {"ok": True}
    names = {c.mac: c.hostname for c in gw.store.load()}
    assert names == {A_MAC: "", B_MAC: "", C_MAC: "张三的 iPhone"}
    consistent(gw)
