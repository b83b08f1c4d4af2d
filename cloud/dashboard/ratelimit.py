"""Sign-in throttling, checked before any password hash is computed.

Three limits, all counted in the database so every cloud instance behind the load balancer
sees the same guesses (in one process's memory, N instances would give an attacker N times
the tries, and a restart would forget them):

- per client and e-mail (`sign_in_failures`, key "pair"): MAX_FAILURES wrong passwords in
  WINDOW_SECONDS, then a pause until the window ends;
- per client, any e-mail (same table, key "client"): CLIENT_BUDGET wrong passwords in the
  window. One address spraying many e-mails is one client's budget, and each refused attempt
  costs a lookup, not an scrypt;
- per account (`sign_in_accounts`): after ACCOUNT_FREE wrong passwords from anywhere, each
  further attempt waits ACCOUNT_BASE * 2^(n - ACCOUNT_FREE) seconds after the last one, at
  most ACCOUNT_CAP; the count starts over ACCOUNT_RESET after the last failure. Rotating
  addresses (an IPv6 /64 has 2^64 of them, a botnet many /64s) does not escape it.

A per-account limit would let any guesser lock the owner out, so it does not apply to a
client the merchant has signed in from before (`known_sign_in_clients`, for KNOWN_SECONDS):
from there, the right password still works (the per-client limits still hold), and the
merchant is told, at that sign-in, how many wrong passwords were tried since their last one.

A client is an IPv4 address or an IPv6 /64 (`client_of`): a /64 is what one subscriber,
one phone or one VM gets, so counting its addresses apart would be counting nothing.
The address is the request's, which is the proxy's unless `TRUSTED_PROXIES` says how many
proxies to believe (cloud/transport.py).

Every key is a SHA-256, so the tables hold no addresses or e-mails. Rows are swept at most
once a minute per instance.
"""

from __future__ import annotations

import hashlib
import ipaddress

from sqlalchemy import case, delete, select, update
from sqlalchemy.orm import Session

from cloud.db import dialect_insert
from cloud.models import KnownSignInClient, Merchant, SignInAccount, SignInFailure

MAX_FAILURES = 5
WINDOW_SECONDS = 15 * 60
CLIENT_BUDGET = 20
ACCOUNT_FREE = 5
ACCOUNT_BASE = 2.0
ACCOUNT_CAP = 15 * 60
ACCOUNT_RESET = 24 * 3600
KNOWN_SECONDS = 90 * 86400
SWEEP_SECONDS = 60.0


