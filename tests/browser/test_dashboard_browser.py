"""Headless Chromium against the merchant dashboard: sign in, read a venue, edit an offer.

The cloud runs in this process (cheroot in a thread, 127.0.0.1, an ephemeral port, SQLite in
a temp dir) with a day of usage seeded around the real clock, so the page shows what a
merchant would see. Chromium is Debian's (/usr/bin/chromium) driven by Playwright; a missing
browser fails the test rather than skipping it. Screenshots are kept under
tests/artifacts/browser/dashboard-*.png for people to look at; any CSP violation reported by
the browser fails the test (the page must work with script and inline style forbidden).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.browser.conftest import ARTIFACTS, EMAIL, PASSWORD


def shot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"dashboard-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000  # a rendered page, not a blank one
    return path


def test_merchant_signs_in_reads_the_venue_and_edits_an_offer(cloud: dict, browser: Any):
    base, venue_id, router = cloud["base"], cloud["venue_id"], cloud["router"]
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15000)
    violations: list[str] = []
    page.on("console", lambda m: violations.append(m.text)
            if "Content Security Policy" in m.text else None)  # fmt: skip

    # Signed out, the venue page leads to sign-in and back.
    page.goto(f"{base}/dashboard/venues/{venue_id}")
    assert "/dashboard/login?next=" in page.url
    shot(page, "01-sign-in")
    page.fill("#email", EMAIL)
    page.fill("#password", "not the password")
    page.click("button[type=submit]")
    assert "do not match" in page.inner_text("#login-error")
    page.fill("#password", PASSWORD)
    page.click("form button[type=submit]")
    page.wait_for_url(f"{base}/dashboard/venues/{venue_id}")

    # The venue page: the router online, people here now, four charts drawn and styled.
    assert "online" in page.inner_text("#routers tbody tr")
    assert "cafe-uno-router" in page.inner_text("#routers")
    assert "11 online, 2 at the splash" in page.inner_text("#routers")
    assert int(page.inner_text("#tile-visitors").replace(",", "")) > 100
    assert page.inner_text("#tile-returning").endswith("%")
    assert page.locator("#live tbody tr").count() > 0
    assert "02:5a:" not in page.inner_text("#live")  # masked: first octet, then bullets
    for chart in ("visitors", "data", "dwell", "returning"):
        bars = page.locator(f"#chart-{chart} svg rect.bar")
        assert bars.count() > 0, chart
        box = page.locator(f"#chart-{chart} svg").bounding_box()
        assert box and box["width"] > 250 and box["height"] > 80, (chart, box)
        fill = bars.first.evaluate("el => getComputedStyle(el).fill")
        assert fill not in ("", "none", "rgb(0, 0, 0)"), (chart, fill)  # the stylesheet applied
    shot(page, "02-venue")

    # The same page on a phone: one column, nothing wider than the screen.
    phone = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True,
                                storage_state=context.storage_state())  # fmt: skip
    mobile = phone.new_page()
    mobile.goto(f"{base}/dashboard/venues/{venue_id}")
    width = mobile.evaluate("document.documentElement.scrollWidth")
    assert width <= 392, width
    shot(mobile, "03-venue-phone")
    phone.close()

    # Edit: add an offer, save, and see the version bump.
    page.click("text=Venue settings")
    page.wait_for_url(f"{base}/dashboard/venues/{venue_id}/editor")
    page.fill("#new-title", "Two coffees for one")
    page.fill("#new-title_zh", "咖啡买一送一")
    page.fill("#new-body", "Weekdays until noon.")
    page.fill("#new-url", "http://cafe.example/offer")  # not https: refused, input kept
    page.click("#editor button[type=submit]")
    assert "New offer link: must be an https:// URL" in page.inner_text("#form-error")
    assert page.input_value("#new-title") == "Two coffees for one"
    shot(page, "04-editor-error")
    page.fill("#new-url", "https://cafe.example/offer")
    page.click("#editor button[type=submit]")
    page.wait_for_url(f"{base}/dashboard/venues/{venue_id}/editor")
    assert "Saved as version 2" in page.inner_text("main")
    assert page.input_value("#offer-0-title") == "Two coffees for one"
    assert "Two coffees for one" in page.inner_text(".preview")
    page.click("text=Push to routers now")
    assert "Asked 1 router to fetch the config now." in page.inner_text("main")
    shot(page, "05-editor-saved")
    context.close()

    # What the router now pulls, and the command it was sent.
    config = router.get("/api/v1/device/config").get_json()
    assert config["version"] == 2
    assert [(o["title"], o["url"]) for o in config["config"]["offers"]] == [
        ({"en": "Two coffees for one", "zh-CN": "咖啡买一送一"}, "https://cafe.example/offer")
    ]
    [command] = router.get("/api/v1/device/commands?wait=0").get_json()["commands"]
    assert command["op"] == "refresh-config"
    assert violations == []
