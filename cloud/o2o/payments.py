"""Payments and refunds through the wallet's trade API (the Alipay open-platform dialect).

A payment is made once per idempotency key (the shop's form carries one per checkout): the
same key again is the same payment, never a second charge. Its id is the `out_trade_no` the
wallet knows it by. States follow the wallet's: WAIT_BUYER_PAY -> TRADE_SUCCESS (paid) or
TRADE_CLOSED (never paid, or fully refunded); only forward moves are ever made, so a notify
that arrives late, twice or out of order changes nothing it should not. Money moves in the
ledger (cloud/o2o/ledger.py) under keys named for the event, so no event is booked twice.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Float, ForeignKey, Index, Integer, String, UniqueConstraint, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from cloud.models import Base, Venue, new_id
from cloud.o2o import ledger

WAIT = "WAIT_BUYER_PAY"
SUCCESS = "TRADE_SUCCESS"
CLOSED = "TRADE_CLOSED"
FINISHED = "TRADE_FINISHED"
STATES = (WAIT, SUCCESS, CLOSED, FINISHED)

REFUND_PENDING, REFUND_SUCCESS, REFUND_FAILED = "PENDING", "SUCCESS", "FAILED"

# What else a refund undoes (a voucher used on the payment goes back, cloud/o2o/vouchers):
# each hook runs once per refund, in the transaction that books it, after the payment moved.
RefundHook = Callable[[Session, "Payment", "Refund", float], None]
REFUND_HOOKS: list[RefundHook] = []
# What a capture sets off (a booking's deposit confirms it, cloud/o2o/booking_jobs): each hook
# runs once per payment, when `apply_status` first books the capture (a notify or a query),
# in that transaction; a hook must not commit, and anything that needs the wallet is left to
# the caller's next sweep.
PaidHook = Callable[[Session, "Payment", float], None]
PAID_HOOKS: list[PaidHook] = []


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


MAX_AMOUNT = 5_000_000  # fen: 50,000 yuan, far above any counter payment in a plaza
MAX_KEY = 64


class PaymentError(ValueError):
    """A payment or refund refused. `code` is a short fixed word (the shop's message key);
    str() is safe to show."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _check_key(key: str) -> str:
    if not isinstance(key, str) or not 8 <= len(key) <= MAX_KEY or not key.isprintable():
        raise PaymentError("bad_key", "an idempotency key is 8 to 64 printable characters")
    return key


def merchant_of(db: Session, payment: Payment) -> str:
    venue = db.get(Venue, payment.venue_id)
    assert venue is not None  # a foreign key
    return venue.merchant_id


def create_payment(
    db: Session,
    *,
    shopper_id: str,
    venue_id: str,
    amount: int,
    subject: str,
    purpose: str,
    idempotency_key: str,
    app_id: str,
    seller_id: str,
    at: float,
) -> tuple[Payment, bool]:
    """(the payment for this key, True if it was made now). The same key with the same order
    is the same payment; with another order it is refused, never a second payment."""
    _check_key(idempotency_key)
    if isinstance(amount, bool) or not isinstance(amount, int) or not 0 < amount <= MAX_AMOUNT:
        raise PaymentError("bad_amount", "the amount must be between 0.01 and 50000.00")
    subject = " ".join(str(subject).split())[:256]
    if not subject:
        raise PaymentError("bad_subject", "say what the payment is for")
    if db.get(Venue, venue_id) is None:
        raise PaymentError("no_venue", "no such venue")
    query = select(Payment).where(
        Payment.shopper_id == shopper_id, Payment.idempotency_key == idempotency_key
    )
    found = db.scalars(query).one_or_none()
    if found is None:
        payment = Payment(
            venue_id=venue_id, shopper_id=shopper_id, idempotency_key=idempotency_key,
            purpose=purpose, subject=subject, amount=amount, state=WAIT, app_id=app_id,
            seller_id=seller_id, refunded=0, created_at=at, updated_at=at,
        )  # fmt: skip
        db.add(payment)
        try:
            db.commit()
            return payment, True
        except IntegrityError:  # the same key, sent twice at once: the other one won
            db.rollback()
            found = db.scalars(query).one()
    if (found.venue_id, found.amount, found.subject, found.purpose) != (
        venue_id, amount, subject, purpose,
    ):  # fmt: skip
        raise PaymentError("key_reused", "this checkout was already used for another payment")
    return found, False


def attach_trade(db: Session, payment: Payment, trade_no: str) -> None:
    """Remember the wallet's trade number from its answer to trade.create: from then on, a
    notify naming another trade for this payment is refused."""
    if trade_no and not payment.trade_no:
        payment.trade_no = trade_no[:64]
        db.commit()


def locked(db: Session, payment_id: str) -> Payment | None:
    """The payment row, locked until commit on PostgreSQL (SQLite has one writer anyway)."""
    return db.get(Payment, payment_id, with_for_update=True, populate_existing=True)


def apply_status(
    db: Session, payment: Payment, status: str, at: float, *, trade_no: str = "",
    buyer_id: str = "", paid: bool = False,
) -> Payment:  # fmt: skip
    """Move a payment (that the caller `locked()`) forward to what the wallet says (a notify
    or a query), in the caller's transaction; never backward. `paid`: the wallet says money
    was taken (a TRADE_CLOSED after a full refund was paid too). A capture is booked once,
    whatever repeats."""
    before = (payment.state, payment.trade_no, payment.paid_at)
    if trade_no and not payment.trade_no:
        payment.trade_no = trade_no
    if paid or status in (SUCCESS, FINISHED):
        if payment.paid_at is None:
            payment.paid_at = at
            payment.buyer_id = buyer_id or payment.buyer_id
            merchant = merchant_of(db, payment)
            ledger.post(
                db,
                f"payment:{payment.id}:captured",
                "payment",
                [
                    (ledger.WALLET_CLEARING, payment.amount),
                    (ledger.merchant_receivable(merchant), -payment.amount),
                ],
                at,
                memo=payment.subject,
            )
            for hook in PAID_HOOKS:
                hook(db, payment, at)
        if payment.state in (WAIT, CLOSED) and payment.refunded < payment.amount:
            payment.state = SUCCESS
        if status == FINISHED and payment.state == SUCCESS:
            payment.state = FINISHED
    elif status == CLOSED and payment.state == WAIT:
        payment.state, payment.closed_at = CLOSED, at
    if (payment.state, payment.trade_no, payment.paid_at) != before:
        payment.updated_at = at  # a repeated word from the wallet writes nothing
    return payment


def refund_total(db: Session, payment_id: str) -> int:
    """Refunds made or in flight (pending ones hold their amount until they fail)."""
    total = db.scalar(
        select(func.coalesce(func.sum(Refund.amount), 0)).where(
            Refund.payment_id == payment_id, Refund.state != REFUND_FAILED
        )
    )
    return int(total or 0)


def reserve_refund(
    db: Session, payment_id: str, amount: int, idempotency_key: str, reason: str, at: float
) -> tuple[Refund, bool]:
    """(the refund for this key, True if it still has to go to the wallet). Refused when it
    would make the refunds larger than what was paid."""
    _check_key(idempotency_key)
    payment = locked(db, payment_id)
    if payment is None:
        raise PaymentError("no_payment", "no such payment")
    found = db.scalars(
        select(Refund).where(
            Refund.payment_id == payment_id, Refund.idempotency_key == idempotency_key
        )
    ).one_or_none()
    if found is not None:
        db.rollback()
        if found.amount != amount:
            raise PaymentError("key_reused", "this refund key was used for another amount")
        return found, found.state == REFUND_PENDING
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        db.rollback()
        raise PaymentError("bad_amount", "a refund is at least 0.01")
    if payment.paid_at is None or payment.state not in (SUCCESS, FINISHED, CLOSED):
        db.rollback()
        raise PaymentError("not_paid", "only a paid payment can be refunded")
    left = payment.amount - refund_total(db, payment_id)
    if amount > left:
        db.rollback()
        raise PaymentError(
            "refund_too_large",
            f"a refund of {amount / 100:.2f} is more than the {left / 100:.2f} left to refund",
        )
    refund = Refund(
        payment_id=payment_id, idempotency_key=idempotency_key, amount=amount,
        reason=" ".join(reason.split())[:256], state=REFUND_PENDING, created_at=at,
    )  # fmt: skip
    db.add(refund)
    db.commit()
    return refund, True


def settle_refund(db: Session, refund_id: str, ok: bool, at: float) -> Refund:
    """The wallet's answer to a refund: booked once (money back to the shopper), or failed."""
    refund = db.get(Refund, refund_id, with_for_update=True, populate_existing=True)
    if refund is None:
        raise PaymentError("no_refund", "no such refund")
    if refund.state != REFUND_PENDING:
        return refund
    payment = locked(db, refund.payment_id)
    assert payment is not None
    if not ok:
        refund.state, refund.done_at = REFUND_FAILED, at
        return refund
    ledger.post(
        db,
        f"refund:{refund.id}",
        "refund",
        [(ledger.refunds(merchant_of(db, payment)), refund.amount),
         (ledger.WALLET_CLEARING, -refund.amount)],
        at,
        memo=refund.reason,
    )  # fmt: skip
    refund.state, refund.done_at = REFUND_SUCCESS, at
    payment.refunded += refund.amount
    if payment.refunded >= payment.amount:
        payment.state, payment.closed_at = CLOSED, at
    payment.updated_at = at
    for hook in REFUND_HOOKS:
        hook(db, payment, refund, at)
    return refund
