"""Queue pages under /plaza, in the shop's cookie and CSP (cloud/o2o/shop.py): the shopper's
(take a number, follow it, leave), the kiosk's (a number for someone without a phone
account, printed with a QR to its status page), the status page that needs no account, and
the display for a screen.

- The kiosk and the display are reached by links the merchant copies from the dashboard
  (`/plaza/kiosk/<venue>/<key>`, `/plaza/display/<venue>/<key>`), each key an HMAC of the
  venue id under the app's secret for that purpose, as the voucher counter's link: a kiosk
  link gives out numbers at one venue only; a display link shows called numbers only.
- A kiosk ticket's status page is `/plaza/q/<token>`: 128 random bits shown once (on the
  printed ticket and its QR), stored only as a SHA-256, so the database cannot print it
  again and nobody can walk the numbers.
- Pages that follow a number refresh themselves with `<meta http-equiv="refresh">`: no
  script, and CSP stays `default-src 'none'`.
"""

from __future__ import annotations

import hashlib
import hmac

import segno
from flask import Blueprint, abort, current_app, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy import select

from cloud.api import now
from cloud.db import get_db
from cloud.models import Venue
from cloud.o2o import queues, settings, shop
from cloud.o2o.queue_models import QueueTicket, ServiceQueue
from cloud.o2o.queue_texts import qt, refusal
from cloud.o2o.queues import QueueError
from cloud.o2o.shoppers import current_shopper, shopper_required
from plaza.csrf import require_csrf

bp = Blueprint("queues", __name__, url_prefix="/plaza", template_folder="templates")
bp.after_request(shop._headers)
bp.context_processor(shop._globals)

FOLLOW_REFRESH = 20  # seconds: a phone following its number
DISPLAY_REFRESH = 5  # seconds: the screen
DISPLAY_CALLS = 8  # the most recent calls the screen shows


@bp.context_processor
def _texts() -> dict[str, object]:
    return {"qt": qt, "minutes": lambda seconds: max(1, round(seconds / 60))}


def link_key(purpose: str, venue_id: str) -> str:
    """The key in a kiosk (`queue-kiosk`) or display (`queue-display`) link of one venue."""
    secret = str(current_app.config["SECRET_KEY"]).encode()
    message = f"{purpose}:{venue_id}".encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()[:32]


def _linked_venue(purpose: str, venue_id: str, key: str) -> Venue:
    venue = get_db().get(Venue, venue_id) if venue_id.startswith("ven_") else None
    if venue is None or not hmac.compare_digest(key.encode(), link_key(purpose, venue.id).encode()):
        abort(404)
    return venue


def open_queues(venue: Venue) -> list[ServiceQueue]:
    return list(get_db().scalars(
        select(ServiceQueue).where(ServiceQueue.venue_id == venue.id, ServiceQueue.state == "OPEN")
        .order_by(ServiceQueue.name)
    ))  # fmt: skip


def _lines(venue: Venue) -> list[tuple[ServiceQueue, int, float]]:
    """Each open queue with its people waiting and the wait a new number would have."""
    db, at = get_db(), now()
    out = []
    for queue in open_queues(venue):
        count = queues.waiting_count(db, queue, at)
        gap, _ = queues.call_gap(db, queue, at)
        out.append((queue, count, queues.estimate(count, gap)))
    return out


def _queue_at(venue: Venue, queue_id: str) -> ServiceQueue:
    """The queue, if it is this venue's; one from another venue is refused by name."""
    queue = queues.get_queue(get_db(), queue_id)
    if queue.venue_id != venue.id:
        raise QueueError("other_venue", "this queue is at another venue")
    return queue


# -- the shopper ------------------------------------------------------------------------------


def _venue_page(venue: Venue, error: str | None = None, held: QueueTicket | None = None,
                status: int = 200) -> ResponseReturnValue:  # fmt: skip
    shopper = current_shopper()
    assert shopper is not None
    mine = list(get_db().scalars(
        select(QueueTicket).where(QueueTicket.venue_id == venue.id,
                                  QueueTicket.holder == shopper.id)
        .order_by(QueueTicket.taken_at.desc())
    ))  # fmt: skip
    return render_template("queues/venue.html", venue=venue, lines=_lines(venue), mine=mine,
                           error=error, held=held), status  # fmt: skip


@bp.get("/queues/<venue_id>")
@shopper_required
def venue_queues(venue_id: str) -> ResponseReturnValue:
    return _venue_page(shop._venue(venue_id))


@bp.post("/queues/<venue_id>/take/<queue_id>")
@shopper_required
def take(venue_id: str, queue_id: str) -> ResponseReturnValue:
    require_csrf()
    venue = shop._venue(venue_id)
    shopper = current_shopper()
    assert shopper is not None
    try:
        queue = _queue_at(venue, queue_id)
        ticket, _ = queues.take(get_db(), queue.id, now(), source="phone", shopper_id=shopper.id,
                                notify=request.form.get("notify") == "on")  # fmt: skip
    except QueueError as exc:
        return _venue_page(venue, refusal(exc), exc.ticket, 409)
    return redirect(url_for("queues.ticket", ticket_id=ticket.id), code=303)


