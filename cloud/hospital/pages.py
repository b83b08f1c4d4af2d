"""The patient's pages under /plaza/hospital: what a phone shows of the FHIR API's hospital.

In the shop's cookie, CSP, languages and forms (cloud/o2o/shop.py): the patient is the
wallet-signed-in shopper, every POST carries the CSRF token, no script (a page that
follows a queue number refreshes itself when asked to). They call what the FHIR API calls
(visits.py, arrival.py, the booking and queue cores), so an appointment booked here is the
FHIR Appointment and the reverse:

- `/<venue>`: the clinics, their doctors and the free times of a day; a tap holds one
  (visits.book); a fee is the booking's deposit, paid at the wallet's cashier
  (booking_views.cashier_url), which sends the patient back to the appointment.
- `/appointments`, `/appointments/<id>`: status, pay, cancel (the booking's rules), "I have
  arrived" (arrival.arrive, as FHIR's `status=arrived`: checked in, a clinic number), then
  the number with "N ahead of you" or the room it is called to (the page refreshes itself
  only when the patient asks: `?follow=1`, WCAG 2.2.1's "timing adjustable").
- `/reports`, `/reports/<id>.pdf`: the patient's own reports. Another patient's appointment
  or report is a 404 here, as if it did not exist (the shop's rule; FHIR says 403).
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import zoneinfo
from typing import Any

from flask import Blueprint, abort, current_app, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy import select

from cloud.api import now
from cloud.db import get_db
from cloud.hospital import arrival, resources, visits
from cloud.hospital.models import HospitalReport
from cloud.hospital.page_texts import PAYMENTS_DOWN, ht, refusal
from cloud.hospital.reports import pdf_response
from cloud.models import Venue
from cloud.o2o import booking_jobs, booking_slots, booking_views, queues, settings, shop
from cloud.o2o.booking import BookingError
from cloud.o2o.booking_models import Booking, BookingResource, BookingSlot
from cloud.o2o.payments import PaymentError
from cloud.o2o.queue_models import ServiceQueue
from cloud.o2o.shoppers import current_shopper, shopper_required
from cloud.o2o.trade_client import TradeError
from plaza.csrf import require_csrf

log = logging.getLogger("plaza.cloud.hospital")

bp = Blueprint(
    "hospital",
    __name__,
    url_prefix="/plaza/hospital",
    template_folder="templates",
    static_folder="static",
)
bp.after_request(shop._headers)
bp.context_processor(shop._globals)

DAYS_SHOWN = 7
TZ = "Asia/Shanghai"  # a hospital without schedules yet
FOLLOW_REFRESH = 15  # seconds: a phone following its number


@bp.context_processor
def _texts() -> dict[str, object]:
    return {"ht": ht, "local_time": booking_jobs.local_time, "clinic": resources.clinic_name,
            "doctor": lambda r: r.name.split(":", 1)[-1].strip()}  # fmt: skip


def _me() -> str:
    shopper = current_shopper()
    assert shopper is not None  # shopper_required
    return shopper.id


# -- the clinics -------------------------------------------------------------------------------


def _day(text: str | None, today: dt.date) -> dt.date:
    try:
        day = dt.date.fromisoformat(text or "")
    except ValueError:
        return today
    return day if today <= day < today + dt.timedelta(days=DAYS_SHOWN) else today


def _clinics(venue: Venue, error: str | None = None, status: int = 200) -> ResponseReturnValue:
    db, at = get_db(), now()
    rows = [(s, r) for s, r in booking_slots.open_slots(db, venue.id, at, at + (DAYS_SHOWN + 1)
            * 86400) if r.kind == visits.KIND]  # fmt: skip
    zone = zoneinfo.ZoneInfo(rows[0][1].tz if rows else TZ)
    today = dt.datetime.fromtimestamp(at, zone).date()
    day = _day(request.args.get("day"), today)
    doctors: dict[str, dict[str, Any]] = {}  # clinic -> doctor's schedule id -> (schedule, slots)
    schedules = db.scalars(select(BookingResource).where(
        BookingResource.venue_id == venue.id, BookingResource.kind == visits.KIND,
        BookingResource.state == "ACTIVE").order_by(BookingResource.name))  # fmt: skip
    for resource in schedules:
        doctors.setdefault(resources.clinic_name(resource), {})[resource.id] = (resource, [])
    for slot, resource in rows:
        local = dt.datetime.fromtimestamp(slot.starts_at, zoneinfo.ZoneInfo(resource.tz))
        if local.date() == day and slot.taken < slot.capacity:
            key = secrets.token_urlsafe(16)
            doctors[resources.clinic_name(resource)][resource.id][1].append((slot, key))
    days = [today + dt.timedelta(days=n) for n in range(DAYS_SHOWN)]
    return render_template("hospital/clinics.html", venue=venue, doctors=doctors, day=day,
                           days=days, error=error), status  # fmt: skip


@bp.get("/<venue_id>")
@shopper_required
def clinics(venue_id: str) -> ResponseReturnValue:
    return _clinics(shop._venue(venue_id))


@bp.post("/book/<slot_id>")
@shopper_required
def book(slot_id: str) -> ResponseReturnValue:
    require_csrf()
    db = get_db()
    slot = visits.slot(db, slot_id)
    if slot is None:
        abort(404)
    try:
        found = visits.book(db, slot.id, _me(), now(), request.form.get("idempotency_key"))
    except BookingError as exc:
        resource = db.get(BookingResource, slot.resource_id)
        assert resource is not None
        return _clinics(shop._venue(resource.venue_id), refusal(exc.code, str(exc)), 409)
    return redirect(url_for("hospital.appointment", booking_id=found.id), code=303)


# -- the patient's appointments ------------------------------------------------------------------


def _own(booking_id: str) -> Booking:
    found = visits.appointment(get_db(), booking_id)
    if found is None or found.shopper_id != _me():
        abort(404)  # another patient's appointment does not exist for you
    return found


@bp.get("/appointments")
@shopper_required
def appointments() -> ResponseReturnValue:
    rows = get_db().execute(
        select(Booking, BookingSlot, BookingResource)
        .join(BookingSlot, BookingSlot.id == Booking.slot_id)
        .join(BookingResource, BookingResource.id == Booking.resource_id)
        .where(Booking.shopper_id == _me(), BookingResource.kind == visits.KIND)
        .order_by(BookingSlot.starts_at.desc()).limit(100)
    ).all()  # fmt: skip
    return render_template("hospital/appointments.html", rows=rows)


def _page(found: Booking, error: str | None = None, status: int = 200) -> ResponseReturnValue:
    db = get_db()
    slot, resource = db.get(BookingSlot, found.slot_id), db.get(BookingResource, found.resource_id)
    assert slot is not None and resource is not None
    ticket = arrival.ticket_of(db, found.id)
    queue = db.get(ServiceQueue, ticket.queue_id) if ticket is not None else None
    if ticket is not None and queue is not None:
        queues.expire_stale(db, queue, now())
        db.commit()
        db.refresh(ticket)
    reports = db.scalars(select(HospitalReport).where(HospitalReport.booking_id == found.id)
                         .order_by(HospitalReport.issued_at)).all()  # fmt: skip
    return render_template(
        "hospital/appointment.html", booking=found, slot=slot, resource=resource,
        venue=db.get(Venue, found.venue_id), ticket=ticket, error=error, reports=reports,
        stand=queues.standing(db, ticket, now()) if ticket is not None else None,
        held_until=booking_jobs.local_at(found.hold_expires_at, resource.tz)[-5:],
        refresh=FOLLOW_REFRESH, follow=ticket is not None and ticket.state in ("WAITING", "CALLED")
        and request.args.get("follow") == "1",
    ), status  # fmt: skip


@bp.get("/appointments/<booking_id>")
@shopper_required
def appointment(booking_id: str) -> ResponseReturnValue:
    """Also where the wallet's cashier sends the patient back: the fee is settled first."""
    found = _own(booking_id)
    visits.refresh(get_db(), found, now(), visits.trade_client(current_app))
    return _page(found)


