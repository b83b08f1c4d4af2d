"""Headless Chromium walks the demo's transit chapter (lab/demo_transit.py, its own browser
steps): the rider signs in to the shop with the sandbox wallet, opens a transit card, tops it
up with ¥20 at the wallet's cashier (pending until paid, then credited once), and shows the QR;
the lab's bus readers (lab/transit_reader.py, enrolled with reader claim codes) read the QR's
payload from the page, tap on bus 1 and, 18 minutes later, on bus 2 (within the lab feed's
60-minute transfer window), and upload signed batches; the page shows two trips by the feed's
route and stop names (in Chinese, its translations), ¥2.00 and the ¥0.50 transfer, and ¥17.50
left; a replayed batch adds nothing; the ledger balances.
Screenshots: tests/artifacts/browser/transit-*.png.

On loopback (tests/browser/shop_cloud.py): the cloud on cheroot with SQLite and the lab feed
in force, the sandbox wallet, both HTTPS with a throwaway lab CA; the readers sign their
requests over HTTPS to it as they do to https://cloud.test in the lab.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from cloud import db as cloud_db
from cloud.o2o import ledger
from cloud.o2o.payments import SUCCESS, WAIT, Payment
from cloud.transit import cards
from cloud.transit.models import TransitTopUp
from lab import cloud as labcloud
from lab import demo_transit as rider
from lab.browser import shop_sign_in
from lab.transit_reader import BusReader, boarding_times
from tests.browser.conftest import ARTIFACTS
from tests.browser.shop_cloud import ShopCloud, serve_shop_cloud


@pytest.fixture(scope="module")
def agency(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ShopCloud]:
    with serve_shop_cloud(tmp_path_factory.mktemp("transit-rider")) as shop:
        with cloud_db.session(shop.app) as db:
            cards.store_feed(db, shop.venue_id, labcloud.TRANSIT_FEED, time.time())
            db.commit()
        yield shop


def enrolled(shop: ShopCloud, route: str, state: Path) -> BusReader:
    with cloud_db.session(shop.app) as db:
        code = cards.reader_claim(db, shop.venue_id, route, f"bus {route}", time.time())
        db.commit()
    reader = BusReader(state, str(shop.ca_cert))
    reader.enrol(code, f"reader-{route}", shop.base)
    reader.pull_denylist()
    return reader


def topup(shop: ShopCloud) -> tuple[str, int]:
    """The rider's top-up payment's state and the number of top-up postings."""
    with cloud_db.session(shop.app) as db:
        payment = db.scalars(select(Payment).join(TransitTopUp)).one()
        postings = db.scalar(
            select(func.count()).select_from(ledger.LedgerPosting)
            .where(ledger.LedgerPosting.key == f"transit-topup:{payment.id}")
        )  # fmt: skip
        return payment.state, int(postings or 0)


def shot(phone: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    phone.screenshot(path=str(ARTIFACTS / f"transit-{name}.png"), full_page=True)


def test_the_riders_transit_path_in_chromium(agency: ShopCloud, browser: Any, tmp_path) -> None:
    base = agency.base
    violations: list[str] = []
    context = browser.new_context(viewport={"width": 390, "height": 844}, ignore_https_errors=True)
    page = context.new_page()
    page.on("console", lambda m: "Content Security Policy" in m.text and violations.append(m.text))

    shop_sign_in(page, base, rider.CARD)
    assert "Get a transit card" in page.inner_text("main")
    shot(page, "01-signed-in")
    rider.open_card(page)
    opened = rider.card(page)
    assert (opened.balance, opened.trips) == (0, [])
    shot(page, "02-card")

    cashier = rider.to_cashier(page, base)
    assert "20.00" in cashier
    assert topup(agency) == (WAIT, 0)  # pending: nothing on the card until the wallet says so
    shot(page, "03-cashier")
    rider.pay(page, base)
    paid = rider.card(page)
    assert paid.balance == rider.TOPUP == 2000
    assert topup(agency) == (SUCCESS, 1)
    assert page.get_attribute(".qr", "aria-labelledby") == "qr-text"  # the QR's text is its name
    shot(page, "04-topped-up")

    bus1 = enrolled(agency, "b1", tmp_path / "b1")
    bus2 = enrolled(agency, "b2", tmp_path / "b2")
    first, second = boarding_times(time.time())
    card_id = bus1.read(paid.qr, "s_plaza", first)["card"]
    assert bus1.upload()["stored"] == 1
    assert bus2.read(paid.qr, "s_station", second)["card"] == card_id
    assert bus2.upload()["stored"] == 1
    replay = bus2.resend()
    assert (replay["stored"], replay["duplicates"], replay["fen"]) == (0, 1, 0)

    page.reload()
    rode = rider.card(page)
    assert rode.trips == [
        ("2", "Station", rider.clock(second), "¥0.50", "Charged"),  # the feed's names
        ("1", "Plaza", rider.clock(first), "¥2.00", "Charged"),
    ]
    assert page.locator("li[data-seq] .route").first.get_attribute("data-route") == "b2"
    assert rode.balance == 2000 - 200 - 50
    assert "¥17.50" in page.inner_text("main")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scroll
    shot(page, "05-trips")
    page.goto(base + rider.CARD + "?lang=zh-CN")  # the feed's translations (translations.txt)
    assert [t[:2] for t in rider.card(page).trips] == [("2路", "火车站"), ("1路", "广场")]
    shot(page, "06-trips-zh")
    with cloud_db.session(agency.app) as db:
        assert cards.balance(db, card_id) == 1750
        assert ledger.check_balanced(db), ledger.balances(db)
    assert violations == []
    context.close()
