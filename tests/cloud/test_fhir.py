"""The hospital's FHIR R4 API (cloud/hospital) on both databases: the CapabilityStatement,
Schedule and Slot searches, an Appointment booked, read, searched, cancelled; arrival (the
patient's tap and presence) giving a clinic queue number whose Encounter goes in progress
and finished as the clinician calls; and the bad input: a slot just taken, another patient's
appointment or record, nobody signed in, bad search parameters. Every resource the API emits
is validated by the `fhir.resources` library's models (its R4B package: the R4 technical
correction, whose Schedule, Slot, Appointment, Encounter, Patient, Bundle, OperationOutcome
and CapabilityStatement are R4's)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from cloud import db as cloud_db
from cloud.accounts import create_merchant, create_venue
from cloud.hospital import arrival
from cloud.models import Venue
from cloud.o2o import booking, booking_slots, queues
from cloud.o2o.booking import ResourceSpec
from cloud.o2o.booking_models import BookingResource, BookingSlot
from cloud.o2o.queues import QueueSpec
from cloud.o2o.shoppers import SHOPPER_KEY, SINCE_KEY, find_or_create
from tests.cloud.conftest import Router, opt_in_event
from tests.cloud.fhir_helpers import valid
from tests.conftest import FakeClock

FHIR = "/fhir/r4"
MIME = "application/fhir+json"
HOUR = 3600.0
PRESENCE = "/api/v1/device/presence"


def answer(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == MIME
    return valid(response.get_json())


def refused(response: Any, status: int, code: str) -> str:
    body = answer(response, status)
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["code"] == code, body
    return body["issue"][0]["diagnostics"]


def fid(plaza_id: str) -> str:
    return plaza_id.replace("_", "-", 1)


def as_patient(client: FlaskClient, shopper_id: str, at: float) -> FlaskClient:
    """The client as the shopper's phone: signed in to the shop (its session after a wallet
    login), then holding the FHIR bearer token the shop hands out."""
    with client.session_transaction("/plaza/") as session:
        session.clear()
        session[SHOPPER_KEY], session[SINCE_KEY] = shopper_id, at
    got = client.get("/plaza/hospital/token")
    assert got.status_code == 200 and got.headers["Cache-Control"] == "no-store"
    assert got.get_json()["patient"] == f"Patient/{fid(shopper_id)}"
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {got.get_json()['access_token']}"
    return client


def anonymous(client: FlaskClient) -> FlaskClient:
    """No token, and signed out of the shop."""
    client.environ_base.pop("HTTP_AUTHORIZATION", None)
    client._cookies.clear()
    return client


def patient(app: Flask, user: str, now: float) -> str:
    with cloud_db.session(app) as db:
        return find_or_create(db, "oidc", user, user.title(), now).id


def hospital(app: Flask, venue: Venue, now: float, **over: Any) -> tuple[str, list[str]]:
    """A cardiology schedule (30-minute slots, capacity 1, no fee unless given) with slots
    from tomorrow 08:00 Shanghai for two days, and the clinic's queue; (schedule, slots)."""
    values: dict[str, Any] = {"name": "Cardiology: Dr Wang", "kind": "appointment",
                              "slot_minutes": 30, "hours": (("08:00", "12:00"),)}  # fmt: skip
    values.update(over)
    with cloud_db.session(app) as db:
        resource = booking.create_resource(db, venue, ResourceSpec(**values), now)
        day = dt.datetime.fromtimestamp(now, dt.UTC).date() + dt.timedelta(days=1)
        booking_slots.generate(db, resource, day, 2)
        queues.create_queue(db, venue.id, QueueSpec(name="Cardiology", prefix="C",
                                                    kind="clinic", time_zone="Asia/Shanghai"),
                            now)  # fmt: skip
        query = select(BookingSlot.id).where(BookingSlot.resource_id == resource.id)
        return resource.id, list(db.scalars(query.order_by(BookingSlot.starts_at)))


def starts(app: Flask, slot_id: str) -> float:
    with cloud_db.session(app) as db:
        found = db.get(BookingSlot, slot_id)
        assert found is not None
        return found.starts_at


def book(client: FlaskClient, slot_id: str, patient_id: str | None = None, **over: Any) -> Any:
    body: dict[str, Any] = {"resourceType": "Appointment", "status": "booked",
                            "slot": [{"reference": f"Slot/{fid(slot_id)}"}]}  # fmt: skip
    if patient_id:
        body["participant"] = [{"actor": {"reference": f"Patient/{fid(patient_id)}"},
                                "status": "accepted"}]  # fmt: skip
    body.update(over)
    return client.post(f"{FHIR}/Appointment", json=body, content_type=MIME)


