"""The lab venue's shop: one voucher offer, a bookable table with a deposit, a service desk.

Made with the cloud's own domain functions (the ones the dashboard's forms call), not SQL, so
the seed is refused for the same reasons a merchant's form would be and stays in step with the
models. Times are real time: the lab cloud serves shoppers now, and the table has slots all
day for the next days so a demo at any hour finds one ahead.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from pathlib import Path

VOUCHER_TITLE = "Flat white voucher: ¥5 off ¥20 or more"
TABLE_NAME = "Window table"
TABLE_DEPOSIT = 5000  # fen: ¥50.00, paid through the wallet when the table is booked
QUEUE_NAME = "Service desk"
QUEUE_PREFIX = "A"


@dataclass(frozen=True)
class PlazaSeed:
    template_id: str
    resource_id: str
    queue_id: str


def seed(database: Path, venue_id: str, merchant_id: str, now: float | None = None) -> PlazaSeed:
    """The venue's ACTIVE voucher template, its table (hourly slots, today and 2 more days, in
    the venue's time zone) and its OPEN service queue. Committed by the domain functions."""
    from sqlalchemy.orm import Session

    from cloud.db import make_engine
    from cloud.models import Venue
    from cloud.o2o import booking, booking_slots, queues, vouchers

    at = time.time() if now is None else now
    engine = make_engine(f"sqlite:///{database}")
    try:
        with Session(engine) as db:
            venue = db.get(Venue, venue_id)
            if venue is None:
                raise LookupError(f"no venue {venue_id}")
            offer = vouchers.TemplateSpec(
                title=VOUCHER_TITLE, kind="amount", amount_off=500, min_spend=2000,
                budget=100, per_user_limit=1, valid_days=30,
            )  # fmt: skip
            template = vouchers.create_template(db, venue, offer, merchant_id, at)
            vouchers.change_state(db, template, "activate", merchant_id, at)
            table = booking.ResourceSpec(
                name=TABLE_NAME, kind="table", capacity=1, slot_minutes=60,
                hours=(("00:00", "24:00"),), tz="Asia/Shanghai", deposit=TABLE_DEPOSIT,
                hold_minutes=10, cancel_cutoff_minutes=120,
            )  # fmt: skip
            resource = booking.create_resource(db, venue, table, at)
            today = dt.datetime.fromtimestamp(at, queues.zone(table.tz)).date()
            booking_slots.generate(db, resource, today, 3)
            desk = queues.QueueSpec(name=QUEUE_NAME, prefix=QUEUE_PREFIX, time_zone=table.tz)
            queue = queues.create_queue(db, venue.id, desk, at)
            return PlazaSeed(template.id, resource.id, queue.id)
    finally:
        engine.dispose()
