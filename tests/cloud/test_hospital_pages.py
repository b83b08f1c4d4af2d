"""The patient's pages under /plaza/hospital (issue 17 item 8), on both databases with the
sandbox wallet: book a doctor with a fee, pay it at the wallet's cashier, "I have arrived"
gives the clinic's number, the clinician's call shows the room, the report downloads; and
the refusals: a slot just taken, an arrival outside its window, a form without its CSRF
token, another patient's appointment and report."""

from __future__ import annotations

import io
import re
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from cloud import db as cloud_db
from cloud.hospital import seed
from cloud.models import Venue
from cloud.o2o import queues
from cloud.o2o.booking_models import Booking, BookingResource, BookingSlot
from cloud.o2o.queue_models import ServiceQueue
from tests.cloud.dashboard_helpers import sign_in as dashboard_sign_in
from tests.cloud.o2o_helpers import (
    IDEMPOTENCY_KEY,
    SandboxWallet,
    approve_payment,
    csrf,
    deliver,
    get,
    post,
    sign_in,
)
from tests.conftest import FakeClock

PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"


def seeded(app: Flask, venue: Venue, now: float) -> None:
    with cloud_db.session(app) as db:
        seed.seed(db, venue.id, now, days=2, on_call=True)


def first_slot(app: Flask, doctor: str, after: float) -> str:
    """The earliest slot of `doctor`'s schedule starting after `after`."""
    with cloud_db.session(app) as db:
        return db.scalars(
            select(BookingSlot.id).join(BookingResource)
            .where(BookingResource.name == doctor, BookingSlot.starts_at > after)
            .order_by(BookingSlot.starts_at).limit(1)
        ).one()  # fmt: skip


def ready(app: Flask, venue: Venue, clock: FakeClock, client: FlaskClient,
          wallet: SandboxWallet, doctor: str = "Emergency: Dr Sun",
          after: float = 0) -> str:  # fmt: skip
    """The demo hospital seeded, Alice signed in; the first slot of `doctor` after `after` s."""
    seeded(app, venue, clock())
    slot_id = first_slot(app, doctor, clock() + after)
    assert sign_in(client, wallet).status_code == 303
    return slot_id


def book(client: FlaskClient, venue_id: str, slot_id: str, day: str = "") -> Any:
    page = get(client, f"/plaza/hospital/{venue_id}" + (f"?day={day}" if day else ""))
    text = page.get_data(as_text=True)
    form = re.search(rf'action="/plaza/hospital/book/{slot_id}">.*?' + IDEMPOTENCY_KEY.pattern,
                     text, re.S)  # fmt: skip
    assert page.status_code == 200 and form, text
    return post(client, f"/plaza/hospital/book/{slot_id}",
                {"csrf_token": csrf(page), "idempotency_key": form.group(1)})  # fmt: skip


def press(client: FlaskClient, path: str, action: str) -> Any:
    return post(client, f"{path}/{action}", {"csrf_token": csrf(get(client, path))})


def state(page: Any) -> str:
    found = re.search(r'id="state">([^<]+)<', page.get_data(as_text=True))
    assert found, page.get_data(as_text=True)
    return found.group(1)


def test_book_pay_arrive_called_and_the_report(
    shop_app: Flask, client: FlaskClient, sandbox_wallet: SandboxWallet, venue: Venue,
    clock: FakeClock,
):  # fmt: skip
    slot_id = ready(shop_app, venue, clock, client, sandbox_wallet)
    clinics = get(client, f"/plaza/hospital/{venue.id}").get_data(as_text=True)
    assert "Cardiology" in clinics and "Dr Sun" in clinics and "Fee ¥10.00" in clinics

    held = book(client, venue.id, slot_id)
    assert held.status_code == 303
    path = held.location.removeprefix("https://cloud.plaza.test")
    assert state(get(client, path)) == "Waiting for the fee"
    cashier = press(client, path, "pay")
    assert cashier.status_code == 303 and cashier.location.startswith(sandbox_wallet.url)
    back = approve_payment(sandbox_wallet, cashier.location)
    assert back.status == 302 and path in back.location  # the wallet returns to the page
    (notify,) = sandbox_wallet.take_notifies()
    assert deliver(client, notify).get_data(as_text=True) == "success"
    assert state(get(client, path)) == "Booked"

    arrived = press(client, path, "arrive")
    assert arrived.status_code == 303
    page = get(client, path).get_data(as_text=True)
    assert 'id="number">E001<' in page and "You are next" in page
    assert state(get(client, path)) == "Arrived"
    with cloud_db.session(shop_app) as db:
        queue = db.scalars(select(ServiceQueue).where(ServiceQueue.name == "Emergency")).one()
        queues.call_next(db, queue.id, "3", "clinician", clock())
    assert "Called: please go to room 3" in get(client, path).get_data(as_text=True)
    zh = get(client, path + "?lang=zh-CN").get_data(as_text=True)
    assert "请到 3 号诊室就诊" in zh and "已到达" in zh
    get(client, path + "?lang=en")

    clinician = shop_app.test_client()
    assert dashboard_sign_in(clinician).status_code == 303
    booking_id = path.rsplit("/", 1)[1]
    desk = clinician.get(f"/dashboard/hospital/{venue.id}")
    sent = clinician.post(f"/dashboard/hospital/{venue.id}/reports", data={
        "csrf_token": csrf(desk), "booking_id": booking_id, "title": "Chest X-ray",
        "pdf": (io.BytesIO(PDF), "xray.pdf")}, content_type="multipart/form-data")  # fmt: skip
    assert sent.status_code == 303, sent.get_data(as_text=True)
    mine = get(client, "/plaza/hospital/reports").get_data(as_text=True)
    link = re.search(r'href="(/plaza/hospital/reports/drp_[^"]+\.pdf)"', mine)
    assert "Chest X-ray" in mine and link
    pdf = get(client, link.group(1))
    assert pdf.status_code == 200 and pdf.data == PDF and pdf.mimetype == "application/pdf"

    other = shop_app.test_client()  # Bob: neither the appointment nor the report exist for him
    assert sign_in(other, sandbox_wallet, "bob").status_code == 303
    assert get(other, path).status_code == 404
    assert get(other, link.group(1)).status_code == 404
    assert post(other, f"{path}/arrive", {"csrf_token": csrf(get(other, "/plaza/hospital/reports"))}
                ).status_code == 404  # fmt: skip
    assert press(client, path, "arrive").status_code == 303  # a second tap: the same number
    assert 'id="number">E001<' in get(client, path).get_data(as_text=True)
    assert "Chest X-ray" not in get(other, "/plaza/hospital/reports").get_data(as_text=True)


