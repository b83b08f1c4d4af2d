"""Booking pages end to end (both databases): the merchant makes a resource and its slots in
the dashboard, a shopper signed in with the sandbox wallet holds a time, pays the deposit at
the wallet's cashier (real HTTPS, signed notify), gets the `.ics`, cancels before the cut-off
and is refunded; a deposit paid after the hold ran out and the seat went to someone else is
refunded in full; and the refusals on the pages: a slot just taken, another shopper's
booking, another merchant's resource. The books balance after every test (`books`)."""

from __future__ import annotations

from typing import Any

import icalendar
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from cloud import db as cloud_db
from cloud.accounts import create_merchant, create_venue
from cloud.models import Venue
from cloud.o2o import booking, booking_jobs, ledger, settings
from cloud.o2o.booking_models import BookingResource, BookingSlot
from cloud.o2o.payments import Payment
from cloud.o2o.shoppers import find_or_create
from tests.cloud.dashboard_helpers import sign_in as merchant_sign_in
from tests.cloud.o2o_helpers import (
    CLOUD,
    SandboxWallet,
    booking_row,
    csrf,
    get,
    hold,
    paid_after_the_seat_went,
    pay_deposit,
    post,
    press,
    sign_in,
)
from tests.conftest import FakeClock

HOUR = 3600.0


def make_resource(client: FlaskClient, venue_id: str, **fields: str) -> Any:
    page = client.get(f"/dashboard/bookings/{venue_id}")
    assert page.status_code == 200
    form = {"csrf_token": csrf(page), "name": "Window table", "kind": "table", "capacity": "1",
            "slot_minutes": "60", "hours": "00:00-24:00", "weekdays": "1234567",
            "tz": "Asia/Shanghai", "deposit": "50", "hold_minutes": "10",
            "cancel_cutoff_minutes": "120"}  # fmt: skip
    form.update(fields)
    return client.post(f"/dashboard/bookings/{venue_id}/new", data=form)


@pytest.fixture
def slots(shop_app: Flask, client: FlaskClient, venue: Venue, clock: FakeClock) -> list[str]:
    """A ¥50-deposit table with hourly slots for the next two days, made in the dashboard."""
    assert merchant_sign_in(client).status_code == 303
    assert make_resource(client, venue.id).status_code == 303
    with cloud_db.session(shop_app) as db:
        (rid,) = db.scalars(select(BookingResource.id)).all()
    page = client.get(f"/dashboard/bookings/{venue.id}")
    added = client.post(f"/dashboard/bookings/{venue.id}/{rid}/slots",
                        data={"csrf_token": csrf(page), "days": "2"})  # fmt: skip
    assert added.status_code == 303
    client._cookies.clear()  # the merchant signs out
    with cloud_db.session(shop_app) as db:
        query = select(BookingSlot.id).where(BookingSlot.starts_at > clock())
        return list(db.scalars(query.order_by(BookingSlot.starts_at)))  # the ones still ahead


def test_deposit_ics_and_a_free_cancellation_refunded(
    shop_app: Flask, client: FlaskClient, sandbox_wallet: SandboxWallet, venue: Venue,
    slots: list[str], clock: FakeClock,
):  # fmt: skip
    assert sign_in(client, sandbox_wallet).status_code == 303
    held = hold(client, venue.id, slots[5])
    assert held.status_code == 303
    booking_id = held.location.rsplit("/", 1)[1]
    page = get(client, f"/plaza/bookings/{booking_id}").get_data(as_text=True)
    assert "Pay the ¥50.00 deposit" in page
    refused = press(client, booking_id, "confirm")  # no deposit, no confirmation
    assert refused.status_code == 409 and "pay the deposit" in refused.get_data(as_text=True)

    payment_id = pay_deposit(client, sandbox_wallet, booking_id)["out_trade_no"]
    shown = get(client, f"/plaza/bookings/{booking_id}")  # the wallet's return: in step
    assert 'id="state">Confirmed' in shown.get_data(as_text=True)
    assert booking_row(shop_app, booking_id).payment_id == payment_id

    ics = get(client, f"/plaza/bookings/{booking_id}.ics")
    assert ics.status_code == 200 and ics.mimetype == "text/calendar"
    (event,) = icalendar.Calendar.from_ical(ics.data).walk("VEVENT")
    with cloud_db.session(shop_app) as db:
        slot = db.get(BookingSlot, slots[5])
        assert slot is not None
        assert event.decoded("dtstart").timestamp() == slot.starts_at
    assert str(event["uid"]) == f"{booking_id}@cloud.plaza.test"
    assert str(event["status"]) == "CONFIRMED" and "Cafe Uno" in str(event["location"])

    cancelled = press(client, booking_id, "cancel")
    assert cancelled.status_code == 303
    found = booking_row(shop_app, booking_id)
    assert (found.state, found.reason) == ("CANCELLED", "cancelled_free")
    with cloud_db.session(shop_app) as db:
        payment = db.get(Payment, payment_id)
        assert payment is not None and payment.refunded == 5000
        assert ledger.balance(db, ledger.WALLET_CLEARING) == 0
        assert ledger.balance(db, ledger.refunds(venue.merchant_id)) == 5000
    assert "Refunded ¥50.00" in get(client, f"/plaza/bookings/{booking_id}").get_data(as_text=True)


