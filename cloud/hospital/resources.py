"""FHIR R4 JSON from the booking and queue rows: pure functions, no request, no session.

One mapping, written once, so the API's reads, searches and answers agree:

| FHIR            | Plaza                                             |
|-----------------|---------------------------------------------------|
| Schedule        | booking resource of kind `appointment`            |
| Practitioner    | the same resource's doctor (same id; its name)    |
| Location        | the clinic: the venue's queue of kind `clinic`    |
| Slot            | booking slot (`free` while a seat is left)        |
| Appointment     | booking (its fee is the booking's deposit)        |
| Encounter       | the appointment's clinic queue ticket (ref = id)  |
| Patient         | shopper: the wallet user, nothing more            |

The library (`fhir.resources`) is not imported here: it is heavy and only checks what these
functions already build to its models; the tests validate every resource the API emits with
it. Codes the API accepts (statuses, search prefixes) are checked by the API itself.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

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
from cloud.o2o.queue_models import QueueTicket, ServiceQueue
from cloud.o2o.shoppers import Shopper

FHIR_VERSION = "4.0.1"
MIME = "application/fhir+json"
EXTENSION = "https://plaza.invalid/fhir/StructureDefinition/"
APPOINTMENT_STATUS = {
    HELD: "pending",  # held, the fee not paid yet
    CONFIRMED: "booked",
    CHECKED_IN: "arrived",
    COMPLETED: "fulfilled",
    NO_SHOW: "noshow",
    CANCELLED: "cancelled",
    EXPIRED: "cancelled",
}
APPOINTMENT_CODES = (
    "proposed",
    "pending",
    "booked",
    "arrived",
    "fulfilled",
    "cancelled",
    "noshow",
    "entered-in-error",
    "checked-in",
    "waitlist",
)  # R4's value set
ENCOUNTER_STATUS = {
    "WAITING": "arrived",
    "SKIPPED": "arrived",
    "CALLED": "in-progress",
    "SERVED": "finished",
    "EXPIRED": "cancelled",
    "CANCELLED": "cancelled",
}


def fid(plaza_id: str) -> str:
    """A Plaza id as a FHIR id (FHIR ids are [A-Za-z0-9.-]: `bsl_ab12` is `bsl-ab12`)."""
    return plaza_id.replace("_", "-", 1)


def pid(fhir_id: str) -> str:
    """A FHIR id back to the Plaza id (anything else stays itself and is found nowhere)."""
    return fhir_id.replace("-", "_", 1)


def instant(at: float) -> str:
    """An epoch second as a FHIR instant (UTC, `Z`)."""
    return dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def outcome(code: str, diagnostics: str, severity: str = "error") -> dict[str, Any]:
    """An OperationOutcome of one issue; `code` is from the IssueType value set."""
    issue = {"severity": severity, "code": code, "diagnostics": diagnostics[:500]}
    return {"resourceType": "OperationOutcome", "issue": [issue]}


def bundle(
    base: str, self_url: str, resources: list[dict[str, Any]], complete: bool = True,
    total: int | None = None, links: dict[str, str] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """A searchset Bundle of `resources` (every one a match). `total` is the number of
    matches: these when `complete`, left out when `_count` cut them short, or given (a paged
    search counts them); `links` the paging links (`next`, `previous`, ...) beside `self`."""
    entries = [
        {"fullUrl": f"{base}/{r['resourceType']}/{r['id']}", "resource": r,
         "search": {"mode": "match"}}
        for r in resources
    ]  # fmt: skip
    found: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
    if total is not None or complete:
        found["total"] = len(entries) if total is None else total
    paging = [{"relation": name, "url": url} for name, url in (links or {}).items()]
    found.update(link=[{"relation": "self", "url": self_url}, *paging], entry=entries)
    return found


def clinic_name(resource: BookingResource) -> str:
    """The clinic a schedule belongs to: its name up to a colon ("Cardiology: Dr Wang" is
    Cardiology's), which is also the name of the clinic's queue."""
    return resource.name.split(":", 1)[0].strip()


def doctor_name(resource: BookingResource) -> str:
    """The doctor a schedule is: its name after the colon ("Cardiology: Dr Wang" is Dr
    Wang), the whole name without one (as the booking page shows it)."""
    return resource.name.split(":", 1)[-1].strip() or resource.name


def actors(resource: BookingResource, clinic: ServiceQueue | None) -> list[dict[str, Any]]:
    """Who and where an appointment of `resource` is: its Practitioner (the display kept as
    the schedule's whole name, as before references) and its clinic's Location if any."""
    found: list[dict[str, Any]] = [
        {"reference": f"Practitioner/{fid(resource.id)}", "display": resource.name}
    ]
    if clinic is not None:
        found.append({"reference": f"Location/{fid(clinic.id)}", "display": clinic.name})
    return found


def schedule(resource: BookingResource, clinic: ServiceQueue | None = None) -> dict[str, Any]:
    return {
        "resourceType": "Schedule",
        "id": fid(resource.id),
        "active": resource.state == "ACTIVE",
        "serviceType": [{"text": clinic_name(resource)}],
        "actor": actors(resource, clinic),
        "comment": f"{resource.slot_minutes}-minute slots, fee {resource.deposit / 100:.2f}",
    }


def practitioner(resource: BookingResource) -> dict[str, Any]:
    """The doctor of a schedule: the same id, active while bookable."""
    return {
        "resourceType": "Practitioner",
        "id": fid(resource.id),
        "active": resource.state == "ACTIVE",
        "name": [{"text": doctor_name(resource)}],
    }


def location(clinic: ServiceQueue) -> dict[str, Any]:
    """A clinic: suspended while its queue is closed (no numbers given out)."""
    return {
        "resourceType": "Location",
        "id": fid(clinic.id),
        "status": "active" if clinic.state == "OPEN" else "suspended",
        "name": clinic.name,
        "mode": "instance",
        "description": "a clinic: arriving patients take a number in its queue",
    }


def slot(row: BookingSlot) -> dict[str, Any]:
    return {
        "resourceType": "Slot",
        "id": fid(row.id),
        "schedule": {"reference": f"Schedule/{fid(row.resource_id)}"},
        "status": "free" if row.taken < row.capacity else "busy",
        "start": instant(row.starts_at),
        "end": instant(row.ends_at),
    }


def appointment(
    found: Booking, row: BookingSlot, resource: BookingResource, pay_url: str | None = None,
    clinic: ServiceQueue | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The booking as an Appointment; `pay_url` (the patient's appointment page, which takes
    the fee through the wallet) while the fee is due; `clinic` its doctor's clinic."""
    status = APPOINTMENT_STATUS[found.state]
    accepted = "needs-action" if status == "pending" else "accepted"
    body: dict[str, Any] = {
        "resourceType": "Appointment",
        "id": fid(found.id),
        "status": status,
        "serviceType": [{"text": clinic_name(resource)}],
        "start": instant(row.starts_at),
        "end": instant(row.ends_at),
        "created": instant(found.held_at),
        "slot": [{"reference": f"Slot/{fid(row.id)}"}],
        "participant": [
            {"actor": {"reference": f"Patient/{fid(found.shopper_id)}"}, "status": accepted},
            *({"actor": actor, "status": "accepted"} for actor in actors(resource, clinic)),
        ],
    }
    if found.reason:
        body["cancelationReason"] = {"text": found.reason}
    extensions = [{"url": EXTENSION + "fee", "valueMoney": {"value": found.deposit / 100,
                                                              "currency": "CNY"}}]  # fmt: skip
    if pay_url and found.state == HELD and found.deposit:
        extensions.append({"url": EXTENSION + "payment-page", "valueUrl": pay_url})
    body["extension"] = extensions
    return body


def encounter(
    ticket: QueueTicket, found: Booking, clinic: ServiceQueue | None = None
) -> dict[str, Any]:
    """The visit of an arrived appointment: its clinic queue ticket (the number is its
    identifier; called is in progress, served is finished); `clinic` the ticket's queue (its
    Location), after the room it was called to."""
    body: dict[str, Any] = {
        "resourceType": "Encounter",
        "id": fid(ticket.id),
        "status": ENCOUNTER_STATUS.get(ticket.state, "unknown"),
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                  "code": "AMB", "display": "ambulatory"},
        "identifier": [{"system": EXTENSION + "queue-number", "value": ticket.label}],
        "subject": {"reference": f"Patient/{fid(found.shopper_id)}"},
        "appointment": [{"reference": f"Appointment/{fid(found.id)}"}],
        "period": {"start": instant(ticket.taken_at)},
    }  # fmt: skip
    if ticket.ended_at is not None and ticket.state == "SERVED":
        body["period"]["end"] = instant(ticket.ended_at)
    places = [{"location": {"display": f"Room {ticket.counter}"}}] if ticket.counter else []
    if clinic is not None:
        places.append({"location": {"reference": f"Location/{fid(clinic.id)}",
                                    "display": clinic.name}})  # fmt: skip
    if places:
        body["location"] = places
    return body


def patient(shopper: Shopper) -> dict[str, Any]:
    """The wallet user, minimal: an identifier in the wallet's dialect and a name if known."""
    body: dict[str, Any] = {
        "resourceType": "Patient",
        "id": fid(shopper.id),
        "active": True,
        "identifier": [{"system": f"urn:plaza:wallet:{shopper.provider}",
                        "value": shopper.subject}],
    }  # fmt: skip
    if shopper.display_name:
        body["name"] = [{"text": shopper.display_name}]
    return body


SEARCH = {
    "Schedule": ["active"],
    "Slot": ["schedule", "start", "status", "_count"],
    "Appointment": ["date", "status", "patient", "actor", "practitioner", "location", "slot",
                    "schedule", "_count"],
    "Encounter": ["patient", "appointment"],
    "Patient": [],
    "Practitioner": ["_id", "name", "active"],
    "Location": ["_id", "name"],
    "DiagnosticReport": ["patient"],
    "Binary": [],
}  # fmt: skip
WRITES = {"Appointment": ["create", "update"]}
SECURITY = (
    "Bearer tokens: a patient's from /plaza/hospital/token (their own Patient, Appointments, "
    "Encounters, reports); a clinician's from /dashboard/hospital/<venue>/token (read and "
    "search that hospital's Appointments; its Practitioners and Locations only, another "
    "hospital's are not found). Schedules, Slots, Practitioners, Locations and this "
    "statement are public."
)
NOTES = {
    ("Appointment", "date"): "the start; prefixes eq ge gt le lt; a date alone is the "
    "hospital's local day",
    ("Appointment", "actor"): "a Patient, Practitioner or Location reference",
    ("Appointment", "practitioner"): "the doctor (the Practitioner of the slot's Schedule)",
    ("Appointment", "location"): "the clinic of the appointment's doctor",
    ("Appointment", "schedule"): "Plaza's own, not a standard parameter (kept for its "
    "clients): the Schedule of the appointment's slot; practitioner is the standard one",
    ("Appointment", "patient"): "a patient may search only themselves",
    ("Practitioner", "name"): "starts a word of the name (any case); :exact, :contains",
    ("Location", "name"): "starts a word of the name (any case); :exact, :contains",
}


def capability(base: str, at: float) -> dict[str, Any]:
    """What this server does: JSON only, these resources, interactions and parameters."""
    kinds = {
        "_count": "number",
        "start": "date",
        "date": "date",
        "active": "token",
        "status": "token",
        "_id": "token",
        "name": "string",
    }
    resources = []
    for name, params in SEARCH.items():
        interactions = [{"code": "read"}] + [{"code": code} for code in WRITES.get(name, [])]
        if params or name == "Patient":
            interactions.append({"code": "search-type"})
        resources.append({
            "type": name,
            "interaction": interactions,
            "searchParam": [{"name": p, "type": kinds.get(p, "reference"),
                             **({"documentation": NOTES[(name, p)]} if (name, p) in NOTES else {})}
                            for p in params if p != "_count"],
        })  # fmt: skip
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": instant(at)[:10],
        "kind": "instance",
        "software": {"name": "Plaza cloud"},
        "implementation": {"description": "Plaza hospital FHIR API", "url": base},
        "fhirVersion": FHIR_VERSION,
        "format": ["application/fhir+json", "json"],
        "rest": [{"mode": "server", "resource": resources, "security": {"description": SECURITY}}],
    }
