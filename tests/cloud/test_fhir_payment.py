"""Booking with payment through the FHIR API (issue 17 item 2), on both databases, with the
sandbox wallet: the patient signs in with the wallet, takes the FHIR token, books a slot with
a fee (`pending`, the payment page given), pays it at the wallet's cashier (the notify
confirms: `booked`), cancels before the cut-off (refunded in full); an unpaid hold runs out
(`cancelled`, the seat free again). The ledger balances after each."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from cloud import db as cloud_db
from cloud.models import Venue
from cloud.o2o import booking, booking_slots, ledger
from cloud.o2o.booking import ResourceSpec
from cloud.o2o.booking_models import Booking, BookingSlot
from cloud.o2o.payments import Payment
from tests.cloud.o2o_helpers import (
    CLOUD,
    SandboxWallet,
    approve_payment,
    deliver,
    get,
    post,
    sign_in,
)
from tests.conftest import FakeClock

FHIR = "/fhir/r4"
MIME = "application/fhir+json"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
FEE = 5000  # fen


def valid(body: dict[str, Any]) -> dict[str, Any]:
    get_fhir_model_class(body["resourceType"]).model_validate(body)
    return body


def slots(app: Flask, venue: Venue, now: float) -> list[str]:
    with cloud_db.session(app) as db:
        spec = ResourceSpec(name="Dermatology: Dr Chen", kind="appointment", slot_minutes=30,
                            hours=(("09:00", "11:00"),), deposit=FEE, hold_minutes=10,
                            cancel_cutoff_minutes=120)  # fmt: skip
        resource = booking.create_resource(db, venue, spec, now)
        day = dt.datetime.fromtimestamp(now, dt.UTC).date() + dt.timedelta(days=2)
        booking_slots.generate(db, resource, day, 1)
        query = select(BookingSlot.id).where(BookingSlot.resource_id == resource.id)
        return list(db.scalars(query.order_by(BookingSlot.starts_at)))


def call(client: FlaskClient, method: str, path: str, token: str, status: int,
         body: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    bearer = {"Authorization": f"Bearer {token}"}
    response = client.open(f"{FHIR}/{path}", method=method, json=body, content_type=MIME,
                           headers=bearer, base_url=CLOUD)  # fmt: skip
    assert response.status_code == status, response.get_data(as_text=True)
    return valid(response.get_json())


def book(client: FlaskClient, token: str, slot_id: str) -> dict[str, Any]:
    body = {"resourceType": "Appointment", "status": "booked",
            "slot": [{"reference": "Slot/" + slot_id.replace("_", "-", 1)}]}  # fmt: skip
    return call(client, "POST", "Appointment", token, 201, body)


def test_the_fee_paid_through_the_wallet_then_refunded(
    shop_app: Flask, client: FlaskClient, sandbox_wallet: SandboxWallet, venue: Venue,
    clock: FakeClock,
):  # fmt: skip
    free = slots(shop_app, venue, clock())
    assert sign_in(client, sandbox_wallet).status_code == 303  # the wallet's login
    token = get(client, "/plaza/hospital/token").get_json()["access_token"]

    made = book(client, token, free[0])
    assert made["status"] == "pending"
    assert made["participant"][0]["status"] == "needs-action"
    links = {e["url"].rsplit("/", 1)[1]: e for e in made["extension"]}
    assert links["fee"]["valueMoney"] == {"value": 50.0, "currency": "CNY"}
    page_url = links["payment-page"]["valueUrl"]
    booking_id = made["id"].replace("-", "_", 1)
    assert page_url == f"{CLOUD}/plaza/hospital/appointments/{booking_id}"

    page = get(client, page_url.removeprefix(CLOUD))  # the patient's page: pay at the cashier
    token_field = CSRF.search(page.get_data(as_text=True))
    assert token_field is not None
    start = post(client, f"/plaza/hospital/appointments/{booking_id}/pay",
                 {"csrf_token": token_field.group(1)})  # fmt: skip
    assert start.status_code == 303 and start.location.startswith(sandbox_wallet.url)
    assert approve_payment(sandbox_wallet, start.location).status == 302
    (notify,) = sandbox_wallet.take_notifies()
    assert deliver(client, notify).get_data(as_text=True) == "success"
    paid = call(client, "GET", f"Appointment/{made['id']}", token, 200)
    assert paid["status"] == "booked"
    assert "payment-page" not in {e["url"].rsplit("/", 1)[1] for e in paid["extension"]}

    body = {"resourceType": "Appointment", "id": made["id"], "status": "cancelled"}
    cancelled = call(client, "PUT", f"Appointment/{made['id']}", token, 200, body)
    assert cancelled["status"] == "cancelled"
    with cloud_db.session(shop_app) as db:
        found = db.get(Booking, booking_id)
        assert found is not None and found.payment_id is not None
        payment = db.get(Payment, found.payment_id)
        assert payment is not None and payment.refunded == FEE  # before the cut-off: all back
        assert ledger.balance(db, ledger.WALLET_CLEARING) == 0

    held = book(client, token, free[1])  # never paid
    assert held["status"] == "pending"
    clock.advance(11 * 60)  # the ten-minute hold runs out
    gone = call(client, "GET", f"Appointment/{held['id']}", token, 200)
    assert gone["status"] == "cancelled" and gone["cancelationReason"]["text"] == "hold_expired"
    slot = call(client, "GET", f"Slot/{free[1].replace('_', '-', 1)}", token, 200)
    assert slot["status"] == "free"
