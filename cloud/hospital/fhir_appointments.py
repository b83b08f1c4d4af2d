"""FHIR Appointment: read, search, create, update (routes on fhir_api.bp).

Two kinds of caller (fhir_api.py's docstring has the rest of the API's rules):

- a patient (patients.py's bearer token) books, reads, cancels and checks in their own
  appointments; another patient's is 403, a search must name themselves (`patient`);
- a clinician (clinicians.py's bearer token, taken from the dashboard for one hospital)
  reads and searches the appointments of that hospital only: another venue's appointment is
  a 404, the same answer as one that does not exist (the dashboard's tenancy). They write
  nothing here: the dashboard is where staff act.

Search (both; a patient's results are always their own): `date` (the appointment's start;
prefixes eq ge gt le lt, repeat for a range; a date alone is the hospital's local day),
`status` (AppointmentStatus codes, comma for any of), `patient`, `practitioner` (the doctor:
the slot's schedule, fhir_directory.py), `location` (the doctor's clinic), `actor` (a Patient,
Practitioner or Location reference: the participants), `slot`, `schedule` (the slot's
Schedule: Plaza's own parameter from before Practitioners, FHIR's Appointment has none; kept
for its clients), `_count`; one reference per value (the doctors and clinics named must
all match, the patients any); pages are walked with the Bundle's `next`/`previous` links
(`_offset`), earliest start first for a clinician, newest booking first for a patient. A
clinician's `practitioner` or `location` of another hospital is a 404, as its appointments
are.
"""

from __future__ import annotations

import zoneinfo
from typing import Any
from urllib.parse import urlencode

from flask import Response, current_app, request
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from sqlalchemy.sql import Select

from cloud.api import now
from cloud.db import get_db
from cloud.hospital import arrival, clinicians, fhir_directory, patients, resources, visits
from cloud.hospital.fhir_api import (
    KIND,
    FhirError,
    _body,
    _count,
    _date_range,
    _own,
    _params,
    _patient,
    _ref,
    _schedule,
    base,
    bp,
    fhir,
)
from cloud.o2o.booking_models import Booking, BookingResource, BookingSlot
from cloud.o2o.queue_models import ServiceQueue
from cloud.o2o.shoppers import Shopper

SEARCH = ["date", "status", "patient", "actor", "practitioner", "location", "slot", "schedule",
          "_count", "_offset"]  # fmt: skip
ACTORS = {"Patient": "patient", "Practitioner": "practitioner", "Location": "location"}
MAX_OFFSET = 100_000
STATES = {code: [s for s, c in resources.APPOINTMENT_STATUS.items() if c == code]
          for code in resources.APPOINTMENT_CODES}  # fmt: skip


def _pay_url(found: Booking) -> str:
    """The patient's own appointment page (cloud/hospital/pages.py), which takes the fee at
    the wallet's cashier and is where the cashier returns: a hospital's app links there."""
    return request.host_url.rstrip("/") + f"/plaza/hospital/appointments/{found.id}"


def _appointment(
    db: Session, found: Booking, clinics: dict[str, ServiceQueue | None] | None = None
) -> dict[str, Any]:
    """`clinics`: the clinic of each schedule (arrival.clinic_queues) when already looked up."""
    row = db.get(BookingSlot, found.slot_id)
    resource = db.get(BookingResource, found.resource_id)
    assert row is not None and resource is not None
    clinic = clinics[resource.id] if clinics is not None else arrival.clinic_queue(db, resource)
    return resources.appointment(found, row, resource, _pay_url(found), clinic)  # fmt: skip


def _caller() -> Shopper | clinicians.Clinician:
    found = patients.bearer_patient() or clinicians.bearer_clinician()
    if found is None:
        raise FhirError(401, "login", "send the bearer token of /plaza/hospital/token (a "
                        "patient) or /dashboard/hospital/<venue>/token (a clinician)")  # fmt: skip
    return found


