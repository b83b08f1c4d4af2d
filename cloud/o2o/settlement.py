"""What the wallet says about a payment, applied: notifies, reconciliation by query, refunds.

The wallet's word comes two ways. The asynchronous notify is a form POST to our notify_url,
signed by the wallet; it may come late, twice, or after a later one, and anyone can forge
one, so it is believed only when the signature checks out and what it says matches the
payment we stored (app, seller, amount, trade number). A payment that never hears a notify
(the wallet gave up, our notify_url was down) is settled by asking: `reconcile` queries every
payment still waiting after a grace period. Both go through `payments.apply_status`, which
only moves forward and books a capture once, so neither can count anything twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud.o2o import payments
from cloud.o2o.payments import CLOSED, STATES, WAIT, Payment, PaymentError, Refund
from cloud.o2o.trade_client import TradeClient, TradeError

log = logging.getLogger("plaza.cloud.payments")

RECONCILE_AFTER = 120.0  # seconds a payment may wait for its notify before we ask
ABANDON_AFTER = 3600.0  # a trade the wallet never heard of after this is closed here
RECONCILE_BATCH = 200


class NotifyError(ValueError):
    """A notify refused: `status` is the HTTP status to answer with (the wallet retries)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def fen(text: Any) -> int | None:
    """ "12.34" -> 1234; None for anything that is not a plain amount."""
    if not isinstance(text, str) or not text or len(text) > 14:
        return None
    whole, dot, cents = text.partition(".")
    if not whole.isdigit() or (dot and not (cents.isdigit() and 1 <= len(cents) <= 2)):
        return None
    return int(whole) * 100 + int((cents + "00")[:2])


def _was_paid(params: dict[str, Any]) -> bool:
    """A TRADE_CLOSED that names a payment date or a refund was paid before it closed."""
    return bool(
        params.get("gmt_payment") or params.get("send_pay_date") or params.get("refund_fee")
    )


def handle_notify(db: Session, client: TradeClient, params: dict[str, str], at: float) -> Payment:
    """Check and apply one notify; NotifyError if it is not to be believed. Committed."""
    if not client.verify_notify(params):
        log.warning("payment notify refused: bad signature")
        raise NotifyError("bad signature", 403)
    if params.get("app_id") != client.app_id:
        raise NotifyError("the notify is for another app")
    status = params.get("trade_status", "")
    if status not in STATES:
        raise NotifyError("unknown trade_status")
    try:
        # Locked from the first read (PostgreSQL): the checks and the change see one version.
        payment = payments.locked(db, params.get("out_trade_no", ""))
        if payment is None:
            raise NotifyError("no such payment", 404)
        _check_matches(payment, params)
        payment = payments.apply_status(
            db, payment, status, at, trade_no=params["trade_no"],
            buyer_id=params.get("buyer_id", ""), paid=_was_paid(params),
        )  # fmt: skip
        db.commit()
    except Exception:
        db.rollback()
        raise
    return payment


def _check_matches(payment: Payment, params: dict[str, str]) -> None:
    """A well-signed notify must still be about this payment as we made it."""
    if payment.seller_id and params.get("seller_id", "") != payment.seller_id:
        raise NotifyError("the notify names another seller")
    if params.get("app_id") != payment.app_id:
        raise NotifyError("the notify is for another app")
    if fen(params.get("total_amount")) != payment.amount:
        log.warning("payment notify for %s refused: amount does not match", payment.id)
        raise NotifyError("the amount does not match the payment")
    trade_no = params.get("trade_no", "")
    if not trade_no or (payment.trade_no and trade_no != payment.trade_no):
        raise NotifyError("the trade number does not match the payment")


@dataclass
class Reconciled:
    checked: int = 0
    paid: int = 0
    closed: int = 0
    waiting: int = 0
    failed: int = 0
    refunds: int = 0  # pending refunds sent again and settled


