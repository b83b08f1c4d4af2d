"""Accounting through the gateway: interim and final records in the outbox, exact across
restarts, failed writes, table reloads and counter resets (fake firewall, injected clock)."""

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from sqlite3 import IntegrityError

import pytest

from gateway.config import AccountingConfig, Config
from gateway.gateway import Gateway
from gateway.stations.outbox import Outbox
from gateway.stations.store import Store
from tests.conftest import FakeClock
from tests.unit.conftest import MakeGateway

MAC, IP = "02:50:4c:00:00:01", "198.19.0.100"


@pytest.fixture
def config(make_config: Callable[..., Config]) -> Config:
    return make_config(accounting=AccountingConfig(poll_seconds=1, interim_seconds=60))


def online(gw: Gateway, **overrides) -> None:
    gw.handle({"op": "lease", "action": "add", "mac": MAC, "ip": IP})
    assert gw.handle({"op": "auth", "client": MAC, **overrides})["ok"]


def records(gw: Gateway) -> list[dict]:
    return Outbox(gw.store).all()


def summed(recs: list[dict]) -> tuple[int, int, int, int]:
    return tuple(
        sum(r[k] for r in recs) for k in ("bytes_up", "packets_up", "bytes_down", "packets_down")
    )


def test_interim_records_then_a_final_one(
    make_gateway: MakeGateway, config: Config, clock: FakeClock
) -> None:
    gw = make_gateway()
    online(gw)
    fw = gw.firewall
    for _ in range(150):  # 150 s of traffic, polled every second
        clock.advance(1)
        fw.traffic(IP, MAC, up=100, down=1000, size=100)
        gw.poll()
    assert gw.handle({"op": "deauth", "client": MAC, "reason": "logout"})["ok"]
    assert len(records(gw)) == 2  # the final record comes with the next poll
    gw.poll()
    recs = records(gw)
    assert [(r["seq"], r["final"]) for r in recs] == [(1, False), (2, False), (3, True)]
    assert [r["period_end"] - r["period_start"] for r in recs[:2]] == [60, 60]
    assert recs[-1]["reason"] == "logout"
    assert len({r["key"] for r in recs}) == 3
    assert summed(recs) == (15_000, 150, 150_000, 1500)
    assert recs[-1]["total_bytes_down"] == 150_000
    assert Outbox(gw.store).backlog() == 3


def test_final_record_reads_the_frozen_counters(
    make_gateway: MakeGateway, config: Config, clock: FakeClock
) -> None:
    """Bytes since the last poll are in the final record; nothing after the end is."""
    gw = make_gateway()
    online(gw)
    fw = gw.firewall
    fw.traffic(IP, MAC, down=777)
    gw.handle({"op": "deauth", "client": MAC})
    assert fw.allowed() == set() and len(fw.objects) == 2  # elements gone, counters kept
    assert fw.traffic(IP, MAC, up=500, down=500) == 0  # no element: not forwarded, not counted
    clock.advance(1)
    gw.poll()
    (final,) = records(gw)
    assert final["bytes_down"] == 777 and final["reason"] == "admin"
    assert final["period_end"] == clock() - 1  # when it ended, not when it was written
    assert fw.objects == {} and gw.closing == {}


def test_killed_before_the_final_record_writes_it_at_start(
    make_gateway: MakeGateway, config: Config, clock: FakeClock
) -> None:
    gw = make_gateway()
    online(gw)
    gw.firewall.traffic(IP, MAC, up=100, down=900)
    gw.handle({"op": "lease", "action": "del", "mac": MAC, "ip": IP})
    # killed here: the session is ended in the database, its final record not written
    gw2 = make_gateway(firewall=gw.firewall)
    (final,) = records(gw2)
    assert (final["bytes_up"], final["bytes_down"], final["reason"]) == (100, 900, "left")
    assert gw2.firewall.objects == {} and gw2.closing == {}
    gw3 = make_gateway(firewall=gw.firewall)
    assert len(records(gw3)) == 1  # and only once


def test_restart_neither_loses_nor_double_counts(
    make_gateway: MakeGateway, config: Config, clock: FakeClock
) -> None:
    gw = make_gateway()
    online(gw)
    kernel = gw.firewall  # the kernel table outlives the daemon
    kernel.traffic(IP, MAC, down=5000)
    clock.advance(60)
    gw.poll()  # interim record 1: 5000
    kernel.traffic(IP, MAC, down=3000)  # counted by the kernel, not yet by anyone else
    # killed here; a new daemon starts on the same database and the same kernel table
    gw2 = make_gateway(firewall=kernel)
    assert [c[0] for c in kernel.calls].count("apply") == 1  # the table was left running
    kernel.traffic(IP, MAC, down=2000)
    gw2.handle({"op": "deauth", "client": MAC})
    gw2.poll()
    recs = records(gw2)
    assert [r["seq"] for r in recs] == [1, 2]
    assert summed(recs)[2] == 10_000


def test_a_failed_write_is_written_once_later(
    make_gateway: MakeGateway, config: Config, clock: FakeClock, monkeypatch
) -> None:
    gw = make_gateway()
    online(gw)
    gw.firewall.traffic(IP, MAC, down=4000)
    clock.advance(60)
    real_write = gw.store.write

    def broken(*args, **kw):
        raise OSError("disk full")

    monkeypatch.setattr(gw.store, "write", broken)
    with pytest.raises(OSError):
        gw.poll()
    assert records(gw) == []
    monkeypatch.setattr(gw.store, "write", real_write)
    gw.firewall.traffic(IP, MAC, down=1000)
    gw.poll()
    (rec,) = records(gw)
    assert rec["key"].endswith("-1") and rec["bytes_down"] == 5000


