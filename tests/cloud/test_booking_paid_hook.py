"""A deposit's notify confirms its booking at once (payments.PAID_HOOKS, booking_jobs.on_paid),
on both databases: no page view and no sweep in between. A notify delivered twice confirms
once; a deposit paid after the hold ran out confirms while the seat is free; when the seat
went to another, the hook leaves the booking for the sweep, which cancels and refunds it."""

from __future__ import annotations

import datetime as dt

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from cloud import db as cloud_db
from cloud.models import Venue
from cloud.o2o import booking, booking_jobs, booking_slots, payments, settings
from cloud.o2o.booking_models import BookingSlot
from cloud.o2o.payments import Payment
from tests.cloud.o2o_helpers import (
    CLOUD,
    SandboxWallet,
    approve_payment,
    booking_row,
    deliver,
    hold,
    hold_runs_out_at_the_cashier,
    paid_after_the_seat_went,
    pay_deposit,
    sign_in,
)
from tests.conftest import FakeClock


@pytest.fixture
def slots(shop_app: Flask, client: FlaskClient, venue: Venue, clock: FakeClock) -> list[str]:
    """A one-seat table with a ¥50 deposit and hourly slots for two days, the ones ahead."""
    spec = booking.ResourceSpec(name="Window table", hours=(("00:00", "24:00"),), deposit=5000)
    with cloud_db.session(shop_app) as db:
        resource = booking.create_resource(db, venue, spec, clock())
        first = dt.datetime.fromtimestamp(clock(), dt.UTC).date()
        assert booking_slots.generate(db, resource, first, 2) > 0
        query = select(BookingSlot.id).where(BookingSlot.starts_at > clock())
        return list(db.scalars(query.order_by(BookingSlot.starts_at)))


def test_the_hook_is_installed():
    assert booking_jobs.on_paid in payments.PAID_HOOKS


def test_the_notify_confirms_the_booking_once(
    shop_app: Flask, client: FlaskClient, sandbox_wallet: SandboxWallet, venue: Venue,
    slots: list[str], clock: FakeClock,
):  # fmt: skip
    assert sign_in(client, sandbox_wallet).status_code == 303
    booking_id = hold(client, venue.id, slots[3]).location.rsplit("/", 1)[1]
    assert booking_row(shop_app, booking_id).state == "HELD"
    notify = pay_deposit(client, sandbox_wallet, booking_id)
    found = booking_row(shop_app, booking_id)  # straight from the database: no page, no sweep
    assert (found.state, found.confirmed_at) == ("CONFIRMED", clock())
    clock.advance(30)
    assert deliver(client, notify).get_data(as_text=True) == "success"  # the wallet repeats
    again = booking_row(shop_app, booking_id)
    assert (again.state, again.confirmed_at) == ("CONFIRMED", found.confirmed_at)


def test_a_late_deposit_confirms_while_the_seat_is_free(
    shop_app: Flask, client: FlaskClient, sandbox_wallet: SandboxWallet, venue: Venue,
    slots: list[str], clock: FakeClock,
):  # fmt: skip
    booking_id, start = hold_runs_out_at_the_cashier(client, sandbox_wallet, venue.id, slots[2],
                                                     clock)  # fmt: skip
    with cloud_db.session(shop_app) as db:
        assert booking.release_expired(db, clock()) == 1
        db.commit()
    assert booking_row(shop_app, booking_id).state == "EXPIRED"
    assert approve_payment(sandbox_wallet, start.location).status == 302
    (notify,) = sandbox_wallet.take_notifies()
    assert deliver(client, notify).get_data(as_text=True) == "success"
    assert booking_row(shop_app, booking_id).state == "CONFIRMED"


def test_a_lost_seat_is_left_to_the_sweep(
    shop_app: Flask, client: FlaskClient, sandbox_wallet: SandboxWallet, venue: Venue,
    slots: list[str], clock: FakeClock,
):  # fmt: skip
    booking_id = paid_after_the_seat_went(shop_app, client, sandbox_wallet, venue.id, slots[4],
                                          clock)  # fmt: skip
    assert booking_row(shop_app, booking_id).state == "EXPIRED"  # paid, but no seat: not confirmed
    with cloud_db.session(shop_app) as db:
        swept = booking_jobs.sweep(db, clock(), settings.trade_client(shop_app), CLOUD)
        assert swept.deposits == 1
        payment = db.query(Payment).one()
        assert payment.refunded == payment.amount
    assert (booking_row(shop_app, booking_id).state, booking_row(shop_app, booking_id).reason) == (
        "CANCELLED",
        "slot_lost",
    )
