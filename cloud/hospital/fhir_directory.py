"""FHIR Practitioner and Location: the hospital's directory (routes on fhir_api.bp).

A doctor is a booking resource of kind `appointment`, so its Practitioner is that row under
the Schedule's id (`brs-...` is both `Schedule/brs-...` and `Practitioner/brs-...`): its name
is the schedule's after the colon, `active` whether it takes bookings. A clinic is the
venue's queue of kind `clinic` that arrival gives numbers in (arrival.clinic_queues): its
Location, `suspended` while the queue is closed. Schedules and Appointments reference both.

Who reads: the directory is public, as Schedules are (the booking page shows the doctors
and clinics to any shopper, and a Schedule already names its doctor): no token or a
patient's reads every hospital's. A clinician's token scopes it to its own hospital, as it
does Appointments: another hospital's Practitioner or Location is a 404 for it and a search
lists only its own (a hospital's EHR syncing its doctors never gets another's). It hides
nothing secret, it keeps a hospital's tools to its own records.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud.db import get_db
from cloud.hospital import arrival, clinicians, resources, visits
from cloud.hospital.fhir_api import MAX_COUNT, FhirError, _params, _search, bookable, bp, fhir
from cloud.o2o.booking_models import BookingResource
from cloud.o2o.queue_models import ServiceQueue

NAME_MATCH: dict[str, Callable[[str, str], bool]] = {  # FHIR string search: modifier -> test
    "name": lambda name, value: any(
        part.startswith(value.casefold()) for part in (name.casefold(), *name.casefold().split())
    ),
    "name:exact": lambda name, value: name == value,
    "name:contains": lambda name, value: value.casefold() in name.casefold(),
}


def scope() -> str | None:
    """The venue a clinician's token scopes the directory to; None: all of it (public)."""
    who = clinicians.bearer_clinician()
    return who.venue.id if who is not None else None


def practitioner(db: Session, plaza_id: str, venue_id: str | None) -> BookingResource:
    """The doctor `plaza_id` (a schedule's id), within `venue_id` if given."""
    found = visits.schedule(db, plaza_id)
    if found is None or venue_id not in (None, found.venue_id):
        raise FhirError(404, "not-found", f"no Practitioner {plaza_id[:40]}")
    return found


def clinic(db: Session, plaza_id: str, venue_id: str | None) -> ServiceQueue:
    """The clinic `plaza_id` (a clinic queue's id), within `venue_id` if given."""
    found = db.get(ServiceQueue, plaza_id) if plaza_id.startswith("svq_") else None
    if found is None or found.kind != "clinic" or venue_id not in (None, found.venue_id):
        raise FhirError(404, "not-found", f"no Location {plaza_id[:40]}")
    return found


def doctors(db: Session, place: ServiceQueue) -> list[str]:
    """The schedules (doctors) whose clinic is `place`."""
    rows = db.scalars(
        select(BookingResource).where(
            BookingResource.venue_id == place.venue_id, BookingResource.kind == visits.KIND
        )
    ).all()
    return [key for key, found in arrival.clinic_queues(db, rows).items()
            if found is not None and found.id == place.id]  # fmt: skip


def _ids(values: list[str]) -> set[str] | None:
    """`_id` values (a comma: any of; repeated: all of) as Plaza ids; None: not asked."""
    wanted: set[str] | None = None
    for value in values:
        ids = {resources.pid(one) for one in value.split(",") if one}
        wanted = ids if wanted is None else wanted & ids
    return wanted


def _named(params: dict[str, list[str]], name: Callable[[Any], str], rows: list[Any]) -> list[Any]:
    """The rows whose name every `name` value (with its modifier) matches, capped."""
    for key, test in NAME_MATCH.items():
        for value in params.get(key, []):
            if not value:
                raise FhirError(400, "invalid", f"{key}: give a name")
            rows = [row for row in rows if test(name(row), value)]
    return rows[:MAX_COUNT]


@bp.get("/Practitioner/<practitioner_id>")
def read_practitioner(practitioner_id: str) -> Response:
    return fhir(
        resources.practitioner(practitioner(get_db(), resources.pid(practitioner_id), scope()))
    )


@bp.get("/Practitioner")
def search_practitioners() -> Response:
    """By `_id`, `name` (:exact, :contains) and `active`, by name; the doctors of every
    hospital are a few hundred rows, so names are matched here, as FHIR says (any case)."""
    params = _params(["_id", "active", *NAME_MATCH])
    query = select(BookingResource).where(BookingResource.kind == visits.KIND)
    if (venue_id := scope()) is not None:
        query = query.where(BookingResource.venue_id == venue_id)
    if (ids := _ids(params.get("_id", []))) is not None:
        query = query.where(BookingResource.id.in_(ids))
    query = bookable(query, params)
    rows = list(get_db().scalars(query.order_by(BookingResource.name, BookingResource.id)))
    found = _named(params, resources.doctor_name, rows)
    return _search("Practitioner", [resources.practitioner(r) for r in found], MAX_COUNT)


@bp.get("/Location/<location_id>")
def read_location(location_id: str) -> Response:
    return fhir(resources.location(clinic(get_db(), resources.pid(location_id), scope())))


@bp.get("/Location")
def search_locations() -> Response:
    """Clinics by `_id` and `name` (:exact, :contains), by name."""
    params = _params(["_id", *NAME_MATCH])
    query = select(ServiceQueue).where(ServiceQueue.kind == "clinic")
    if (venue_id := scope()) is not None:
        query = query.where(ServiceQueue.venue_id == venue_id)
    if (ids := _ids(params.get("_id", []))) is not None:
        query = query.where(ServiceQueue.id.in_(ids))
    rows = list(get_db().scalars(query.order_by(ServiceQueue.name, ServiceQueue.id)))
    found = _named(params, lambda row: row.name, rows)
    return _search("Location", [resources.location(r) for r in found], MAX_COUNT)