@bp.post("/appointments/<booking_id>/pay")
@shopper_required
def pay(booking_id: str) -> ResponseReturnValue:
    require_csrf()
    found = _own(booking_id)
    client = visits.trade_client(current_app)
    back = url_for("hospital.appointment", booking_id=found.id)
    if client is None:
        return _page(found, refusal("payments", PAYMENTS_DOWN), 503)
    try:
        url = booking_views.cashier_url(found, client, back)
    except (BookingError, PaymentError) as exc:
        return _page(found, refusal(exc.code, str(exc)), 409)
    except (settings.NotConfigured, TradeError) as exc:
        log.warning("fee payment could not start: %s", exc)
        return _page(found, refusal("payments", PAYMENTS_DOWN), 503)
    return redirect(url or back, code=303)


@bp.post("/appointments/<booking_id>/cancel")
@shopper_required
def cancel(booking_id: str) -> ResponseReturnValue:
    require_csrf()
    found = _own(booking_id)
    try:
        visits.cancel(get_db(), found, now(), visits.trade_client(current_app))
    except BookingError as exc:
        return _page(found, refusal(exc.code, str(exc)), 409)
    return redirect(url_for("hospital.appointment", booking_id=found.id), code=303)


@bp.post("/appointments/<booking_id>/arrive")
@shopper_required
def arrive(booking_id: str) -> ResponseReturnValue:
    """The "I have arrived" button: what FHIR's `PUT status=arrived` does (checked in, a number)."""
    require_csrf()
    found = _own(booking_id)
    try:
        arrival.arrive(get_db(), found, now(), "patient")
    except (arrival.ArrivalError, queues.QueueError) as exc:
        return _page(found, refusal(exc.code, str(exc)), 409)
    return redirect(url_for("hospital.appointment", booking_id=found.id), code=303)


# -- reports -----------------------------------------------------------------------------------


@bp.get("/reports")
@shopper_required
def reports() -> ResponseReturnValue:
    rows = get_db().execute(
        select(HospitalReport, BookingResource)
        .join(Booking, Booking.id == HospitalReport.booking_id)
        .join(BookingResource, BookingResource.id == Booking.resource_id)
        .where(HospitalReport.shopper_id == _me())
        .order_by(HospitalReport.issued_at.desc()).limit(200)
    ).all()  # fmt: skip
    return render_template("hospital/reports.html", rows=rows, local_at=booking_jobs.local_at)


@bp.get("/reports/<report_id>.pdf")
@shopper_required
def report_pdf(report_id: str) -> ResponseReturnValue:
    row = get_db().get(HospitalReport, report_id) if report_id.startswith("drp_") else None
    if row is None or row.shopper_id != _me():
        abort(404)  # another patient's report does not exist for you
    return pdf_response(row)
