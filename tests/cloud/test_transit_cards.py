"""The rider's transit card (issue 17 item 5): opened in the wallet account, topped up through
the wallet's payments and the ledger (pending, then confirmed by the wallet's notify; a
forged or repeated notify adds nothing), balance, QR and trip history on a no-script page.
Against the sandbox wallet over HTTPS, on SQLite and PostgreSQL; the books balance after
every test (`shop_app` holds `books`)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from cloud import db as cloud_db
from cloud.models import Venue
from cloud.o2o import ledger
from cloud.o2o.payments import SUCCESS, WAIT, Payment
from cloud.transit import cards
from cloud.transit.feed import FeedError
from cloud.transit.models import CHARGED, TransitCard, TransitTap
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
from tests.cloud.transit_helpers import CITY, load_city
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


def named_feed(tmp_path: Path) -> Path:
    """The city's feed with the names a rider reads: a short name, a long name only, no name
    at all; a stop whose name is markup; Chinese translations by record and by value."""
    feed = tmp_path / "named"
    shutil.copytree(CITY, feed)
    (feed / "routes.txt").write_text(
        "route_id,route_short_name,route_long_name,route_type\n"
        "b1,1,Square - Harbour,3\nb2,,Harbour line,3\nm1,,,1\n"
    )
    (feed / "stops.txt").write_text(
        "stop_id,stop_name,parent_station\ns_square,Square,\ns_harbour,<script>alert(1)</script>,\n"
        "st_central,Central station,\nm_central,,st_central\nm_harbour,Harbour (metro),\n"
    )
    (feed / "translations.txt").write_text(
        "table_name,field_name,language,translation,record_id,field_value\n"
        "stops,stop_name,zh,广场,s_square,\nstops,stop_name,zh-Hans,中央车站,,Central station\n"
        "routes,route_long_name,zh,港口线,b2,\nroutes,route_short_name,zh,1路,,1\n"
        "agency,agency_name,zh,城市交通,plaza_transit,\n"
    )
    return feed


def ride(app: Flask, card_id: str, *places: tuple[str, str]) -> None:
    """Taps of the card as a reader stored them (a minute apart, charged ¥2.00 each)."""
    with cloud_db.session(app) as db:
        for seq, (route, stop) in enumerate(places):
            db.add(TransitTap(reader_id="dev-bus", seq=seq, card_id=card_id, route_id=route,
                              stop_id=stop, tapped_at=1.8e9 + seq * 60, received_at=1.8e9 + 600,
                              state=CHARGED, fare=200))  # fmt: skip
        db.commit()


def trips(page: str) -> list[tuple[str, str]]:
    """The trips' (route, stop) as the page's HTML has them, newest first."""
    return re.findall(r'class="route"[^>]*>([^<]*)</span> · <span class="stop"[^>]*>([^<]*)<', page)


def test_the_trips_show_the_feeds_route_and_stop_names_else_their_ids(
    rider: FlaskClient, shop_app: Flask, venue: Venue, clock: FakeClock, tmp_path: Path
):
    """Short name, else long name, else the id; the stop's name, else the id; a route or
    stop the feed in force does not know (an old reader's) reads as its id; a name that is
    markup is text; in Chinese, the feed's translations (by record, or by value)."""
    open_card(rider)
    with cloud_db.session(shop_app) as db:
        cards.store_feed(db, venue.id, named_feed(tmp_path), clock() + 1)  # now in force
        db.commit()
    places = [("b1", "s_square"), ("b2", "s_harbour"), ("m1", "st_central"),
              ("m1", "m_central"), ("old", "s_gone")]  # fmt: skip
    ride(shop_app, the_card(shop_app).id, *places)
    page = get(rider, PAGE)
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    script = "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert trips(text) == [("old", "s_gone"), ("m1", "m_central"), ("m1", "Central station"),
                           ("Harbour line", script), ("1", "Square")]  # fmt: skip
    assert "<script" not in text
    assert 'data-route="old"' in text and 'data-stop="s_harbour"' in text
    zh = get(rider, PAGE + "?lang=zh-CN")
    assert zh.status_code == 200
    text = zh.get_data(as_text=True)
    assert "乘车记录" in text and "<script" not in text
    assert trips(text) == [("old", "s_gone"), ("m1", "m_central"), ("m1", "中央车站"),
                           ("港口线", script), ("1路", "广场")]  # fmt: skip


def test_with_no_feed_in_force_the_trips_show_their_ids(
    shop_app: Flask, client: FlaskClient, sandbox_wallet: SandboxWallet
):
    assert sign_in(client, sandbox_wallet).status_code == 303
    open_card(client)
    ride(shop_app, the_card(shop_app).id, ("b1", "s_square"))
    assert trips(get(client, PAGE).get_data(as_text=True)) == [("b1", "s_square")]


def test_a_feed_translating_a_stop_it_lacks_is_refused(
    shop_app: Flask, venue: Venue, clock: FakeClock, tmp_path: Path
):
    feed = named_feed(tmp_path)
    with (feed / "translations.txt").open("a") as out:
        out.write("stops,stop_name,zh,旧站,s_gone,\n")
    with cloud_db.session(shop_app) as db, pytest.raises(FeedError, match="line 7, record_id"):
        cards.store_feed(db, venue.id, feed, clock())
