"""What happens to bookings besides a shopper's taps: the deposit through the wallet, the
sweep (expired holds, late payments, reminders, no-shows, completions) and the automatic
check-in when the shopper's phone joins the venue's Wi-Fi.

The deposit is an ordinary payment (cloud/o2o/payments.py, purpose `deposit`, idempotency
key `deposit-<booking>`), so the notify, the reconciliation by query, the ledger and the
refunds are the payments' own. The booking learns that it was paid lazily: when its page is
shown (which queries a payment still waiting, the wallet's return) and on every sweep, and at
once when the notify (or a reconciling query) books the capture (`on_paid`, a
payments.PAID_HOOKS hook): the shopper who closed the wallet before it returned finds the
booking confirmed. A deposit paid after the hold ran out confirms the
booking if a seat is still free, and is refunded in full otherwise (`slot_lost`).

Reminders go through the push outbox (`push_jobs`, cloud/push/worker.py sends them): a
wallet message to the shopper's wallet user and a Web Push to each browser of theirs that
subscribed at the venue. Check-in by presence: a `join` of an opted-in phone (the wallet
user the venue's router linked to the MAC with the wallet's consent, cloud/presence.py) is
the shopper whose wallet subject that is, arriving.
"""

from __future__ import annotations

import datetime as dt
import logging
import zoneinfo
from dataclasses import dataclass

from flask import Flask, current_app
from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from cloud import db as cloud_db
from cloud import presence
from cloud.api import now as clock_now
from cloud.models import PushJob, PushSubscription, ShopperLink, Venue
from cloud.o2o import booking, payments, settlement
from cloud.o2o.booking import BookingError
from cloud.o2o.booking_models import (
    CANCELLED,
    CHECKED_IN,
    COMPLETED,
    CONFIRMED,
    EXPIRED,
    HELD,
    NO_SHOW,
    Booking,
    BookingResource,
    BookingSlot,
)
from cloud.o2o.payments import Payment, PaymentError, Refund
from cloud.o2o.shoppers import Shopper
from cloud.o2o.trade_client import TradeClient
from cloud.push.presence_push import venue_language
from plaza.texts import ZH

log = logging.getLogger("plaza.cloud.bookings")

REMIND_BEFORE = 2 * 3600.0  # the reminder goes out this long before the slot
BATCH = 500