def set_status(client: FlaskClient, appointment_id: str, status: str) -> Any:
    body = {"resourceType": "Appointment", "id": appointment_id, "status": status}
    return client.put(f"{FHIR}/Appointment/{appointment_id}", json=body, content_type=MIME)


def test_metadata_says_what_is_supported(client: FlaskClient):
    body = answer(client.get(f"{FHIR}/metadata"), 200)
    assert body["resourceType"] == "CapabilityStatement"
    assert body["fhirVersion"] == "4.0.1" and body["format"][0] == MIME
    served = {r["type"]: r for r in body["rest"][0]["resource"]}
    assert set(served) == {
        "Schedule",
        "Slot",
        "Appointment",
        "Encounter",
        "Patient",
        "Practitioner",
        "Location",
        "DiagnosticReport",
        "Binary",
    }
    assert {p["name"] for p in served["Slot"]["searchParam"]} == {"schedule", "start", "status"}
    assert {"create", "update", "read"} <= {i["code"] for i in served["Appointment"]["interaction"]}


def test_schedules_and_slot_search(app: Flask, client: FlaskClient, venue: Venue,
                                   clock: FakeClock):  # fmt: skip
    schedule, slots = hospital(app, venue, clock())
    assert len(slots) == 16  # 8 half hours a day, two days
    found = answer(client.get(f"{FHIR}/Schedule"), 200)
    assert [e["resource"]["id"] for e in found["entry"]] == [fid(schedule)]
    assert answer(client.get(f"{FHIR}/Schedule/{fid(schedule)}"), 200)["active"] is True

    day = dt.datetime.fromtimestamp(starts(app, slots[0]), dt.UTC).astimezone(
        dt.timezone(dt.timedelta(hours=8))).date().isoformat()  # fmt: skip
    search = f"{FHIR}/Slot?schedule=Schedule/{fid(schedule)}&start={day}&status=free"
    bundle = answer(client.get(search), 200)
    assert bundle["type"] == "searchset" and bundle["total"] == 8
    assert [e["resource"]["id"] for e in bundle["entry"]] == [fid(s) for s in slots[:8]]
    first = bundle["entry"][0]["resource"]
    assert first["status"] == "free" and first["start"].endswith("T00:00:00Z")  # 08:00 +08
    third = bundle["entry"][2]["resource"]["start"]
    ranged = answer(client.get(f"{FHIR}/Slot?schedule={fid(schedule)}"
                               f"&start=ge{first['start']}&start=lt{third}"), 200)  # fmt: skip
    assert [e["resource"]["id"] for e in ranged["entry"]] == [fid(s) for s in slots[:2]]
    page = answer(client.get(f"{FHIR}/Slot?_count=3"), 200)
    assert len(page["entry"]) == 3 and "total" not in page  # 16 match: a page, no total
    assert answer(client.get(f"{FHIR}/Slot/{fid(slots[1])}"), 200)["end"]

    alice = patient(app, "alice", clock())
    answer(book(as_patient(client, alice, clock()), slots[0]), 201)
    anonymous(client)
    busy = answer(client.get(f"{FHIR}/Slot?schedule={fid(schedule)}&status=busy"), 200)
    assert [e["resource"]["id"] for e in busy["entry"]] == [fid(slots[0])]
    free = answer(client.get(f"{FHIR}/Slot?schedule={fid(schedule)}&status=free"), 200)
    assert fid(slots[0]) not in {e["resource"]["id"] for e in free["entry"]}


@pytest.mark.parametrize(
    ("query", "status", "code"),
    [
        ("Slot?color=red", 400, "not-supported"),
        ("Slot?start=tomorrow", 400, "invalid"),
        ("Slot?start=2026-12-07T08:00:00", 400, "invalid"),  # no time zone
        ("Slot?status=maybe", 400, "invalid"),
        ("Slot?_count=0", 400, "invalid"),
        ("Slot?_format=xml", 400, "not-supported"),
        ("Slot?schedule=Schedule/brs-0000000000000000", 404, "not-found"),
        ("Slot?schedule=Patient/x", 400, "invalid"),
        ("Slot/bsl-0000000000000000", 404, "not-found"),
        ("Schedule/nothing", 404, "not-found"),
        ("Observation", 404, "not-supported"),
        ("Appointment/bkg-0000000000000000", 401, "login"),
        ("Patient", 401, "login"),
    ],
)
def test_bad_requests_are_operation_outcomes(client: FlaskClient, query: str, status: int,
                                             code: str):  # fmt: skip
    refused(client.get(f"{FHIR}/{query}"), status, code)


