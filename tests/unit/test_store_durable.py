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
