"""Bookings: resources, a slot inventory that never double-books, and a booking's life.

    HELD --confirm (no deposit) / deposit paid--> CONFIRMED --check-in--> CHECKED_IN
    CHECKED_IN --slot over--> COMPLETED        CONFIRMED --slot started + grace--> NO_SHOW
    HELD --hold ran out--> EXPIRED             HELD | CONFIRMED --cancel--> CANCELLED

A seat is taken by `hold` with a conditional `UPDATE booking_slots SET taken = taken + 1
WHERE id = ? AND taken < capacity` in the transaction that inserts the booking: whatever the
interleaving, on any number of instances, a slot never has more bookings than seats (the
figure: 100 clients on 10 slots give 10 bookings, tests/cloud/test_booking_concurrency.py).
A seat is given back (EXPIRED, CANCELLED) by a conditional UPDATE of the booking from the
state it was seen in, and the decrement rides in the same transaction, so it happens once.

Holds expire lazily and by sweep: `hold` first releases the slot's holds that ran out (so a
seat is never refused because of a hold nobody will confirm), and `booking_jobs.sweep`
(`plaza-cloud bookings-sweep`, every minute) releases the rest, settles deposits, sends the
reminders and closes the day (no-shows, completions).

Nothing here is a restaurant's: a resource is a name, a kind, a capacity per slot and its
hours, so issue 17's FHIR Schedule / Slot / Appointment can sit on the same tables.
Every function takes the session and commits (or rolls back) itself, like vouchers.
"""

from __future__ import annotations

import logging
import zoneinfo
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cloud.models import Venue
from cloud.o2o.booking_models import (
    CANCELLED,
    CHECKED_IN,
    COMPLETED,
    CONFIRMED,
    EXPIRED,
    HELD,
    NO_SHOW,
    Booking,
    BookingResource,
    BookingSlot,
)

log = logging.getLogger("plaza.cloud.bookings")

MAX_CAPACITY = 1000
MAX_DEPOSIT = 1_000_000  # fen: 10,000 yuan
CHECK_IN_EARLY = 30 * 60.0  # a phone joining this long before the slot checks in
NO_SHOW_GRACE = 30 * 60.0  # a confirmed booking not checked in this long after the start
MAX_KEY = 64


