"""The FHIR R4 API under /fhir/r4/: JSON only (`application/fhir+json`), searchset Bundles,
an OperationOutcome for every error.

Who is asking: a patient is the shopper signed in with the wallet, by the bearer token the
shop hands that shopper (patients.py: no cookie here, so nothing for a cross-site request to
ride). Writes need a JSON content type (`application/fhir+json` or `application/json`).
A patient sees only their own Patient, Appointments and Encounters: another patient's is 403, a
missing one 404, nobody signed in 401. Schedules, Slots and the CapabilityStatement are
public (a hospital's free times are what it advertises), and so are the Practitioners and
Locations the Schedules name (fhir_directory.py: a clinician's token scopes those to its
hospital).

Appointments live in fhir_appointments.py (routes on this blueprint), where a clinician's
token (clinicians.py) also reads and searches their own hospital's. Appointment create
books a free slot (booking.hold); without a fee it is `booked` at once, with one it is
`pending` and carries the payment page (the shop's booking page, which pays the fee through
the wallet; the notify confirms it: booking_jobs.on_paid). An update may only change the
status: `cancelled` (the booking's cancellation rules; a paid fee is refunded before the
cut-off) or `arrived` (check-in and a clinic queue number, arrival.py).
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from typing import Any

from flask import Blueprint, Response, json, request
from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlalchemy.sql import Select
from werkzeug.exceptions import HTTPException

from cloud.api import now
from cloud.db import get_db
from cloud.hospital import arrival, patients, resources, visits
from cloud.o2o import queues
from cloud.o2o.booking import BookingError
from cloud.o2o.booking_models import Booking, BookingResource, BookingSlot
from cloud.o2o.queue_models import ServiceQueue
from cloud.o2o.shoppers import Shopper

bp = Blueprint("fhir", __name__, url_prefix="/fhir/r4")
MAX_COUNT = 500
DEFAULT_COUNT = 100
KIND = visits.KIND  # the booking resources the hospital exposes as Schedules
BOOKING_STATUS = {  # BookingError code -> (HTTP status, IssueType)
    "no_slot": (404, "not-found"),
    "taken": (409, "conflict"),
    "paused": (409, "business-rule"),
    "past": (409, "business-rule"),
    "key_reused": (409, "conflict"),
    "bad_key": (400, "invalid"),
    "after_cutoff": (409, "business-rule"),
    "started": (409, "business-rule"),
    "bad_state": (409, "business-rule"),
    "expired": (409, "business-rule"),
    "not_yours": (403, "forbidden"),
}


class FhirError(Exception):
    """Any refusal of the API: the HTTP status and the OperationOutcome's issue code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code


def fhir(body: dict[str, Any], status: int = 200, **headers: str) -> Response:
    response = Response(json.dumps(body), status=status, mimetype=resources.MIME)
    response.headers.update(headers)
    return response


@bp.errorhandler(FhirError)
def _refused(exc: FhirError) -> Response:
    return fhir(resources.outcome(exc.code, str(exc)), exc.status)


@bp.errorhandler(HTTPException)
def _http(exc: HTTPException) -> Response:
    code = {404: "not-found", 405: "not-supported", 413: "too-long"}.get(exc.code or 0, "invalid")
    return fhir(resources.outcome(code, exc.description or exc.name), exc.code or 400)


@bp.errorhandler(BookingError)
def _booking(exc: BookingError) -> Response:
    status, code = BOOKING_STATUS.get(exc.code, (400, "processing"))
    return fhir(resources.outcome(code, f"{exc.code}: {exc}"), status)


@bp.errorhandler(arrival.ArrivalError)
def _arrival(exc: arrival.ArrivalError) -> Response:
    return fhir(resources.outcome("business-rule", f"{exc.code}: {exc}"), 409)


@bp.errorhandler(queues.QueueError)
def _queue(exc: queues.QueueError) -> Response:
    return fhir(resources.outcome("business-rule", f"{exc.code}: {exc}"), 409)


def base() -> str:
    return request.host_url.rstrip("/") + bp.url_prefix


def _patient() -> Shopper:
    shopper = patients.bearer_patient()
    if shopper is None:
        raise FhirError(401, "login", "sign in with the wallet, then send the bearer token of "
                        "/plaza/hospital/token")  # fmt: skip
    return shopper


def _params(allowed: list[str]) -> dict[str, list[str]]:
    unknown = sorted(set(request.args) - set(allowed) - {"_format"})
    if unknown:
        raise FhirError(400, "not-supported", f"unknown search parameter: {unknown[0][:40]}")
    fmt = request.args.get("_format")
    if fmt not in (None, "json", resources.MIME, "application/json"):
        raise FhirError(400, "not-supported", "this server speaks JSON only")
    return {name: request.args.getlist(name) for name in request.args}


