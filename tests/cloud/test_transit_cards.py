"""The rider's transit card (issue 17 item 5): opened in the wallet account, topped up through
the wallet's payments and the ledger (pending, then confirmed by the wallet's notify; a
forged or repeated notify adds nothing), balance, QR and trip history on a no-script page.
Against the sandbox wallet over HTTPS, on SQLite and PostgreSQL; the books balance after
every test (`shop_app` holds `books`)."""

from __future__ import annotations

import re

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from cloud import db as cloud_db
from cloud.models import Venue
from cloud.o2o import ledger
from cloud.o2o.payments import SUCCESS, WAIT, Payment
from cloud.transit import cards
from cloud.transit.models import TransitCard
from tests.cloud.o2o_helpers import (
    CLOUD,
    NOTIFY,
    SandboxWallet,
    approve_payment,
    csrf,
    get,
    post,
    sign_in,
)
from tests.cloud.transit_helpers import load_city
from tests.conftest import FakeClock

PAGE = "/plaza/transit/"
TRANSIT_NOTIFY = "/plaza/transit/notify/alipay"
KEY_RE = re.compile(r'name="key" value="([^"]+)"')


@pytest.fixture
def rider(shop_app: Flask, client: FlaskClient, sandbox_wallet: SandboxWallet, venue: Venue,
          clock: FakeClock) -> FlaskClient:  # fmt: skip
    """A phone signed in as alice, with the city's feed in force (the venue is the agency)."""
    load_city(shop_app, venue, clock())
    assert sign_in(client, sandbox_wallet).status_code == 303
    return client


def the_card(app: Flask) -> TransitCard:
    with cloud_db.session(app) as db:
        return db.scalars(select(TransitCard).where(TransitCard.state == "active")).one()


def open_card(rider: FlaskClient) -> None:
    page = get(rider, PAGE)
    assert page.status_code == 200 and "open" in page.get_data(as_text=True)
    assert post(rider, "/plaza/transit/open", {"csrf_token": csrf(page)}).status_code == 303


def top_up(
    rider: FlaskClient, wallet: SandboxWallet, fen: int = 2000
) -> tuple[str, dict[str, str]]:
    """A top-up started and approved in the wallet; its payment id. Notify not delivered."""
    page = get(rider, PAGE)
    key = KEY_RE.search(page.get_data(as_text=True))
    assert key
    data = {"csrf_token": csrf(page), "key": key.group(1), "amount": str(fen)}
    start = post(rider, "/plaza/transit/topup", data)
    assert start.status_code == 303 and start.location.startswith(wallet.url), start.status_code
    back = approve_payment(wallet, start.location)
    assert back.status == 302 and back.location.startswith(f"{CLOUD}{PAGE}?"), back.location
    with wallet.lock:
        (url, _), = wallet.notifies  # fmt: skip
    assert url == CLOUD + TRANSIT_NOTIFY
    (notify,) = wallet.take_notifies()
    return notify["out_trade_no"], notify


def balance(app: Flask) -> int:
    with cloud_db.session(app) as db:
        return cards.balance(db, the_card(app).id)


def test_a_top_up_is_pending_until_the_notify_then_credited_once(
    rider: FlaskClient, shop_app: Flask, sandbox_wallet: SandboxWallet, venue: Venue
):
    open_card(rider)
    payment_id, notify = top_up(rider, sandbox_wallet, 2000)
    with cloud_db.session(shop_app) as db:
        assert db.get(Payment, payment_id).state == WAIT
    assert balance(shop_app) == 0  # pending: nothing on the card yet
    answer = rider.post(TRANSIT_NOTIFY, data=notify, base_url=CLOUD)
    assert answer.get_data(as_text=True) == "success"
    assert balance(shop_app) == 2000
    again = rider.post(TRANSIT_NOTIFY, data=notify, base_url=CLOUD)  # the wallet retries
    assert again.get_data(as_text=True) == "success"
    assert balance(shop_app) == 2000
    with cloud_db.session(shop_app) as db:
        assert db.get(Payment, payment_id).state == SUCCESS
        assert ledger.balances(db) == {
            ledger.WALLET_CLEARING: 2000,
            ledger.merchant_receivable(venue.merchant_id): 0,
            cards.card_account(the_card(shop_app).id): -2000,
        }
    page = get(rider, PAGE).get_data(as_text=True)
    assert 'data-balance="2000"' in page and "<svg" in page and "PT1." in page


def test_a_forged_or_mismatched_notify_credits_nothing(
    rider: FlaskClient, shop_app: Flask, sandbox_wallet: SandboxWallet
):
    open_card(rider)
    _, notify = top_up(rider, sandbox_wallet, 1000)
    forged = {**notify, "total_amount": "1000.00"}  # the signature was over 10.00
    assert rider.post(TRANSIT_NOTIFY, data=forged, base_url=CLOUD).status_code == 403
    lie = sandbox_wallet.sign({**notify, "total_amount": "1000.00"})  # signed, but not ours
    assert rider.post(TRANSIT_NOTIFY, data=lie, base_url=CLOUD).status_code == 400
    assert balance(shop_app) == 0
    assert rider.post(TRANSIT_NOTIFY, data=notify, base_url=CLOUD).status_code == 200
    assert balance(shop_app) == 1000


def test_a_top_up_confirmed_elsewhere_is_credited_when_the_rider_comes_back(
    rider: FlaskClient, shop_app: Flask, sandbox_wallet: SandboxWallet
):
    """The notify reached the shop's notify URL instead, or never came: the card page asks
    the wallet, and credits what is paid, once."""
    open_card(rider)
    top_up(rider, sandbox_wallet, 5000)  # notify lost
    page = get(rider, PAGE).get_data(as_text=True)
    assert 'data-balance="5000"' in page
    _, notify = top_up(rider, sandbox_wallet, 1000)
    assert rider.post(NOTIFY, data=notify, base_url=CLOUD).get_data(as_text=True) == "success"
    assert 'data-balance="6000"' in get(rider, PAGE).get_data(as_text=True)
    assert 'data-balance="6000"' in get(rider, PAGE).get_data(as_text=True)


def test_the_card_page_in_both_languages_and_its_refusals(
    rider: FlaskClient, shop_app: Flask, client: FlaskClient
):
    open_card(rider)
    page = get(rider, PAGE + "?lang=zh-CN")
    text = page.get_data(as_text=True)
    assert "交通卡" in text and "乘车记录" in text
    assert "script" not in page.headers["Content-Security-Policy"].replace("'none'", "")
    assert "<script" not in text
    bad = post(rider, "/plaza/transit/topup", {"csrf_token": csrf(page), "key": "k" * 20,
                                               "amount": "1"})  # fmt: skip
    assert bad.status_code == 400
    no_csrf = post(rider, "/plaza/transit/topup", {"key": "k" * 20, "amount": "1000"})
    assert no_csrf.status_code in (400, 403)
    stranger = shop_app.test_client()
    assert get(stranger, PAGE).status_code == 303  # to sign-in
