"""The cloud's tables, as typed SQLAlchemy 2.0 models (the Alembic migrations mirror these).

Times are unix seconds (float), as the router sends them: one unit from the outbox to the
dashboard, and no time-zone conversion anywhere. Public identifiers carry a type prefix
(`dev_`, `ven_`, `cmd_`...) so a mixed-up id is refused instead of matching the wrong row.
JSON columns hold what is only ever read whole (health, venue config, command args).
"""

from __future__ import annotations

import secrets
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit key for the
# tables that grow without bound (usage, presence, nonces).
BigId = BigInteger().with_variant(Integer(), "sqlite")

# Named constraints so migrations can alter them the same way on every database.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def new_id(prefix: str) -> str:
    """A public id: prefix + 64 random bits in hex (unguessable, and sortable by nothing)."""
    return f"{prefix}_{secrets.token_hex(8)}"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Merchant(Base):
    __tablename__ = "merchants"

    id: Mapped[str] = mapped_column(String(24), primary_key=True, default=lambda: new_id("mer"))
    name: Mapped[str] = mapped_column(String(120))
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[float] = mapped_column(Float)
    # Wrong passwords tried on this account since the merchant last signed in: shown to
    # them once at their next sign-in, then zeroed (cloud/dashboard/ratelimit.py).
    failed_sign_ins: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class Venue(Base):
    __tablename__ = "venues"

    id: Mapped[str] = mapped_column(String(24), primary_key=True, default=lambda: new_id("ven"))
    merchant_id: Mapped[str] = mapped_column(ForeignKey("merchants.id"), index=True)
    name: Mapped[str] = mapped_column(String(120))
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    config_version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[float] = mapped_column(Float)
    # The portal's host name, as the merchant registered it (never as a router says it): a
    # shopper's consent proof must name it, and so must every link pushed for this venue.
    portal_host: Mapped[str | None] = mapped_column(String(253))


class ClaimCode(Base):
    """A one-time enrolment secret; only its SHA-256 is kept, like a password."""

    __tablename__ = "claim_codes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    venue_id: Mapped[str] = mapped_column(ForeignKey("venues.id"), index=True)
    created_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float)
    used_at: Mapped[float | None] = mapped_column(Float)
    device_id: Mapped[str | None] = mapped_column(String(24))


class Device(Base):
    __tablename__ = "devices"

    id: Mapped[str] = mapped_column(String(24), primary_key=True, default=lambda: new_id("dev"))
    venue_id: Mapped[str] = mapped_column(ForeignKey("venues.id"), index=True)
    public_key: Mapped[str] = mapped_column(String(64))  # base64 of 32 raw Ed25519 bytes
    hostname: Mapped[str] = mapped_column(String(63), default="")
    version: Mapped[str] = mapped_column(String(32), default="")
    enrolled_at: Mapped[float] = mapped_column(Float)
    last_heartbeat_at: Mapped[float | None] = mapped_column(Float)
    health: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    # Presence this router sent without the wallet's proof (cloud/presence.py): refused, and
    # counted for the merchant's dashboard, as a rooted or misconfigured router would.
    presence_refused: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    presence_refused_reason: Mapped[str | None] = mapped_column(String(200))
    presence_refused_at: Mapped[float | None] = mapped_column(Float)


