"""Headless Chromium walks the demo's plaza chapter (lab/demo_plaza.py): the shopper opens the
voucher offer the venue pushes (its link, /plaza/vouchers/offers/<venue>), signs in with the
sandbox wallet (OIDC + PKCE, the wallet's own login and consent pages), claims the voucher,
holds a table and pays its deposit at the wallet's cashier, takes a number at the service
desk; the staff (a second browser, signed in to the dashboard) call it, redeem the voucher at
the counter (check, then confirm), and see the offer in the funnel. Screenshots:
tests/artifacts/browser/shopper-*.png.

On loopback, no namespaces: the cloud (cheroot on 127.0.0.1, SQLite) seeded by the lab's own
lab/plaza_seed.py, and the sandbox wallet, both over HTTPS with a throwaway lab CA (Chromium is
told to accept it: certificate checks are the lab's and the wallet tests' business).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from lab import plaza_seed
from lab.browser import wallet_approve
from tests.browser.conftest import ARTIFACTS, EMAIL, PASSWORD
from tests.browser.shop_cloud import serve_shop_cloud


@pytest.fixture(scope="module")
def plaza(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    with serve_shop_cloud(tmp_path_factory.mktemp("plaza-shopper")) as shop:
        seeded = plaza_seed.seed(shop.database, shop.venue_id, shop.merchant_id, time.time())
        yield {"base": shop.base, "wallet": shop.wallet, "venue_id": shop.venue_id,
               "seed": seeded}  # fmt: skip


def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"shopper-{name}.png"), full_page=True)


def test_the_shoppers_plaza_path_in_chromium(plaza: dict[str, Any], browser: Any) -> None:
    base, venue_id, seeded = plaza["base"], plaza["venue_id"], plaza["seed"]
    violations: list[str] = []
    phone = browser.new_context(viewport={"width": 390, "height": 844}, ignore_https_errors=True)
    page = phone.new_page()
    page.on("console", lambda m: "Content Security Policy" in m.text and violations.append(m.text))

    # The pushed offer's link -> sign in with the wallet -> back on the offers -> claim
    offers = f"/plaza/vouchers/offers/{venue_id}"
    page.goto(f"{base}/plaza/signin?next={offers}")
    page.click("a[href='/plaza/login/wallet']")
    assert page.url.startswith(plaza["wallet"]), page.url  # the wallet's own page
    shot(page, "01-wallet-consent")
    wallet_approve(page)
    page.wait_for_url(f"{base}{offers}")
    assert plaza_seed.VOUCHER_TITLE in page.inner_text("main")
    shot(page, "02-offers")
    page.click(f"form[action$='/claim/{seeded.template_id}'] button")
    page.wait_for_selector("p.code", state="attached")
    code = (page.text_content("p.code") or "").strip()
    assert code and page.locator("svg").count() >= 1
    shot(page, "03-voucher")

    # A table: hold a time, pay the ¥50 deposit at the wallet's cashier, back confirmed
    page.goto(f"{base}/plaza/v/{venue_id}/book")
    shot(page, "04-times")
    page.locator("form[action^='/plaza/book/'] button").first.click()
    page.wait_for_url(re.compile(r".*/plaza/bookings/[^/?]+$"))
    page.click("form[action$='/deposit'] button")
    page.wait_for_url(re.compile(re.escape(plaza["wallet"]) + ".*"))
    assert "50.00" in page.inner_text("body")
    shot(page, "05-cashier")
    wallet_approve(page)
    page.wait_for_url(re.compile(r".*/plaza/bookings/[^/?]+\?.*"))
    assert page.inner_text("#state").strip() == "Confirmed"
    shot(page, "06-booked")

    # The service desk: take a number
    page.goto(f"{base}/plaza/queues/{venue_id}")
    page.click(f"#queue-{seeded.queue_id} button[type=submit]")
    page.wait_for_url(re.compile(r".*/plaza/queues/tickets/.*"))
    assert page.inner_text("#label").strip() == f"{plaza_seed.QUEUE_PREFIX}001"
    ticket = page.url
    shot(page, "07-ticket")

    # The staff: sign in, call the next number at window 1
    desk = browser.new_context(viewport={"width": 1280, "height": 900}, ignore_https_errors=True)
    staff = desk.new_page()
    staff.on("console", lambda m: "Content Security Policy" in m.text and violations.append(m.text))
    staff.goto(f"{base}/dashboard/login")
    staff.fill("#email", EMAIL)
    staff.fill("#password", PASSWORD)
    staff.click("form[action='/dashboard/login'] button[type=submit]")
    staff.goto(f"{base}/dashboard/queues/{venue_id}/{seeded.queue_id}?counter=1")
    staff.click("#call-next")
    shot(staff, "08-staff-called")
    page.goto(ticket)
    assert "Please come to window 1" in page.inner_text("main")
    shot(page, "09-called")

    # The counter: check the code, confirm and redeem; a second time it is refused
    staff.goto(f"{base}/dashboard/vouchers/{venue_id}")
    counter = staff.inner_text("#staff-link").strip()
    for attempt in range(2):
        staff.goto(counter)
        staff.fill("textarea[name=code]", code)
        staff.fill("input[name=amount]", "25")
        staff.click("button[name=action][value=check]")
        if attempt == 0:
            assert "Valid" in staff.inner_text("main"), staff.inner_text("main")
            staff.click("button[name=action][value=redeem]")
            assert "discount 5.00" in staff.inner_text("main")
            shot(staff, "10-redeemed")
        else:
            assert "already used" in staff.inner_text("main")

    # The merchant's funnel: the offer, its claims and redemptions as "<5"
    staff.goto(f"{base}/dashboard/plaza/{venue_id}")
    row = staff.locator("#funnel-by-offer tbody tr").filter(has_text=plaza_seed.VOUCHER_TITLE)
    assert row.count() == 1
    assert row.locator("td").all_inner_texts() == ["<5", "<5"]
    shot(staff, "11-funnel")
    assert violations == []
    phone.close()
    desk.close()
