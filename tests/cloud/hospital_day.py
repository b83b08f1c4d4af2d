"""The hospital day the FHIR clinician and directory tests share (tests/cloud/
test_fhir_clinicians.py, test_fhir_directory.py): two doctors with appointments over two days,
another hospital with one of its own; a clinician's token; a Bundle's ids."""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

from flask import Flask
from sqlalchemy import select

from cloud import db as cloud_db
from cloud.accounts import create_merchant, create_venue
from cloud.hospital import clinicians, visits
from cloud.models import Venue
from cloud.o2o import booking, booking_slots
from cloud.o2o.booking import ResourceSpec
from cloud.o2o.booking_models import BookingSlot
from cloud.o2o.shoppers import find_or_create

ZONE = ZoneInfo("Asia/Shanghai")
RIVAL = ("dr@other.example", "pw-pw-pw-pw-pw")


def schedule(db: Any, venue: Venue, name: str, now: float) -> tuple[str, list[str]]:
    """A schedule of 30-minute slots 08:00-10:00 from tomorrow, two days; (id, slot ids)."""
    spec = ResourceSpec(name=name, kind="appointment", slot_minutes=30,
                        hours=(("08:00", "10:00"),))  # fmt: skip
    resource = booking.create_resource(db, venue, spec, now)
    booking_slots.generate(db, resource, dt.datetime.fromtimestamp(now, ZONE).date()
                           + dt.timedelta(days=1), 2)  # fmt: skip
    slots = db.scalars(select(BookingSlot.id).where(BookingSlot.resource_id == resource.id)
                       .order_by(BookingSlot.starts_at))  # fmt: skip
    return resource.id, list(slots)


def a_hospital_day(app: Flask, venue: Venue, now: float) -> dict[str, Any]:
    """Two doctors at the venue, three patients, six appointments over two days (one
    cancelled), and another hospital with one appointment of alice's."""
    with cloud_db.session(app) as db:
        wang, wang_slots = schedule(db, venue, "Cardiology: Dr Wang", now)
        li, li_slots = schedule(db, venue, "Dermatology: Dr Li", now)
        people = {n: find_or_create(db, "oidc", n, n.title(), now).id
                  for n in ("alice", "bob", "carol")}  # fmt: skip
        plan = [("alice", wang_slots[0]), ("bob", wang_slots[1]), ("carol", li_slots[2]),
                ("alice", li_slots[5]), ("bob", wang_slots[6]),
                ("carol", wang_slots[7])]  # 08:00 08:30 09:00, then 08:30 09:00 09:30  # fmt: skip
        made = [visits.book(db, slot, people[who], now, None).id for who, slot in plan]
        booking.cancel(db, made[5], people["carol"], now)
        rival = create_merchant(db, "Other Hospital", *RIVAL, now)
        elsewhere = create_venue(db, rival.id, "Other Hospital", now, "other.test")
        _, far_slots = schedule(db, elsewhere, "Cardiology: Dr Zhao", now)
        foreign = visits.book(db, far_slots[0], people["alice"], now, None).id
        db.commit()
        day1 = dt.datetime.fromtimestamp(now, ZONE).date() + dt.timedelta(days=1)
    return {"wang": wang, "li": li, "people": people, "made": made, "foreign": foreign,
            "wang_slots": wang_slots, "day1": day1, "elsewhere": elsewhere.id}  # fmt: skip


def token_of(app: Flask, venue: Venue) -> str:
    """The venue's clinician's token, as the dashboard would hand it out."""
    with app.app_context():
        return clinicians.token_for(app, venue.merchant_id, venue.id)


def ids(bundle: dict[str, Any]) -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", [])]
