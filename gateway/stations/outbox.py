"""The usage outbox as the uplink sees it: records in the order they were written, each with a
unique idempotency key, marked sent once the cloud has acknowledged them.

Records are written by the gateway (gateway/stations/store.py `Store.write`, in the same transaction
as the totals they account for); nothing here changes what a record says. The cloud must treat `key`
as an idempotency key: a batch that was sent but whose acknowledgement was lost is sent again, and
the copies must be dropped there.

Safe to use from another thread than the daemon's: each thread reads and writes through its own
connection to the database (gateway/stations/store.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from gateway.stations.store import Store
from plaza.records import USAGE_FIELDS

_COLUMNS = ", ".join(f'"{f}"' if f == "key" else f for f in USAGE_FIELDS)  # key is SQL's
_SELECT = f"SELECT {_COLUMNS} FROM usage_outbox"
KEYS_PER_STATEMENT = 500  # well under SQLite's limit on bound parameters


def as_dict(row: Mapping[str, Any]) -> dict[str, Any]:
    """A record as the uplink sends it (JSON-ready)."""
    record = {name: row[name] for name in USAGE_FIELDS}
    record["final"] = bool(record["final"])
    return record


class Outbox:
    def __init__(self, store: Store) -> None:
        self.store = store

    def pending(self, limit: int = 500) -> list[dict[str, Any]]:
        """The oldest records not yet acknowledged, oldest first, and on the disk: they are
        read to be sent, and a record must not leave the router before it would survive a
        power cut (Store.flush). One fsync per batch, in the uplink's thread."""
        with self.store.connection() as db:
            rows = db.execute(f"{_SELECT} WHERE sent_at IS NULL ORDER BY id LIMIT ?", (limit,))
            records = [as_dict(r) for r in rows]
        if records:
            self.store.flush()
        return records

    def all(self) -> list[dict[str, Any]]:
        with self.store.connection() as db:
            return [as_dict(r) for r in db.execute(f"{_SELECT} ORDER BY id")]

    def mark_sent(self, keys: Iterable[str], now: float) -> int:
        """Record the cloud's acknowledgement; returns how many records it covered."""
        keys = list(keys)
        if not keys:
            return 0
        marked = 0
        with self.store.transaction() as db:
            for i in range(0, len(keys), KEYS_PER_STATEMENT):
                chunk = keys[i : i + KEYS_PER_STATEMENT]
                marks = ", ".join("?" * len(chunk))
                cursor = db.execute(
                    f'UPDATE usage_outbox SET sent_at = ? WHERE "key" IN ({marks}) '
                    "AND sent_at IS NULL",
                    (now, *chunk),
                )
                marked += cursor.rowcount or 0
        return marked

    def backlog(self) -> int:
        """Records waiting for the uplink (a gauge for monitoring)."""
        with self.store.connection() as db:
            return db.execute("SELECT count(*) FROM usage_outbox WHERE sent_at IS NULL").fetchone()[
                0
            ]
