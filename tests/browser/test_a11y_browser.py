"""axe-core (WCAG 2.1 A and AA rules) on every portal and dashboard page, phone and desktop.

Each page is loaded in headless Chromium at 390x844 (a phone) and 1280x800 (a desktop); the
portal in English and in Chinese (its language follows Accept-Language), the dashboard in
English only (it has no other language yet). Any violation of impact serious or critical fails
the test; the minor and moderate ones are printed. A few measurements axe does not make are
asserted too: chart text at least 12 px on the phone, navigation links at least 44 px tall,
tables that fit the phone's width. Screenshots land in tests/artifacts/browser/a11y-*.png.

axe.min.js comes from npm (`make test` installs it under .cache/axe); it is injected into the
page with Playwright, which a strict CSP (script-src 'self' or none) would block, so the axe
contexts, and only they, are made with bypass_csp=True. The CSP itself is checked by the
other browser tests.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from cheroot import wsgi
from flask import Flask, render_template

from gateway.config import OfferConfig
from tests.browser.conftest import ARTIFACTS, EMAIL, PASSWORD, audit
from tests.fakes.control import FakeControl
from tests.portal_helpers import OFFERS, PHONE, PORTAL, make_app

SIZES = {"phone": (390, 844), "desktop": (1280, 800)}
PORTAL_HOST = PORTAL.split("/")[2]


def readme_shot(page: Any, name: str) -> None:
    """A phone-sized screenshot (what the screen shows, not the whole page) for the README:
    refresh docs/screenshots/ by copying tests/artifacts/browser/readme-*.png there."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"readme-{name}.png"))


def small_text(page: Any) -> list[str]:
    """Visible text drawn smaller than 12 CSS pixels (an SVG's text scales with its viewBox)."""
    return page.evaluate(
        """() => [...document.querySelectorAll('body *')].filter(el => {
             const own = [...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
             if (!own || !el.getClientRects().length) return false;
             const r = el.getBoundingClientRect();
             if (r.width === 0 || r.height === 0) return false;
             const size = parseFloat(getComputedStyle(el).fontSize);
             if (el instanceof SVGElement) return size * el.getScreenCTM().a < 12;  // scaled
             return size < 12;
           }).map(el => el.tagName + ':' + el.textContent.trim().slice(0, 20))"""
    )


def small_nav_links(page: Any) -> list[str]:
    """Links in the header and navigation shorter than 44 px (WCAG 2.5.5 touch targets)."""
    return page.evaluate(
        """() => [...document.querySelectorAll('header a, nav a')]
             .filter(a => a.getClientRects().length && a.getBoundingClientRect().height < 44)
             .map(a => a.textContent.trim() + ' ' + a.getBoundingClientRect().height)"""
    )


# -- the portal ----------------------------------------------------------------------------


class PhoneOnPortal:
    """WSGI wrapper: every request arrives as the phone on the portal's host (the portal only
    serves its pages there, and reads the station from the source address)."""

    def __init__(self, app: Flask) -> None:
        self.app = app

    def __call__(self, environ: dict, start_response: Callable) -> Any:
        environ.update(HTTP_HOST=PORTAL_HOST, REMOTE_ADDR=PHONE, SERVER_PORT="80")
        return self.app(environ, start_response)


@pytest.fixture(scope="module")
def portal() -> Iterator[dict[str, Any]]:
    control = FakeControl()
    control.clients[PHONE] = {"mac": "02:00:00:00:00:64", "ip": PHONE, "state": "captive",
                              "seconds_remaining": None, "bytes_remaining": None}  # fmt: skip
    offers = (
        OFFERS[0],
        OfferConfig(title="10th cup free", text="Collect stamps.", title_zh="第十杯免费",
                    text_zh="集章换咖啡。"),
    )  # fmt: skip
    app = make_app(control, offers=offers, venue_info="Open 8:00-20:00. Toilets upstairs.")

    # The reconnect page is only reached through a wallet round trip; this test-only route
    # renders the real template with what the portal passes it (portal/reconnect.py).
    def reconnect_page(saved: str) -> str:
        link = PORTAL + "reconnect/tok"
        return render_template("reconnect.html", link=link, saved=saved == "saved")

    app.add_url_rule("/test-only/reconnect/<saved>", view_func=reconnect_page)
    with app.test_request_context():
        serializer = app.session_interface.get_signing_serializer(app)  # type: ignore[attr-defined]
        cookie = serializer.dumps(
            {
                "wallet_user": {
                    "login_at": time.time(),
                    "user_id": "2088000000000001",
                    "name": "Alice Wang",
                }
            }
        )
    server = wsgi.Server(("127.0.0.1", 0), PhoneOnPortal(app), numthreads=4)
    server.prepare()
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    host, port = server.bind_addr[:2]
    try:
        yield {"base": f"http://{host}:{port}", "control": control, "cookie": cookie}
    finally:
        server.stop()
        thread.join(10)


CAPTIVE = ["/", "/nope"]
ONLINE = ["/welcome", "/status", "/venue", "/test-only/reconnect/saved",
          "/test-only/reconnect/failed"]  # fmt: skip


