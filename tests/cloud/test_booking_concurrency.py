"""Booking contention (issue 16): 100 clients booking 10 slots at once, each thread on its own
connection, give exactly 10 bookings and no slot booked twice (PostgreSQL; SQLite, whose
writer is single, with 30 clients on 3 slots)."""

from __future__ import annotations

from collections import Counter

import sqlalchemy as sa
from flask import Flask

from cloud import db as cloud_db
from cloud.models import Venue
from cloud.o2o import booking, booking_slots
from cloud.o2o.booking import BookingError, ResourceSpec
from cloud.o2o.booking_models import Booking, BookingSlot
from cloud.o2o.shoppers import find_or_create
from tests.cloud.o2o_helpers import check_books, race
from tests.conftest import FakeClock


def contend(app: Flask, slots: list[str], shoppers: list[str], now: float,
            connections: int) -> Counter:  # fmt: skip
    """Shopper i holds slot i % len(slots), all released at once."""

    def work(db, i: int) -> str:
        booking.hold(db, slots[i % len(slots)], shoppers[i], now)
        return "ok"

    return race(app, len(shoppers), connections, work, BookingError)


def test_100_clients_on_10_slots_make_10_bookings(app: Flask, venue: Venue, clock: FakeClock):
    postgres = cloud_db.engine(app).dialect.name == "postgresql"
    clients, seats = (100, 10) if postgres else (30, 3)
    with cloud_db.session(app) as db:
        resource = booking.create_resource(db, venue, ResourceSpec(name="Table"), clock())
        starts = [clock() + 3600 * (i + 1) for i in range(seats)]
        booking_slots.add_slots(db, resource, [(s, s + 3600) for s in starts])
        slots = list(db.scalars(sa.select(BookingSlot.id).order_by(BookingSlot.starts_at)))
        people = [find_or_create(db, "oidc", f"u{i}", None, clock()).id for i in range(clients)]
    outcomes = contend(app, slots, people, clock(), 30 if postgres else 8)
    assert outcomes == {"ok": seats, "taken": clients - seats}
    with cloud_db.session(app) as db:
        per_slot = Counter(db.scalars(sa.select(Booking.slot_id)))
        assert per_slot == {slot: 1 for slot in slots}  # 0 double-booking, no slot left empty
        assert set(db.scalars(sa.select(BookingSlot.taken))) == {1}
    check_books(app)
