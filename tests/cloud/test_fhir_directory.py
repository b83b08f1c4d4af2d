"""FHIR Practitioner and Location (cloud/hospital/fhir_directory.py): a doctor is its
schedule's Practitioner (same id, `active` while bookable), a clinic its clinic queue's
Location; Schedules and Appointments reference both and every reference resolves; Appointment
search by `practitioner`, `location` and `actor` gives exactly that doctor's or clinic's
appointments, `schedule` still works; the directory is public (no token or a patient's), a
clinician's token scopes it to its hospital (another's is a 404); bad references are 400.
On SQLite and PostgreSQL; every answer validated by `fhir.resources` (fhir_helpers.valid)."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from cloud import db as cloud_db
from cloud.hospital import patients
from cloud.models import Venue
from cloud.o2o import booking, queues
from cloud.o2o.booking import ResourceSpec
from cloud.o2o.booking_models import BookingResource
from cloud.o2o.queue_models import ServiceQueue
from cloud.o2o.queues import QueueSpec
from tests.cloud.fhir_helpers import fhir_get, fid
from tests.cloud.hospital_day import a_hospital_day, ids, token_of
from tests.conftest import FakeClock


def clinic(db: Any, venue_id: str, name: str, now: float, kind: str = "clinic") -> str:
    spec = QueueSpec(name=name, prefix=name[0], kind=kind, time_zone="Asia/Shanghai")
    return fid(queues.create_queue(db, venue_id, spec, now).id)


def a_directory(app: Flask, venue: Venue, now: float) -> dict[str, Any]:
    """a_hospital_day (Dr Wang in Cardiology, Dr Li in Dermatology, Dr Zhao at another
    hospital), with Cardiology's queue at both hospitals (Dermatology has none: Dr Li has no
    Location), a service queue (not a clinic), a table (not a doctor), and Dr Li paused."""
    world = a_hospital_day(app, venue, now)
    with cloud_db.session(app) as db:
        world["cardiology"] = clinic(db, venue.id, "Cardiology", now)
        world["theirs"] = clinic(db, world["elsewhere"], "Cardiology", now)
        world["pharmacy"] = clinic(db, venue.id, "Pharmacy", now, kind="service")
        world["zhao"] = db.scalar(select(BookingResource.id).where(
            BookingResource.venue_id == world["elsewhere"]))  # fmt: skip
        table = booking.create_resource(db, venue, ResourceSpec(name="Window table"), now)
        world["table"] = table.id
        booking.set_state(db, db.get(BookingResource, world["li"]), "pause", now)
        db.commit()
    return world


def patient_token(app: Flask, shopper_id: str) -> str:
    with app.app_context():
        return patients.token_for(app, shopper_id)


def refs(resource: dict[str, Any]) -> list[str]:
    """The Practitioner and Location references of a Schedule's actors or an Appointment's
    participants."""
    actors = resource.get("actor") or [p["actor"] for p in resource.get("participant", [])]
    return [a["reference"] for a in actors
            if a["reference"].split("/")[0] in ("Practitioner", "Location")]  # fmt: skip


def test_practitioners_are_the_doctors_read_and_searched_by_anyone(
    app: Flask, venue: Venue, clock: FakeClock
):
    world = a_directory(app, venue, clock())
    wang, li, zhao = (fid(world[n]) for n in ("wang", "li", "zhao"))
    phone = app.test_client()
    alice = patient_token(app, world["people"]["alice"])
    for token in (None, alice):  # public: nobody's token, a patient's
        doctor = fhir_get(phone, f"Practitioner/{wang}", token, 200)
        assert doctor == {"resourceType": "Practitioner", "id": wang, "active": True,
                          "name": [{"text": "Dr Wang"}]}  # fmt: skip
        assert fhir_get(phone, f"Practitioner/{li}", token, 200)["active"] is False  # paused
        assert ids(fhir_get(phone, "Practitioner", token, 200)) == [wang, zhao, li]  # by name

    def search(query: str) -> list[str]:
        return ids(fhir_get(phone, f"Practitioner?{query}", None, 200))

    assert search("name=wang") == [wang] and search("name=WANG") == [wang]
    assert search("name=dr") == [wang, zhao, li] and search("name=dr%20w") == [wang]
    assert search("name=ang") == []  # a word's start, not inside it
    assert search("name:contains=ang") == [wang]
    assert search("name:exact=Dr%20Wang") == [wang] and search("name:exact=dr%20wang") == []
    assert search("name=cardiology") == []  # the clinic is not the doctor's name
    assert search(f"_id={wang},{li}") == [wang, li]
    assert search(f"_id={wang}&_id={li}") == []
    assert search("active=true") == [wang, zhao] and search("active=false") == [li]
    assert search(f"name=dr&active=true&_id={zhao}") == [zhao]
    table, pharmacy = fid(world["table"]), world["pharmacy"]
    for missing in ("brs-0000000000000000", table, world["cardiology"], "nonsense"):
        outcome = fhir_get(phone, f"Practitioner/{missing}", None, 404)
        assert outcome["issue"][0]["code"] == "not-found"
    assert fhir_get(phone, f"Location/{pharmacy}", None, 404)["issue"][0]["code"] == "not-found"


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("Practitioner?name=", "invalid"),
        ("Practitioner?active=maybe", "invalid"),
        ("Practitioner?name:fuzzy=x", "not-supported"),
        ("Practitioner?family=Wang", "not-supported"),
        ("Location?name=", "invalid"),
        ("Location?status=active", "not-supported"),
    ],
)
def test_bad_directory_searches_are_400(client: FlaskClient, query: str, code: str):
    assert fhir_get(client, query, None, 400)["issue"][0]["code"] == code


def test_locations_are_the_clinics(app: Flask, venue: Venue, clock: FakeClock):
    world = a_directory(app, venue, clock())
    phone = app.test_client()
    cardiology, theirs = world["cardiology"], world["theirs"]
    place = fhir_get(phone, f"Location/{cardiology}", None, 200)
    assert place["name"] == "Cardiology" and place["status"] == "active"
    assert place["mode"] == "instance"
    assert ids(fhir_get(phone, "Location", None, 200)) == sorted([cardiology, theirs])
    assert ids(fhir_get(phone, "Location?name=cardio", None, 200)) == sorted([cardiology, theirs])
    assert ids(fhir_get(phone, f"Location?_id={cardiology}", None, 200)) == [cardiology]
    assert ids(fhir_get(phone, "Location?name=pharmacy", None, 200)) == []  # not a clinic
    with cloud_db.session(app) as db:
        queue = db.get(ServiceQueue, cardiology.replace("-", "_", 1))
        assert queue is not None
        queues.set_state(db, queue, "CLOSED", clock())
    assert fhir_get(phone, f"Location/{cardiology}", None, 200)["status"] == "suspended"


def test_schedules_and_appointments_reference_what_the_api_serves(
    app: Flask, venue: Venue, clock: FakeClock
):
    world = a_directory(app, venue, clock())
    wang, li, cardiology = fid(world["wang"]), fid(world["li"]), world["cardiology"]
    phone = app.test_client()
    schedule = fhir_get(phone, f"Schedule/{wang}", None, 200)
    assert schedule["actor"] == [
        {"reference": f"Practitioner/{wang}", "display": "Cardiology: Dr Wang"},
        {"reference": f"Location/{cardiology}", "display": "Cardiology"},
    ]
    assert refs(fhir_get(phone, f"Schedule/{li}", None, 200)) == [f"Practitioner/{li}"]
    clinician = token_of(app, venue)
    alice = patient_token(app, world["people"]["alice"])
    seen = {}
    for token, search in (
        (None, "Schedule"),
        (clinician, "Appointment"),
        (alice, f"Appointment?patient={fid(world['people']['alice'])}"),
    ):
        found = fhir_get(phone, search, token, 200)["entry"]  # fmt: skip
        for entry in found:
            for reference in refs(entry["resource"]):
                served = fhir_get(phone, reference, token, 200)  # resolves with the same token
                assert f"{served['resourceType']}/{served['id']}" == reference
                seen[reference] = served
    doctors = {fid(world[n]) for n in ("wang", "li", "zhao")}
    assert {r.split("/")[1] for r in seen if r.startswith("Practitioner/")} == doctors
    assert {r for r in seen if r.startswith("Location/")} == {
        f"Location/{cardiology}", f"Location/{world['theirs']}"}  # fmt: skip
    one = fhir_get(phone, f"Appointment/{fid(world['made'][0])}", clinician, 200)
    assert [p["actor"].get("display") for p in one["participant"][1:]] == [
        "Cardiology: Dr Wang", "Cardiology"]  # fmt: skip


def test_appointments_by_practitioner_location_and_actor(
    app: Flask, venue: Venue, clock: FakeClock
):
    world = a_directory(app, venue, clock())
    made = [fid(b) for b in world["made"]]
    wang, li, cardiology = fid(world["wang"]), fid(world["li"]), world["cardiology"]
    clinician = token_of(app, venue)
    phone = app.test_client()

    def search(query: str, token: str = clinician) -> list[str]:
        return ids(fhir_get(phone, f"Appointment?{query}", token, 200))

    everything = fhir_get(phone, "Appointment", clinician, 200)["entry"]
    wangs = [e["resource"]["id"] for e in everything
             if f"Practitioner/{wang}" in refs(e["resource"])]  # fmt: skip
    assert wangs == [made[0], made[1], made[4], made[5]]
    assert search(f"practitioner=Practitioner/{wang}") == wangs
    assert search(f"practitioner={wang}") == wangs  # a bare id
    assert search(f"actor=Practitioner/{wang}") == wangs
    assert search(f"schedule=Schedule/{wang}") == wangs  # Plaza's own, kept
    assert search(f"location=Location/{cardiology}") == wangs  # Dr Wang's clinic
    assert search(f"actor=Location/{cardiology}") == wangs
    assert search(f"practitioner=Practitioner/{li}") == [made[2], made[3]]  # paused, still his
    assert search(f"practitioner={wang}&practitioner={li}") == []  # repeated: all must match
    assert search(f"practitioner={li}&location={cardiology}") == []
    day1 = world["day1"]
    assert search(f"practitioner={wang}&date={day1}&status=booked") == [made[0], made[1]]
    alice = world["people"]["alice"]
    assert search(f"practitioner={wang}&actor=Patient/{fid(alice)}") == [made[0]]
    # a patient: their own, with any hospital's doctor (the directory is public)
    mine = patient_token(app, alice)
    own = f"patient=Patient/{fid(alice)}"
    assert search(f"{own}&practitioner={li}", mine) == [made[3]]
    assert search(f"{own}&practitioner={fid(world['zhao'])}", mine) == [fid(world["foreign"])]
    assert search(f"{own}&location={world['theirs']}", mine) == [fid(world["foreign"])]
    refused = fhir_get(phone, f"Appointment?practitioner={wang}", mine, 400)  # name yourself
    assert refused["issue"][0]["code"] == "invalid"


@pytest.mark.parametrize(
    ("query", "status", "code"),
    [
        ("practitioner=Patient/x", 400, "invalid"),
        ("practitioner=", 400, "invalid"),
        ("practitioner=Practitioner/", 400, "invalid"),
        ("location=Practitioner/x", 400, "invalid"),
        ("actor=Organization/x", 400, "not-supported"),
        ("actor=x", 400, "not-supported"),
        ("practitioner=Practitioner/brs-0000000000000000", 404, "not-found"),
        ("location=Location/svq-0000000000000000", 404, "not-found"),
        ("practitioner=Practitioner/{table}", 404, "not-found"),
        ("location=Location/{pharmacy}", 404, "not-found"),
        ("practitioner=Practitioner/{zhao}", 404, "not-found"),  # another hospital's
        ("actor=Practitioner/{zhao}", 404, "not-found"),
        ("location=Location/{theirs}", 404, "not-found"),
    ],
)
def test_bad_or_foreign_references_in_a_clinicians_search(
    app: Flask, venue: Venue, clock: FakeClock, query: str, status: int, code: str
):
    world = a_directory(app, venue, clock())
    names = {k: fid(world[k]) for k in ("table", "zhao")} | {
        k: world[k] for k in ("pharmacy", "theirs")}  # fmt: skip
    got = fhir_get(app.test_client(), f"Appointment?{query.format(**names)}",
                   token_of(app, venue), status)  # fmt: skip
    assert got["issue"][0]["code"] == code


def test_a_clinicians_token_scopes_the_directory_to_its_hospital(
    app: Flask, venue: Venue, clock: FakeClock
):
    world = a_directory(app, venue, clock())
    wang, li, zhao = (fid(world[n]) for n in ("wang", "li", "zhao"))
    ours, theirs = world["cardiology"], world["theirs"]
    phone = app.test_client()
    clinician = token_of(app, venue)
    with cloud_db.session(app) as db:
        rival = token_of(app, db.get(Venue, world["elsewhere"]))
    assert ids(fhir_get(phone, "Practitioner", clinician, 200)) == [wang, li]  # paused too
    assert ids(fhir_get(phone, "Location", clinician, 200)) == [ours]
    assert ids(fhir_get(phone, "Practitioner", rival, 200)) == [zhao]
    assert ids(fhir_get(phone, "Location", rival, 200)) == [theirs]
    for token, own, foreign in ((clinician, wang, zhao), (rival, zhao, wang)):
        assert fhir_get(phone, f"Practitioner/{own}", token, 200)["id"] == own
        outcome = fhir_get(phone, f"Practitioner/{foreign}", token, 404)
        assert outcome["issue"][0]["code"] == "not-found"
    assert fhir_get(phone, f"Location/{theirs}", clinician, 404)["resourceType"] == (
        "OperationOutcome")  # fmt: skip
    assert fhir_get(phone, f"Location/{ours}", rival, 404)
    assert fhir_get(phone, f"Practitioner/{zhao}", None, 200)  # public without a token
    assert ids(fhir_get(phone, f"Appointment?practitioner={zhao}", rival, 200)) == [
        fid(world["foreign"])]  # fmt: skip


def test_metadata_lists_practitioner_and_location(client: FlaskClient):
    rest = fhir_get(client, "metadata", None, 200)["rest"][0]
    served = {r["type"]: r for r in rest["resource"]}
    for name, params in (("Practitioner", {"_id": "token", "name": "string", "active": "token"}),
                         ("Location", {"_id": "token", "name": "string"})):  # fmt: skip
        assert {p["name"]: p["type"] for p in served[name]["searchParam"]} == params
        assert {i["code"] for i in served[name]["interaction"]} == {"read", "search-type"}
    notes = {p["name"]: p.get("documentation", "") for p in served["Appointment"]["searchParam"]}
    assert "Practitioner" in notes["actor"] and "Plaza's own" in notes["schedule"]
    assert "Practitioners and Locations" in rest["security"]["description"]