def test_killed_mid_transaction_commits_nothing(
    make_gateway: MakeGateway, config: Config, clock: FakeClock
) -> None:
    """The record and the totals it accounts for go in one SQLite transaction."""
    gw = make_gateway()
    online(gw)
    gw.firewall.traffic(IP, MAC, down=4000)
    clock.advance(60)
    meter = gw.meters[gw.table.find(MAC).session_id]
    rec = meter.record(clock())
    with pytest.raises(IntegrityError):
        gw.store.write([], [], [rec, rec])  # the second insert breaks the unique key
    assert records(gw) == []
    running, _ = Store(config.db_path).load_meters(gw.table.authorized(), clock())
    assert running[meter.session_id].seq == 0


def test_table_reload_carries_counters_over(
    make_gateway: MakeGateway, config: Config, clock: FakeClock
) -> None:
    gw = make_gateway()
    online(gw, quota_total_mb=1)
    fw = gw.firewall
    fw.traffic(IP, MAC, up=1000, down=200_000)
    gw.poll()
    # a new structure (upgrade or config change) replaces the table at start
    changed = replace(config, portal=replace(config.portal, intercept_port=8081))
    gw2 = make_gateway(changed, fw)
    assert fw.calls[-1][0] == "apply" and fw.current(changed)
    assert list(fw.quota_used.values()) == [201_000]  # the quota did not start again
    fw.traffic(IP, MAC, down=100)
    gw2.handle({"op": "deauth", "client": MAC})
    gw2.poll()
    assert summed(records(gw2))[::2] == (1000, 200_100)


def test_flushed_table_is_restored_with_totals(
    make_gateway: MakeGateway, config: Config, clock: FakeClock
) -> None:
    gw = make_gateway()
    online(gw)
    fw = gw.firewall
    fw.traffic(IP, MAC, down=9000)
    gw.poll()
    fw.flush()
    gw.reconcile()
    fw.traffic(IP, MAC, down=1000)
    gw.poll()
    assert gw.view(gw.table.find(MAC), clock())["bytes_down"] == 10_000


def test_counter_reset_by_hand_is_not_a_negative_delta(
    make_gateway: MakeGateway, config: Config, clock: FakeClock
) -> None:
    gw = make_gateway()
    online(gw)
    fw = gw.firewall
    fw.traffic(IP, MAC, down=9000)
    gw.poll()
    down = next(n for n in fw.counters if n.startswith("down_"))
    fw.counters[down] = [0, 0]  # `nft reset counters`
    fw.traffic(IP, MAC, down=500)
    gw.handle({"op": "deauth", "client": MAC})
    gw.poll()
    assert summed(records(gw))[2] == 9500


def test_sessions_that_expired_while_down_get_their_final_record(
    make_gateway: MakeGateway, config: Config, clock: FakeClock
) -> None:
    gw = make_gateway()
    online(gw, minutes=1)
    gw.firewall.traffic(IP, MAC, up=300)
    clock.advance(120)
    gw2 = make_gateway(firewall=gw.firewall)
    (final,) = records(gw2)
    assert final["reason"] == "session-timeout" and final["bytes_up"] == 300


def test_outbox_pending_and_mark_sent(
    make_gateway: MakeGateway, config: Config, clock: FakeClock
) -> None:
    gw = make_gateway()
    online(gw)
    gw.handle({"op": "deauth", "client": MAC})
    gw.poll()
    box = Outbox(gw.store)
    (rec,) = box.pending()
    assert set(rec) >= {"key", "session_id", "mac", "ip", "started_at", "period_end", "reason"}
    assert box.mark_sent([rec["key"]], clock()) == 1
    assert box.mark_sent([rec["key"]], clock()) == 0  # a replayed acknowledgement
    assert box.pending() == [] and box.backlog() == 0


def test_an_older_database_gains_the_new_columns(tmp_path: Path) -> None:
    import sqlite3

    db = tmp_path / "old.db"
    with sqlite3.connect(db) as conn:
        conn.execute(
            "CREATE TABLE clients (mac VARCHAR(17) PRIMARY KEY, ip VARCHAR(45), "
            "hostname VARCHAR(63), state VARCHAR(16), session_id VARCHAR(32), started_at FLOAT,"
            " expires_at FLOAT, first_seen FLOAT, last_seen FLOAT, last_login_at FLOAT, "
            "last_end_reason VARCHAR(32))"
        )
        conn.execute(
            "INSERT INTO clients VALUES ('02:50:4c:00:00:01', '198.19.0.100', 'p1', "
            "'authorized', 'abcd', 1.0, 9e9, 0, 0, 1.0, NULL)"
        )
    (client,) = Store(db).load()
    assert client.state == "authorized" and client.policy is None and client.trusted is False


def test_poll_skips_while_the_table_is_gone(
    make_gateway: MakeGateway, config: Config, clock: FakeClock
) -> None:
    gw = make_gateway()
    online(gw, idle_seconds=5)
    gw.firewall.flush()

    def gone(sessions=None):
        from gateway.dataplane.firewall import NftError

        raise NftError("Error: No such file or directory")

    gw.firewall.readings = gone  # type: ignore[method-assign]
    clock.advance(60)
    gw.poll()  # no crash, and no idle ending from missing news
    assert gw.table.find(MAC).state == "authorized"