@bp.get("/Appointment/<booking_id>")
def read_appointment(booking_id: str) -> Response:
    db = get_db()
    if patients.bearer_patient() is None and (who := clinicians.bearer_clinician()):
        found = visits.appointment(db, resources.pid(booking_id))
        if found is None or found.venue_id != who.venue.id:  # another hospital's: none
            raise FhirError(404, "not-found", f"no Appointment {booking_id[:40]}")
    else:
        found = _own(db, booking_id)
    visits.refresh(db, found, now(), visits.trade_client(current_app))  # paid? expired?
    return fhir(_appointment(db, found))


def _actors(params: dict[str, list[str]], who: Shopper | clinicians.Clinician) -> dict[
        str, list[str]]:  # fmt: skip
    """The Plaza ids `patient`, `practitioner` and `location` name, with `actor`'s sorted
    into them by type; a patient must name themselves, and only themselves."""
    named = {key: [_ref(v, kind) for v in params.get(key, [])] for kind, key in ACTORS.items()}
    for value in params.get("actor", []):
        kind = value.rpartition("/")[0].rsplit("/", 1)[-1]
        if kind not in ACTORS:
            raise FhirError(400, "not-supported", "actor: a Patient/<id>, Practitioner/<id> "
                            "or Location/<id> reference")  # fmt: skip
        named[ACTORS[kind]].append(_ref(value, kind))
    if isinstance(who, Shopper):
        if not named["patient"]:
            raise FhirError(400, "invalid", "search by patient (your own: Patient/<id>)")
        if any(one != who.id for one in named["patient"]):
            raise FhirError(403, "forbidden", "only your own appointments")
    return named


def _filtered(db: Session, params: dict[str, list[str]],
              who: Shopper | clinicians.Clinician) -> Select:  # fmt: skip
    query = (
        select(Booking)
        .join(BookingResource, BookingResource.id == Booking.resource_id)
        .join(BookingSlot, BookingSlot.id == Booking.slot_id)
        .where(BookingResource.kind == KIND)
    )
    named = _actors(params, who)
    venue_id = None if isinstance(who, Shopper) else who.venue.id
    if isinstance(who, Shopper):
        query = query.where(Booking.shopper_id == who.id)
    else:
        query = query.where(Booking.venue_id == who.venue.id)
    if named["patient"]:  # any of them (a patient's own only: _actors)
        query = query.where(Booking.shopper_id.in_(set(named["patient"])))
    zone: zoneinfo.ZoneInfo | None = None
    doctors = [_schedule(db, _ref(value, "Schedule")) for value in params.get("schedule", [])]
    doctors += [fhir_directory.practitioner(db, one, venue_id) for one in named["practitioner"]]
    for found in doctors:
        zone = zoneinfo.ZoneInfo(found.tz)
        query = query.where(Booking.resource_id == found.id)
    for one in named["location"]:
        place = fhir_directory.clinic(db, one, venue_id)
        query = query.where(Booking.resource_id.in_(fhir_directory.doctors(db, place)))
    if zone is None and not isinstance(who, Shopper):
        tz = db.scalar(
            select(BookingResource.tz)
            .where(BookingResource.venue_id == who.venue.id, BookingResource.kind == KIND)
            .limit(1)
        )
        zone = zoneinfo.ZoneInfo(tz or "UTC")  # fmt: skip
    zone = zone or zoneinfo.ZoneInfo("UTC")
    for value in params.get("slot", []):
        query = query.where(Booking.slot_id == _ref(value, "Slot"))
    for value in params.get("date", []):
        prefix, low, high = _date_range(value, zone, "date")
        column = BookingSlot.starts_at
        query = query.where(
            {"eq": (column >= low) & (column < high), "ge": column >= low, "gt": column >= high,
             "le": column < high, "lt": column < low}[prefix]
        )  # fmt: skip
    for value in params.get("status", []):
        codes = value.split(",")
        unknown = [c for c in codes if c not in STATES]
        if unknown:
            raise FhirError(400, "invalid", f"status: {unknown[0][:30]!r} is no appointment "
                            f"status ({', '.join(resources.APPOINTMENT_CODES)})")  # fmt: skip
        query = query.where(Booking.state.in_([s for c in codes for s in STATES[c]]))
    return query


def _offset(values: list[str]) -> int:
    if not values:
        return 0
    if not values[-1].isdigit() or int(values[-1]) > MAX_OFFSET:
        raise FhirError(400, "invalid", f"_offset is a number from 0 to {MAX_OFFSET}")
    return int(values[-1])