def _count(values: list[str]) -> int:
    if not values:
        return DEFAULT_COUNT
    if not values[-1].isdigit() or not 0 < int(values[-1]) <= MAX_COUNT:
        raise FhirError(400, "invalid", f"_count is a number from 1 to {MAX_COUNT}")
    return int(values[-1])


def _ref(value: str, kind: str) -> str:
    """`Kind/id` or a bare id -> id."""
    head, _, tail = value.rpartition("/")
    if head and head.rsplit("/", 1)[-1] != kind:
        raise FhirError(400, "invalid", f"expected a {kind} reference, got {value[:60]!r}")
    if not tail or len(tail) > 64:
        raise FhirError(400, "invalid", f"bad {kind} reference")
    return resources.pid(tail)


def _search(name: str, items: list[dict[str, Any]], limit: int | None = None) -> Response:
    """The searchset; `limit` the `_count` the query was cut at (a full page: no total)."""
    return fhir(resources.bundle(base(), request.url, items, limit is None or len(items) < limit))


@bp.before_request
def _accept_json() -> None:
    accept = request.headers.get("Accept", "")
    if accept and "json" not in accept and "*/*" not in accept and "application/*" not in accept:
        raise FhirError(406, "not-supported", "this server speaks JSON only")


# -- public ----------------------------------------------------------------------------------


@bp.get("/metadata")
def metadata() -> Response:
    return fhir(resources.capability(base(), now()))


def _schedule(db: Session, schedule_id: str) -> BookingResource:
    schedule_id = resources.pid(schedule_id)
    found = visits.schedule(db, schedule_id)
    if found is None:
        raise FhirError(404, "not-found", f"no Schedule {schedule_id[:40]}")
    return found


def bookable(query: Select, params: dict[str, list[str]]) -> Select:
    """`query` (of schedules) narrowed by `active` (true: taking bookings), for the Schedule
    and the Practitioner searches."""
    for value in params.get("active", []):
        if value not in ("true", "false"):
            raise FhirError(400, "invalid", "active is true or false")
        query = query.where((BookingResource.state == "ACTIVE") == (value == "true"))
    return query


@bp.get("/Schedule/<schedule_id>")
def read_schedule(schedule_id: str) -> Response:
    db = get_db()
    found = _schedule(db, schedule_id)
    return fhir(resources.schedule(found, arrival.clinic_queue(db, found)))


@bp.get("/Schedule")
def search_schedules() -> Response:
    params = _params(["active"])
    query = bookable(select(BookingResource).where(BookingResource.kind == KIND), params)
    db = get_db()
    rows = db.scalars(query.order_by(BookingResource.name).limit(MAX_COUNT)).all()
    clinics = arrival.clinic_queues(db, rows)
    return _search("Schedule", [resources.schedule(r, clinics[r.id]) for r in rows])


@bp.get("/Slot/<slot_id>")
def read_slot(slot_id: str) -> Response:
    db, slot_id = get_db(), resources.pid(slot_id)
    found = db.get(BookingSlot, slot_id) if slot_id.startswith("bsl_") else None
    if found is None:
        raise FhirError(404, "not-found", f"no Slot {slot_id[:40]}")
    _schedule(db, found.resource_id)
    return fhir(resources.slot(found))


PREFIXES = ("eq", "ge", "gt", "le", "lt")


def _date_range(value: str, tz: zoneinfo.ZoneInfo, name: str = "start") -> tuple[str, float, float]:
    """A date parameter's value (`name`: Slot's `start`, Appointment's `date`): prefix, and
    the instants it covers [low, high). A date alone is that day on the schedule's clock; a
    dateTime needs its offset (or Z)."""
    prefix = value[:2] if value[:2] in PREFIXES else "eq"
    text = value[2:] if value[:2] in PREFIXES else value
    try:
        if len(text) == 10:
            day = dt.date.fromisoformat(text)
            low = dt.datetime(day.year, day.month, day.day, tzinfo=tz)
            high = low + dt.timedelta(days=1)
            return prefix, low.timestamp(), high.timestamp()
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise FhirError(400, "invalid", f"{name}: {value[:40]!r} is not a FHIR date") from None
    if moment.tzinfo is None:
        raise FhirError(400, "invalid", f"{name}: a dateTime needs its time zone (Z or +hh:mm)")
    return prefix, moment.timestamp(), moment.timestamp() + 1