def _own_ticket(ticket_id: str) -> QueueTicket:
    shopper = current_shopper()
    ticket = get_db().get(QueueTicket, ticket_id) if ticket_id.startswith("qtk_") else None
    if ticket is None or shopper is None or ticket.shopper_id != shopper.id:
        abort(404)  # another shopper's number does not exist for you
    return ticket


def _follow(ticket: QueueTicket, leave_url: str, **extra: object) -> ResponseReturnValue:
    db = get_db()
    queue = db.get(ServiceQueue, ticket.queue_id)
    assert queue is not None
    queues.expire_stale(db, queue, now())
    db.commit()
    db.refresh(ticket)
    venue = db.get(Venue, ticket.venue_id)
    return render_template("queues/ticket.html", ticket=ticket, queue=queue, venue=venue,
                           stand=queues.standing(db, ticket, now()), leave_url=leave_url,
                           refresh=FOLLOW_REFRESH, **extra)  # fmt: skip


@bp.get("/queues/tickets/<ticket_id>")
@shopper_required
def ticket(ticket_id: str) -> ResponseReturnValue:
    found = _own_ticket(ticket_id)
    return _follow(found, url_for("queues.leave", ticket_id=found.id))


@bp.post("/queues/tickets/<ticket_id>/leave")
@shopper_required
def leave(ticket_id: str) -> ResponseReturnValue:
    require_csrf()
    found = _own_ticket(ticket_id)
    try:
        queues.leave(get_db(), found.id, now())
    except QueueError as exc:
        return _follow(found, "", error=refusal(exc)), 409
    return redirect(url_for("queues.ticket", ticket_id=found.id), code=303)


# -- without an account: the kiosk and the token's status page --------------------------------


@bp.get("/q/<token>")
def status(token: str) -> ResponseReturnValue:
    found = queues.by_token(get_db(), token)
    if found is None:
        abort(404)
    return _follow(found, url_for("queues.token_leave", token=token))


@bp.post("/q/<token>/leave")
def token_leave(token: str) -> ResponseReturnValue:
    require_csrf()
    found = queues.by_token(get_db(), token)
    if found is None:
        abort(404)
    try:
        queues.leave(get_db(), found.id, now())
    except QueueError as exc:
        return _follow(found, "", error=refusal(exc)), 409
    return redirect(url_for("queues.status", token=token), code=303)


def _kiosk_page(venue: Venue, key: str, error: str | None = None,
                status_code: int = 200) -> ResponseReturnValue:  # fmt: skip
    return render_template("queues/kiosk.html", venue=venue, key=key, lines=_lines(venue),
                           error=error), status_code  # fmt: skip


@bp.get("/kiosk/<venue_id>/<key>")
def kiosk(venue_id: str, key: str) -> ResponseReturnValue:
    return _kiosk_page(_linked_venue("queue-kiosk", venue_id, key), key)


@bp.post("/kiosk/<venue_id>/<key>/take/<queue_id>")
def kiosk_take(venue_id: str, key: str, queue_id: str) -> ResponseReturnValue:
    """The printed ticket: the number, and the status page's link as a QR. Answered to the
    POST itself, not after a redirect: the token exists only in this answer."""
    require_csrf()
    venue = _linked_venue("queue-kiosk", venue_id, key)
    try:
        queue = _queue_at(venue, queue_id)
        found, token = queues.take(get_db(), queue.id, now(), source="kiosk")
    except QueueError as exc:
        return _kiosk_page(venue, key, refusal(exc), 409)
    link = settings.public_url(current_app) + url_for("queues.status", token=token)
    qr = segno.make(link, error="m").svg_inline(scale=4, omitsize=False)
    stand = queues.standing(get_db(), found, now())
    return render_template("queues/printed.html", venue=venue, queue=queue, ticket=found,
                           link=link, qr=qr, stand=stand, key=key)  # fmt: skip


# -- the screen -------------------------------------------------------------------------------


@bp.get("/display/<venue_id>/<key>")
def display(venue_id: str, key: str) -> ResponseReturnValue:
    venue = _linked_venue("queue-display", venue_id, key)
    db, at = get_db(), now()
    shown = list(db.scalars(
        select(ServiceQueue).where(ServiceQueue.venue_id == venue.id).order_by(ServiceQueue.name)
    ))  # fmt: skip
    days = {q.id: queues.local_day(q, at) for q in shown}
    calls = [t for t in db.scalars(
        select(QueueTicket).where(QueueTicket.venue_id == venue.id, QueueTicket.state == "CALLED")
        .order_by(QueueTicket.last_called_at.desc()).limit(DISPLAY_CALLS * 2)
    ) if days.get(t.queue_id) == t.day][:DISPLAY_CALLS]  # fmt: skip
    names = {q.id: q.name for q in shown}
    counts = [(q, queues.waiting_count(db, q, at)) for q in shown]
    return render_template("queues/display.html", venue=venue, calls=calls, names=names,
                           counts=counts, refresh=DISPLAY_REFRESH)  # fmt: skip
