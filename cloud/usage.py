"""Usage ingestion: batches from a router's outbox, stored exactly once per (device, key).

A batch is validated whole before anything is written: one bad record refuses the batch with
its index and field, so the router's outbox never ends up half-acknowledged. The insert is
`INSERT ... ON CONFLICT (device_id, key) DO NOTHING RETURNING key` on both databases: a batch
resent because its acknowledgement was lost (or sent by two uplink attempts at once) adds
nothing, and the RETURNING rows say how many were new. ON CONFLICT with a named target rather
than SQLite's `INSERT OR IGNORE`, which would also silently drop rows violating NOT NULL or a
foreign key.

A key resent with other figures than the copy kept is still dropped (the first copy is the
one the router was acknowledged for), but logged: the router forgot a record it had sent
(its outbox is synced before a send for that reason: docs/decisions.md, 2026-12-07), or
something else speaks for it. Only duplicates are read back, so a clean batch costs nothing.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import re
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from cloud.db import dialect_insert
from cloud.models import Device, UsageRecord
from plaza.records import USAGE_FIELDS
from plaza.validators import MAC_RE

MAX_RECORDS = 1000
MAX_INT = 2**63 - 1
KEY_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}\Z")
SESSION_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,32}\Z")
COUNTERS = ("bytes_up", "packets_up", "bytes_down", "packets_down")
TOTALS = ("total_bytes_up", "total_bytes_down")
TIMES = ("started_at", "period_start", "period_end")
FIGURES = (*COUNTERS, *TOTALS)  # what a resent copy must agree on

log = logging.getLogger(__name__)


class BatchError(ValueError):
    """A batch refused whole; `status` is 400 (malformed) or 413 (too large)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_INT


def _time(value: Any) -> bool:
    # The range first: math.isfinite() of an int beyond a float's range raises OverflowError.
    return (
        isinstance(value, int | float) and not isinstance(value, bool)
        and 0 <= value < 1e11 and math.isfinite(value)
    )  # fmt: skip


def _ip(value: Any) -> bool:
    if value is None:
        return True
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return isinstance(value, str)


def check_record(record: Any) -> str | None:
    """What is wrong with one record, or None."""
    if not isinstance(record, dict):
        return "not an object"
    missing = [f for f in USAGE_FIELDS if f not in record]
    if missing:
        return f"missing field {missing[0]!r}"
    unknown = sorted(set(record) - set(USAGE_FIELDS))
    if unknown:
        return f"unknown field {unknown[0]!r}"
    checks: list[tuple[str, bool]] = [
        ("key", isinstance(record["key"], str) and bool(KEY_RE.match(record["key"]))),
        ("session_id", isinstance(record["session_id"], str)
         and bool(SESSION_RE.match(record["session_id"]))),
        ("seq", _count(record["seq"]) and record["seq"] < 2**31),
        ("mac", isinstance(record["mac"], str) and bool(MAC_RE.match(record["mac"].lower()))),
        ("ip", _ip(record["ip"])),
        ("final", isinstance(record["final"], bool)),
        ("reason", record["reason"] is None
         or (isinstance(record["reason"], str) and len(record["reason"]) <= 32
             and record["reason"].isprintable())),
        *((name, _time(record[name])) for name in TIMES),
        *((name, _count(record[name])) for name in COUNTERS + TOTALS),
    ]  # fmt: skip
    for name, ok in checks:
        if not ok:
            return f"field {name!r} has a bad value: {record[name]!r:.60}"
    if record["period_start"] > record["period_end"]:
        return "period_start is after period_end"
    return None


def validate_batch(body: Any) -> list[dict[str, Any]]:
    """The records of a batch, or BatchError naming the first bad one."""
    if not isinstance(body, dict) or set(body) != {"records"}:
        raise BatchError('body must be {"records": [...]}')
    records = body["records"]
    if not isinstance(records, list):
        raise BatchError("records must be a list")
    if len(records) > MAX_RECORDS:
        raise BatchError(f"{len(records)} records: at most {MAX_RECORDS} per batch", 413)
    for i, record in enumerate(records):
        problem = check_record(record)
        if problem:
            key = record.get("key") if isinstance(record, dict) else None
            name = f" (key {key!r:.66})" if isinstance(key, str) else ""
            raise BatchError(f"record {i}{name}: {problem}")
    return records


def store_batch(
    db: Session, device: Device, records: list[dict[str, Any]], now: float
) -> tuple[int, int]:
    """Insert what is new; returns (accepted, duplicates). Commits."""
    if not records:
        return 0, 0
    rows, seen = [], set()
    for record in records:
        if record["key"] in seen:  # the same key twice in one batch: keep the first
            continue
        seen.add(record["key"])
        rows.append(
            {
                **record,
                "mac": record["mac"].lower(),
                "device_id": device.id,
                "venue_id": device.venue_id,
                "received_at": now,
            }
        )
    if db.get_bind().dialect.name == "postgresql":
        new = set(_insert_unnest(db, rows))
    else:
        stmt = (
            dialect_insert(db, UsageRecord)
            .on_conflict_do_nothing(index_elements=["device_id", "key"])
            .returning(UsageRecord.key)
        )
        new = set(db.execute(stmt, rows).scalars())
    conflicts = _conflicts(db, device.id, [row for row in rows if row["key"] not in new])
    db.commit()
    if conflicts:
        log.warning(
            "device %s resent %d usage record(s) with other figures than the copies kept "
            "(first: %s); kept the first copies", device.id, len(conflicts), conflicts[0],
        )  # fmt: skip
    return len(new), len(records) - len(new)


def _conflicts(db: Session, device_id: str, resent: list[dict[str, Any]]) -> list[str]:
    """The keys of `resent` (rows already stored) whose stored copy has other figures."""
    if not resent:
        return []
    by_key = {row["key"]: row for row in resent}
    columns = [getattr(UsageRecord, name) for name in FIGURES]
    kept = db.execute(
        select(UsageRecord.key, *columns).where(
            UsageRecord.device_id == device_id, UsageRecord.key.in_(list(by_key))
        )
    ).all()
    return sorted(
        key for key, *figures in kept
        if tuple(figures) != tuple(by_key[key][name] for name in FIGURES)
    )  # fmt: skip


def _insert_unnest(db: Session, rows: list[dict[str, Any]]) -> list[str]:
    """PostgreSQL: the whole batch as one array per column, `INSERT ... SELECT FROM unnest()`.

    A multi-row VALUES list has ~18 parameters per record; psycopg parses such a statement
    anew for every batch (too long for its cache) and that, not the database, capped ingestion
    near 7,000 records/s here. With arrays the statement has one parameter per column,
    whatever the batch size (see bench/cloud_ingest.py)."""
    table = UsageRecord.__table__
    columns = [c for c in table.columns if c.name != "id"]
    dialect = db.get_bind().dialect
    casts = ", ".join(f"CAST(:{c.name} AS {c.type.compile(dialect=dialect)}[])" for c in columns)
    names = ", ".join(c.name for c in columns)
    sql = text(
        f"INSERT INTO {table.name} ({names}) SELECT * FROM unnest({casts}) "
        "ON CONFLICT (device_id, key) DO NOTHING RETURNING key"
    )
    params = {c.name: [row[c.name] for row in rows] for c in columns}
    return list(db.execute(sql, params).scalars())
