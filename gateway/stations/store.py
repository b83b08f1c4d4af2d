"""Durable state: stations, their sessions, ended-session records and the usage outbox, in
SQLite.

The database is the desired state; the kernel set is derived from it. Writes happen before the
kernel is touched, so a daemon killed between the two is repaired by the reconciler at start.
Usage records and the totals they account for (`session_usage.reported`) are written in one
transaction: see gateway/stations/accounting.py for why that makes the outbox exact across crashes.

The stdlib's sqlite3, not SQLAlchemy: the daemon writes a row or two per login and reads whole
tables only at start, which plain SQL does in a tenth of the time (a login's write went from
~1 ms to ~0.1 ms) and without the ~20 MB that importing SQLAlchemy's engine and ORM costs a
process that must stay within 64 MB at 10,000 clients. The schema is the one the SQLAlchemy
models created (same tables, columns and indexes), so existing databases open unchanged; a
database from an older version gains the columns this one added.

Threads: each thread gets its own connection (an uplink thread reads the outbox while the
daemon's thread writes; WAL lets them), except for an in-memory database, which exists only in
its one connection and is shared under a lock.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from gateway.stations.accounting import Meter, Usage, UsageRecord
from gateway.stations.policy import Policy
from gateway.stations.station import Client, EndSession, State

# Table -> (column, type, NOT NULL), in the order SQLAlchemy created them, and the indexes.
SCHEMA: dict[str, tuple[tuple[str, str, bool], ...]] = {
    "clients": (
        ("mac", "VARCHAR(17)", True),
        ("ip", "VARCHAR(45)", False),
        ("ip6", "TEXT", False),  # space-separated IPv6 addresses
        ("hostname", "VARCHAR(63)", True),
        ("state", "VARCHAR(16)", True),
        ("session_id", "VARCHAR(32)", False),
        ("started_at", "FLOAT", False),
        ("expires_at", "FLOAT", False),
        ("first_seen", "FLOAT", True),
        ("last_seen", "FLOAT", True),
        ("last_login_at", "FLOAT", False),
        ("last_end_reason", "VARCHAR(32)", False),
        ("policy", "TEXT", False),  # JSON of the session's Policy
        ("trusted", "BOOLEAN", True),
    ),
    # An ended session, kept for the usage uplink.
    "session_records": (
        ("id", "INTEGER", True),
        ("session_id", "VARCHAR(32)", True),
        ("mac", "VARCHAR(17)", True),
        ("ip", "VARCHAR(45)", False),
        ("started_at", "FLOAT", True),
        ("ended_at", "FLOAT", True),
        ("reason", "VARCHAR(32)", True),
    ),
    # What the outbox already holds for a running session (see gateway/stations/accounting.py), and,
    # once the session has ended, that its final record is still to be written (`closing`).
    "session_usage": (
        ("session_id", "VARCHAR(32)", True),
        ("bytes_up", "BIGINT", True),
        ("packets_up", "BIGINT", True),
        ("bytes_down", "BIGINT", True),
        ("packets_down", "BIGINT", True),
        ("seq", "INTEGER", True),
        ("last_record_at", "FLOAT", True),
        ("mac", "VARCHAR(17)", False),
        ("ip", "VARCHAR(45)", False),
        ("started_at", "FLOAT", False),
        ("closing", "VARCHAR(32)", False),  # the end reason
        ("ended_at", "FLOAT", False),
    ),
    # One usage record waiting for (or already taken by) the uplink; `key` is unique.
    "usage_outbox": (
        ("id", "INTEGER", True),
        ("key", "VARCHAR(48)", True),
        ("session_id", "VARCHAR(32)", True),
        ("seq", "INTEGER", True),
        ("mac", "VARCHAR(17)", True),
        ("ip", "VARCHAR(45)", False),
        ("started_at", "FLOAT", True),
        ("period_start", "FLOAT", True),
        ("period_end", "FLOAT", True),
        ("final", "BOOLEAN", True),
        ("reason", "VARCHAR(32)", False),
        ("bytes_up", "BIGINT", True),
        ("packets_up", "BIGINT", True),
        ("bytes_down", "BIGINT", True),
        ("packets_down", "BIGINT", True),
        ("total_bytes_up", "BIGINT", True),
        ("total_bytes_down", "BIGINT", True),
        ("sent_at", "FLOAT", False),
    ),
}
KEYS = {"clients": "PRIMARY KEY (mac)", "session_records": "PRIMARY KEY (id)",
        "session_usage": "PRIMARY KEY (session_id)",
        "usage_outbox": 'PRIMARY KEY (id), \n\tUNIQUE ("key")'}  # fmt: skip
INDEXES = (
    ("ix_clients_ip", "clients", "ip"),
    ("ix_session_records_session_id", "session_records", "session_id"),
    ("ix_usage_outbox_session_id", "usage_outbox", "session_id"),
    ("ix_usage_outbox_sent_at", "usage_outbox", "sent_at"),
)


def _q(name: str) -> str:
    return f'"{name}"' if name == "key" else name


def _create(table: str) -> str:
    cols = [f"\t{_q(n)} {t}{' NOT NULL' if nn else ''}" for n, t, nn in SCHEMA[table]]
    return (
        f"CREATE TABLE IF NOT EXISTS {table} (\n" + ", \n".join([*cols, f"\t{KEYS[table]}"]) + "\n)"
    )


def _insert(table: str, columns: Iterable[str], verb: str = "INSERT") -> str:
    cols = list(columns)
    names = ", ".join(_q(c) for c in cols)
    return f"{verb} INTO {table} ({names}) VALUES ({', '.join('?' * len(cols))})"


@dataclass(frozen=True)
class SessionRecord:
    """An ended session, as `ended_sessions()` returns it."""

    id: int
    session_id: str
    mac: str
    ip: str | None
    started_at: float
    ended_at: float
    reason: str


# Stations: the Client dataclass's fields, stored as the columns above; a field added to
# Client later is stored as it is, in a column of its own that the database gains at start.
CLIENT_FIELDS = [f.name for f in fields(Client)]
CLIENT_COLUMNS = list(dict.fromkeys([c for c, _, _ in SCHEMA["clients"]] + CLIENT_FIELDS))
_SAVE_CLIENT = _insert("clients", CLIENT_COLUMNS, "INSERT OR REPLACE")
USAGE_COLUMNS = [c for c, _, _ in SCHEMA["session_usage"]]
_SAVE_CLOSING = _insert("session_usage", USAGE_COLUMNS, "INSERT OR REPLACE")
_SAVE_TOTALS = (
    _insert("session_usage", USAGE_COLUMNS)
    + " ON CONFLICT(session_id) DO UPDATE SET bytes_up = excluded.bytes_up,"
    " packets_up = excluded.packets_up, bytes_down = excluded.bytes_down,"
    " packets_down = excluded.packets_down, seq = excluded.seq,"
    " last_record_at = excluded.last_record_at"
)
OUTBOX_COLUMNS = [c for c, _, _ in SCHEMA["usage_outbox"] if c not in ("id", "sent_at")]
_ADD_RECORD = _insert("usage_outbox", OUTBOX_COLUMNS)
_ADD_ENDED = _insert("session_records", [c for c, _, _ in SCHEMA["session_records"]][1:])


def _client_values(client: Client) -> tuple:
    values: dict[str, Any] = {name: getattr(client, name) for name in CLIENT_FIELDS}
    values.update(
        state=client.state.value,
        policy=client.policy.to_json() if client.policy else None,
        ip6=" ".join(client.ip6),
        trusted=bool(client.trusted),
    )
    return tuple(values.get(c) for c in CLIENT_COLUMNS)


def _client(row: sqlite3.Row) -> Client:
    have = row.keys()
    values = {name: row[name] for name in CLIENT_FIELDS if name in have}
    values.update(
        state=State(row["state"]),
        policy=Policy.from_json(row["policy"]),
        trusted=bool(row["trusted"]),
        ip6=tuple((row["ip6"] or "").split()),
    )
    return Client(**values)


def _usage_values(m: Meter) -> tuple:
    r = m.reported
    return (
        m.session_id, r.bytes_up, r.packets_up, r.bytes_down, r.packets_down, m.seq,
        m.last_record_at, m.mac, m.ip, m.started_at, m.closing, m.ended_at,
    )  # fmt: skip


def _totals_values(rec: UsageRecord) -> tuple:
    t = rec.total
    return (
        rec.session_id, t.bytes_up, t.packets_up, t.bytes_down, t.packets_down, rec.seq,
        rec.period_end, rec.mac, rec.ip, rec.started_at, None, None,
    )  # fmt: skip


def _record_values(rec: UsageRecord) -> tuple:
    d, t = rec.delta, rec.total
    return (
        rec.key, rec.session_id, rec.seq, rec.mac, rec.ip, rec.started_at, rec.period_start,
        rec.period_end, rec.final, rec.reason, d.bytes_up, d.packets_up, d.bytes_down,
        d.packets_down, t.bytes_up, t.bytes_down,
    )  # fmt: skip


def _meter(row: sqlite3.Row, mac: str, ip: str | None, started_at: float, now: float) -> Meter:
    return Meter(
        session_id=row["session_id"],
        mac=mac,
        ip=ip,
        started_at=started_at,
        reported=Usage(row["bytes_up"], row["packets_up"], row["bytes_down"], row["packets_down"]),
        seq=row["seq"],
        last_record_at=row["last_record_at"],
        last_active=now,
        closing=row["closing"],
        ended_at=row["ended_at"],
    )


def _connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=5.0)
    conn.row_factory = sqlite3.Row
    # WAL + NORMAL survives a killed process but not a power cut: the commits since the last
    # checkpoint may be lost. That is fine for usage totals kept on the router (the kernel's
    # counters die with the power too) but not for who is authorized (`transaction(durable=
    # True)` syncs those commits) nor for a record that leaves the router (`flush`).
    # busy_timeout lets readers (tests, tools) read while the daemon writes.
    if path != ":memory:":
        conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=5000")
    return conn


class Store:
    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        self._local = threading.local()
        self._lock = threading.RLock()
        self._shared = _connect(":memory:") if self.path == ":memory:" else None
        with self.transaction() as db:
            for table in SCHEMA:
                db.execute(_create(table))
            for name, table, column in INDEXES:
                db.execute(f"CREATE INDEX IF NOT EXISTS {name} ON {table} ({column})")
            self._add_missing_columns(db)

    @contextlib.contextmanager
    def connection(self) -> Iterator[sqlite3.Connection]:
        """This thread's connection (the shared one, locked, for an in-memory database)."""
        if self._shared is not None:
            with self._lock:
                yield self._shared
            return
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = _connect(self.path)
        yield conn

    @contextlib.contextmanager
    def transaction(self, durable: bool = False) -> Iterator[sqlite3.Connection]:
        """One write transaction: committed if the block ends, rolled back if it raises.

        `durable` commits with `synchronous=FULL`, so the commit is on the flash before it
        returns: a session granted seconds before a power cut is still granted after the boot
        (the VM lab's crash scenario lost one with NORMAL). One fsync per grant or revoke is
        cheap next to a wallet login; usage batches keep NORMAL."""
        with self.connection() as db:
            if durable:
                db.execute("PRAGMA synchronous=FULL")
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    yield db
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
            finally:
                if durable:
                    db.execute("PRAGMA synchronous=NORMAL")

    def flush(self) -> None:
        """Put every commit so far on the disk, as `synchronous=FULL` would have at each: an
        fsync of the write-ahead log (commits not yet checkpointed are only there; a finished
        checkpoint has synced the database file). For what is about to leave the router: a
        usage record sent, then lost in a power cut, would be written again under the same
        key with other figures, and the cloud, which keeps the first copy of a key, would
        count the difference twice (the VM lab's crash scenario: 519 bytes)."""
        if self.path == ":memory:":
            return
        try:
            fd = os.open(f"{self.path}-wal", os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return  # no log: everything is in the database file
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    @staticmethod
    def _add_missing_columns(db: sqlite3.Connection) -> None:
        """A database from an older version gains the columns this one added (all nullable or
        defaulted), so an upgrade keeps its stations and sessions."""
        wanted = {table: [(c, t) for c, t, _ in cols] for table, cols in SCHEMA.items()}
        known = {c for c, _ in wanted["clients"]}
        wanted["clients"] += [(c, "") for c in CLIENT_COLUMNS if c not in known]
        for table, columns in wanted.items():
            have = {row["name"] for row in db.execute(f"PRAGMA table_info({table})")}
            for column, kind in columns:
                if column not in have:
                    default = " DEFAULT 0" if kind == "BOOLEAN" else ""
                    db.execute(f"ALTER TABLE {table} ADD COLUMN {_q(column)} {kind}{default}")

    def load(self) -> list[Client]:
        with self.connection() as db:
            return [_client(r) for r in db.execute("SELECT * FROM clients")]

    def load_meters(
        self, clients: Iterable[Client], now: float
    ) -> tuple[dict[str, Meter], dict[str, Meter]]:
        """Accounting state as last written: of the authorized clients' sessions, and of ended
        sessions whose final record is still to be written. Idle time counts from `now`: when a
        client last moved before a restart is not known."""
        with self.connection() as db:
            rows = {r["session_id"]: r for r in db.execute("SELECT * FROM session_usage")}
        running: dict[str, Meter] = {}
        for c in clients:
            if c.state is not State.AUTHORIZED or not c.session_id:
                continue
            row = rows.get(c.session_id)
            started = c.started_at or now
            running[c.session_id] = (
                _meter(row, c.mac, c.ip, started, now)
                if row is not None and not row["closing"]
                else Meter(c.session_id, c.mac, c.ip, started, last_active=now)
            )
        closing = {
            sid: _meter(row, row["mac"] or "", row["ip"], row["started_at"] or now, now)
            for sid, row in rows.items()
            if row["closing"]
        }
        return running, closing

    def write(
        self,
        saves: list[Client],
        ended: list[EndSession],
        records: Iterable[UsageRecord] = (),
        closing: Iterable[Meter] = (),
        durable: bool = False,
    ) -> None:
        """Persist changed clients, ended sessions, usage records and sessions whose final
        record is still to come, in one transaction (`durable`: see `transaction`). Each
        record moves its session's `reported` totals on; a final one removes them."""
        records, closing = list(records), list(closing)
        if not saves and not ended and not records and not closing:
            return
        with self.transaction(durable) as db:
            if saves:
                db.executemany(_SAVE_CLIENT, [_client_values(c) for c in saves])
            if closing:
                db.executemany(_SAVE_CLOSING, [_usage_values(m) for m in closing])
            for rec in records:
                db.execute(_ADD_RECORD, _record_values(rec))
                if rec.final:
                    db.execute("DELETE FROM session_usage WHERE session_id = ?", (rec.session_id,))
                else:
                    db.execute(_SAVE_TOTALS, _totals_values(rec))
            if ended:
                db.executemany(
                    _ADD_ENDED,
                    [(e.session_id, e.mac, e.ip, e.started_at, e.ended_at, e.reason.value)
                     for e in ended],
                )  # fmt: skip

    def ended_sessions(self) -> list[SessionRecord]:
        with self.connection() as db:
            rows = db.execute("SELECT * FROM session_records ORDER BY id").fetchall()
        return [SessionRecord(**dict(r)) for r in rows]
