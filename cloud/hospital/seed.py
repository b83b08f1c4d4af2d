"""A demo hospital: clinics, their doctors' schedules, free slots and the clinics' queues,
made with the cores' own calls (`plaza-cloud hospital seed VENUE`; the lab's `plaza-lab up`
runs it for its venue, so a phone on the lab's Wi-Fi arrives by presence).

Idempotent: a schedule or queue already there (by name) is kept and only the slots of the
days ahead are added (adding a slot twice adds nothing), so running it every day keeps a
week of free times.

`--on-call` adds a doctor on call around the clock, every day, with a fee: the demo and the
browser test book a slot that starts within 20 minutes, whenever they run, so arriving
(from 30 minutes before the slot) is allowed at once. A real hospital would not seed it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud.models import Venue
from cloud.o2o import booking, booking_slots, queues
from cloud.o2o.booking import ResourceSpec
from cloud.o2o.booking_models import BookingResource
from cloud.o2o.queue_models import ServiceQueue

TZ = "Asia/Shanghai"
HOURS = (("08:00", "12:00"), ("13:30", "17:00"))
# (clinic, queue prefix, doctors, fee in fen)
CLINICS = (
    ("Cardiology", "C", ("Dr Wang", "Dr Li"), 2000),
    ("Dermatology", "D", ("Dr Chen",), 1500),
    ("General Practice", "G", ("Dr Zhao",), 0),
)
ON_CALL = ("Emergency", "E", ("Dr Sun",), 1000)
ALL_DAY = (("00:00", "24:00"),)


class SeedError(Exception):
    """The venue to seed does not exist."""


def seed(
    db: Session, venue_id: str, now: float, days: int = 7, on_call: bool = False
) -> dict[str, int]:
    """The demo hospital at `venue_id` (and its doctor on call); counts of what was added."""
    venue = db.get(Venue, venue_id)
    if venue is None:
        raise SeedError(f"no venue {venue_id}")
    added = {"schedules": 0, "queues": 0, "slots": 0}
    first = dt.datetime.fromtimestamp(now, dt.UTC).date()
    for clinic, prefix, doctors, fee in CLINICS + ((ON_CALL,) if on_call else ()):
        always = (clinic, prefix, doctors, fee) == ON_CALL
        query = select(ServiceQueue.id).where(ServiceQueue.venue_id == venue.id,
                                              ServiceQueue.name == clinic)  # fmt: skip
        if db.scalar(query) is None:
            queues.create_queue(db, venue.id, queues.QueueSpec(
                name=clinic, prefix=prefix, kind="clinic", time_zone=TZ, service_seconds=600),
                now)  # fmt: skip
            added["queues"] += 1
        for doctor in doctors:
            name = f"{clinic}: {doctor}"
            resource = db.scalar(select(BookingResource).where(
                BookingResource.venue_id == venue.id, BookingResource.name == name))  # fmt: skip
            if resource is None:
                spec = ResourceSpec(name=name, kind="appointment", capacity=1, slot_minutes=20,
                                    hours=ALL_DAY if always else HOURS,
                                    weekdays="1234567" if always else "123456", tz=TZ, deposit=fee,
                                    hold_minutes=15, cancel_cutoff_minutes=240)  # fmt: skip
                resource = booking.create_resource(db, venue, spec, now)
                added["schedules"] += 1
            added["slots"] += booking_slots.generate(db, resource, first, days)
    return added


def cmd_seed(args: argparse.Namespace, make_app: Callable[[argparse.Namespace], Flask]) -> int:
    from cloud import db as cloud_db

    app = make_app(args)
    try:
        with app.app_context(), cloud_db.session(app) as db:
            print(json.dumps(seed(db, args.venue, time.time(), args.days, args.on_call)))
    except (SeedError, booking.BookingError) as exc:
        print(f"plaza-cloud hospital seed: {exc}", file=sys.stderr)
        return 2
    finally:
        cloud_db.engine(app).dispose()
    return 0


def add_parser(sub: Any, make_app: Callable[[argparse.Namespace], Flask]) -> None:
    """The `hospital` command group, under plaza-cloud's subparsers."""
    hospital = sub.add_parser("hospital", help="the hospital's FHIR API: demo data")
    group = hospital.add_subparsers(dest="hospital_command", required=True)
    s = group.add_parser("seed", help="clinics, schedules, a week of free slots, clinic queues")
    s.add_argument("venue", help="the hospital's venue id")
    s.add_argument("--days", type=int, default=7)
    s.add_argument(
        "--on-call",
        action="store_true",
        help="a doctor on call around the clock "
        "(the lab's demo: a slot to arrive at, whatever the hour)",
    )
    s.set_defaults(func=lambda a: cmd_seed(a, make_app))