def test_refusals_on_the_pages(
    shop_app: Flask, client: FlaskClient, sandbox_wallet: SandboxWallet, venue: Venue,
    slots: list[str], clock: FakeClock,
):  # fmt: skip
    with cloud_db.session(shop_app) as db:
        bob = find_or_create(db, "oidc", "bob-sub", "Bob", clock())
        bobs = booking.hold(db, slots[3], bob.id, clock())
    assert sign_in(client, sandbox_wallet).status_code == 303
    taken = hold(client, venue.id, slots[3])  # the page still offered it: just taken
    assert taken.status_code == 409
    assert "this time was just taken; please pick another" in taken.get_data(as_text=True)
    for path in (f"/plaza/bookings/{bobs.id}", f"/plaza/bookings/{bobs.id}.ics"):
        assert get(client, path).status_code == 404  # bob's booking does not exist for alice
    page = get(client, "/plaza/bookings")
    assert post(client, f"/plaza/bookings/{bobs.id}/cancel",
                {"csrf_token": csrf(page)}).status_code == 404  # fmt: skip
    assert booking_row(shop_app, bobs.id).state == "HELD"


def test_a_deposit_paid_after_the_seat_went_to_another_is_refunded(
    shop_app: Flask, client: FlaskClient, sandbox_wallet: SandboxWallet, venue: Venue,
    slots: list[str], clock: FakeClock,
):  # fmt: skip
    booking_id = paid_after_the_seat_went(shop_app, client, sandbox_wallet, venue.id, slots[4],
                                          clock)  # fmt: skip
    with cloud_db.session(shop_app) as db:
        client_ = settings.trade_client(shop_app)
        swept = booking_jobs.sweep(db, clock(), client_, CLOUD)
        assert swept.deposits == 1
        assert booking_jobs.sweep(db, clock(), client_, CLOUD).deposits == 0  # once
        payment = db.scalars(select(Payment)).one()
        assert payment.refunded == payment.amount == 5000
    found = booking_row(shop_app, booking_id)
    assert (found.state, found.reason) == ("CANCELLED", "slot_lost")


def test_merchants_cannot_touch_each_others_resources(
    shop_app: Flask, client: FlaskClient, venue: Venue, slots: list[str], clock: FakeClock
):
    with cloud_db.session(shop_app) as db:
        other = create_merchant(db, "Other", "other@shop.example", "hunter2hunter2", clock())
        theirs = create_venue(db, other.id, "Other shop", clock(), "other.example")
        db.commit()
        (rid,) = db.scalars(select(BookingResource.id)).all()
    assert merchant_sign_in(client, "other@shop.example", "hunter2hunter2").status_code == 303
    page = client.get(f"/dashboard/bookings/{theirs.id}")
    assert page.status_code == 200
    token = csrf(page)
    assert client.get(f"/dashboard/bookings/{venue.id}").status_code == 404
    for path in (f"{venue.id}/{rid}/pause", f"{theirs.id}/{rid}/pause",
                 f"{theirs.id}/{rid}/slots", f"{venue.id}/new"):  # fmt: skip
        answer = client.post(f"/dashboard/bookings/{path}", data={"csrf_token": token})
        assert answer.status_code == 404, path
    with cloud_db.session(shop_app) as db:
        found = db.get(BookingResource, rid)
        assert found is not None and found.state == "ACTIVE"


def test_the_staff_check_in_and_close_bookings_on_the_dashboard(
    shop_app: Flask, client: FlaskClient, venue: Venue, slots: list[str], clock: FakeClock
):
    with cloud_db.session(shop_app) as db:
        alice = find_or_create(db, "oidc", "alice-sub", "Alice", clock())
        first = booking.hold(db, slots[2], alice.id, clock())
        second = booking.hold(db, slots[3], alice.id, clock())
        for held in (first, second):  # as if their deposits were paid (the pages test that)
            assert booking.confirm_paid(db, held, clock())
        db.commit()
        slot = db.get(BookingSlot, slots[2])
        assert slot is not None
        starts = slot.starts_at
    assert merchant_sign_in(client).status_code == 303
    page = client.get(f"/dashboard/bookings/{venue.id}")
    assert f'id="booking-{first.id}"' in page.get_data(as_text=True) and "Alice" in page.get_data(
        as_text=True
    )
    token = csrf(page)

    def outcome(booking_id: str, what: str) -> Any:
        path = f"/dashboard/bookings/{venue.id}/booking/{booking_id}/{what}"
        return client.post(path, data={"csrf_token": token})

    too_early = outcome(first.id, "check-in")
    assert too_early.status_code == 409 and "near its time" in too_early.get_data(as_text=True)
    assert outcome(first.id, "no-show").status_code == 409  # not started yet
    clock.now = starts - 600
    assert outcome(first.id, "check-in").status_code == 303
    assert outcome(first.id, "completed").status_code == 303
    assert booking_row(shop_app, first.id).state == "COMPLETED"
    assert booking_row(shop_app, first.id).checked_in_by == "staff"
    clock.now = starts + 2 * HOUR
    assert outcome(second.id, "no-show").status_code == 303
    assert booking_row(shop_app, second.id).state == "NO_SHOW"
    assert outcome(second.id, "teleported").status_code == 404


def test_the_shop_pages_in_chinese(
    shop_app: Flask, client: FlaskClient, sandbox_wallet: SandboxWallet, venue: Venue,
    slots: list[str],
):  # fmt: skip
    assert sign_in(client, sandbox_wallet).status_code == 303
    times = get(client, f"/plaza/v/{venue.id}/book?lang=zh-CN")
    assert "可预订时间" in times.get_data(as_text=True)
    assert times.headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert "<script" not in times.get_data(as_text=True)
    booking_id = hold(client, venue.id, slots[6]).location.rsplit("/", 1)[1]
    page = get(client, f"/plaza/bookings/{booking_id}").get_data(as_text=True)
    assert "已预留" in page and "支付定金 ¥50.00 并确认" in page
    assert "我的预订" in get(client, "/plaza/bookings").get_data(as_text=True)
    home = get(client, "/plaza/").get_data(as_text=True)
    assert 'href="/plaza/bookings">您的预订</a>' in home
