"""Sign-in throttling: a few wrong passwords per (client address, e-mail), then a pause.

Counted in the database (`sign_in_failures`), so that every cloud instance behind the load
balancer sees the same guesses: kept in one process's memory, N instances would give an
attacker N x MAX_FAILURES tries per window, and a restart would forget them. A wrong password
costs one upsert, small beside the password hash it was checked against; a right one deletes
the row. The key is a SHA-256 of the pair, so the table holds no addresses or e-mails, and
rows older than the window are swept at most once a minute per instance, so the table holds
at most the last window's failures.
"""

from __future__ import annotations

import hashlib

from sqlalchemy import case, delete, select
from sqlalchemy.orm import Session

from cloud.db import dialect_insert
from cloud.models import SignInFailure

MAX_FAILURES = 5
WINDOW_SECONDS = 15 * 60
SWEEP_SECONDS = 60.0


class LoginLimiter:
    """Counts failed sign-ins per key within a fixed window that starts at the first
    failure. Time is passed in (the app clock), so tests move it instead of sleeping. The
    caller commits, with the rest of the request's work."""

    def __init__(self, max_failures: int = MAX_FAILURES, window: float = WINDOW_SECONDS) -> None:
        self.max_failures, self.window = max_failures, window
        self._swept = float("-inf")

    @staticmethod
    def key(address: str, email: str) -> str:
        return hashlib.sha256(f"{address}\0{email}".encode()).hexdigest()

    def retry_after(self, db: Session, key: str, now: float) -> int:
        """Seconds until `key` may try again; 0 when it may try now."""
        row = db.execute(
            select(SignInFailure.failures, SignInFailure.first_at).where(SignInFailure.key == key)
        ).first()
        if row is None or now - row.first_at >= self.window or row.failures < self.max_failures:
            return 0
        return max(1, int(row.first_at + self.window - now + 0.999))

    def failed(self, db: Session, key: str, now: float) -> None:
        """One more failure for `key`: a new window if the last one is over. One statement,
        so two instances counting the same key at once both count."""
        table = SignInFailure.__table__
        expired = table.c.first_at <= now - self.window
        upsert = dialect_insert(db, SignInFailure).values(key=key, failures=1, first_at=now)
        db.execute(
            upsert.on_conflict_do_update(
                index_elements=["key"],
                set_={
                    "failures": case((expired, 1), else_=table.c.failures + 1),
                    "first_at": case((expired, now), else_=table.c.first_at),
                },
            )
        )
        if now - self._swept >= SWEEP_SECONDS:
            self._swept = now
            db.execute(delete(SignInFailure).where(SignInFailure.first_at <= now - self.window))

    def succeeded(self, db: Session, key: str) -> None:
        db.execute(delete(SignInFailure).where(SignInFailure.key == key))
