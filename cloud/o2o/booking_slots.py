"""The slot inventory: slots made from a resource's opening hours, or listed one by one, and
the free ones a shopper can pick from.

Opening hours are the resource's local time (`tz`): a slot starting at 18:00 in Shanghai is
stored as that instant in epoch seconds, so a daylight-saving change elsewhere (issue 17's
hospitals may be anywhere) moves nothing. Adding slots is idempotent: (resource, starts_at)
is unique and a slot already there is left alone (its bookings and capacity untouched), so a
merchant can press "add the next 7 days" every day, and two instances doing it race safely.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud.db import dialect_insert
from cloud.models import new_id
from cloud.o2o.booking import BookingError, _hhmm
from cloud.o2o.booking_models import BookingResource, BookingSlot

MAX_DAYS = 62
MAX_SLOTS = 5000  # per call


def windows(resource: BookingResource, first_day: dt.date, days: int) -> list[tuple[float, float]]:
    """Every (start, end) of `days` days from `first_day`, from the resource's hours."""
    if not 0 < days <= MAX_DAYS:
        raise BookingError("invalid_days", f"add slots for 1 to {MAX_DAYS} days at a time")
    zone = zoneinfo.ZoneInfo(resource.tz)
    step = resource.slot_minutes
    found: list[tuple[float, float]] = []
    for n in range(days):
        day = first_day + dt.timedelta(days=n)
        if str(day.isoweekday()) not in resource.weekdays:
            continue
        midnight = dt.datetime(day.year, day.month, day.day, tzinfo=zone)
        for start, end in resource.hours:
            minute, last = _hhmm(start), _hhmm(end)
            while minute + step <= last:
                begin = midnight + dt.timedelta(minutes=minute)
                # Wall-clock arithmetic in the zone, then to an instant: a slot is its local
                # start and length, even on the day clocks change.
                found.append((begin.timestamp(), begin.timestamp() + step * 60))
                minute += step
    return found


def add_slots(
    db: Session,
    resource: BookingResource,
    intervals: Iterable[tuple[float, float]],
    capacity: int | None = None,
) -> int:
    """Store the intervals as slots of `resource` (the resource's capacity unless given);
    the number added (slots already there are kept as they are). Commits."""
    rows = []
    for starts_at, ends_at in intervals:
        if not 0 < starts_at < ends_at or ends_at - starts_at > 86400:
            raise BookingError("invalid_slot", "a slot ends after it starts, within a day")
        rows.append(
            {
                "id": new_id("bsl"),
                "resource_id": resource.id,
                "starts_at": starts_at,
                "ends_at": ends_at,
                "capacity": capacity or resource.capacity,
                "taken": 0,
            }
        )
    if len(rows) > MAX_SLOTS:
        raise BookingError("invalid_slot", f"at most {MAX_SLOTS} slots at a time")
    if not rows:
        return 0
    statement = (
        dialect_insert(db, BookingSlot)
        .on_conflict_do_nothing(index_elements=["resource_id", "starts_at"])
        .returning(BookingSlot.id)
    )
    added = len(db.execute(statement, rows).all())
    db.commit()
    return added


def generate(db: Session, resource: BookingResource, first_day: dt.date, days: int) -> int:
    """Slots for `days` days from the opening hours; the number added. Commits."""
    return add_slots(db, resource, windows(resource, first_day, days))


def open_slots(
    db: Session, venue_id: str, now: float, until: float, resource_id: str | None = None
) -> list[tuple[BookingSlot, BookingResource]]:
    """The venue's slots from now to `until` of its active resources, with free seats or not
    (the page shows a full one as full), earliest first. A seat held past its expiry counts
    as taken here until a hold or the sweep releases it: the page is a hint, `hold` decides."""
    query = (
        select(BookingSlot, BookingResource)
        .join(BookingResource, BookingResource.id == BookingSlot.resource_id)
        .where(BookingResource.venue_id == venue_id, BookingResource.state == "ACTIVE",
               BookingSlot.starts_at > now, BookingSlot.starts_at <= until)
        .order_by(BookingSlot.starts_at, BookingResource.name)
        .limit(500)
    )  # fmt: skip
    if resource_id is not None:
        query = query.where(BookingResource.id == resource_id)
    return [(slot, resource) for slot, resource in db.execute(query).all()]
