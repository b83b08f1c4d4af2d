"""Durable state: stations, their sessions and ended-session records, in SQLite via SQLAlchemy.

The database is the desired state; the kernel set is derived from it. Writes happen before the
kernel is touched, so a daemon killed between the two is repaired by the reconciler at start.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from sqlalchemy import Float, Integer, String, create_engine, event, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from gateway.sessions import Client, EndSession, State


class Base(DeclarativeBase):
    pass


class ClientRow(Base):
    __tablename__ = "clients"

    mac: Mapped[str] = mapped_column(String(17), primary_key=True)
    ip: Mapped[str | None] = mapped_column(String(45), index=True)
    hostname: Mapped[str] = mapped_column(String(63), default="")
    state: Mapped[str] = mapped_column(String(16), default=State.CAPTIVE.value)
    session_id: Mapped[str | None] = mapped_column(String(32))
    started_at: Mapped[float | None] = mapped_column(Float)
    expires_at: Mapped[float | None] = mapped_column(Float)
    first_seen: Mapped[float] = mapped_column(Float, default=0.0)
    last_seen: Mapped[float] = mapped_column(Float, default=0.0)
    last_login_at: Mapped[float | None] = mapped_column(Float)
    last_end_reason: Mapped[str | None] = mapped_column(String(32))


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
    return ClientRow(**{**values, "state": client.state.value})


def _client(row: ClientRow) -> Client:
    values = {name: getattr(row, name) for name in CLIENT_FIELDS}
    return Client(**{**values, "state": State(row.state)})


class Store:
    def __init__(self, path: Path | str) -> None:
        url = "sqlite://" if str(path) == ":memory:" else f"sqlite:///{path}"
        self.engine: Engine = create_engine(url)
        event.listen(self.engine, "connect", _sqlite_pragmas)
        Base.metadata.create_all(self.engine)

    def load(self) -> list[Client]:
        with Session(self.engine) as db:
            return [_client(r) for r in db.scalars(select(ClientRow)).all()]

    def write(self, saves: list[Client], ended: list[EndSession]) -> None:
        """Persist changed clients and ended sessions in one transaction."""
        if not saves and not ended:
            return
        with Session(self.engine) as db, db.begin():
            for c in saves:
                db.merge(_row(c))
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
