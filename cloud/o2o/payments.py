"""Payments and refunds through the wallet's trade API (the Alipay open-platform dialect).

A payment is made once per idempotency key (the shop's form carries one per checkout): the
same key again is the same payment, never a second charge. Its id is the `out_trade_no` the
wallet knows it by. States follow the wallet's: WAIT_BUYER_PAY -> TRADE_SUCCESS (paid) or
TRADE_CLOSED (never paid, or fully refunded); only forward moves are ever made, so a notify
that arrives late, twice or out of order changes nothing it should not. Money moves in the
ledger (cloud/o2o/ledger.py) under keys named for the event, so no event is booked twice.
"""

from __future__ import annotations

from sqlalchemy import Float, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from cloud.models import Base, new_id

WAIT = "WAIT_BUYER_PAY"
SUCCESS = "TRADE_SUCCESS"
CLOSED = "TRADE_CLOSED"
FINISHED = "TRADE_FINISHED"
STATES = (WAIT, SUCCESS, CLOSED, FINISHED)

REFUND_PENDING, REFUND_SUCCESS, REFUND_FAILED = "PENDING", "SUCCESS", "FAILED"


class Payment(Base):
    """One payment by one shopper at one venue. Amounts are in fen."""

    __tablename__ = "payments"
    __table_args__ = (
        UniqueConstraint("shopper_id", "idempotency_key"),
        Index("ix_payments_state", "state", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(24), primary_key=True, default=lambda: new_id("pay"))
    venue_id: Mapped[str] = mapped_column(ForeignKey("venues.id"), index=True)
    shopper_id: Mapped[str] = mapped_column(ForeignKey("shoppers.id"), index=True)
    idempotency_key: Mapped[str] = mapped_column(String(64))
    purpose: Mapped[str] = mapped_column(String(32))  # what it pays for: order, deposit, ...
    subject: Mapped[str] = mapped_column(String(256))
    amount: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16), default=WAIT)
    app_id: Mapped[str] = mapped_column(String(32))  # the wallet app it was created under
    seller_id: Mapped[str] = mapped_column(String(32), default="")  # the merchant account paid
    trade_no: Mapped[str | None] = mapped_column(String(64), unique=True)  # the wallet's
    buyer_id: Mapped[str | None] = mapped_column(String(32))
    refunded: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    paid_at: Mapped[float | None] = mapped_column(Float)
    closed_at: Mapped[float | None] = mapped_column(Float)


class Refund(Base):
    """A refund of part or all of a payment; its id is the wallet's `out_request_no`."""

    __tablename__ = "refunds"
    __table_args__ = (UniqueConstraint("payment_id", "idempotency_key"),)

    id: Mapped[str] = mapped_column(String(24), primary_key=True, default=lambda: new_id("rfd"))
    payment_id: Mapped[str] = mapped_column(ForeignKey("payments.id"), index=True)
    idempotency_key: Mapped[str] = mapped_column(String(64))
    amount: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(String(256), default="")
    state: Mapped[str] = mapped_column(String(16), default=REFUND_PENDING)
    created_at: Mapped[float] = mapped_column(Float)
    done_at: Mapped[float | None] = mapped_column(Float)