class BookingError(Exception):
    """Any refusal in the booking domain. `code` is stable for programs (and tests); the
    message is what a shopper or a merchant is shown."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _hhmm(text: str) -> int:
    hours, _, minutes = text.partition(":")
    if not (hours.isdigit() and minutes.isdigit() and len(minutes) == 2):
        raise BookingError("invalid_resource", f"opening hours: {text!r} is not HH:MM")
    value = int(hours) * 60 + int(minutes)
    if not 0 <= value <= 24 * 60 or int(minutes) > 59:
        raise BookingError("invalid_resource", f"opening hours: {text!r} is not a time of day")
    return value


@dataclass(frozen=True)
class ResourceSpec:
    """What a merchant fills in; `check()` refuses nonsense before anything is stored."""

    name: str
    kind: str = "table"
    capacity: int = 1
    slot_minutes: int = 60
    hours: tuple[tuple[str, str], ...] = (("11:00", "14:00"), ("17:00", "21:00"))
    weekdays: str = "1234567"
    tz: str = "Asia/Shanghai"
    deposit: int = 0
    hold_minutes: int = 10
    cancel_cutoff_minutes: int = 120

    def check(self) -> None:
        def bad(message: str) -> BookingError:
            return BookingError("invalid_resource", message)

        if not self.name.strip() or len(self.name) > 80:
            raise bad("the name must be 1 to 80 characters")
        if not self.kind.isidentifier() or len(self.kind) > 16:
            raise bad("the kind is one word (table, room, appointment)")
        if not 0 < self.capacity <= MAX_CAPACITY:
            raise bad(f"the capacity per slot must be between 1 and {MAX_CAPACITY}")
        if not 5 <= self.slot_minutes <= 24 * 60:
            raise bad("a slot lasts between 5 minutes and a day")
        if not self.hours or len(self.hours) > 8:
            raise bad("give 1 to 8 opening windows")
        for start, end in self.hours:
            if _hhmm(end) - _hhmm(start) < self.slot_minutes:
                raise bad(f"{start}-{end} is shorter than one slot")
        if not self.weekdays or set(self.weekdays) - set("1234567"):
            raise bad("weekdays are digits 1 (Monday) to 7 (Sunday)")
        try:
            zoneinfo.ZoneInfo(self.tz)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise bad(f"unknown time zone {self.tz!r}") from None
        if not 0 <= self.deposit <= MAX_DEPOSIT:
            raise bad("the deposit must be between 0 and 10000.00")
        if not 1 <= self.hold_minutes <= 120:
            raise bad("a hold lasts between 1 and 120 minutes")
        if not 0 <= self.cancel_cutoff_minutes <= 14 * 24 * 60:
            raise bad("the free cancellation cut-off is between 0 minutes and 14 days")

    def columns(self) -> dict[str, Any]:
        values = {name: getattr(self, name) for name in self.__dataclass_fields__}
        values["hours"] = [list(window) for window in self.hours]
        values["weekdays"] = "".join(sorted(set(self.weekdays)))
        return values


def create_resource(db: Session, venue: Venue, spec: ResourceSpec, now: float) -> BookingResource:
    """An ACTIVE resource of `venue` (the caller checked the venue is the merchant's)."""
    spec.check()
    resource = BookingResource(venue_id=venue.id, state="ACTIVE", created_at=now,
                               updated_at=now, **spec.columns())  # fmt: skip
    db.add(resource)
    db.commit()
    return resource


def set_state(db: Session, resource: BookingResource, action: str, now: float) -> None:
    """pause (no new holds; bookings made stay) or resume."""
    moves = {"pause": ("ACTIVE", "PAUSED"), "resume": ("PAUSED", "ACTIVE")}
    if action not in moves:
        raise BookingError("bad_action", f"unknown action: {action}")
    before, after = moves[action]
    done = db.execute(
        update(BookingResource)
        .where(BookingResource.id == resource.id, BookingResource.state == before)
        .values(state=after, updated_at=now)
    )
    if done.rowcount != 1:
        db.rollback()
        raise BookingError("bad_transition", f"this resource is not {before.lower()}")
    db.commit()
    db.refresh(resource)


# -- seats ------------------------------------------------------------------------------------


def _take_seat(db: Session, slot_id: str) -> bool:
    done = db.execute(
        update(BookingSlot)
        .where(BookingSlot.id == slot_id, BookingSlot.taken < BookingSlot.capacity)
        .values(taken=BookingSlot.taken + 1)
        .execution_options(synchronize_session=False)
    )
    return done.rowcount == 1


def _give_back(db: Session, slot_id: str, seats: int = 1) -> None:
    if seats:
        db.execute(
            update(BookingSlot)
            .where(BookingSlot.id == slot_id)
            .values(taken=BookingSlot.taken - seats)
            .execution_options(synchronize_session=False)
        )


def _move(db: Session, booking_id: str, before: str, after: str, **values: Any) -> bool:
    """booking `before` -> `after` if it is still `before` (the caller's transaction)."""
    done = db.execute(
        update(Booking)
        .where(Booking.id == booking_id, Booking.state == before)
        .values(state=after, **values)
        .execution_options(synchronize_session=False)
    )
    return done.rowcount == 1


def release_expired(db: Session, now: float, slot_id: str | None = None) -> int:
    """Every hold that ran out (of one slot, or all) EXPIRED and its seat given back, in the
    caller's transaction. Two instances racing release each hold once: the second UPDATE
    waits for the first's row locks, then no longer finds the rows HELD."""
    query = (
        update(Booking)
        .where(Booking.state == HELD, Booking.hold_expires_at <= now)
        .values(state=EXPIRED, reason="hold_expired", ended_at=now, updated_at=now)
        .returning(Booking.slot_id)
        .execution_options(synchronize_session=False)
    )
    if slot_id is not None:
        query = query.where(Booking.slot_id == slot_id)
    freed: dict[str, int] = {}
    for (slot,) in db.execute(query).all():
        freed[slot] = freed.get(slot, 0) + 1
    for slot, seats in sorted(freed.items()):  # a fixed order: no deadlock between sweeps
        _give_back(db, slot, seats)
    return sum(freed.values())


# -- a shopper's booking ----------------------------------------------------------------------


def _check_key(key: str | None) -> None:
    if key is not None and (not 8 <= len(key) <= MAX_KEY or not key.isprintable()):
        raise BookingError("bad_key", "an idempotency key is 8 to 64 printable characters")


def hold(db: Session, slot_id: str, shopper_id: str, now: float,
         idempotency_key: str | None = None) -> Booking:  # fmt: skip
    """A seat of `slot_id` held for the shopper for the resource's `hold_minutes`. The same
    key again is the same hold. Refused: `no_slot`, `paused`, `past`, `taken`."""
    _check_key(idempotency_key)
    if idempotency_key is not None:
        found = _by_key(db, shopper_id, idempotency_key)
        if found is not None:
            if found.slot_id != slot_id:
                raise BookingError("key_reused", "this form was used for another time")
            return found
    slot = db.get(BookingSlot, slot_id) if slot_id.startswith("bsl_") else None
    resource = db.get(BookingResource, slot.resource_id) if slot is not None else None
    if slot is None or resource is None:
        raise BookingError("no_slot", "no such time to book")
    if resource.state != "ACTIVE":
        raise BookingError("paused", f"{resource.name} is not taking bookings right now")
    if slot.starts_at <= now:
        raise BookingError("past", "this time has already started; pick a later one")
    release_expired(db, now, slot.id)  # lazy expiry: a stale hold never blocks a seat
    if not _take_seat(db, slot.id):
        db.rollback()
        raise BookingError("taken", "this time was just taken; please pick another")
    booking = Booking(
        slot_id=slot.id, resource_id=resource.id, venue_id=resource.venue_id,
        shopper_id=shopper_id, idempotency_key=idempotency_key, state=HELD,
        deposit=resource.deposit, held_at=now, hold_expires_at=now + resource.hold_minutes * 60,
        updated_at=now,
    )  # fmt: skip
    db.add(booking)
    try:
        db.commit()
    except IntegrityError:  # the same key sent twice at once: the other one won (and counted)
        db.rollback()
        if idempotency_key is not None and (found := _by_key(db, shopper_id, idempotency_key)):
            return found
        raise
    return booking


def _by_key(db: Session, shopper_id: str, key: str) -> Booking | None:
    return db.scalars(
        select(Booking).where(Booking.shopper_id == shopper_id, Booking.idempotency_key == key)
    ).one_or_none()


def mine(db: Session, booking_id: str, shopper_id: str) -> Booking:
    """The shopper's own booking; anyone else's is refused as if it did not exist."""
    booking = db.get(Booking, booking_id, populate_existing=True) if booking_id.startswith(
        "bkg_") else None  # fmt: skip
    if booking is None or booking.shopper_id != shopper_id:
        raise BookingError("not_yours", "no such booking of yours")
    return booking


def _expire_if_due(db: Session, booking: Booking, now: float) -> None:
    if booking.state == HELD and booking.hold_expires_at <= now:
        release_expired(db, now, booking.slot_id)
        db.commit()
        db.refresh(booking)
    if booking.state == EXPIRED:
        raise BookingError("expired", "your hold ran out and the time was released; "
                                      "please pick it again")  # fmt: skip


def confirm(db: Session, booking_id: str, shopper_id: str, now: float) -> Booking:
    """HELD -> CONFIRMED for a booking without a deposit (a deposit confirms by payment)."""
    booking = mine(db, booking_id, shopper_id)
    _expire_if_due(db, booking, now)
    if booking.state != HELD:
        if booking.state == CONFIRMED:
            return booking  # a double tap
        raise BookingError("bad_state", f"a {booking.state.lower()} booking cannot be confirmed")
    if booking.deposit:
        raise BookingError("deposit_due", "pay the deposit to confirm this booking")
    done = db.execute(
        update(Booking)
        .where(Booking.id == booking.id, Booking.state == HELD, Booking.hold_expires_at > now)
        .values(state=CONFIRMED, confirmed_at=now, updated_at=now)
    )
    db.commit()
    db.refresh(booking)
    if done.rowcount != 1:
        _expire_if_due(db, booking, now)
        raise BookingError("bad_state", f"a {booking.state.lower()} booking cannot be confirmed")
    return booking


def confirm_paid(db: Session, booking: Booking, now: float) -> bool:
    """The deposit was paid: HELD -> CONFIRMED (the seat is still counted, even when the hold
    ran out a moment ago and no sweep came by), or EXPIRED -> CONFIRMED if a seat is free
    again. False if the seat is gone (the caller refunds). The caller's transaction."""
    values = {"confirmed_at": now, "updated_at": now}
    if _move(db, booking.id, HELD, CONFIRMED, **values):
        return True
    if booking.state == EXPIRED and _take_seat(db, booking.slot_id):
        if _move(db, booking.id, EXPIRED, CONFIRMED, reason=None, ended_at=None, **values):
            return True
        _give_back(db, booking.slot_id)
    return False


def cancel(db: Session, booking_id: str, shopper_id: str, now: float,
           keep_deposit: bool = False) -> Booking:  # fmt: skip
    """Cancel a held or confirmed booking and give its seat back. Before the resource's
    cut-off it is free (the caller refunds a paid deposit: `refund_due`); after it, refused
    with `after_cutoff` unless the shopper accepts that the deposit is kept."""
    booking = mine(db, booking_id, shopper_id)
    if booking.state not in (HELD, CONFIRMED):
        raise BookingError("bad_state", f"a {booking.state.lower()} booking cannot be cancelled")
    slot = db.get(BookingSlot, booking.slot_id)
    resource = db.get(BookingResource, booking.resource_id)
    assert slot is not None and resource is not None
    if slot.starts_at <= now:
        raise BookingError("started", "this booking has started and can no longer be cancelled")
    cutoff = slot.starts_at - resource.cancel_cutoff_minutes * 60
    late = booking.state == CONFIRMED and now >= cutoff
    if late and not keep_deposit:
        kept = f" and the ¥{booking.deposit / 100:.2f} deposit is kept" if booking.deposit else ""
        minutes = resource.cancel_cutoff_minutes
        raise BookingError(
            "after_cutoff",
            f"free cancellation ended {minutes} minutes before the start (the cut-off); "
            f"cancelling now is final{kept}",
        )
    reason = "cancelled_late" if late else "cancelled_free"
    if not _move(db, booking.id, booking.state, CANCELLED, reason=reason, ended_at=now,
                 updated_at=now):  # fmt: skip
        db.rollback()
        raise BookingError("bad_state", "this booking changed meanwhile; please look again")
    _give_back(db, booking.slot_id)
    db.commit()
    db.refresh(booking)
    return booking


def refund_due(booking: Booking) -> bool:
    """Whether a paid deposit goes back: every ending but a late cancellation and a no-show."""
    return booking.state in (CANCELLED, EXPIRED) and booking.reason != "cancelled_late"


# -- at the venue -----------------------------------------------------------------------------


def check_in(db: Session, booking: Booking, now: float, by: str) -> bool:
    """CONFIRMED -> CHECKED_IN within [start - CHECK_IN_EARLY, end]; False otherwise."""
    slot = db.get(BookingSlot, booking.slot_id)
    assert slot is not None
    if not slot.starts_at - CHECK_IN_EARLY <= now <= slot.ends_at:
        return False
    done = _move(db, booking.id, CONFIRMED, CHECKED_IN, checked_in_at=now, checked_in_by=by,
                 updated_at=now)  # fmt: skip
    db.commit()
    return done


def finish(db: Session, booking: Booking, outcome: str, now: float) -> bool:
    """The merchant (or the sweep) closes a booking: CHECKED_IN -> COMPLETED, or
    CONFIRMED -> NO_SHOW once the slot has started (the deposit is kept)."""
    source = {COMPLETED: CHECKED_IN, NO_SHOW: CONFIRMED}.get(outcome)
    if source is None:
        raise BookingError("bad_action", f"unknown outcome: {outcome}")
    slot = db.get(BookingSlot, booking.slot_id)
    assert slot is not None
    if outcome == NO_SHOW and now < slot.starts_at:
        raise BookingError("not_started", "a booking is a no-show only once its time started")
    done = _move(db, booking.id, source, outcome, ended_at=now, updated_at=now)
    db.commit()
    if not done:
        raise BookingError("bad_state", f"only a {source.lower()} booking can become "
                                        f"{outcome.lower().replace('_', '-')}")  # fmt: skip
    return done
