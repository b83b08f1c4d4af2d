"""Durable state: stations, their sessions, ended-session records and the usage outbox, in
SQLite via SQLAlchemy.

The database is the desired state; the kernel set is derived from it. Writes happen before the
kernel is touched, so a daemon killed between the two is repaired by the reconciler at start.
Usage records and the totals they account for (`session_usage.reported`) are written in one
transaction: see gateway/accounting.py for why that makes the outbox exact across crashes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import fields
from pathlib import Path

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    Integer,
    String,
    Text,
    create_engine,
    delete,
    event,
    inspect,
    select,
    text,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from gateway.accounting import Meter, Usage, UsageRecord
from gateway.policy import Policy
from gateway.sessions import Client, EndSession, State


class Base(DeclarativeBase):
    pass


class ClientRow(Base):
    __tablename__ = "clients"

    mac: Mapped[str] = mapped_column(String(17), primary_key=True)
    ip: Mapped[str | None] = mapped_column(String(45), index=True)
    ip6: Mapped[str | None] = mapped_column(Text)  # space-separated IPv6 addresses
    hostname: Mapped[str] = mapped_column(String(63), default="")
    state: Mapped[str] = mapped_column(String(16), default=State.CAPTIVE.value)
    session_id: Mapped[str | None] = mapped_column(String(32))
    started_at: Mapped[float | None] = mapped_column(Float)
    expires_at: Mapped[float | None] = mapped_column(Float)
    first_seen: Mapped[float] = mapped_column(Float, default=0.0)
    last_seen: Mapped[float] = mapped_column(Float, default=0.0)
    last_login_at: Mapped[float | None] = mapped_column(Float)
    last_end_reason: Mapped[str | None] = mapped_column(String(32))
    policy: Mapped[str | None] = mapped_column(Text)  # JSON of the session's Policy
    trusted: Mapped[bool] = mapped_column(Boolean, default=False)


class SessionRecord(Base):
    """An ended session, kept for the usage uplink."""

    __tablename__ = "session_records"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(String(32), index=True)
    mac: Mapped[str] = mapped_column(String(17))
    ip: Mapped[str | None] = mapped_column(String(45))
    started_at: Mapped[float] = mapped_column(Float)
    ended_at: Mapped[float] = mapped_column(Float)
    reason: Mapped[str] = mapped_column(String(32))


class SessionUsage(Base):
    """What the outbox already holds for a running session (see gateway/accounting.py), and,
    once the session has ended, that its final record is still to be written (`closing`)."""

    __tablename__ = "session_usage"

    session_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    bytes_up: Mapped[int] = mapped_column(BigInteger, default=0)
    packets_up: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_down: Mapped[int] = mapped_column(BigInteger, default=0)
    packets_down: Mapped[int] = mapped_column(BigInteger, default=0)
    seq: Mapped[int] = mapped_column(Integer, default=0)
    last_record_at: Mapped[float] = mapped_column(Float, default=0.0)
    mac: Mapped[str | None] = mapped_column(String(17))
    ip: Mapped[str | None] = mapped_column(String(45))
    started_at: Mapped[float | None] = mapped_column(Float)
    closing: Mapped[str | None] = mapped_column(String(32))  # the end reason
    ended_at: Mapped[float | None] = mapped_column(Float)


def _usage_row(m: Meter) -> SessionUsage:
    r = m.reported
    return SessionUsage(
        session_id=m.session_id,
        bytes_up=r.bytes_up,
        packets_up=r.packets_up,
        bytes_down=r.bytes_down,
        packets_down=r.packets_down,
        seq=m.seq,
        last_record_at=m.last_record_at,
        mac=m.mac,
        ip=m.ip,
        started_at=m.started_at,
        closing=m.closing,
        ended_at=m.ended_at,
    )


def _meter(row: SessionUsage, mac: str, ip: str | None, started_at: float, now: float) -> Meter:
    return Meter(
        session_id=row.session_id,
        mac=mac,
        ip=ip,
        started_at=started_at,
        reported=Usage(row.bytes_up, row.packets_up, row.bytes_down, row.packets_down),
        seq=row.seq,
        last_record_at=row.last_record_at,
        last_active=now,
        closing=row.closing,
        ended_at=row.ended_at,
    )


class OutboxRow(Base):
    """One usage record waiting for (or already taken by) the uplink; `key` is unique."""

    __tablename__ = "usage_outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(48), unique=True)
    session_id: Mapped[str] = mapped_column(String(32), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    mac: Mapped[str] = mapped_column(String(17))
    ip: Mapped[str | None] = mapped_column(String(45))
    started_at: Mapped[float] = mapped_column(Float)
    period_start: Mapped[float] = mapped_column(Float)
    period_end: Mapped[float] = mapped_column(Float)
    final: Mapped[bool] = mapped_column(Boolean, default=False)
    reason: Mapped[str | None] = mapped_column(String(32))
    bytes_up: Mapped[int] = mapped_column(BigInteger)
    packets_up: Mapped[int] = mapped_column(BigInteger)
    bytes_down: Mapped[int] = mapped_column(BigInteger)
    packets_down: Mapped[int] = mapped_column(BigInteger)
    total_bytes_up: Mapped[int] = mapped_column(BigInteger)
    total_bytes_down: Mapped[int] = mapped_column(BigInteger)
    sent_at: Mapped[float | None] = mapped_column(Float, index=True)


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    # WAL + NORMAL survives a killed process (not power loss, which FULL would add at a cost
    # per authorize); busy_timeout lets plaza-ctl read while the daemon writes.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.close()


CLIENT_FIELDS = [f.name for f in fields(Client)]


def _row(client: Client) -> ClientRow:
    values = {name: getattr(client, name) for name in CLIENT_FIELDS}
    policy = client.policy.to_json() if client.policy else None
    ip6 = " ".join(client.ip6)
    return ClientRow(**{**values, "state": client.state.value, "policy": policy, "ip6": ip6})


def _client(row: ClientRow) -> Client:
    values = {name: getattr(row, name) for name in CLIENT_FIELDS}
    policy = Policy.from_json(row.policy)
    ip6 = tuple((row.ip6 or "").split())
    return Client(
        **{
            **values,
            "state": State(row.state),
            "policy": policy,
            "trusted": bool(row.trusted),
            "ip6": ip6,
        }
    )


def _outbox_row(rec: UsageRecord) -> OutboxRow:
    return OutboxRow(
        key=rec.key,
        session_id=rec.session_id,
        seq=rec.seq,
        mac=rec.mac,
        ip=rec.ip,
        started_at=rec.started_at,
        period_start=rec.period_start,
        period_end=rec.period_end,
        final=rec.final,
        reason=rec.reason,
        bytes_up=rec.delta.bytes_up,
        packets_up=rec.delta.packets_up,
        bytes_down=rec.delta.bytes_down,
        packets_down=rec.delta.packets_down,
        total_bytes_up=rec.total.bytes_up,
        total_bytes_down=rec.total.bytes_down,
    )


def _add_missing_columns(engine: Engine) -> None:
    """A database from an older version gains the columns this one added (all nullable or
    defaulted), so an upgrade keeps its stations and sessions."""
    found = inspect(engine)
    with engine.begin() as conn:
        for table in Base.metadata.sorted_tables:
            have = {c["name"] for c in found.get_columns(table.name)}
            for column in table.columns:
                if column.name not in have:
                    kind = column.type.compile(engine.dialect)
                    default = " DEFAULT 0" if isinstance(column.type, Boolean) else ""
                    conn.execute(
                        text(f"ALTER TABLE {table.name} ADD COLUMN {column.name} {kind}{default}")
                    )


class Store:
    def __init__(self, path: Path | str) -> None:
        url = "sqlite://" if str(path) == ":memory:" else f"sqlite:///{path}"
        self.engine: Engine = create_engine(url)
        event.listen(self.engine, "connect", _sqlite_pragmas)
        Base.metadata.create_all(self.engine)
        _add_missing_columns(self.engine)

    def load(self) -> list[Client]:
        with Session(self.engine) as db:
            return [_client(r) for r in db.scalars(select(ClientRow)).all()]

    def load_meters(
        self, clients: Iterable[Client], now: float
    ) -> tuple[dict[str, Meter], dict[str, Meter]]:
        """Accounting state as last written: of the authorized clients' sessions, and of ended
        sessions whose final record is still to be written. Idle time counts from `now`: when a
        client last moved before a restart is not known."""
        with Session(self.engine) as db:
            rows = {r.session_id: r for r in db.scalars(select(SessionUsage))}
        running: dict[str, Meter] = {}
        for c in clients:
            if c.state is not State.AUTHORIZED or not c.session_id:
                continue
            row = rows.get(c.session_id)
            started = c.started_at or now
            running[c.session_id] = (
                _meter(row, c.mac, c.ip, started, now)
                if row and not row.closing
                else Meter(c.session_id, c.mac, c.ip, started, last_active=now)
            )
        closing = {
            sid: _meter(row, row.mac or "", row.ip, row.started_at or now, now)
            for sid, row in rows.items()
            if row.closing
        }
        return running, closing

    def write(
        self,
        saves: list[Client],
        ended: list[EndSession],
        records: Iterable[UsageRecord] = (),
        closing: Iterable[Meter] = (),
    ) -> None:
        """Persist changed clients, ended sessions, usage records and sessions whose final
        record is still to come, in one transaction. Each record moves its session's
        `reported` totals on; a final one removes them."""
        records, closing = list(records), list(closing)
        if not saves and not ended and not records and not closing:
            return
        with Session(self.engine) as db, db.begin():
            for c in saves:
                db.merge(_row(c))
            for m in closing:
                db.merge(_usage_row(m))
            for rec in records:
                db.add(_outbox_row(rec))
                if rec.final:
                    gone = SessionUsage.session_id == rec.session_id
                    db.execute(delete(SessionUsage).where(gone))
                    continue
                row = db.get(SessionUsage, rec.session_id) or SessionUsage(
                    session_id=rec.session_id, mac=rec.mac, ip=rec.ip, started_at=rec.started_at
                )
                t = rec.total
                row.bytes_up, row.packets_up = t.bytes_up, t.packets_up
                row.bytes_down, row.packets_down = t.bytes_down, t.packets_down
                row.seq, row.last_record_at = rec.seq, rec.period_end
                db.add(row)
            for e in ended:
                db.add(
                    SessionRecord(
                        session_id=e.session_id,
                        mac=e.mac,
                        ip=e.ip,
                        started_at=e.started_at,
                        ended_at=e.ended_at,
                        reason=e.reason.value,
                    )
                )

    def ended_sessions(self) -> list[SessionRecord]:
        with Session(self.engine) as db:
            return list(db.scalars(select(SessionRecord).order_by(SessionRecord.id)))