def reconcile(
    db: Session, client: TradeClient, at: float, after: float = RECONCILE_AFTER
) -> Reconciled:
    """Ask the wallet about every payment still waiting `after` seconds after it was made,
    and send again every refund left pending that long (the wallet was unreachable)."""
    result = Reconciled()
    waiting = db.scalars(
        select(Payment.id)
        .where(Payment.state == WAIT, Payment.created_at <= at - after)
        .order_by(Payment.created_at)
        .limit(RECONCILE_BATCH)
    ).all()
    for payment_id in waiting:
        result.checked += 1
        outcome = reconcile_one(db, client, payment_id, at)
        setattr(result, outcome, getattr(result, outcome) + 1)
    result.refunds = retry_refunds(db, client, at, after)
    return result


def reconcile_one(db: Session, client: TradeClient, payment_id: str, at: float) -> str:
    """Settle one payment by query: paid, closed, waiting or failed (the wallet did not
    answer, or answered about something else). Committed."""
    try:
        answer = client.query(payment_id)
    except TradeError as exc:
        log.warning("reconcile %s: %s", payment_id, exc)
        return "failed"
    payment = payments.locked(db, payment_id)
    if payment is None:
        db.rollback()
        return "failed"
    if answer is None:  # the wallet never saw it: the shopper never went to pay
        if payment.state == WAIT and payment.created_at <= at - ABANDON_AFTER:
            payments.apply_status(db, payment, CLOSED, at)
            db.commit()
            return "closed"
        db.rollback()
        return "waiting"
    status = str(answer.get("trade_status", ""))
    if status not in STATES or fen(answer.get("total_amount")) != payment.amount:
        db.rollback()
        log.warning("reconcile %s: the wallet's answer does not match", payment_id)
        return "failed"
    payment = payments.apply_status(
        db, payment, status, at, trade_no=str(answer.get("trade_no", "")),
        buyer_id=str(answer.get("buyer_user_id", "")), paid=_was_paid(answer),
    )  # fmt: skip
    db.commit()
    if payment.paid_at is not None:
        return "paid"
    return "closed" if payment.state == CLOSED else "waiting"


def refund(
    db: Session,
    client: TradeClient,
    payment_id: str,
    amount: int,
    idempotency_key: str,
    reason: str,
    at: float,
) -> Refund:
    """Refund part or all of a payment, once per key. PaymentError if refused (more than is
    left, not paid, the wallet said no); a refund the wallet could not be asked about stays
    pending: the same key, or `reconcile`, sends it again."""
    found, todo = payments.reserve_refund(db, payment_id, amount, idempotency_key, reason, at)
    if not todo:
        return found
    return send_refund(db, client, found, at)


def send_refund(db: Session, client: TradeClient, pending: Refund, at: float) -> Refund:
    """Ask the wallet for a reserved refund and settle it. The request number is the refund's
    id, so asking again after a lost answer is answered, not refunded twice. Committed."""
    try:
        answer = client.refund(pending.payment_id, pending.amount, pending.id, pending.reason)
    except TradeError as exc:
        if exc.unreachable:
            raise PaymentError(
                "wallet_unreachable", "the wallet is unreachable; try again"
            ) from None
        payments.settle_refund(db, pending.id, False, at)
        db.commit()
        raise PaymentError("refused", f"the wallet refused the refund ({exc.code})") from None
    ok = answer.get("out_trade_no") == pending.payment_id
    settled = payments.settle_refund(db, pending.id, ok, at)
    db.commit()
    if not ok:
        raise PaymentError("refused", "the wallet's answer was about another payment")
    return settled


def retry_refunds(db: Session, client: TradeClient, at: float, after: float) -> int:
    """Send again every refund still pending `after` seconds on; how many settled."""
    pending = db.scalars(
        select(Refund)
        .where(Refund.state == payments.REFUND_PENDING, Refund.created_at <= at - after)
        .order_by(Refund.created_at)
        .limit(RECONCILE_BATCH)
    ).all()
    settled = 0
    for found in pending:
        try:
            send_refund(db, client, found, at)
        except PaymentError as exc:
            log.warning("refund %s still pending: %s", found.id, exc)
            if exc.code != "refused":
                continue
        settled += 1
    return settled