class Nonce(Base):
    """A request nonce seen from a device. The unique pair is the replay check itself: two
    instances receiving the same request race on the insert and exactly one wins."""

    __tablename__ = "nonces"
    __table_args__ = (UniqueConstraint("device_id", "nonce"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"))
    nonce: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[float] = mapped_column(Float, index=True)


class Command(Base):
    """A signed instruction for one device; delivered on every poll until its result arrives
    or it expires. `signed` is exactly what the router receives, signature included."""

    __tablename__ = "commands"
    __table_args__ = (Index("ix_commands_pending", "device_id", "done_at", "expires_at"),)

    id: Mapped[str] = mapped_column(String(24), primary_key=True, default=lambda: new_id("cmd"))
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"))
    op: Mapped[str] = mapped_column(String(32))
    args: Mapped[dict[str, Any]] = mapped_column(JSON)
    issued_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float)
    signed: Mapped[dict[str, Any]] = mapped_column(JSON)
    ok: Mapped[bool | None] = mapped_column(Boolean)
    error: Mapped[str | None] = mapped_column(Text)
    done_at: Mapped[float | None] = mapped_column(Float)


class UsageRecord(Base):
    """One outbox record as the router sent it (gateway/stations/outbox.py FIELDS), stored once per
    (device, key). `venue_id` is copied from the device at ingestion so per-venue time
    queries need no join, and stay right if the device later moves to another venue."""

    __tablename__ = "usage_records"
    __table_args__ = (
        UniqueConstraint("device_id", "key"),
        Index("ix_usage_records_venue_period", "venue_id", "period_end"),
        Index("ix_usage_records_venue_mac", "venue_id", "mac", "period_end"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"))
    venue_id: Mapped[str] = mapped_column(ForeignKey("venues.id"))
    received_at: Mapped[float] = mapped_column(Float)
    key: Mapped[str] = mapped_column(String(64))
    session_id: Mapped[str] = mapped_column(String(32))
    seq: Mapped[int] = mapped_column(Integer)
    mac: Mapped[str] = mapped_column(String(17))
    ip: Mapped[str | None] = mapped_column(String(45))
    started_at: Mapped[float] = mapped_column(Float)
    period_start: Mapped[float] = mapped_column(Float)
    period_end: Mapped[float] = mapped_column(Float)
    final: Mapped[bool] = mapped_column(Boolean)
    reason: Mapped[str | None] = mapped_column(String(32))
    bytes_up: Mapped[int] = mapped_column(BigInteger)
    packets_up: Mapped[int] = mapped_column(BigInteger)
    bytes_down: Mapped[int] = mapped_column(BigInteger)
    packets_down: Mapped[int] = mapped_column(BigInteger)
    total_bytes_up: Mapped[int] = mapped_column(BigInteger)
    total_bytes_down: Mapped[int] = mapped_column(BigInteger)


class PresenceEvent(Base):
    __tablename__ = "presence_events"
    __table_args__ = (
        UniqueConstraint("device_id", "key"),
        Index("ix_presence_events_venue_at", "venue_id", "at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"))
    venue_id: Mapped[str] = mapped_column(ForeignKey("venues.id"))
    key: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(8))
    mac: Mapped[str] = mapped_column(String(17))
    at: Mapped[float] = mapped_column(Float)
    wallet_user: Mapped[str | None] = mapped_column(String(128))
    opt_in: Mapped[bool | None] = mapped_column(Boolean)


class ShopperLink(Base):
    """A shopper (by MAC, at one venue) who logged in with a wallet and opted in to offers:
    what a later `join` needs to push to that wallet user."""

    __tablename__ = "shopper_links"
    __table_args__ = (UniqueConstraint("venue_id", "mac"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    venue_id: Mapped[str] = mapped_column(ForeignKey("venues.id"))
    mac: Mapped[str] = mapped_column(String(17))
    wallet_user: Mapped[str] = mapped_column(String(128))
    opted_in: Mapped[bool] = mapped_column(Boolean, default=True)
    updated_at: Mapped[float] = mapped_column(Float)
    # The shopper's one-tap reconnect link as the router reported it with the login
    # (`https://<portal host>/reconnect/<token>`): what a push on a later join links to.
    connect_url: Mapped[str | None] = mapped_column(String(1024))
    # The wallet's consent proof this link stands on (consent_proofs.jti); links made before
    # proofs existed have none and are never pushed to.
    consent_jti: Mapped[str | None] = mapped_column(String(64))


class ConsentProof(Base):
    """A wallet consent proof the cloud has accepted: each is used once, so a router cannot
    replay an old one to opt a shopper back in after they withdrew."""

    __tablename__ = "consent_proofs"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    venue_id: Mapped[str] = mapped_column(ForeignKey("venues.id"))
    wallet_user: Mapped[str] = mapped_column(String(128))
    issued_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float, index=True)
    used_at: Mapped[float] = mapped_column(Float)


class PushJob(Base):
    """One push waiting to go out (the outbox): written by the join hook in the router's
    request, sent by `plaza-cloud push-worker`, so a push never waits on a wallet or push
    service inside a router's request and is not lost while one is down.

    Pending: `next_attempt_at` set, `sent_at` null. Sent: `sent_at` set. Given up (refused,
    recipient gone, too old): both null, `error` says why. `shopper` is the wallet user the
    push is about, for the per-shopper rate limit whatever channel carries it."""

    __tablename__ = "push_jobs"
    __table_args__ = (
        Index("ix_push_jobs_due", "next_attempt_at"),
        Index("ix_push_jobs_shopper", "venue_id", "shopper", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    venue_id: Mapped[str] = mapped_column(ForeignKey("venues.id"))
    kind: Mapped[str] = mapped_column(String(8))  # wallet | webpush
    target: Mapped[str] = mapped_column(String(128))  # wallet user, or a push_subscriptions id
    shopper: Mapped[str] = mapped_column(String(128))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[float] = mapped_column(Float)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[float | None] = mapped_column(Float)
    sent_at: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)


class PushSubscription(Base):
    """A shopper's browser Web Push subscription for one venue, tied to the wallet user whose
    one-tap link the browser proved it holds when it subscribed (cloud/push/subscribe.py)."""

    __tablename__ = "push_subscriptions"
    __table_args__ = (
        UniqueConstraint("venue_id", "endpoint"),
        Index("ix_push_subscriptions_shopper", "venue_id", "wallet_user"),
    )

    id: Mapped[str] = mapped_column(String(24), primary_key=True, default=lambda: new_id("wps"))
    venue_id: Mapped[str] = mapped_column(ForeignKey("venues.id"))
    wallet_user: Mapped[str] = mapped_column(String(128))
    endpoint: Mapped[str] = mapped_column(String(2048))
    p256dh: Mapped[str] = mapped_column(String(128))
    auth: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Float)


class SignInFailure(Base):
    """Failed dashboard sign-ins in the current window, per (client, e-mail) and per client
    (an IPv4 address or an IPv6 /64; cloud/dashboard/ratelimit.py). In the database so that
    every instance behind the load balancer counts the same guesses; the key is a hash, so
    the table holds no addresses."""

    __tablename__ = "sign_in_failures"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer)
    first_at: Mapped[float] = mapped_column(Float, index=True)


class SignInAccount(Base):
    """Failed sign-ins per account (an e-mail, whether or not a merchant has it), across
    every client: the per-account back-off that rotating addresses cannot escape
    (cloud/dashboard/ratelimit.py). The key is a hash of the e-mail."""

    __tablename__ = "sign_in_accounts"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer)
    last_at: Mapped[float] = mapped_column(Float, index=True)


class KnownSignInClient(Base):
    """A client (an IPv4 address or an IPv6 /64) a merchant has signed in from: the right
    password from there passes the per-account back-off, so a guesser elsewhere cannot lock
    the owner out. The key is a hash of (merchant id, client)."""

    __tablename__ = "known_sign_in_clients"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_at: Mapped[float] = mapped_column(Float, index=True)


class FleetSecret(Base):
    """A merchant's fleet enrolment secret, baked into router images: a router holding it may
    ASK to join (cloud/fleet.py), never join by itself. Only its SHA-256 is kept."""

    __tablename__ = "fleet_secrets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    merchant_id: Mapped[str] = mapped_column(ForeignKey("merchants.id"), index=True)
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[float] = mapped_column(Float)
    revoked_at: Mapped[float | None] = mapped_column(Float)


class PendingDevice(Base):
    """A router from an image that asked to join, waiting for the merchant's decision in the
    dashboard. Keyed by its public key, so a router rebooting while it waits is one row."""

    __tablename__ = "pending_devices"

    id: Mapped[str] = mapped_column(String(24), primary_key=True, default=lambda: new_id("pnd"))
    merchant_id: Mapped[str] = mapped_column(ForeignKey("merchants.id"), index=True)
    public_key: Mapped[str] = mapped_column(String(64), unique=True)
    venue_tag: Mapped[str] = mapped_column(String(63), default="")
    hostname: Mapped[str] = mapped_column(String(63), default="")
    version: Mapped[str] = mapped_column(String(32), default="")
    requested_at: Mapped[float] = mapped_column(Float)
    decided_at: Mapped[float | None] = mapped_column(Float)
    device_id: Mapped[str | None] = mapped_column(String(24))  # set when approved
    rejected: Mapped[bool] = mapped_column(Boolean, default=False)
