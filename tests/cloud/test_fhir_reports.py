"""Reports (issue 17 item 4) on both databases: the hospital's clinician (its merchant
account, signed in to the dashboard) uploads a PDF for an appointment; the patient reads the
DiagnosticReport and its PDF with the FHIR bearer token; nobody else can: another patient
403, nobody signed in 401, another hospital's clinician 404 (the dashboard's tenancy), a
file that is no PDF refused. Every FHIR resource is validated by fhir.resources (R4B)."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import io
import re
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from cloud import db as cloud_db
from cloud.accounts import create_merchant, create_venue
from cloud.hospital import patients
from cloud.models import Venue
from cloud.o2o import booking, booking_slots
from cloud.o2o.booking import ResourceSpec
from cloud.o2o.booking_models import BookingSlot
from cloud.o2o.shoppers import find_or_create
from tests.cloud.dashboard_helpers import sign_in
from tests.cloud.fhir_helpers import FHIR, fhir_get
from tests.conftest import FakeClock

PDF = b"%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def appointment(app: Flask, venue: Venue, user: str, now: float) -> tuple[str, str]:
    """A confirmed appointment of `user` tomorrow; (booking id, shopper id)."""
    with cloud_db.session(app) as db:
        spec = ResourceSpec(name="Radiology: Room 2", kind="appointment", slot_minutes=30,
                            hours=(("09:00", "10:00"),))  # fmt: skip
        resource = booking.create_resource(db, venue, spec, now)
        day = dt.datetime.fromtimestamp(now, dt.UTC).date() + dt.timedelta(days=1)
        booking_slots.generate(db, resource, day, 1)
        slot = db.scalars(select(BookingSlot.id).where(BookingSlot.resource_id == resource.id)
                          .order_by(BookingSlot.starts_at)).first()  # fmt: skip
        assert slot is not None
        shopper = find_or_create(db, "oidc", user, user.title(), now).id
        held = booking.hold(db, slot, shopper, now)
        return booking.confirm(db, held.id, shopper, now).id, shopper


def upload(client: FlaskClient, venue_id: str, booking_id: str, data: bytes = PDF,
           page_of: str | None = None) -> Any:  # fmt: skip
    """The upload form sent, its CSRF token from the page at `page_of` (default the venue's)."""
    page = client.get(page_of or f"/dashboard/hospital/{venue_id}")
    token = CSRF.search(page.get_data(as_text=True))
    form = {"csrf_token": token.group(1) if token else "", "booking_id": booking_id,
            "title": "Chest X-ray", "conclusion": "No findings.",
            "pdf": (io.BytesIO(data), "report.pdf", "application/pdf")}  # fmt: skip
    return client.post(f"/dashboard/hospital/{venue_id}/reports", data=form,
                       content_type="multipart/form-data")  # fmt: skip


def test_a_report_reaches_its_patient_and_nobody_else(app: Flask, venue: Venue,
                                                      clock: FakeClock):  # fmt: skip
    booking_id, alice = appointment(app, venue, "alice", clock())
    with cloud_db.session(app) as db:
        bob = find_or_create(db, "oidc", "bob", "Bob", clock()).id
        other = create_merchant(db, "Other Hospital", "dr@other.example", "pw-pw-pw-pw-pw",
                                clock())  # fmt: skip
        other_venue = create_venue(db, other.id, "Other Hospital", clock(), "other.test")
        db.commit()
    with app.app_context():
        alice_token, bob_token = (patients.token_for(app, s) for s in (alice, bob))

    clinician = app.test_client()
    assert sign_in(clinician).status_code == 303
    page = clinician.get(f"/dashboard/hospital/{venue.id}")
    assert page.status_code == 200 and "Radiology: Room 2" in page.get_data(as_text=True)
    assert upload(clinician, venue.id, booking_id, b"<html>not a pdf").status_code == 400
    assert upload(clinician, venue.id, booking_id).status_code == 303

    phone = app.test_client()
    found = fhir_get(phone, f"DiagnosticReport?patient=Patient/{alice.replace('_', '-', 1)}",
                     alice_token, 200)  # fmt: skip
    (entry,) = found["entry"]
    report = entry["resource"]
    assert report["status"] == "final" and report["conclusion"] == "No findings."
    assert report["code"]["text"] == "Chest X-ray"
    form = report["presentedForm"][0]
    assert form["contentType"] == "application/pdf" and form["size"] == len(PDF)
    assert form["hash"] == base64.b64encode(hashlib.sha1(PDF).digest()).decode()
    assert fhir_get(phone, f"DiagnosticReport/{report['id']}", alice_token, 200) == report
    binary = form["url"].split(FHIR, 1)[1]
    pdf = phone.get(f"{FHIR}{binary}", headers={"Authorization": f"Bearer {alice_token}"})
    assert pdf.status_code == 200 and pdf.mimetype == "application/pdf" and pdf.data == PDF
    assert pdf.headers["X-Content-Type-Options"] == "nosniff"

    # Nobody else: another patient, nobody signed in, another hospital's clinician.
    for path in (f"DiagnosticReport/{report['id']}", binary.lstrip("/")):
        assert fhir_get(phone, path, bob_token, 403)["issue"][0]["code"] == "forbidden"
        assert fhir_get(phone, path, None, 401)["issue"][0]["code"] == "login"
    assert fhir_get(phone, f"DiagnosticReport?patient={alice.replace('_', '-', 1)}", bob_token,
                    403)["resourceType"] == "OperationOutcome"  # fmt: skip
    assert fhir_get(phone, f"DiagnosticReport?patient={bob.replace('_', '-', 1)}", bob_token,
                    200)["total"] == 0  # fmt: skip
    report_id = report["id"].replace("-", "_", 1)
    assert clinician.get(f"/dashboard/hospital/{venue.id}/reports/{report_id}.pdf").data == PDF

    rival = app.test_client()
    assert sign_in(rival, "dr@other.example", "pw-pw-pw-pw-pw").status_code == 303
    assert rival.get(f"/dashboard/hospital/{venue.id}").status_code == 404
    assert upload(rival, venue.id, booking_id, page_of="/dashboard/").status_code == 404
    # at its own hospital, the appointment of another is not there either
    assert upload(rival, other_venue.id, booking_id, page_of="/dashboard/").status_code == 404
    assert rival.get(f"/dashboard/hospital/{other_venue.id}/reports/{report_id}.pdf"
                     ).status_code == 404  # fmt: skip
    assert rival.get(f"/dashboard/hospital/{venue.id}/reports/{report_id}.pdf").status_code == 404
