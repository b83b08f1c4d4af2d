"""A clinician searches their hospital's appointments through FHIR (issue 17): the token the
signed-in dashboard hands out for one venue, searches by date (eq ge gt le lt), status,
actor/patient, schedule and slot, `_count` with the Bundle's paging links, reads of their own
hospital's appointments only (another's is a 404 OperationOutcome); a patient's token and a
clinician's never pass for each other; patients still see only their own. On SQLite and
PostgreSQL; every answer validated by `fhir.resources` (fhir_helpers.valid)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from itsdangerous import URLSafeTimedSerializer

from cloud.hospital import clinicians, patients
from cloud.models import Venue
from tests.cloud.dashboard_helpers import sign_in
from tests.cloud.fhir_helpers import fhir_get, fid
from tests.cloud.hospital_day import RIVAL, ZONE, a_hospital_day, ids, token_of
from tests.conftest import FakeClock


def clinician_token(client: FlaskClient, venue_id: str) -> str:
    got = client.get(f"/dashboard/hospital/{venue_id}/token")
    assert got.status_code == 200, got.get_data(as_text=True)
    assert got.headers["Cache-Control"] == "no-store" and got.mimetype == "application/json"
    body = got.get_json()
    assert body["token_type"] == "Bearer" and body["venue"] == venue_id
    return body["access_token"]


def links(bundle: dict[str, Any]) -> dict[str, str]:
    return {link["relation"]: link["url"] for link in bundle["link"]}


def test_the_clinician_token_comes_from_the_signed_in_dashboard_for_own_venues(
    app: Flask, venue: Venue, clock: FakeClock
):
    world = a_hospital_day(app, venue, clock())
    browser = app.test_client()
    signed_out = browser.get(f"/dashboard/hospital/{venue.id}/token")
    assert signed_out.status_code in (302, 303, 401) and b"access_token" not in signed_out.data
    assert sign_in(browser).status_code == 303
    token = clinician_token(browser, venue.id)
    assert browser.get(f"/dashboard/hospital/{world['elsewhere']}/token").status_code == 404
    assert browser.get("/dashboard/hospital/ven_0000000000000000/token").status_code == 404
    phone = app.test_client()
    everything = fhir_get(phone, "Appointment", token, 200)
    assert everything["total"] == 6 and fid(world["foreign"]) not in ids(everything)


def test_neither_token_passes_for_the_other(app: Flask, venue: Venue, clock: FakeClock):
    world = a_hospital_day(app, venue, clock())
    alice = world["people"]["alice"]
    phone = app.test_client()
    with app.app_context():
        patient = patients.token_for(app, alice)
        clinician = clinicians.token_for(app, venue.merchant_id, venue.id)
        key = app.config["SECRET_KEY"]
    # the clinician's claims under the patient's salt, and the other way round
    forged_clinician = URLSafeTimedSerializer(key, salt=patients.SALT).dumps(
        {"mrc": venue.merchant_id, "ven": venue.id})  # fmt: skip
    forged_patient = URLSafeTimedSerializer(key, salt=clinicians.SALT).dumps({"shp": alice})
    assert fhir_get(phone, "Appointment", forged_clinician, 401)["issue"][0]["code"] == "login"
    assert fhir_get(phone, f"Patient/{fid(alice)}", forged_patient, 401)
    assert fhir_get(phone, f"Patient/{fid(alice)}", clinician, 401)  # no patient's records
    assert fhir_get(phone, f"Appointment?patient={fid(alice)}", forged_patient, 401)
    # the patient's own token: their own appointments, never the hospital's
    assert fhir_get(phone, "Appointment", patient, 400)["issue"][0]["code"] == "invalid"
    mine = fhir_get(phone, f"Appointment?patient=Patient/{fid(alice)}", patient, 200)
    assert sorted(ids(mine)) == sorted(fid(b) for b in (world["made"][0], world["made"][3],
                                                        world["foreign"]))  # fmt: skip
    bob = world["people"]["bob"]
    assert fhir_get(phone, f"Appointment?actor=Patient/{fid(bob)}", patient, 403)
    assert fhir_get(phone, f"Appointment/{fid(world['made'][1])}", patient, 403)
    # a clinician writes nothing here
    body = {"resourceType": "Appointment", "id": fid(world["made"][0]), "status": "cancelled"}
    put = phone.put(f"/fhir/r4/Appointment/{fid(world['made'][0])}", json=body,
                    content_type="application/fhir+json",
                    headers={"Authorization": f"Bearer {clinician}"})  # fmt: skip
    assert put.status_code == 401 and put.get_json()["resourceType"] == "OperationOutcome"


def test_a_clinician_searches_by_date_status_actor_schedule_and_slot(
    app: Flask, venue: Venue, clock: FakeClock
):
    world = a_hospital_day(app, venue, clock())
    made, people = [fid(b) for b in world["made"]], world["people"]
    token = token_of(app, venue)
    phone = app.test_client()

    def search(query: str, status: int = 200) -> dict[str, Any]:
        return fhir_get(phone, f"Appointment?{query}", token, status)

    day1, day2 = world["day1"], world["day1"] + dt.timedelta(days=1)
    assert ids(search(f"date={day1}")) == made[:3]  # earliest first
    assert ids(search(f"date=eq{day2}")) == made[3:]
    assert ids(search(f"date=ge{day2}&status=booked")) == [made[3], made[4]]
    assert ids(search(f"date=le{day1}&date=ge{day1}")) == ids(search(f"date={day1}"))
    eight = dt.datetime.combine(day1, dt.time(8, 30), ZONE).isoformat()
    assert ids(search(f"date=lt{eight.replace('+', '%2B')}")) == [made[0]]
    assert ids(search(f"date=le{eight.replace('+', '%2B')}")) == [made[0], made[1]]
    assert ids(search(f"date=gt{day1}")) == made[3:]
    assert ids(search("status=cancelled")) == [made[5]]
    assert ids(search(f"status=booked,cancelled&date=eq{day2}")) == made[3:]
    assert search("status=proposed")["total"] == 0  # a code, not one of ours
    assert ids(search(f"actor=Patient/{fid(people['alice'])}")) == [made[0], made[3]]
    assert ids(search(f"patient={fid(people['bob'])}")) == [made[1], made[4]]
    assert ids(search(f"schedule=Schedule/{fid(world['li'])}")) == [made[2], made[3]]
    assert ids(search(f"slot=Slot/{fid(world['wang_slots'][1])}")) == [made[1]]
    one = search(f"schedule={fid(world['wang'])}&date={day1}")["entry"][0]["resource"]
    assert one["status"] == "booked" and one["participant"][1]["actor"]["display"] == (
        "Cardiology: Dr Wang"
    )
    for bad, code in (("status=maybe", "invalid"), ("date=soon", "invalid"),
                      ("date=2026-01-01T08:00", "invalid"), ("actor=Device/x",
                      "not-supported"), ("actor=Practitioner/x", "not-found"),
                      ("practitioner=Schedule/x", "invalid"),
                      ("schedule=Schedule/brs-nope", "not-found"),
                      ("_count=0", "invalid"), ("_offset=x", "invalid"),
                      ("colour=red", "not-supported")):  # fmt: skip
        status = 404 if code == "not-found" else 400
        assert search(bad, status)["issue"][0]["code"] == code, bad


def test_a_clinician_pages_through_with_the_bundle_links(
    app: Flask, venue: Venue, clock: FakeClock
):
    world = a_hospital_day(app, venue, clock())
    token = token_of(app, venue)
    phone = app.test_client()
    everything = ids(fhir_get(phone, "Appointment", token, 200))
    assert sorted(everything) == sorted(fid(b) for b in world["made"])
    seen, url, pages = [], "Appointment?_count=4", 0
    while url:
        page = fhir_get(phone, url, token, 200)
        assert page["total"] == 6 and len(page["entry"]) <= 4
        seen += ids(page)
        pages += 1
        assert ("previous" in links(page)) == (pages > 1)
        url = links(page).get("next", "")
    assert pages == 2 and seen == everything  # each once, in order
    assert fhir_get(phone, "Appointment?_count=4&_offset=4&status=booked", token,
                    200)["entry"][0]["resource"]["status"] == "booked"  # fmt: skip


def test_a_clinician_reads_only_their_own_hospitals_appointments(
    app: Flask, venue: Venue, clock: FakeClock
):
    world = a_hospital_day(app, venue, clock())
    token = token_of(app, venue)
    phone = app.test_client()
    own = fhir_get(phone, f"Appointment/{fid(world['made'][1])}", token, 200)
    assert own["id"] == fid(world["made"][1]) and own["status"] == "booked"
    for missing in (world["foreign"], "bkg_0000000000000000", "nonsense"):
        outcome = fhir_get(phone, f"Appointment/{fid(missing)}", token, 404)
        assert outcome["issue"][0]["code"] == "not-found"
    rival = app.test_client()
    assert sign_in(rival, *RIVAL).status_code == 303
    theirs = clinician_token(rival, world["elsewhere"])
    assert fhir_get(phone, f"Appointment/{fid(world['foreign'])}", theirs, 200)
    assert fhir_get(phone, f"Appointment/{fid(world['made'][1])}", theirs, 404)
    assert ids(fhir_get(phone, "Appointment", theirs, 200)) == [fid(world["foreign"])]


def test_metadata_says_what_appointment_search_supports(app: Flask):
    body = fhir_get(app.test_client(), "metadata", None, 200)
    rest = body["rest"][0]
    served = {r["type"]: r for r in rest["resource"]}
    params = {p["name"]: p["type"] for p in served["Appointment"]["searchParam"]}
    references = {name: "reference" for name in ("patient", "actor", "practitioner", "location",
                                                 "slot", "schedule")}  # fmt: skip
    assert params == {"date": "date", "status": "token", **references}
    assert "/dashboard/hospital/<venue>/token" in rest["security"]["description"]
