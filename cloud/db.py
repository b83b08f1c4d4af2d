"""Engine and per-request sessions.

One engine per app (so per process: gunicorn workers each build their own after the fork),
one session per request, closed at teardown. Nothing else is kept between requests, which is
what lets several instances run behind a load balancer against one PostgreSQL.
SQLite (the embedded default) gets WAL, so readers never wait for the writer, foreign keys
(off by default in SQLite) and a busy timeout, so concurrent writers queue instead of failing.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from flask import Flask, current_app, g
from sqlalchemy import create_engine, event, make_url
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

EXTENSION = "plaza_cloud_db"


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


def make_engine(url: str) -> Engine:
    """An engine with the settings this app relies on, for either database."""
    if url.startswith("sqlite"):
        private_sqlite_file(url)
        engine = create_engine(url)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    # pool_pre_ping: a load balancer's database failover must not fail the first request.
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)


def private_sqlite_file(url: str) -> None:
    """The SQLite file created 0600 before SQLite opens it (it would follow the umask, and
    SQLite gives its -wal and -shm files the database file's mode), or tightened to 0600.
    It holds merchants' password hashes and shoppers' links."""
    name = make_url(url).database
    if not name or name == ":memory:" or name.startswith("file:"):
        return
    path = Path(name)
    if not path.parent.is_dir():
        return  # SQLite will say so, in its own words
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if os.fstat(fd).st_mode & 0o077:
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def init_app(app: Flask, url: str) -> None:
    engine = make_engine(url)
    app.extensions[EXTENSION] = sessionmaker(engine, expire_on_commit=False)
    app.teardown_appcontext(_close)


def engine(app: Flask | None = None) -> Engine:
    factory = (app or current_app).extensions[EXTENSION]
    return factory.kw["bind"]


def session(app: Flask | None = None) -> Session:
    """A session outside a request (CLI, tests); the caller closes it."""
    return (app or current_app).extensions[EXTENSION]()


def get_db() -> Session:
    """This request's session."""
    if "db" not in g:
        g.db = session()
    return g.db


def _close(_exc: BaseException | None) -> None:
    db = g.pop("db", None)
    if db is not None:
        db.close()


def dialect_insert(db: Session, table: Any) -> Any:
    """An INSERT that knows ON CONFLICT for the session's database (PostgreSQL or SQLite)."""
    name = db.get_bind().dialect.name
    if name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:
        raise RuntimeError(f"unsupported database: {name}")
    return insert(table)
