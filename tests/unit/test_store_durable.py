"""Who is online survives a power cut: a batch that grants, revokes or ends a session commits
with `synchronous=FULL`; lease and usage batches keep the cheaper NORMAL (the VM lab's crash
scenario lost a session authorized 5 s before the cut)."""

from __future__ import annotations

import sqlite3

import pytest

from gateway.gateway import Gateway
from gateway.stations.store import Store
from tests.unit.conftest import MakeGateway

MAC, IP = "02:50:4c:00:00:1a", "198.19.0.120"


class TracedStore(Store):
    """Records the statements of each write, with whether it asked to be durable."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.writes: list[tuple[bool, list[str]]] = []

    def write(self, *args, durable: bool = False, **kwargs) -> None:
        statements: list[str] = []
        with self.connection() as db:
            db.set_trace_callback(statements.append)
        try:
            super().write(*args, durable=durable, **kwargs)
        finally:
            with self.connection() as db:
                db.set_trace_callback(None)
        if statements:
            self.writes.append((durable, statements))


def synchronous(db: sqlite3.Connection) -> int:
    return db.execute("PRAGMA synchronous").fetchone()[0]


def test_a_durable_transaction_commits_full_and_goes_back_to_normal(tmp_path):
    store = Store(tmp_path / "state.db")
    seen: list[int] = []
    with store.transaction(durable=True) as db:
        seen.append(synchronous(db))
    with store.transaction() as db:
        seen.append(synchronous(db))
    assert seen == [2, 1]  # FULL inside the durable one, NORMAL after it


def test_a_failed_durable_transaction_also_goes_back_to_normal(tmp_path):
    store = Store(tmp_path / "state.db")
    with pytest.raises(RuntimeError), store.transaction(durable=True):
        raise RuntimeError("refused")
    with store.connection() as db:
        assert synchronous(db) == 1


@pytest.fixture
def gw(config, make_gateway: MakeGateway) -> Gateway:
    return make_gateway(store=TracedStore(str(config.db_path)))


def test_grants_and_ends_are_durable_leases_are_not(gw: Gateway):
    store = gw.store
    assert isinstance(store, TracedStore)
    gw.handle({"op": "lease", "action": "add", "mac": MAC, "ip": IP, "hostname": ""})
    assert store.writes and not any(durable for durable, _ in store.writes)
    store.writes.clear()
    gw.handle({"op": "auth", "client": MAC})
    assert [durable for durable, _ in store.writes] == [True]
    statements = store.writes[0][1]
    assert statements[0] == "PRAGMA synchronous=FULL"
    assert statements.index("COMMIT") < statements.index("PRAGMA synchronous=NORMAL")
    store.writes.clear()
    gw.handle({"op": "deauth", "client": MAC})
    assert store.writes and all(durable for durable, _ in store.writes)


def test_records_are_on_the_disk_before_the_uplink_sends_them(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A record sent and then lost to a power cut comes back under the same key with other
    figures; the cloud keeps the first copy and counts the difference twice (the VM lab's
    crash scenario). So `pending`, which the uplink sends from, syncs the log first."""
    from gateway.stations import store as store_module
    from gateway.stations.accounting import Usage, UsageRecord
    from gateway.stations.outbox import Outbox

    synced: list[str] = []
    real_fsync = store_module.os.fsync

    def fsync(fd: int) -> None:
        synced.append(store_module.os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(store_module.os, "fsync", fsync)
    store = Store(tmp_path / "state.db")
    outbox = Outbox(store)
    assert outbox.pending() == [] and synced == []  # nothing to send: no fsync
    store.write([], [], [
        UsageRecord(f"s1-{seq}", "s1", seq, MAC, IP, 1.8e9, 1.8e9, 1.8e9 + seq, False, None,
                    Usage(1, 1, 1000, 1), Usage(seq, seq, 1000 * seq, seq))
        for seq in (1, 2)
    ])  # fmt: skip
    assert [r["key"] for r in outbox.pending()] == ["s1-1", "s1-2"]
    assert synced == [f"{tmp_path / 'state.db'}-wal"]  # the log the commits are in


def test_flush_of_a_database_without_a_file_or_log_is_nothing(tmp_path) -> None:
    Store(":memory:").flush()
    store = Store(tmp_path / "state.db")
    with store.connection() as db:
        db.execute("PRAGMA journal_mode=DELETE")  # no log: commits go to the file itself
    store.flush()
