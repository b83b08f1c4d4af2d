"""Presence events for the cloud: stations joining and leaving, shoppers opting in or out.

Events are written to their own table in the gateway's SQLite file as they happen and sent
by the uplink in order (docs/cloud-protocol.md `POST /device/presence`); each has a unique
key, so a batch resent after a lost answer is stored once. Delivery is at least once and
never blocks the daemon: a cloud that is away finds the backlog when it returns (the cloud
ignores joins too old to push for). The table is bounded: beyond MAX_BACKLOG unsent events
the oldest go, as a stale presence is worth less than the usage records, which are never
dropped.

A `login` event names the wallet user only when the shopper opted in on the portal, and
carries the one-tap connect link they saved (portal/reconnect.py) and the wallet's signed
consent proof (plaza/wallet/consent.py), which the cloud checks before it believes any of it:
this router is only the messenger. Opting out sends `opt_in: false` so the cloud forgets the
link.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from plaza.records import CONNECT_URL_RE, MAX_CONNECT_URL, PRESENCE_KINDS

MAX_BACKLOG = 100_000
MAX_WALLET_USER = 128
MAX_CONSENT = 4096  # plaza/wallet/consent.MAX_PROOF
CONSENT_RE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")  # a compact JWS


def login_event(
    mac: str, at: float, wallet_user: Any, opt_in: Any, connect_url: Any, consent: Any = None
) -> dict:
    """A `login` event, checked as the cloud will check it; ValueError says what is wrong."""
    if not isinstance(opt_in, bool):
        raise ValueError("'opt_in' must be true or false")
    if not (
        isinstance(wallet_user, str)
        and 1 <= len(wallet_user) <= MAX_WALLET_USER
        and wallet_user.isprintable()
    ):
        raise ValueError(f"'wallet_user' must be 1 to {MAX_WALLET_USER} printable characters")
    event: dict[str, Any] = {"kind": "login", "mac": mac, "at": at, "opt_in": opt_in}
    event["wallet_user"] = wallet_user
    if connect_url is not None:
        if not opt_in:
            raise ValueError("'connect_url' only comes with opt_in")
        if (
            not isinstance(connect_url, str)
            or len(connect_url) > MAX_CONNECT_URL
            or not CONNECT_URL_RE.fullmatch(connect_url)
        ):
            raise ValueError("'connect_url' must be https://<portal host>/reconnect/<token>")
        event["connect_url"] = connect_url
    if consent is not None:
        if connect_url is None:
            raise ValueError("'consent' only comes with a connect_url")
        if (
            not isinstance(consent, str)
            or len(consent) > MAX_CONSENT
            or not CONSENT_RE.fullmatch(consent)
        ):
            raise ValueError("'consent' must be the wallet's compact JWS")
        event["consent"] = consent
    return event


SCHEMA = """
CREATE TABLE IF NOT EXISTS presence_outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key VARCHAR(40) NOT NULL UNIQUE,
    kind VARCHAR(8) NOT NULL,
    mac VARCHAR(17) NOT NULL,
    at FLOAT NOT NULL,
    wallet_user VARCHAR(128),
    opt_in BOOLEAN,
    connect_url VARCHAR(1024),
    sent_at FLOAT,
    consent VARCHAR(4096)
)
"""


class PresenceOutbox:
    """The presence table, one connection per thread (the uplink reads from its own)."""

    def __init__(self, db_path: str | Path) -> None:
        self.path = str(db_path)
        self._local = threading.local()
        with self._db() as db:
            db.execute(SCHEMA)
            columns = {row[1] for row in db.execute("PRAGMA table_info(presence_outbox)")}
            if "consent" not in columns:  # a table made before consent proofs
                db.execute("ALTER TABLE presence_outbox ADD COLUMN consent VARCHAR(4096)")
            db.execute(
                "CREATE INDEX IF NOT EXISTS presence_unsent ON presence_outbox (sent_at, id)"
            )

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=10, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def add(self, events: Iterable[dict[str, Any]]) -> int:
        rows = []
        for event in events:
            if event["kind"] not in PRESENCE_KINDS:
                raise ValueError(f"unknown presence kind {event['kind']!r}")
            rows.append(
                (
                    f"{event['kind'][0]}-{secrets.token_hex(12)}",
                    event["kind"], event["mac"], float(event["at"]),
                    event.get("wallet_user"), event.get("opt_in"), event.get("connect_url"),
                    event.get("consent"),
                )
            )  # fmt: skip
        if not rows:
            return 0
        with self._db() as db:
            db.executemany(
                "INSERT INTO presence_outbox (key, kind, mac, at, wallet_user, opt_in, "
                "connect_url, consent) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            (unsent,) = db.execute(
                "SELECT count(*) FROM presence_outbox WHERE sent_at IS NULL"
            ).fetchone()
            if unsent > MAX_BACKLOG:
                db.execute(
                    "DELETE FROM presence_outbox WHERE id IN (SELECT id FROM presence_outbox "
                    "WHERE sent_at IS NULL ORDER BY id LIMIT ?)",
                    (unsent - MAX_BACKLOG,),
                )
            # sent events are kept a while for an operator, then pruned
            db.execute(
                "DELETE FROM presence_outbox WHERE sent_at IS NOT NULL AND id < "
                "(SELECT coalesce(max(id), 0) - ? FROM presence_outbox)",
                (MAX_BACKLOG,),
            )
        return len(rows)

    def pending(self, limit: int = 500) -> list[dict[str, Any]]:
        """The oldest unsent events as the protocol sends them."""
        with self._db() as db:
            rows = db.execute(
                "SELECT key, kind, mac, at, wallet_user, opt_in, connect_url, consent FROM "
                "presence_outbox WHERE sent_at IS NULL ORDER BY id LIMIT ?",
                (limit,),
            ).fetchall()
        events = []
        for key, kind, mac, at, user, opt_in, url, proof in rows:
            event: dict[str, Any] = {"key": key, "kind": kind, "mac": mac, "at": at}
            if kind == "login":
                event["opt_in"] = bool(opt_in)
                if user:
                    event["wallet_user"] = user
                if url:
                    event["connect_url"] = url
                if proof:
                    event["consent"] = proof
            events.append(event)
        return events

    def mark_sent(self, keys: Iterable[str], now: float) -> int:
        keys = list(keys)
        if not keys:
            return 0
        with self._db() as db:
            cur = db.executemany(
                "UPDATE presence_outbox SET sent_at = ? WHERE key = ? AND sent_at IS NULL",
                [(now, k) for k in keys],
            )
            return cur.rowcount

    def backlog(self) -> int:
        with self._db() as db:
            (n,) = db.execute(
                "SELECT count(*) FROM presence_outbox WHERE sent_at IS NULL"
            ).fetchone()
        return n
