"""The shopper's booking pages under /plaza, in the shop's cookie, CSP and languages
(cloud/o2o/shop.py): a venue's times, hold, confirm or pay the deposit, cancel, the `.ics`.

Plain forms and links (no script). Every form that makes something carries an idempotency
key, so a double tap is one hold. Another shopper's booking is a 404, as if it did not
exist; a refusal (the time was just taken, the hold ran out, past the cut-off) is the page
again with the reason, status 409.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from urllib.parse import urlsplit

from flask import Blueprint, Response, abort, current_app, redirect, render_template, request
from flask.typing import ResponseReturnValue
from sqlalchemy import select

from cloud.api import now
from cloud.db import get_db
from cloud.models import Venue
from cloud.o2o import booking, booking_ics, booking_jobs, booking_slots, settings, settlement, shop
from cloud.o2o.booking import BookingError
from cloud.o2o.booking_models import Booking, BookingResource, BookingSlot
from cloud.o2o.payments import WAIT, Payment, PaymentError, attach_trade
from cloud.o2o.shop_texts import language
from cloud.o2o.shoppers import current_shopper, shopper_required
from cloud.o2o.trade_client import TradeClient, TradeError
from plaza.csrf import require_csrf

log = logging.getLogger("plaza.cloud.bookings")

bp = Blueprint("bookings", __name__, url_prefix="/plaza", template_folder="templates")
bp.after_request(shop._headers)
bp.context_processor(shop._globals)

DAYS_SHOWN = 7

TEXTS = {
    "zh-CN": {"book": "预订", "times": "可预订时间", "none": "暂无可预订时间", "full": "已满",
              "free": "剩 {n} 位", "hold": "预留", "mine": "我的预订", "confirm": "确认预订",
              "pay": "支付定金 ¥{amount} 并确认", "cancel": "取消预订",
              "cancel_late": "仍然取消（定金不退）", "ics": "添加到日历",
              "held_until": "为您保留至 {when}", "deposit": "定金 ¥{amount}",
              "cutoff": "开始前 {minutes} 分钟内取消不退定金", "refunded": "已退款 ¥{amount}",
              "checkin": "到店连接 Wi-Fi 即自动签到",
              "HELD": "已预留", "CONFIRMED": "已确认", "CHECKED_IN": "已签到",
              "COMPLETED": "已完成", "NO_SHOW": "未到店", "CANCELLED": "已取消",
              "EXPIRED": "预留已过期"},
    "en": {"book": "Book", "times": "Times to book", "none": "No times to book right now",
           "full": "Full", "free": "{n} left", "hold": "Hold", "mine": "My bookings",
           "confirm": "Confirm the booking", "pay": "Pay the ¥{amount} deposit to confirm",
           "cancel": "Cancel the booking", "cancel_late": "Cancel anyway (the deposit is kept)",
           "ics": "Add to calendar", "held_until": "Held for you until {when}",
           "deposit": "Deposit ¥{amount}",
           "cutoff": "Free cancellation until {minutes} minutes before the start",
           "refunded": "Refunded ¥{amount}",
           "checkin": "Joining the venue's Wi-Fi checks you in",
           "HELD": "Held", "CONFIRMED": "Confirmed", "CHECKED_IN": "Checked in",
           "COMPLETED": "Completed", "NO_SHOW": "No-show", "CANCELLED": "Cancelled",
           "EXPIRED": "Hold expired"},
}  # fmt: skip


def bt(key: str, **values: object) -> str:
    text = TEXTS.get(language(), TEXTS["en"]).get(key) or TEXTS["en"][key]
    return text.format(**values) if values else text


@bp.context_processor
def _texts() -> dict[str, object]:
    return {"bt": bt, "local_time": booking_jobs.local_time}


def _shopper_id() -> str:
    shopper = current_shopper()
    assert shopper is not None  # shopper_required
    return shopper.id


def _client() -> TradeClient | None:
    with contextlib.suppress(settings.NotConfigured, ValueError):
        return settings.trade_client(current_app)
    return None


def _times(venue: Venue, error: str | None = None, status: int = 200) -> ResponseReturnValue:
    at = now()
    rows = booking_slots.open_slots(get_db(), venue.id, at, at + DAYS_SHOWN * 86400)
    times = [(slot, resource, secrets.token_urlsafe(16)) for slot, resource in rows]
    return render_template("bookings/times.html", venue=venue, times=times,
                           error=error), status  # fmt: skip


@bp.get("/v/<venue_id>/book")
@shopper_required
def times(venue_id: str) -> ResponseReturnValue:
    return _times(shop._venue(venue_id))


@bp.post("/book/<slot_id>")
@shopper_required
def hold(slot_id: str) -> ResponseReturnValue:
    require_csrf()
    db = get_db()
    slot = db.get(BookingSlot, slot_id) if slot_id.startswith("bsl_") else None
    resource = db.get(BookingResource, slot.resource_id) if slot is not None else None
    if slot is None or resource is None:
        abort(404)
    key = request.form.get("idempotency_key") or None
    try:
        found = booking.hold(db, slot.id, _shopper_id(), now(), key)
    except BookingError as exc:
        return _times(shop._venue(resource.venue_id), str(exc), 409)
    return redirect(f"/plaza/bookings/{found.id}", code=303)


@bp.get("/bookings")
@shopper_required
def mine() -> ResponseReturnValue:
    rows = get_db().execute(
        select(Booking, BookingSlot, BookingResource)
        .join(BookingSlot, BookingSlot.id == Booking.slot_id)
        .join(BookingResource, BookingResource.id == Booking.resource_id)
        .where(Booking.shopper_id == _shopper_id())
        .order_by(Booking.held_at.desc())
        .limit(100)
    ).all()  # fmt: skip
    return render_template("bookings/mine.html", rows=rows)


def _own(booking_id: str) -> Booking:
    try:
        return booking.mine(get_db(), booking_id, _shopper_id())
    except BookingError:
        abort(404)  # another shopper's booking does not exist for you


def _page(found: Booking, refusal: BookingError | PaymentError | str | None = None,
          status: int = 200) -> ResponseReturnValue:  # fmt: skip
    db = get_db()
    slot, resource = db.get(BookingSlot, found.slot_id), db.get(BookingResource, found.resource_id)
    assert slot is not None and resource is not None
    venue = db.get(Venue, found.venue_id)
    payment = db.get(Payment, found.payment_id) if found.payment_id else None
    held_until = booking_jobs.local_at(found.hold_expires_at, resource.tz)[-5:]
    late = getattr(refusal, "code", None) == "after_cutoff"  # offer the final cancellation
    return render_template("bookings/show.html", booking=found, slot=slot, resource=resource,
                           venue=venue, payment=payment, error=str(refusal) if refusal else None,
                           held_until=held_until, late=late), status  # fmt: skip


@bp.get("/bookings/<booking_id>")
@shopper_required
def show(booking_id: str) -> ResponseReturnValue:
    """The booking, where the wallet sends the shopper back after the deposit: a payment
    still waiting is asked about first (the return is no proof), then the booking follows."""
    found = _own(booking_id)
    db, client = get_db(), _client()
    if found.payment_id and client is not None:
        payment = db.get(Payment, found.payment_id)
        if payment is not None and payment.state == WAIT:
            with contextlib.suppress(TradeError):
                settlement.reconcile_one(db, client, payment.id, now())
        booking_jobs.sync_deposit(db, found, now(), client)
    return _page(found)


@bp.post("/bookings/<booking_id>/confirm")
@shopper_required
def confirm(booking_id: str) -> ResponseReturnValue:
    require_csrf()
    found = _own(booking_id)
    try:
        booking.confirm(get_db(), found.id, _shopper_id(), now())
    except BookingError as exc:
        return _page(found, exc, 409)
    return redirect(f"/plaza/bookings/{found.id}", code=303)


def cashier_url(found: Booking, client: TradeClient, back: str) -> str | None:
    """The wallet's cashier for the booking's deposit (one payment per booking), which sends
    the shopper back to the path `back`; None once the deposit is paid. Raises BookingError,
    PaymentError, NotConfigured, TradeError. The hospital's pages pay their fee through it."""
    db = get_db()
    payment = booking_jobs.start_deposit(db, found.id, found.shopper_id, client, now())
    if payment.state != WAIT:
        return None
    base = settings.public_url(current_app)
    notify_url, return_url = base + shop.NOTIFY, base + back
    trade_no = client.create(payment.id, payment.amount, payment.subject, notify_url)
    attach_trade(db, payment, trade_no)
    return client.pay_url(payment.id, payment.amount, payment.subject, notify_url, return_url)