def test_a_slot_just_taken_is_refused(
    shop_app: Flask, client: FlaskClient, sandbox_wallet: SandboxWallet, venue: Venue,
    clock: FakeClock,
):  # fmt: skip
    slot_id = ready(
        shop_app, venue, clock, client, sandbox_wallet, "General Practice: Dr Zhao"
    )  # no fee
    other = shop_app.test_client()
    assert sign_in(other, sandbox_wallet, "bob").status_code == 303
    day = re.search(r"\d{4}-\d\d-\d\d", _local(shop_app, slot_id))
    assert day
    page_a = get(client, f"/plaza/hospital/{venue.id}?day={day.group(0)}")  # both see it free
    assert f"/plaza/hospital/book/{slot_id}" in page_a.get_data(as_text=True)
    won = book(other, venue.id, slot_id, day.group(0))
    assert won.status_code == 303
    assert state(get(other, won.location.removeprefix("https://cloud.plaza.test"))) == "Booked"
    key = IDEMPOTENCY_KEY.search(page_a.get_data(as_text=True))
    assert key
    lost = post(client, f"/plaza/hospital/book/{slot_id}",
                {"csrf_token": csrf(page_a), "idempotency_key": key.group(1)})  # fmt: skip
    assert lost.status_code == 409
    assert "just taken" in lost.get_data(as_text=True)
    with cloud_db.session(shop_app) as db:
        assert db.get(BookingSlot, slot_id).taken == 1  # type: ignore[union-attr]


def _local(app: Flask, slot_id: str) -> str:
    from cloud.o2o.booking_jobs import local_time

    with cloud_db.session(app) as db:
        slot = db.get(BookingSlot, slot_id)
        assert slot is not None
        return local_time(slot, db.get(BookingResource, slot.resource_id))  # type: ignore[arg-type]


def test_arriving_outside_the_window_says_when(
    shop_app: Flask, client: FlaskClient, sandbox_wallet: SandboxWallet, venue: Venue,
    clock: FakeClock,
):  # fmt: skip
    slot_id = ready(
        shop_app, venue, clock, client, sandbox_wallet, "General Practice: Dr Zhao", after=86400
    )  # tomorrow
    day = re.search(r"\d{4}-\d\d-\d\d", _local(shop_app, slot_id))
    assert day
    made = book(client, venue.id, slot_id, day.group(0))
    path = made.location.removeprefix("https://cloud.plaza.test")
    assert state(get(client, path)) == "Booked"
    early = press(client, path, "arrive")
    assert early.status_code == 409
    text = early.get_data(as_text=True)
    assert "arrival is taken from 30 minutes before the appointment to its end" in text
    assert 'role="alert"' in text
    get(client, path + "?lang=zh-CN")
    assert "请在预约时间前 30 分钟至结束前签到" in press(client, path, "arrive").get_data(
        as_text=True
    )
    with cloud_db.session(shop_app) as db:
        assert db.get(Booking, path.rsplit("/", 1)[1]).state == "CONFIRMED"  # type: ignore[union-attr]


def test_forms_without_the_csrf_token_are_refused(
    shop_app: Flask, client: FlaskClient, sandbox_wallet: SandboxWallet, venue: Venue,
    clock: FakeClock,
):  # fmt: skip
    slot_id = ready(shop_app, venue, clock, client, sandbox_wallet)
    forged = post(client, f"/plaza/hospital/book/{slot_id}", {"idempotency_key": "k" * 16})
    assert forged.status_code == 400
    made = book(client, venue.id, slot_id)
    path = made.location.removeprefix("https://cloud.plaza.test")
    for action in ("pay", "cancel", "arrive"):
        assert post(client, f"{path}/{action}", {"csrf_token": "forged"}).status_code == 400
    assert state(get(client, path)) == "Waiting for the fee"
    with cloud_db.session(shop_app) as db:
        assert db.get(BookingSlot, slot_id).taken == 1  # type: ignore[union-attr]
    assert press(client, path, "cancel").status_code == 303
    assert state(get(client, path)) == "Cancelled"


def test_signed_out_goes_to_the_wallet_sign_in(shop_app: Flask, client: FlaskClient, venue: Venue):
    page = get(client, f"/plaza/hospital/{venue.id}")
    assert page.status_code == 303 and "/plaza/signin?next=" in page.location