@pytest.mark.parametrize("lang", ["en", "zh-CN"])
@pytest.mark.parametrize("size", SIZES)
def test_portal_pages_pass_axe(portal: dict, browser: Any, lang: str, size: str) -> None:
    width, height = SIZES[size]
    context = browser.new_context(
        viewport={"width": width, "height": height}, is_mobile=size == "phone",
        extra_http_headers={"Accept-Language": lang}, bypass_csp=True,  # for axe only, above
    )  # fmt: skip
    base = portal["base"]
    page = context.new_page()
    bad: list[str] = []
    tiny: list[str] = []
    client = portal["control"].clients[PHONE]
    try:
        for path in CAPTIVE + ONLINE:
            if path == ONLINE[0]:  # signed in through the wallet, now online
                client.update(state="authorized", seconds_remaining=3000)
                context.add_cookies([{"name": "plaza_session", "value": portal["cookie"],
                                      "url": base}])  # fmt: skip
            page.goto(base + path)
            assert page.locator("html").get_attribute("lang") == lang, path
            if lang == "zh-CN" and path != "/nope":
                assert any("\u4e00" <= ch <= "\u9fff" for ch in page.inner_text("main")), path
            name = f"portal-{lang}-{size}{path.replace('/', '-').rstrip('-') or '-splash'}"
            bad += audit(page, name)
            if size == "phone" and path in ("/", "/welcome"):
                readme_shot(page, f"portal-{path.strip('/') or 'splash'}-{lang}")
            if size == "phone":
                tiny += [f"{path}: {t}" for t in small_text(page)]
                assert page.evaluate("document.documentElement.scrollWidth") <= width + 2, path
    finally:
        client.update(state="captive", seconds_remaining=None)
        context.close()
    assert bad == []
    assert tiny == []


# -- the dashboard (English only) ---------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
def test_dashboard_pages_pass_axe(cloud: dict, browser: Any, size: str) -> None:
    width, height = SIZES[size]
    context = browser.new_context(
        viewport={"width": width, "height": height}, is_mobile=size == "phone",
        bypass_csp=True,  # for axe only, see the docstring
    )  # fmt: skip
    base, venue_id = cloud["base"], cloud["venue_id"]
    page = context.new_page()
    page.set_default_timeout(15000)
    bad: list[str] = []
    tiny: list[str] = []
    short: list[str] = []

    def check(name: str) -> None:
        nonlocal bad, tiny, short
        bad += audit(page, f"dashboard-{size}-{name}")
        tiny += [f"{name}: {t}" for t in small_text(page)]
        assert page.evaluate("document.documentElement.scrollWidth") <= width + 2, name
        short += [f"{name}: {t}" for t in small_nav_links(page)]

    try:
        page.goto(f"{base}/dashboard/login")
        check("login")
        page.fill("#email", EMAIL)
        page.fill("#password", PASSWORD)
        page.click("form button[type=submit]")
        page.wait_for_url(f"{base}/dashboard/")
        check("venues")
        page.goto(f"{base}/dashboard/venues/{venue_id}")
        assert page.locator("#live tbody tr").count() > 0
        assert page.locator("#chart-visitors svg rect.bar").count() > 0
        check("venue")
        if size == "phone":
            readme_shot(page, "dashboard-phone")
            page.evaluate("document.getElementById('charts').scrollIntoView()")
            readme_shot(page, "dashboard-phone-charts")
        if size == "phone":  # every table cell readable without sideways scrolling
            cells = page.evaluate(
                """() => [...document.querySelectorAll('td, th')].filter(c =>
                     c.getClientRects().length && c.getBoundingClientRect().right > 391)
                     .map(c => c.textContent.trim())"""
            )
            assert cells == []
        page.goto(f"{base}/dashboard/venues/{venue_id}/editor")
        check("editor")
        page.click("#claim button[type=submit]")
        page.wait_for_selector("#claim-code")
        check("claim")
        page.goto(f"{base}/dashboard/venues/nope")  # the dashboard's own error page
        check("not-found")
        page.goto(f"{base}/dashboard/nope")  # a mistyped address: the same page, not JSON
        assert page.locator("h1").count() == 1
        check("mistyped")
    finally:
        context.close()
    assert bad == []
    assert tiny == []
    assert short == []


def test_axe_finds_a_serious_violation(browser: Any) -> None:
    """The check itself can fail: a page with grey-on-grey text and an unlabelled field."""
    context = browser.new_context(bypass_csp=True)
    page = context.new_page()
    page.set_content(
        '<html lang="en"><title>t</title><body><main><p style="color:#aaa;background:#bbb">'
        "hard to read</p><input></main></body></html>"
    )
    try:
        bad = audit(page, "self-test")
    finally:
        context.close()
    assert any("color-contrast" in b for b in bad) and any("label" in b for b in bad), bad


def test_chinese_glyphs_render(browser: Any) -> None:
    """A CJK font is installed (fonts-noto-cjk), so Chinese screenshots show characters, not
    boxes: two different characters draw different pixels (missing glyphs draw one box)."""
    context = browser.new_context()
    page = context.new_page()
    page.set_content('<html lang="zh-CN"><body></body></html>')
    try:
        pixels = page.evaluate(
            """chars => chars.map(ch => {
                 const c = document.createElement('canvas');
                 c.width = c.height = 40;
                 const g = c.getContext('2d');
                 g.font = '32px sans-serif';
                 g.fillText(ch, 2, 34);
                 return Array.from(g.getImageData(0, 0, 40, 40).data).join(',');
               })""",
            ["使", "用", "钱"],
        )
    finally:
        context.close()
    assert len(set(pixels)) == 3
