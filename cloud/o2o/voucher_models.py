"""The voucher tables (migration 0008): templates, their audit trail, vouchers, redemptions.

The invariants live in the schema where a schema can hold them, so that no interleaving of
requests on any number of instances can break them:

- the budget: `voucher_templates.issued` only ever moves by a conditional
  `UPDATE ... WHERE issued < budget` (cloud/o2o/vouchers.py), and a CHECK keeps it there;
- the per-shopper limit: a shopper's n-th voucher of a template is row (template, shopper,
  seq = n), unique, so two racing claims for the same n cannot both land;
- the per-day limit: likewise (template, shopper, day, day_seq);
- idempotency: (template, shopper, idempotency_key) is unique, so a retried request finds
  the voucher its first attempt made;
- single use: a voucher moves ISSUED -> REDEEMED only by `UPDATE ... WHERE state = 'ISSUED'`.

Money is in minor units (fen/cents) as integers: no float ever touches an amount.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from cloud.models import Base, BigId, new_id

STATES = ("DRAFT", "ACTIVATED", "PAUSED", "CLOSED")
KINDS = ("amount", "percent")


class VoucherTemplate(Base):
    """An offer a merchant defines for one venue: what it takes off, how many exist, who may
    claim how many, and how long a claimed voucher stays good."""

    __tablename__ = "voucher_templates"
    __table_args__ = (
        CheckConstraint("issued >= 0 AND issued <= budget", name="within_budget"),
        Index("ix_voucher_templates_venue", "venue_id", "state"),
    )

    id: Mapped[str] = mapped_column(String(24), primary_key=True, default=lambda: new_id("vtp"))
    venue_id: Mapped[str] = mapped_column(ForeignKey("venues.id"))
    title: Mapped[str] = mapped_column(String(80))
    kind: Mapped[str] = mapped_column(String(8))  # amount | percent
    amount_off: Mapped[int] = mapped_column(Integer, default=0)  # minor units (kind amount)
    percent_off: Mapped[int] = mapped_column(Integer, default=0)  # 1..99 (kind percent)
    min_spend: Mapped[int] = mapped_column(Integer, default=0)  # minor units
    budget: Mapped[int] = mapped_column(Integer)  # vouchers that may ever be issued
    issued: Mapped[int] = mapped_column(Integer, default=0)
    per_user_limit: Mapped[int] = mapped_column(Integer, default=1)
    per_day_limit: Mapped[int | None] = mapped_column(Integer)  # per shopper per (UTC) day
    # Validity: absolute (valid_from..valid_until) or relative (valid_days from the claim);
    # with both, a relative voucher still ends by valid_until.
    valid_from: Mapped[float | None] = mapped_column(Float)
    valid_until: Mapped[float | None] = mapped_column(Float)
    valid_days: Mapped[int | None] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(10), default="DRAFT")
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)


class VoucherAudit(Base):
    """One row per change to a template (created, edited, each state change): who, when,
    from which state to which. Written in the transaction that makes the change."""

    __tablename__ = "voucher_audit"
    __table_args__ = (Index("ix_voucher_audit_template", "template_id", "at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    template_id: Mapped[str] = mapped_column(ForeignKey("voucher_templates.id"))
    at: Mapped[float] = mapped_column(Float)
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(16))
    from_state: Mapped[str | None] = mapped_column(String(10))
    to_state: Mapped[str | None] = mapped_column(String(10))
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class Voucher(Base):
    """One claimed voucher. `code_gen` is bumped when a redemption is reversed, so the code the
    staff already scanned stays spent and the shopper is shown a new one."""

    __tablename__ = "vouchers"
    __table_args__ = (
        UniqueConstraint("template_id", "shopper", "seq", name="uq_vouchers_per_user"),
        UniqueConstraint("template_id", "shopper", "day", "day_seq", name="uq_vouchers_per_day"),
        UniqueConstraint(
            "template_id", "shopper", "idempotency_key", name="uq_vouchers_idempotency"
        ),
        Index("ix_vouchers_shopper", "shopper", "claimed_at"),
    )

    id: Mapped[str] = mapped_column(String(24), primary_key=True, default=lambda: new_id("vch"))
    template_id: Mapped[str] = mapped_column(ForeignKey("voucher_templates.id"))
    venue_id: Mapped[str] = mapped_column(ForeignKey("venues.id"), index=True)
    shopper: Mapped[str] = mapped_column(ForeignKey("shoppers.id"))
    seq: Mapped[int] = mapped_column(Integer)
    day: Mapped[str] = mapped_column(String(10))  # YYYY-MM-DD, UTC
    day_seq: Mapped[int] = mapped_column(Integer)
    idempotency_key: Mapped[str | None] = mapped_column(String(64))
    short_code: Mapped[str] = mapped_column(String(16), unique=True)  # typed at the counter
    state: Mapped[str] = mapped_column(String(10), default="ISSUED")  # ISSUED | REDEEMED
    code_gen: Mapped[int] = mapped_column(Integer, default=1)
    claimed_at: Mapped[float] = mapped_column(Float)
    valid_from: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float)
    redeemed_at: Mapped[float | None] = mapped_column(Float)


class VoucherRedemption(Base):
    """A voucher used at the counter; `reversed_at` set when the payment it discounted was
    refunded (cloud/o2o/vouchers.reverse_redemption). Never deleted: the merchant's charts
    count redemptions and reversals from here."""

    __tablename__ = "voucher_redemptions"
    __table_args__ = (Index("ix_voucher_redemptions_venue_at", "venue_id", "at"),)

    id: Mapped[str] = mapped_column(String(24), primary_key=True, default=lambda: new_id("vrd"))
    voucher_id: Mapped[str] = mapped_column(ForeignKey("vouchers.id"), index=True)
    venue_id: Mapped[str] = mapped_column(ForeignKey("venues.id"))
    at: Mapped[float] = mapped_column(Float)
    staff: Mapped[str] = mapped_column(String(64))
    code_gen: Mapped[int] = mapped_column(Integer)
    order_amount: Mapped[int | None] = mapped_column(Integer)  # minor units, when given
    discount: Mapped[int | None] = mapped_column(Integer)
    payment_ref: Mapped[str | None] = mapped_column(String(64), index=True)
    reversed_at: Mapped[float | None] = mapped_column(Float)
    reverse_reason: Mapped[str | None] = mapped_column(String(200))
