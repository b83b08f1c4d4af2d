"""Transit's tables: feeds, cards, top-ups, readers and taps (migration 0011).

Money is never stored here: a card's balance is its ledger account (cloud/o2o/ledger.py,
`transit-card:<card>`), so a top-up and a fare are postings like any payment, and the books
balance by construction. What is stored is who owns what, and every tap a reader saw,
unique per (reader, sequence) so a batch sent twice, or a day's backlog sent after a partial
upload, inserts each tap once.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Float, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from cloud.models import Base, BigId, new_id

ACTIVE, LOST = "active", "lost"
NEW, CHARGED, REFUSED = "new", "charged", "refused"


class TransitFeed(Base):
    """A GTFS feed as loaded (`plaza-cloud transit load-feed`); the newest one prices taps.
    The files are kept whole: the engine re-checks them when it loads them."""

    __tablename__ = "transit_feeds"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    venue_id: Mapped[str] = mapped_column(ForeignKey("venues.id"), index=True)  # the agency
    digest: Mapped[str] = mapped_column(String(64))
    files: Mapped[dict[str, Any]] = mapped_column(JSON)
    summary: Mapped[dict[str, Any]] = mapped_column(JSON)
    loaded_at: Mapped[float] = mapped_column(Float)


class TransitCard(Base):
    """A rider's virtual card: a token bound to the shopper's account, no value on it."""

    __tablename__ = "transit_cards"

    id: Mapped[str] = mapped_column(String(24), primary_key=True, default=lambda: new_id("tcd"))
    shopper_id: Mapped[str] = mapped_column(ForeignKey("shoppers.id"), index=True)
    state: Mapped[str] = mapped_column(String(8), default=ACTIVE)
    created_at: Mapped[float] = mapped_column(Float)
    lost_at: Mapped[float | None] = mapped_column(Float)


class TransitTopUp(Base):
    """A payment (cloud/o2o/payments.py) that tops up a card once the wallet confirms it."""

    __tablename__ = "transit_topups"

    payment_id: Mapped[str] = mapped_column(ForeignKey("payments.id"), primary_key=True)
    card_id: Mapped[str] = mapped_column(ForeignKey("transit_cards.id"), index=True)
    amount: Mapped[int] = mapped_column(Integer)
    credited_at: Mapped[float | None] = mapped_column(Float)


class TransitReader(Base):
    """A bus reader: a device (cloud/models.Device, same enrolment and signatures as a
    router) made a reader by the claim code it enrolled with."""

    __tablename__ = "transit_readers"

    id: Mapped[str] = mapped_column(String(24), primary_key=True, default=lambda: new_id("rdr"))
    claim_id: Mapped[int] = mapped_column(ForeignKey("claim_codes.id"), unique=True)
    route_id: Mapped[str] = mapped_column(String(64))
    label: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[float] = mapped_column(Float)


class TransitTap(Base):
    """One tap-on as a reader recorded it, offline or not."""

    __tablename__ = "transit_taps"
    __table_args__ = (
        UniqueConstraint("reader_id", "seq"),
        Index("ix_transit_taps_card", "card_id", "tapped_at"),
        Index("ix_transit_taps_state", "state", "tapped_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    reader_id: Mapped[str] = mapped_column(String(24))  # the device id
    seq: Mapped[int] = mapped_column(BigInteger)
    card_id: Mapped[str] = mapped_column(String(24))
    route_id: Mapped[str] = mapped_column(String(64))
    stop_id: Mapped[str] = mapped_column(String(64))
    tapped_at: Mapped[float] = mapped_column(Float)
    received_at: Mapped[float] = mapped_column(Float)
    state: Mapped[str] = mapped_column(String(8), default=NEW)
    fare: Mapped[int | None] = mapped_column(Integer)  # fen this tap added to the day's fares
    note: Mapped[str] = mapped_column(String(120), default="")