@bp.post("/bookings/<booking_id>/deposit")
@shopper_required
def deposit(booking_id: str) -> ResponseReturnValue:
    """Pay the deposit: the payment (one per booking), then to the wallet's cashier, which
    sends the shopper back to the booking's page."""
    require_csrf()
    found = _own(booking_id)
    client = _client()
    if client is None:
        return _page(found, "payments are not available right now", 503)
    try:
        url = cashier_url(found, client, f"/plaza/bookings/{found.id}")
        if url is None:  # paid already
            return redirect(f"/plaza/bookings/{found.id}", code=303)
    except (BookingError, PaymentError) as exc:
        return _page(found, exc, 409)
    except (settings.NotConfigured, TradeError) as exc:
        log.warning("deposit could not start: %s", exc)
        return _page(found, "payments are not available right now", 503)
    return redirect(url, code=303)


@bp.post("/bookings/<booking_id>/cancel")
@shopper_required
def cancel(booking_id: str) -> ResponseReturnValue:
    require_csrf()
    found = _own(booking_id)
    db = get_db()
    try:
        found = booking.cancel(db, found.id, _shopper_id(), now(),
                               keep_deposit=request.form.get("keep_deposit") == "yes")  # fmt: skip
    except BookingError as exc:
        return _page(found, exc, 409)
    booking_jobs.sync_deposit(db, found, now(), _client())  # a free cancellation refunds
    return redirect(f"/plaza/bookings/{found.id}", code=303)


@bp.get("/bookings/<booking_id>.ics")
@shopper_required
def ics(booking_id: str) -> ResponseReturnValue:
    found = _own(booking_id)
    db = get_db()
    slot, resource = db.get(BookingSlot, found.slot_id), db.get(BookingResource, found.resource_id)
    venue = db.get(Venue, found.venue_id)
    assert slot is not None and resource is not None and venue is not None
    base = settings.public_url(current_app)
    link = f"{base}/plaza/bookings/{found.id}"
    body = booking_ics.invitation(found, slot, resource, venue, urlsplit(base).hostname or "", link)
    return Response(body, mimetype="text/calendar", headers={
        "Content-Disposition": f'attachment; filename="{found.id}.ics"'})  # fmt: skip