def test_an_appointment_booked_read_searched_cancelled(
    app: Flask, client: FlaskClient, venue: Venue, clock: FakeClock
):
    _, slots = hospital(app, venue, clock())
    alice = patient(app, "alice", clock())
    as_patient(client, alice, clock())
    me = answer(client.get(f"{FHIR}/Patient/{fid(alice)}"), 200)
    assert me["identifier"][0] == {"system": "urn:plaza:wallet:oidc", "value": "alice"}
    made = book(client, slots[2], alice)
    body = answer(made, 201)
    assert made.headers["Location"].endswith(f"/Appointment/{body['id']}")
    assert body["status"] == "booked" and body["slot"] == [{"reference": f"Slot/{fid(slots[2])}"}]
    assert body["participant"][0]["actor"]["reference"] == f"Patient/{fid(alice)}"
    assert answer(client.get(f"{FHIR}/Appointment/{body['id']}"), 200)["status"] == "booked"
    mine = answer(client.get(f"{FHIR}/Appointment?patient=Patient/{fid(alice)}"), 200)
    assert [e["resource"]["id"] for e in mine["entry"]] == [body["id"]]

    cancelled = answer(set_status(client, body["id"], "cancelled"), 200)
    assert cancelled["status"] == "cancelled"
    assert cancelled["cancelationReason"]["text"] == "cancelled_free"
    slot = answer(client.get(f"{FHIR}/Slot/{fid(slots[2])}"), 200)
    assert slot["status"] == "free"  # the seat went back
    refused(set_status(client, body["id"], "booked"), 400, "business-rule")


def test_refusals_slot_taken_and_other_patients(
    app: Flask, client: FlaskClient, venue: Venue, clock: FakeClock
):
    _, slots = hospital(app, venue, clock())
    alice, bob = patient(app, "alice", clock()), patient(app, "bob", clock())
    as_patient(client, alice, clock())
    alices = answer(book(client, slots[0]), 201)["id"]
    refused(book(client, slots[1], bob), 403, "forbidden")  # for another patient
    refused(book(client, "bsl_0000000000000000"), 404, "not-found")
    refused(client.post(f"{FHIR}/Appointment", data="slot=1"), 415, "not-supported")
    refused(client.post(f"{FHIR}/Appointment", json={"resourceType": "Patient"},
                        content_type=MIME), 400, "invalid")  # fmt: skip
    refused(book(client, slots[1], slot=[]), 400, "required")

    as_patient(client, bob, clock())
    message = refused(book(client, slots[0]), 409, "conflict")  # just taken
    assert "just taken" in message
    refused(client.get(f"{FHIR}/Appointment/{alices}"), 403, "forbidden")
    refused(set_status(client, alices, "cancelled"), 403, "forbidden")
    refused(client.get(f"{FHIR}/Appointment?patient={fid(alice)}"), 403, "forbidden")
    refused(client.get(f"{FHIR}/Patient/{fid(alice)}"), 403, "forbidden")
    refused(client.get(f"{FHIR}/Appointment"), 400, "invalid")  # search by patient
    assert answer(client.get(f"{FHIR}/Appointment?patient={fid(bob)}"), 200)["total"] == 0
    anonymous(client)
    refused(client.get(f"{FHIR}/Appointment/{alices}"), 401, "login")
    client.environ_base["HTTP_AUTHORIZATION"] = "Bearer " + "x" * 40  # forged
    refused(client.get(f"{FHIR}/Appointment/{alices}"), 401, "login")
    anonymous(client)
    assert client.get("/plaza/hospital/token").status_code == 303  # to the wallet sign-in
    refused(book(client, slots[3]), 401, "login")