def _page_url(offset: int) -> str:
    args = [(k, v) for k, v in request.args.items(multi=True) if k != "_offset"]
    return f"{base()}/Appointment?{urlencode([*args, ('_offset', str(offset))])}"


@bp.get("/Appointment")
def search_appointments() -> Response:
    params = _params(SEARCH)
    who, db = _caller(), get_db()
    query = _filtered(db, params, who)
    count, offset = _count(params.get("_count", [])), _offset(params.get("_offset", []))
    total = db.scalar(select(func.count()).select_from(query.subquery())) or 0
    order = ((Booking.held_at.desc(), Booking.id) if isinstance(who, Shopper)
             else (BookingSlot.starts_at, Booking.id))  # fmt: skip
    rows = db.scalars(query.order_by(*order).offset(offset).limit(count)).all()
    links = {"first": _page_url(0)}
    if offset:
        links["previous"] = _page_url(max(0, offset - count))
    if offset + count < total:
        links["next"] = _page_url(offset + count)
    schedules = {db.get(BookingResource, r.resource_id) for r in rows}
    clinics = arrival.clinic_queues(db, [one for one in schedules if one is not None])
    items = [_appointment(db, r, clinics) for r in rows]
    return fhir(resources.bundle(base(), request.url, items, total=total, links=links))


def _slot_of(body: dict[str, Any]) -> str:
    slots = body.get("slot")
    if not isinstance(slots, list) or len(slots) != 1 or not isinstance(slots[0], dict):
        raise FhirError(400, "required", "an Appointment books exactly one slot")
    return _ref(str(slots[0].get("reference", "")), "Slot")


def _check_participants(body: dict[str, Any], me: Shopper) -> None:
    participants = body.get("participant", [])
    if not isinstance(participants, list):
        raise FhirError(400, "invalid", "participant is a list")
    for one in participants:
        reference = str((one.get("actor") or {}).get("reference", "")) if isinstance(
            one, dict) else ""  # fmt: skip
        if reference.startswith("Patient/") and _ref(reference, "Patient") != me.id:
            raise FhirError(403, "forbidden", "an appointment is booked by its own patient")


def _key(body: dict[str, Any]) -> str | None:
    """The client's idempotency key: an identifier of system `urn:plaza:idempotency`."""
    for one in body.get("identifier", []) if isinstance(body.get("identifier"), list) else []:
        if isinstance(one, dict) and one.get("system") == "urn:plaza:idempotency":
            return str(one.get("value", ""))
    return None


@bp.post("/Appointment")
def create_appointment() -> Response:
    me = _patient()
    body = _body("Appointment")
    if body.get("status", "booked") not in ("booked", "pending", "proposed"):
        raise FhirError(400, "invalid", "a new appointment is booked, pending or proposed")
    _check_participants(body, me)
    db = get_db()
    slot_id = _slot_of(body)
    if visits.slot(db, slot_id) is None:
        raise FhirError(404, "not-found", f"no Slot {slot_id[:40]}")
    found = visits.book(db, slot_id, me.id, now(), _key(body))
    location = f"{base()}/Appointment/{resources.fid(found.id)}"
    return fhir(_appointment(db, found), 201, Location=location)


@bp.put("/Appointment/<booking_id>")
def update_appointment(booking_id: str) -> Response:
    """Only the status moves: `cancelled` or `arrived`."""
    db = get_db()
    found = _own(db, booking_id)
    body = _body("Appointment")
    if body.get("id") not in (None, resources.fid(found.id)):
        raise FhirError(400, "invalid", "the body's id is not this appointment's")
    wanted = body.get("status")
    current = resources.APPOINTMENT_STATUS[found.state]
    if wanted == current:
        return fhir(_appointment(db, found))
    if wanted == "cancelled":
        visits.cancel(db, found, now(), visits.trade_client(current_app))  # refund in time
    elif wanted == "arrived":
        arrival.arrive(db, found, now(), "staff")
    else:
        raise FhirError(400, "business-rule", "an update may set status cancelled or arrived")
    db.refresh(found)
    return fhir(_appointment(db, found))
