"""The usage outbox as the uplink sees it: records in the order they were written, each with a
unique idempotency key, marked sent once the cloud has acknowledged them.

Records are written by the gateway (gateway/store.py `Store.write`, in the same transaction as
the totals they account for); nothing here changes what a record says. The cloud must treat
`key` as an idempotency key: a batch that was sent but whose acknowledgement was lost is sent
again, and the copies must be dropped there.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from gateway.store import OutboxRow, Store

FIELDS = (
    "key", "session_id", "seq", "mac", "ip", "started_at", "period_start", "period_end",
    "final", "reason", "bytes_up", "packets_up", "bytes_down", "packets_down",
    "total_bytes_up", "total_bytes_down",
)  # fmt: skip


def as_dict(row: OutboxRow) -> dict[str, Any]:
    """A record as the uplink sends it (JSON-ready)."""
    return {name: getattr(row, name) for name in FIELDS}


class Outbox:
    def __init__(self, store: Store) -> None:
        self.engine = store.engine

    def pending(self, limit: int = 500) -> list[dict[str, Any]]:
        """The oldest records not yet acknowledged, oldest first."""
        with Session(self.engine) as db:
            rows = db.scalars(
                select(OutboxRow).where(OutboxRow.sent_at.is_(None)).order_by(OutboxRow.id)
                .limit(limit)
            )  # fmt: skip
            return [as_dict(r) for r in rows]

    def all(self) -> list[dict[str, Any]]:
        with Session(self.engine) as db:
            return [as_dict(r) for r in db.scalars(select(OutboxRow).order_by(OutboxRow.id))]

    def mark_sent(self, keys: Iterable[str], now: float) -> int:
        """Record the cloud's acknowledgement; returns how many records it covered."""
        keys = list(keys)
        if not keys:
            return 0
        with Session(self.engine) as db, db.begin():
            result = db.execute(
                update(OutboxRow)
                .where(OutboxRow.key.in_(keys), OutboxRow.sent_at.is_(None))
                .values(sent_at=now)
            )
            return result.rowcount or 0

    def backlog(self) -> int:
        """Records waiting for the uplink (a gauge for monitoring)."""
        with Session(self.engine) as db:
            return (
                db.scalar(
                    select(func.count()).select_from(OutboxRow).where(OutboxRow.sent_at.is_(None))
                )
                or 0
            )
