"""The merchant's booking pages in the dashboard: a venue's resources (new, pause, resume,
add the next days' slots) and its upcoming bookings (check in, completed, no-show).

Borrows the dashboard's guard like the voucher pages: sign-in, headers, CSRF, and tenancy
(`own_venue`: another merchant's venue is a 404). A resource or a booking is reached only
through its venue, so another merchant's resource gets the same 404 as a made-up id.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from decimal import Decimal, InvalidOperation

from flask import Blueprint, Flask, abort, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy import select

from cloud.api import now
from cloud.dashboard import auth, security
from cloud.dashboard.tenancy import own_venue, owned
from cloud.db import get_db
from cloud.models import Venue
from cloud.o2o import booking, booking_jobs, booking_slots, booking_views
from cloud.o2o.booking import BookingError, ResourceSpec
from cloud.o2o.booking_models import (
    COMPLETED,
    NO_SHOW,
    Booking,
    BookingResource,
    BookingSlot,
)
from cloud.o2o.shoppers import Shopper

bp = auth.guard(Blueprint("booking_admin", __name__, url_prefix="/dashboard/bookings",
                          template_folder="templates"))  # fmt: skip

SHOWN_DAYS = 7


@bp.context_processor
def _globals() -> dict[str, object]:
    return {"local_time": booking_jobs.local_time}


def _number(text: str, field: str) -> int:
    text = text.strip()
    if not text.isdigit() or len(text) > 7:
        raise BookingError("invalid_resource", f"{field}: a whole number")
    return int(text)


def _fen(text: str) -> int:
    try:
        value = Decimal(text.strip() or "0")
    except InvalidOperation:
        raise BookingError("invalid_resource", "deposit: a number like 50.00") from None
    if not value.is_finite() or not 0 <= value <= 10_000:
        raise BookingError("invalid_resource", "deposit: a number like 50.00")
    return int(value * 100)


def spec_from_form(form: dict[str, str]) -> ResourceSpec:
    """The form's fields: hours as `11:00-14:00, 17:00-21:00`, the deposit in yuan."""
    hours = []
    for window in form.get("hours", "").split(","):
        start, dash, end = window.strip().partition("-")
        if not dash:
            raise BookingError("invalid_resource", "opening hours: like 11:00-14:00, 17:00-21:00")
        hours.append((start.strip(), end.strip()))
    return ResourceSpec(
        name=form.get("name", "").strip(),
        kind=form.get("kind", "table").strip() or "table",
        capacity=_number(form.get("capacity", "1"), "capacity"),
        slot_minutes=_number(form.get("slot_minutes", "60"), "slot length"),
        hours=tuple(hours),
        weekdays=form.get("weekdays", "1234567").strip(),
        tz=form.get("tz", "Asia/Shanghai").strip(),
        deposit=_fen(form.get("deposit", "0")),
        hold_minutes=_number(form.get("hold_minutes", "10"), "hold"),
        cancel_cutoff_minutes=_number(form.get("cancel_cutoff_minutes", "120"), "cut-off"),
    )


def _page(venue: Venue, error: str | None = None, status: int = 200) -> ResponseReturnValue:
    db, at = get_db(), now()
    resources = list(db.scalars(select(BookingResource).where(BookingResource.venue_id == venue.id)
                                .order_by(BookingResource.created_at)))  # fmt: skip
    upcoming = db.execute(
        select(Booking, BookingSlot, BookingResource, Shopper)
        .join(BookingSlot, BookingSlot.id == Booking.slot_id)
        .join(BookingResource, BookingResource.id == Booking.resource_id)
        .join(Shopper, Shopper.id == Booking.shopper_id)
        .where(Booking.venue_id == venue.id, BookingSlot.ends_at > at - 86400,
               BookingSlot.starts_at < at + SHOWN_DAYS * 86400)
        .order_by(BookingSlot.starts_at)
        .limit(300)
    ).all()  # fmt: skip
    return render_template("bookings/admin.html", venue=venue, resources=resources,
                           upcoming=upcoming, error=error), status  # fmt: skip


def _resource(venue: Venue, resource_id: str) -> BookingResource:
    return owned(get_db(), BookingResource, resource_id, "brs_", venue)


@bp.get("/<venue_id>")
@auth.login_required
def index(venue_id: str) -> ResponseReturnValue:
    return _page(own_venue(venue_id))


@bp.post("/<venue_id>/new")
@auth.login_required
def new(venue_id: str) -> ResponseReturnValue:
    security.require_csrf()
    venue = own_venue(venue_id)
    try:
        booking.create_resource(get_db(), venue, spec_from_form(dict(request.form)), now())
    except BookingError as exc:
        return _page(venue, str(exc), 400)
    return redirect(url_for("booking_admin.index", venue_id=venue.id), code=303)


@bp.post("/<venue_id>/<resource_id>/slots")
@auth.login_required
def slots(venue_id: str, resource_id: str) -> ResponseReturnValue:
    """Add slots for the next days (from today on the venue's clock), from the hours."""
    security.require_csrf()
    venue = own_venue(venue_id)
    resource = _resource(venue, resource_id)
    today = dt.datetime.fromtimestamp(now(), zoneinfo.ZoneInfo(resource.tz)).date()
    try:
        days = _number(request.form.get("days", "7"), "days")
        booking_slots.generate(get_db(), resource, today, days)
    except BookingError as exc:
        return _page(venue, str(exc), 400)
    return redirect(url_for("booking_admin.index", venue_id=venue.id), code=303)


@bp.post("/<venue_id>/<resource_id>/<action>")
@auth.login_required
def act(venue_id: str, resource_id: str, action: str) -> ResponseReturnValue:
    security.require_csrf()
    venue = own_venue(venue_id)
    try:
        booking.set_state(get_db(), _resource(venue, resource_id), action, now())
    except BookingError as exc:
        return _page(venue, str(exc), 409)
    return redirect(url_for("booking_admin.index", venue_id=venue.id), code=303)


@bp.post("/<venue_id>/booking/<booking_id>/<outcome>")
@auth.login_required
def outcome(venue_id: str, booking_id: str, outcome: str) -> ResponseReturnValue:
    """The staff's view of the door: checked in (by hand), completed, no-show."""
    security.require_csrf()
    venue = own_venue(venue_id)
    db = get_db()
    found = owned(db, Booking, booking_id, "bkg_", venue)
    try:
        if outcome == "check-in":
            if not booking.check_in(db, found, now(), "staff"):
                raise BookingError("bad_state", "only a confirmed booking near its time checks in")
        else:
            target = {"completed": COMPLETED, "no-show": NO_SHOW}.get(outcome)
            if target is None:
                abort(404)
            booking.finish(db, found, target, now())
    except BookingError as exc:
        return _page(venue, str(exc), 409)
    return redirect(url_for("booking_admin.index", venue_id=venue.id), code=303)


def register(app: Flask) -> None:
    """The booking pages: the shopper's (/plaza), these (/dashboard), check-in by presence."""
    app.register_blueprint(booking_views.bp)
    app.register_blueprint(bp)
    booking_jobs.init_app(app)
