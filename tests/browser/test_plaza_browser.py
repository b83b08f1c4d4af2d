"""Headless Chromium on the merchant's Funnel tab (cloud/dashboard/plaza_views.py): signed in,
the merchant opens the venue, follows the tab, and sees the funnel chart drawn and styled,
every figure about people as "<5" or a rounded "≥N", the by-offer table, and the vouchers,
bookings and queue charts; on a phone nothing is wider than the screen; no CSP violation.
Screenshots: tests/artifacts/browser/plaza-*.png.

Its own cloud (cheroot on 127.0.0.1, SQLite in a temp dir, as tests/browser/conftest.py's)
seeded with one day of funnel steps: 12 phones join, 9 sign in, 7 get the offer push, 6 claim
the coffee voucher and 3 redeem it, 2 claim the cake one.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cheroot import wsgi

from cloud import create_app, migrations
from cloud import db as cloud_db
from cloud.accounts import create_merchant, create_venue
from tests.browser.conftest import ARTIFACTS, EMAIL, PASSWORD
from tests.cloud.funnel_helpers import seed

SHOWN = re.compile(r"^(0|<5|≥[\d,]+)$")


@pytest.fixture(scope="module")
def plaza_cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("plaza-browser")
    url = f"sqlite:///{tmp / 'cloud.db'}"
    migrations.upgrade(url)
    app = create_app({"DATABASE_URL": url, "INSTANCE_PATH": str(tmp / "instance")})
    now = time.time()
    with cloud_db.session(app) as db:
        merchant = create_merchant(db, "Cafe Uno", EMAIL, PASSWORD, now)
        venue = create_venue(db, merchant.id, "Cafe Uno Main St", now)
        db.commit()
    seed(app, venue, now, joins=12, logins=9, pushes=7, coffee=6, redeemed=3, cake=2)
    server = wsgi.Server(("127.0.0.1", 0), app, numthreads=4, server_name="plaza-test")
    server.prepare()
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    host, port = server.bind_addr[:2]
    try:
        yield {"base": f"http://{host}:{port}", "venue_id": venue.id}
    finally:
        server.stop()
        thread.join(10)
        cloud_db.engine(app).dispose()


def shot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"plaza-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000  # a rendered page, not a blank one
    return path


def test_the_merchant_reads_the_funnel(plaza_cloud: dict, browser: Any):
    base, venue_id = plaza_cloud["base"], plaza_cloud["venue_id"]
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15000)
    violations: list[str] = []
    page.on("console", lambda m: violations.append(m.text)
            if "Content Security Policy" in m.text else None)  # fmt: skip

    page.goto(f"{base}/dashboard/plaza/{venue_id}")
    assert "/dashboard/login?next=" in page.url  # signed out: sign in first, then back
    page.fill("#email", EMAIL)
    page.fill("#password", PASSWORD)
    page.click("form button[type=submit]")
    page.wait_for_url(f"{base}/dashboard/plaza/{venue_id}")
    page.goto(f"{base}/dashboard/venues/{venue_id}")
    page.click("nav >> text=Funnel")
    page.wait_for_url(f"{base}/dashboard/plaza/{venue_id}")

    bars = page.locator("#chart-funnel svg rect.bar")
    assert bars.count() == 4  # join, login, offer seen, claimed; 3 redeemed draw no bar
    assert [int(v) for v in bars.evaluate_all("els => els.map(e => e.dataset.value)")] == [
        10, 5, 5, 5,
    ]  # fmt: skip
    fill = bars.first.evaluate("el => getComputedStyle(el).fill")
    assert fill not in ("", "none", "rgb(0, 0, 0)"), fill  # the stylesheet applied
    cells = page.locator("#funnel-by-day td").all_inner_texts()
    assert cells and all(SHOWN.match(c.strip()) for c in cells), cells
    totals = page.locator("#funnel-by-day tbody tr td:last-child").all_inner_texts()
    assert totals == ["≥10", "≥5", "≥5", "≥5", "<5"]
    offers = page.locator("#funnel-by-offer tbody tr").all_inner_texts()
    assert any("Coffee" in r and "≥5" in r and "<5" in r for r in offers), offers
    for chart in ("redemptions", "bookings", "waits"):
        assert page.locator(f"#chart-{chart} svg").count() == 1, chart
    shot(page, "01-funnel")

    phone = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True,
                                storage_state=context.storage_state())  # fmt: skip
    mobile = phone.new_page()
    mobile.goto(f"{base}/dashboard/plaza/{venue_id}")
    width = mobile.evaluate("document.documentElement.scrollWidth")
    assert width <= 392, width
    shot(mobile, "02-funnel-phone")
    phone.close()
    context.close()
    assert violations == []
