"""The booking tables (migration 0009): resources, their time slots, bookings.

A generic core, not a restaurant's: a *resource* is anything a venue lets people book by the
slot (a table, a room, a kind of appointment; later a practitioner's schedule, issue 17), a
*slot* is one interval of it with a capacity, a *booking* is one seat of one slot for one
shopper. FHIR's Schedule / Slot / Appointment map onto these one to one.

The invariants live in the schema where a schema can hold them:

- no double booking: `booking_slots.taken` only moves by a conditional
  `UPDATE ... SET taken = taken + 1 WHERE taken < capacity` (cloud/o2o/booking.py), in the
  transaction that inserts the booking, and a CHECK keeps `0 <= taken <= capacity`;
- a seat is given back exactly once: a booking leaves a seat-holding state only by a
  conditional UPDATE from the state it was seen in, and the same transaction decrements;
- idempotency: (shopper, idempotency_key) is unique, so a double tap is one hold;
- one slot per resource and start: (resource, starts_at) is unique, so generating the
  same day twice adds nothing.

Times are epoch seconds (UTC); money is in fen.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from cloud.models import Base, new_id

RESOURCE_STATES = ("ACTIVE", "PAUSED")
HELD, CONFIRMED, CHECKED_IN = "HELD", "CONFIRMED", "CHECKED_IN"
COMPLETED, NO_SHOW, CANCELLED, EXPIRED = "COMPLETED", "NO_SHOW", "CANCELLED", "EXPIRED"
STATES = (HELD, CONFIRMED, CHECKED_IN, COMPLETED, NO_SHOW, CANCELLED, EXPIRED)
# States that keep a seat of the slot counted in `taken` (a no-show's time is gone anyway).
SEATED = (HELD, CONFIRMED, CHECKED_IN, COMPLETED, NO_SHOW)


class BookingResource(Base):
    """What a venue lets people book by the slot (FHIR: a Schedule). `hours` is the opening
    hours slots are generated from: a list of ["HH:MM", "HH:MM"] windows in `tz`, every day
    listed in `weekdays` (ISO numbers 1-7)."""

    __tablename__ = "booking_resources"
    __table_args__ = (Index("ix_booking_resources_venue", "venue_id", "state"),)

    id: Mapped[str] = mapped_column(String(24), primary_key=True, default=lambda: new_id("brs"))
    venue_id: Mapped[str] = mapped_column(ForeignKey("venues.id"))
    name: Mapped[str] = mapped_column(String(80))
    kind: Mapped[str] = mapped_column(String(16))  # table | room | appointment | ...
    capacity: Mapped[int] = mapped_column(Integer, default=1)  # seats per slot
    slot_minutes: Mapped[int] = mapped_column(Integer, default=60)
    hours: Mapped[list[Any]] = mapped_column(JSON)
    weekdays: Mapped[str] = mapped_column(String(7), default="1234567")
    tz: Mapped[str] = mapped_column(String(40), default="Asia/Shanghai")
    deposit: Mapped[int] = mapped_column(Integer, default=0)  # fen; 0: no deposit
    hold_minutes: Mapped[int] = mapped_column(Integer, default=10)
    cancel_cutoff_minutes: Mapped[int] = mapped_column(Integer, default=120)
    state: Mapped[str] = mapped_column(String(10), default="ACTIVE")
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)


class BookingSlot(Base):
    """One interval of a resource and how many seats of it are taken (FHIR: a Slot)."""

    __tablename__ = "booking_slots"
    __table_args__ = (
        CheckConstraint("taken >= 0 AND taken <= capacity", name="within_capacity"),
        UniqueConstraint("resource_id", "starts_at", name="uq_booking_slots_start"),
    )

    id: Mapped[str] = mapped_column(String(24), primary_key=True, default=lambda: new_id("bsl"))
    resource_id: Mapped[str] = mapped_column(ForeignKey("booking_resources.id"))
    starts_at: Mapped[float] = mapped_column(Float)
    ends_at: Mapped[float] = mapped_column(Float)
    capacity: Mapped[int] = mapped_column(Integer)
    taken: Mapped[int] = mapped_column(Integer, default=0)


class Booking(Base):
    """One seat of one slot for one shopper (FHIR: an Appointment). `reason` says how it
    ended when it did not end well: hold_expired, cancelled_free, cancelled_late (the
    deposit kept), slot_lost (paid after the hold ran out and the seat was gone: refunded)."""

    __tablename__ = "bookings"
    __table_args__ = (
        UniqueConstraint("shopper_id", "idempotency_key", name="uq_bookings_idempotency"),
        Index("ix_bookings_slot", "slot_id", "state"),
        Index("ix_bookings_shopper", "shopper_id", "held_at"),
        Index("ix_bookings_state", "state", "hold_expires_at"),
        Index("ix_bookings_venue", "venue_id", "state"),
    )

    id: Mapped[str] = mapped_column(String(24), primary_key=True, default=lambda: new_id("bkg"))
    slot_id: Mapped[str] = mapped_column(ForeignKey("booking_slots.id"))
    resource_id: Mapped[str] = mapped_column(ForeignKey("booking_resources.id"))
    venue_id: Mapped[str] = mapped_column(ForeignKey("venues.id"))
    shopper_id: Mapped[str] = mapped_column(ForeignKey("shoppers.id"))
    idempotency_key: Mapped[str | None] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(12), default=HELD)
    reason: Mapped[str | None] = mapped_column(String(32))
    deposit: Mapped[int] = mapped_column(Integer, default=0)  # fen, as the resource said
    payment_id: Mapped[str | None] = mapped_column(ForeignKey("payments.id"))
    held_at: Mapped[float] = mapped_column(Float)
    hold_expires_at: Mapped[float] = mapped_column(Float)
    confirmed_at: Mapped[float | None] = mapped_column(Float)
    checked_in_at: Mapped[float | None] = mapped_column(Float)
    checked_in_by: Mapped[str | None] = mapped_column(String(16))  # presence | staff
    ended_at: Mapped[float | None] = mapped_column(Float)
    reminded_at: Mapped[float | None] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