@bp.get("/Slot")
def search_slots() -> Response:
    """Slots by `schedule`, `start` (prefixes eq ge gt le lt; repeat for a range) and
    `status` (free, busy), earliest first."""
    params = _params(["schedule", "start", "status", "_count"])
    db = get_db()
    query = (
        select(BookingSlot)
        .join(BookingResource, BookingResource.id == BookingSlot.resource_id)
        .where(BookingResource.kind == KIND)
    )
    tz = zoneinfo.ZoneInfo("UTC")
    schedules = params.get("schedule", [])
    if len(schedules) > 1:
        raise FhirError(400, "invalid", "give one schedule")
    if schedules:
        found = _schedule(db, _ref(schedules[0], "Schedule"))
        tz = zoneinfo.ZoneInfo(found.tz)
        query = query.where(BookingSlot.resource_id == found.id)
    for value in params.get("start", []):
        prefix, low, high = _date_range(value, tz)
        column = BookingSlot.starts_at
        query = query.where(
            {"eq": (column >= low) & (column < high), "ge": column >= low, "gt": column >= high,
             "le": column < high, "lt": column < low}[prefix]
        )  # fmt: skip
    statuses = ",".join(params.get("status", [])).split(",") if "status" in params else []
    if set(statuses) - {"free", "busy"}:
        raise FhirError(400, "invalid", "status is free or busy")
    if statuses and len(set(statuses)) == 1:
        full = BookingSlot.taken >= BookingSlot.capacity
        query = query.where(full if statuses[0] == "busy" else ~full)
    count = _count(params.get("_count", []))
    rows = db.scalars(query.order_by(BookingSlot.starts_at, BookingSlot.id).limit(count)).all()
    return _search("Slot", [resources.slot(r) for r in rows], count)


# -- the patient's own -----------------------------------------------------------------------


@bp.get("/Patient/<patient_id>")
def read_patient(patient_id: str) -> Response:
    me, patient_id = _patient(), resources.pid(patient_id)
    if patient_id != me.id:
        found = get_db().get(Shopper, patient_id) if patient_id.startswith("shp_") else None
        if found is None:
            raise FhirError(404, "not-found", f"no Patient {patient_id[:40]}")
        raise FhirError(403, "forbidden", "another patient's record")
    return fhir(resources.patient(me))


@bp.get("/Patient")
def search_patients() -> Response:
    _params(["_id"])
    return _search("Patient", [resources.patient(_patient())])


def _own(db: Session, booking_id: str) -> Booking:
    me, booking_id = _patient(), resources.pid(booking_id)
    found = visits.appointment(db, booking_id)
    if found is None:
        raise FhirError(404, "not-found", f"no Appointment {booking_id[:40]}")
    if found.shopper_id != me.id:
        raise FhirError(403, "forbidden", "another patient's appointment")
    return found


def _patient_param(values: list[str], me: Shopper) -> None:
    if not values:
        raise FhirError(400, "invalid", "search by patient (your own: Patient/<id>)")
    if any(_ref(v, "Patient") != me.id for v in values):
        raise FhirError(403, "forbidden", "only your own appointments")


def _body(kind: str) -> dict[str, Any]:
    if request.mimetype not in (resources.MIME, "application/json"):
        raise FhirError(415, "not-supported", f"send {resources.MIME}")
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or body.get("resourceType") != kind:
        raise FhirError(400, "invalid", f"the body must be a {kind} resource")
    return body


def _clinic(db: Session, ticket: arrival.QueueTicket) -> ServiceQueue | None:
    """The clinic (Location) a ticket's number is in."""
    queue = db.get(ServiceQueue, ticket.queue_id)
    return queue if queue is not None and queue.kind == "clinic" else None


@bp.get("/Encounter")
def search_encounters() -> Response:
    params = _params(["patient", "appointment"])
    me = _patient()
    db = get_db()
    if "appointment" in params:
        found = [_own(db, _ref(v, "Appointment")) for v in params["appointment"]]
    else:
        _patient_param(params.get("patient", []), me)
        found = list(db.scalars(select(Booking).where(Booking.shopper_id == me.id)).all())
    items = []
    for one in found:
        ticket = arrival.ticket_of(db, one.id)
        if ticket is not None:
            items.append(resources.encounter(ticket, one, _clinic(db, ticket)))
    return _search("Encounter", items)


@bp.get("/Encounter/<ticket_id>")
def read_encounter(ticket_id: str) -> Response:
    db, me, ticket_id = get_db(), _patient(), resources.pid(ticket_id)
    ticket = db.get(arrival.QueueTicket, ticket_id) if ticket_id.startswith("qtk_") else None
    found = db.get(Booking, ticket.ref) if ticket is not None and ticket.ref else None
    if ticket is None or found is None:
        raise FhirError(404, "not-found", f"no Encounter {ticket_id[:40]}")
    if found.shopper_id != me.id:
        raise FhirError(403, "forbidden", "another patient's encounter")
    return fhir(resources.encounter(ticket, found, _clinic(db, ticket)))


@bp.route("/<path:_rest>", methods=["GET", "POST", "PUT", "DELETE", "PATCH"])
def unknown(_rest: str) -> Response:
    raise FhirError(404, "not-supported", f"no such resource or operation here: {_rest[:60]}")