def client_of(address: str | None) -> str:
    """The client an address counts as: IPv4 itself (also when IPv4-mapped), IPv6 its /64."""
    try:
        ip = ipaddress.ip_address((address or "").split("%", 1)[0])
    except ValueError:
        return address or ""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def _hash(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def account_delay(failures: int) -> float:
    """Seconds an unknown client waits after the last failure, with `failures` counted."""
    if failures < ACCOUNT_FREE:
        return 0.0
    return min(ACCOUNT_CAP, ACCOUNT_BASE * 2.0 ** min(failures - ACCOUNT_FREE, 30))


def _ceil(seconds: float) -> int:
    return max(1, int(seconds + 0.999))


class LoginLimiter:
    """The three limits above. Time is passed in (the app clock), so tests move it instead of
    sleeping. The caller commits, with the rest of the request's work."""

    def __init__(self, max_failures: int = MAX_FAILURES, window: float = WINDOW_SECONDS) -> None:
        self.max_failures, self.window = max_failures, window
        self._swept = float("-inf")

    @staticmethod
    def key(client: str, email: str) -> str:
        return _hash("pair", client, email)

    @staticmethod
    def client_key(client: str) -> str:
        return _hash("client", client)

    @staticmethod
    def account_key(email: str) -> str:
        return _hash("account", email)

    @staticmethod
    def known_key(merchant_id: str, client: str) -> str:
        return _hash("known", merchant_id, client)

    # -- before the password is looked at --------------------------------------------------

    def retry_after(
        self, db: Session, client: str, email: str, merchant_id: str | None, now: float
    ) -> int:
        """Seconds until this attempt may be made; 0 when it may be made now (and only then
        may the caller compute a password hash)."""
        waits = [
            self._window_wait(db, self.key(client, email), self.max_failures, now),
            self._window_wait(db, self.client_key(client), CLIENT_BUDGET, now),
        ]
        if not self.is_known(db, merchant_id, client, now):
            waits.append(self._account_wait(db, email, now))
        return max(waits)

    def _window_wait(self, db: Session, key: str, limit: int, now: float) -> int:
        row = db.execute(
            select(SignInFailure.failures, SignInFailure.first_at).where(SignInFailure.key == key)
        ).first()
        if row is None or now - row.first_at >= self.window or row.failures < limit:
            return 0
        return _ceil(row.first_at + self.window - now)

    def _account_wait(self, db: Session, email: str, now: float) -> int:
        row = db.execute(
            select(SignInAccount.failures, SignInAccount.last_at).where(
                SignInAccount.key == self.account_key(email)
            )
        ).first()
        if row is None or now - row.last_at >= ACCOUNT_RESET:
            return 0
        left = row.last_at + account_delay(row.failures) - now
        return _ceil(left) if left > 0 else 0

    def is_known(self, db: Session, merchant_id: str | None, client: str, now: float) -> bool:
        if merchant_id is None:
            return False
        last = db.scalar(
            select(KnownSignInClient.last_at).where(
                KnownSignInClient.key == self.known_key(merchant_id, client)
            )
        )
        return last is not None and now - last < KNOWN_SECONDS

    # -- after ------------------------------------------------------------------------------

    def failed(
        self, db: Session, client: str, email: str, merchant_id: str | None, now: float
    ) -> None:
        """One more wrong password. Each count is one statement, so two instances counting
        the same key at once both count."""
        self._count_in_window(db, self.key(client, email), now)
        self._count_in_window(db, self.client_key(client), now)
        table = SignInAccount.__table__
        expired = table.c.last_at <= now - ACCOUNT_RESET
        upsert = dialect_insert(db, SignInAccount).values(
            key=self.account_key(email), failures=1, last_at=now
        )
        db.execute(
            upsert.on_conflict_do_update(
                index_elements=["key"],
                set_={"failures": case((expired, 1), else_=table.c.failures + 1), "last_at": now},
            )
        )
        if merchant_id is not None:
            db.execute(
                update(Merchant)
                .where(Merchant.id == merchant_id)
                .values(failed_sign_ins=Merchant.failed_sign_ins + 1)
            )
        self._sweep(db, now)

    def _count_in_window(self, db: Session, key: str, now: float) -> None:
        """A new window if the last one is over."""
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

    def succeeded(
        self, db: Session, client: str, email: str, merchant: Merchant, now: float
    ) -> int:
        """The right password: this pair starts over, the client becomes (or stays) known for
        the merchant. Returns the wrong passwords tried on the account since the merchant's
        last sign-in (to tell them), and zeroes that count. The account's back-off is kept:
        it decays on its own, and an owner's sign-in must not hand a guesser a fresh start."""
        db.execute(delete(SignInFailure).where(SignInFailure.key == self.key(client, email)))
        known = dialect_insert(db, KnownSignInClient).values(
            key=self.known_key(merchant.id, client), last_at=now
        )
        db.execute(known.on_conflict_do_update(index_elements=["key"], set_={"last_at": now}))
        told = int(merchant.failed_sign_ins or 0)
        if told:
            merchant.failed_sign_ins = 0
        return told

    def _sweep(self, db: Session, now: float) -> None:
        if now - self._swept < SWEEP_SECONDS:
            return
        self._swept = now
        db.execute(delete(SignInFailure).where(SignInFailure.first_at <= now - self.window))
        db.execute(delete(SignInAccount).where(SignInAccount.last_at <= now - ACCOUNT_RESET))
        db.execute(
            delete(KnownSignInClient).where(KnownSignInClient.last_at <= now - KNOWN_SECONDS)
        )