def local_at(at: float, tz: str) -> str:
    return dt.datetime.fromtimestamp(at, zoneinfo.ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M")


def local_time(slot: BookingSlot, resource: BookingResource) -> str:
    """When the slot starts, on the venue's clock (how the shopper and the staff say it)."""
    return local_at(slot.starts_at, resource.tz)


# -- the deposit ------------------------------------------------------------------------------


def start_deposit(db: Session, booking_id: str, shopper_id: str, client: TradeClient,
                  now: float) -> Payment:  # fmt: skip
    """The deposit's payment for a held booking (the same one on every tap). Committed."""
    found = booking.mine(db, booking_id, shopper_id)
    booking._expire_if_due(db, found, now)
    if found.state != HELD or not found.deposit:
        raise BookingError("bad_state", "this booking has no deposit to pay")
    slot, resource = db.get(BookingSlot, found.slot_id), db.get(BookingResource,
                                                                 found.resource_id)  # fmt: skip
    assert slot is not None and resource is not None
    payment, _ = payments.create_payment(
        db, shopper_id=shopper_id, venue_id=found.venue_id, amount=found.deposit,
        subject=f"Deposit: {resource.name}, {local_time(slot, resource)}", purpose="deposit",
        idempotency_key=f"deposit-{found.id}", app_id=client.app_id, seller_id=client.seller_id,
        at=now,
    )  # fmt: skip
    if found.payment_id is None:
        db.execute(update(Booking).where(Booking.id == found.id, Booking.payment_id.is_(None))
                   .values(payment_id=payment.id, updated_at=now))  # fmt: skip
        db.commit()
        db.refresh(found)
    return payment


def sync_deposit(db: Session, found: Booking, now: float, client: TradeClient | None) -> str:
    """Bring a booking in step with its deposit: paid -> confirmed (or refunded when the
    seat is gone); ended without a fault of the shopper's -> refunded. Returns what it did:
    none, unpaid, confirmed, refunded, kept. Commits."""
    if found.payment_id is None:
        return "none"
    payment = db.get(Payment, found.payment_id, populate_existing=True)
    assert payment is not None
    if payment.paid_at is None:
        return "unpaid"
    db.refresh(found)
    if found.state in (HELD, EXPIRED) and payment.refunded == 0:
        if booking.confirm_paid(db, found, now):
            db.commit()
            db.refresh(found)
            return "confirmed"
        booking._move(db, found.id, found.state, CANCELLED, reason="slot_lost", ended_at=now,
                      updated_at=now)  # fmt: skip
        db.commit()
        db.refresh(found)
    if not booking.refund_due(found) or payment.refunded >= payment.amount:
        return "kept" if found.state in (CANCELLED, NO_SHOW) else "none"
    key = f"booking-{found.id}"
    done = db.scalar(select(Refund.state).where(Refund.payment_id == payment.id,
                                                Refund.idempotency_key == key))  # fmt: skip
    if done is not None and done != payments.REFUND_PENDING:
        return "refunded"
    if client is None:
        return "unpaid"
    try:
        settlement.refund(db, client, payment.id, payment.amount - payment.refunded, key,
                          f"booking {found.id}: {found.reason}", now)  # fmt: skip
    except PaymentError as exc:  # pending: the same key on the next sweep sends it again
        log.warning("deposit refund for %s not done yet: %s", found.id, exc)
        return "unpaid"
    return "refunded"


def on_paid(db: Session, payment: Payment, at: float) -> None:
    """payments.PAID_HOOKS: the deposit's capture confirms its booking in the same
    transaction. When the seat is gone the booking stays as it is: the refund needs the
    wallet, so `sync_deposit` (the page or the next sweep) cancels and refunds it."""
    if payment.purpose != "deposit" or payment.refunded:
        return
    query = select(Booking).where(Booking.payment_id == payment.id)
    found = db.scalar(query.execution_options(populate_existing=True))
    if found is not None and found.state in (HELD, EXPIRED):
        booking.confirm_paid(db, found, at)


if on_paid not in payments.PAID_HOOKS:
    payments.PAID_HOOKS.append(on_paid)


# -- the sweep --------------------------------------------------------------------------------


@dataclass
class Swept:
    expired: int = 0
    deposits: int = 0
    reminded: int = 0
    no_shows: int = 0
    completed: int = 0


def sweep(db: Session, now: float, client: TradeClient | None = None,
          link_base: str = "") -> Swept:  # fmt: skip
    """One pass of the booking clock (`plaza-cloud bookings-sweep`, every minute). Every step
    is a conditional change, so two sweeps at once do each thing once."""
    result = Swept()
    result.expired = booking.release_expired(db, now)
    db.commit()
    owed = db.scalars(
        select(Booking).join(Payment, Payment.id == Booking.payment_id)
        .where(Payment.paid_at.is_not(None), or_(
            and_(Booking.state.in_((HELD, EXPIRED)), Payment.refunded == 0),
            and_(Booking.state == CANCELLED, Booking.reason != "cancelled_late",
                 Payment.refunded < Payment.amount)))
        .limit(BATCH)
    ).all()  # fmt: skip
    for found in owed:
        result.deposits += sync_deposit(db, found, now, client) in ("confirmed", "refunded")
    result.reminded = remind(db, now, link_base)
    started = select(BookingSlot.id).where(BookingSlot.starts_at + booking.NO_SHOW_GRACE < now)
    over = select(BookingSlot.id).where(BookingSlot.ends_at < now)
    for outcome, source, slots in ((NO_SHOW, CONFIRMED, started), (COMPLETED, CHECKED_IN, over)):
        done = db.execute(
            update(Booking)
            .where(Booking.state == source, Booking.slot_id.in_(slots))
            .values(state=outcome, ended_at=now, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        setattr(result, "no_shows" if outcome == NO_SHOW else "completed", done.rowcount or 0)
    db.commit()
    return result


REMINDER = {
    "en": ("Your booking at {venue}", "{resource}, {when}. Joining the Wi-Fi checks you in."),
    ZH: ("您在{venue}的预订", "{resource}，{when}。连接店内 Wi-Fi 即可自动签到。"),
}


def remind(db: Session, now: float, link_base: str) -> int:
    """Queue one reminder per confirmed booking starting within REMIND_BEFORE."""
    due = db.execute(
        select(Booking, BookingSlot, BookingResource, Shopper, Venue)
        .join(BookingSlot, BookingSlot.id == Booking.slot_id)
        .join(BookingResource, BookingResource.id == Booking.resource_id)
        .join(Shopper, Shopper.id == Booking.shopper_id)
        .join(Venue, Venue.id == Booking.venue_id)
        .where(Booking.state == CONFIRMED, Booking.reminded_at.is_(None),
               BookingSlot.starts_at > now, BookingSlot.starts_at <= now + REMIND_BEFORE)
        .limit(BATCH)
    ).all()  # fmt: skip
    queued = 0
    for found, slot, resource, shopper, venue in due:
        claimed = db.execute(
            update(Booking).where(Booking.id == found.id, Booking.reminded_at.is_(None))
            .values(reminded_at=now).execution_options(synchronize_session=False)
        )  # fmt: skip
        if claimed.rowcount != 1:
            continue  # another sweep has it
        title, body = REMINDER.get(venue_language(venue.config), REMINDER["en"])
        values = {"venue": venue.name, "resource": resource.name,
                  "when": local_time(slot, resource)}  # fmt: skip
        message = {"title": title.format(**values)[:80], "body": body.format(**values),
                   "link": f"{link_base}/plaza/bookings/{found.id}"}  # fmt: skip
        # `shopper` is the shp_ id: a reminder is transactional, so it neither counts for nor
        # is held back by the presence push's per-wallet-user interval (marketing).
        jobs = [_job(venue.id, "wallet", shopper.subject, shopper.id, message, now)]
        subscriptions = db.scalars(select(PushSubscription.id).where(
            PushSubscription.venue_id == venue.id,
            PushSubscription.wallet_user == shopper.subject)).all()  # fmt: skip
        web = {"title": message["title"], "body": message["body"], "url": message["link"],
               "venue": venue.id, "offers": []}  # fmt: skip
        jobs += [_job(venue.id, "webpush", sid, shopper.id, web, now) for sid in subscriptions]
        db.add_all(jobs)
        queued += 1
    db.commit()
    return queued


def _job(venue_id: str, kind: str, target: str, shopper: str, payload: dict[str, object],
         at: float) -> PushJob:  # fmt: skip
    return PushJob(venue_id=venue_id, kind=kind, target=target, shopper=shopper,
                   payload=payload, created_at=at, attempts=0, next_attempt_at=at)  # fmt: skip


# -- check-in by presence ---------------------------------------------------------------------


def check_in_by_presence(db: Session, venue_id: str, wallet_user: str, now: float) -> list[str]:
    """The confirmed bookings at `venue_id` of the shopper(s) behind `wallet_user` whose time
    is near, checked in; their ids."""
    found = db.scalars(
        select(Booking).join(BookingSlot, BookingSlot.id == Booking.slot_id)
        .join(Shopper, Shopper.id == Booking.shopper_id)
        .where(Booking.venue_id == venue_id, Booking.state == CONFIRMED,
               Shopper.subject == wallet_user,
               BookingSlot.starts_at - booking.CHECK_IN_EARLY <= now, BookingSlot.ends_at >= now)
    ).all()  # fmt: skip
    return [b.id for b in found if booking.check_in(db, b, now, "presence")]


def join_hook(venue: Venue, link: ShopperLink) -> None:
    """presence.JOIN_HOOKS: an opted-in phone joined `venue`'s Wi-Fi."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    with cloud_db.session(app) as db:
        done = check_in_by_presence(db, venue.id, link.wallet_user, clock_now())
    if done:
        log.info("checked in %d booking(s) at %s by presence", len(done), venue.id)


def init_app(app: Flask) -> None:
    """Hook check-in into presence (process-wide and idempotent, like presence push)."""
    if join_hook not in presence.JOIN_HOOKS:
        presence.register_join_hook(join_hook)
