"""100 patients booking one slot of capacity 10 through the FHIR API at once get exactly 10
Appointments, the other 90 a 409 OperationOutcome (PostgreSQL; SQLite, whose writer is
single, 30 patients on a capacity of 3). Each patient is its own client and bearer token."""

from __future__ import annotations

import datetime as dt
import threading
from collections import Counter

from flask import Flask
from sqlalchemy import func, select

from cloud import db as cloud_db
from cloud.hospital import patients
from cloud.models import Venue
from cloud.o2o import booking, booking_slots
from cloud.o2o.booking import ResourceSpec
from cloud.o2o.booking_models import Booking, BookingSlot
from cloud.o2o.shoppers import find_or_create
from tests.conftest import FakeClock

MIME = "application/fhir+json"


def test_100_patients_on_a_slot_of_10_make_10_appointments(
    app: Flask, venue: Venue, clock: FakeClock
):
    postgres = cloud_db.engine(app).dialect.name == "postgresql"
    clients, seats = (100, 10) if postgres else (30, 3)
    with cloud_db.session(app) as db:
        spec = ResourceSpec(name="Vaccination: Room 1", kind="appointment", capacity=seats,
                            slot_minutes=60, hours=(("09:00", "10:00"),))  # fmt: skip
        resource = booking.create_resource(db, venue, spec, clock())
        day = dt.datetime.fromtimestamp(clock(), dt.UTC).date() + dt.timedelta(days=1)
        assert booking_slots.generate(db, resource, day, 1) == 1
        slot_id = db.scalars(select(BookingSlot.id)).one()
        shoppers = [find_or_create(db, "oidc", f"p{i}", None, clock()).id for i in range(clients)]
    with app.app_context():
        tokens = [patients.token_for(app, s) for s in shoppers]
    body = {"resourceType": "Appointment", "status": "booked",
            "slot": [{"reference": "Slot/" + slot_id.replace("_", "-", 1)}]}  # fmt: skip
    outcomes: Counter = Counter()
    lock = threading.Lock()
    start = threading.Barrier(clients)

    def run(i: int) -> None:
        client = app.test_client()
        start.wait()
        answer = client.post("/fhir/r4/Appointment", json=body, content_type=MIME,
                             headers={"Authorization": f"Bearer {tokens[i]}"})  # fmt: skip
        issue = (answer.get_json().get("issue") or [{}])[0].get("code", "")
        with lock:
            outcomes[(answer.status_code, answer.get_json()["resourceType"], issue)] += 1

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes == {
        (201, "Appointment", ""): seats,
        (409, "OperationOutcome", "conflict"): clients - seats,
    }, outcomes
    with cloud_db.session(app) as db:
        slot = db.get(BookingSlot, slot_id)
        assert slot is not None and slot.taken == seats
        booked = db.scalar(select(func.count()).select_from(Booking)
                           .where(Booking.state == "CONFIRMED"))  # fmt: skip
        assert booked == seats
        owners = db.scalars(select(Booking.shopper_id)).all()
        assert len(set(owners)) == seats  # ten different patients, one seat each
