"""A patient's appointment as both front doors handle it: the FHIR API (fhir_api.py) and the
patient's pages (pages.py) call these, so booking, cancelling and looking again mean the same
thing whichever door the patient used.

Everything is the booking core's (cloud/o2o/booking.py): a hospital schedule is a booking
resource of kind `appointment`; what is the hospital's own is only that a schedule without a
fee books at once (a restaurant's free table is held until the shopper confirms), and that
a look at an appointment settles what happened meanwhile (the fee paid, the hold run out).
"""

from __future__ import annotations

import contextlib

from flask import Flask
from sqlalchemy.orm import Session

from cloud.o2o import booking, booking_jobs, settings, settlement
from cloud.o2o.booking_models import HELD, Booking, BookingResource, BookingSlot
from cloud.o2o.payments import WAIT, Payment
from cloud.o2o.trade_client import TradeClient

KIND = "appointment"  # the booking resources the hospital serves (FHIR: Schedules)


def trade_client(app: Flask) -> TradeClient | None:
    """The wallet's payments client, or None where payments are not configured."""
    with contextlib.suppress(settings.NotConfigured, ValueError):
        return settings.trade_client(app)
    return None


def schedule(db: Session, resource_id: str) -> BookingResource | None:
    """The hospital schedule `resource_id` (a table or a room is not one)."""
    found = db.get(BookingResource, resource_id) if resource_id.startswith("brs_") else None
    return found if found is not None and found.kind == KIND else None


def slot(db: Session, slot_id: str) -> BookingSlot | None:
    """A slot of a hospital schedule."""
    found = db.get(BookingSlot, slot_id) if slot_id.startswith("bsl_") else None
    return found if found is not None and schedule(db, found.resource_id) is not None else None


def appointment(db: Session, booking_id: str) -> Booking | None:
    """The booking `booking_id` if it is a hospital appointment (read afresh), anyone's."""
    found = db.get(Booking, booking_id, populate_existing=True) if booking_id.startswith(
        "bkg_") else None  # fmt: skip
    return found if found is not None and schedule(db, found.resource_id) is not None else None


def book(db: Session, slot_id: str, shopper_id: str, at: float, key: str | None) -> Booking:
    """Hold a seat of the slot (booking.hold: `taken`, `past`, ... refuse); without a fee the
    appointment is booked at once, with one it waits for the fee (the booking's deposit)."""
    found = booking.hold(db, slot_id, shopper_id, at, key)
    if not found.deposit and found.state == HELD:
        found = booking.confirm(db, found.id, shopper_id, at)
    return found


def refresh(db: Session, found: Booking, at: float, client: TradeClient | None) -> None:
    """Settle what happened since the last look: a fee still waiting is asked about (the
    return from the cashier is no proof), a paid one confirms, an unpaid hold that ran out
    frees its seat. Commits."""
    payment = db.get(Payment, found.payment_id) if found.payment_id else None
    if client is not None and payment is not None and payment.state == WAIT:
        settlement.reconcile_one(db, client, payment.id, at)
    booking_jobs.sync_deposit(db, found, at, client)
    if found.state == HELD and found.hold_expires_at <= at:
        booking.release_expired(db, at, found.slot_id)
        db.commit()
        db.refresh(found)


def cancel(db: Session, found: Booking, at: float, client: TradeClient | None) -> None:
    """The booking's cancellation rules (booking.cancel: free before the cut-off, refused
    once started); a paid fee cancelled in time is refunded."""
    booking.cancel(db, found.id, found.shopper_id, at)
    booking_jobs.sync_deposit(db, found, at, client)
    db.refresh(found)