def test_arrival_gives_a_number_and_the_clinician_calls_it(
    app: Flask, client: FlaskClient, venue: Venue, clock: FakeClock
):
    _, slots = hospital(app, venue, clock())
    alice, bob = patient(app, "alice", clock()), patient(app, "bob", clock())
    as_patient(client, alice, clock())
    first = answer(book(client, slots[0]), 201)["id"]
    refused(set_status(client, first, "arrived"), 409, "business-rule")  # not the day yet
    clock.now = starts(app, slots[0]) - 600  # ten minutes early
    arrived = answer(set_status(client, first, "arrived"), 200)
    assert arrived["status"] == "arrived"
    again = answer(set_status(client, first, "arrived"), 200)  # a second tap: the same
    assert again["status"] == "arrived"
    (visit,) = answer(client.get(f"{FHIR}/Encounter?appointment={first}"), 200)["entry"]
    assert visit["resource"]["status"] == "arrived"
    assert visit["resource"]["identifier"][0]["value"] == "C001"

    with cloud_db.session(app) as db:  # bob's phone joins the Wi-Fi on the day: presence
        held = booking.hold(db, slots[0 + 1], bob, clock() - 3600)
        booking.confirm(db, held.id, bob, clock() - 3600)
        clock.now = starts(app, slots[1]) - 600
        assert len(arrival.arrive_by_presence(db, venue.id, "bob", clock())) == 1
        assert arrival.arrive_by_presence(db, venue.id, "bob", clock()) == []  # once
        queue = db.scalars(select(queues.ServiceQueue)).one()
        called = queues.call_next(db, queue.id, "3", "dr-wang", clock())
        assert called.label == "C001"  # alice first, in order
    encounter = answer(client.get(f"{FHIR}/Encounter/{visit['resource']['id']}"), 200)
    assert encounter["status"] == "in-progress"
    assert encounter["location"][0]["location"]["display"] == "Room 3"
    (clinic,) = [p["location"] for p in encounter["location"] if "reference" in p["location"]]
    assert visit["resource"]["location"] == [{"location": clinic}]  # before the call: no room
    place = answer(client.get(f"{FHIR}/{clinic['reference']}"), 200)  # the clinic's Location
    assert place["resourceType"] == "Location" and place["name"] == clinic["display"]
    assert place["name"] == "Cardiology" and clinic["reference"] == f"Location/{fid(queue.id)}"
    with cloud_db.session(app) as db:
        assert queues.call_next(db, queue.id, "3", "dr-wang", clock()).label == "C002"  # bob
    encounter = answer(client.get(f"{FHIR}/Encounter/{visit['resource']['id']}"), 200)
    assert encounter["status"] == "finished" and "end" in encounter["period"]
    as_patient(client, bob, clock())
    refused(client.get(f"{FHIR}/Encounter/{visit['resource']['id']}"), 403, "forbidden")
    (bobs,) = answer(client.get(f"{FHIR}/Encounter?patient={fid(bob)}"), 200)["entry"]
    assert bobs["resource"]["status"] == "in-progress"


def test_only_appointment_schedules_are_fhir(app: Flask, client: FlaskClient, venue: Venue,
                                             clock: FakeClock):  # fmt: skip
    with cloud_db.session(app) as db:
        table = booking.create_resource(db, venue, ResourceSpec(name="Window table"), clock())
        other = create_venue(db, create_merchant(db, "B", "b@b.example", "pw-pw-pw-pw-pw",
                                                 clock()).id, "B", clock(), "b.test")  # fmt: skip
        db.commit()
        assert db.get(BookingResource, table.id) is not None and other.id
    refused(client.get(f"{FHIR}/Schedule/{fid(table.id)}"), 404, "not-found")
    assert answer(client.get(f"{FHIR}/Schedule"), 200)["total"] == 0


def test_the_phone_joining_the_wifi_on_the_day_arrives(
    app: Flask, client: FlaskClient, venue: Venue, clock: FakeClock, router: Router
):
    """Presence through the router's signed API: the booking core checks in, the hospital's
    join hook gives the clinic's number; the Appointment reads `arrived`."""
    _, slots = hospital(app, venue, clock())
    alice = patient(app, "alice", clock())
    as_patient(client, alice, clock())
    made = answer(book(client, slots[0]), 201)["id"]
    login = router.post(PRESENCE, {"events": [opt_in_event("l1", clock(), "alice")]})
    assert login.status_code == 200, login.get_json()
    clock.now = starts(app, slots[0]) - 10 * 60
    join = {"key": "j1", "kind": "join", "mac": "02:00:00:00:00:0b", "at": clock()}
    assert router.post(PRESENCE, {"events": [join]}).status_code == 200
    assert answer(client.get(f"{FHIR}/Appointment/{made}"), 200)["status"] == "arrived"
    (visit,) = answer(client.get(f"{FHIR}/Encounter?appointment={made}"), 200)["entry"]
    assert visit["resource"]["identifier"][0]["value"] == "C001"
    assert visit["resource"]["status"] == "arrived"
