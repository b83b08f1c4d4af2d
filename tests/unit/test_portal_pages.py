"""The shopper-facing pages: language, branding, splash messages, welcome, status, venue."""

# The pages use typographic apostrophes and dashes; so do the strings that look for them.
# ruff: noqa: RUF001

from __future__ import annotations

import re
import string
import time
from typing import Any

import pytest
from flask import Flask, render_template
from flask.testing import FlaskClient

from gateway.config import OfferConfig, PortalConfig
from gateway.control_client import ControlError
from portal import i18n, shopper
from portal.pages import Brand, contrast, readable_on, venue_paragraphs
from tests.fakes.control import FakeControl
from tests.portal_helpers import PHONE, PORTAL, make_app

ENV = {"REMOTE_ADDR": PHONE, "SERVER_PORT": "80"}
ALICE = {"user_id": "2088000000000001", "name": "Alice <Wang>"}


@pytest.fixture
def control() -> FakeControl:
    fake = FakeControl()
    fake.clients[PHONE] = {"mac": "02:00:00:00:00:64", "ip": PHONE, "state": "captive",
                           "seconds_remaining": None, "bytes_remaining": None}  # fmt: skip
    return fake


@pytest.fixture
def app(control: FakeControl) -> Flask:
    return make_app(control)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def get(client: FlaskClient, path: str, lang: str | None = None) -> Any:
    headers = {"Accept-Language": lang} if lang is not None else {}
    return client.get(path, base_url=PORTAL, environ_overrides=ENV, headers=headers)


def online(control: FakeControl, seconds: int | None = 3000, data: int | None = None) -> None:
    control.clients[PHONE].update(
        state="authorized", seconds_remaining=seconds, bytes_remaining=data
    )


def sign_in(
    client: FlaskClient, user: dict[str, Any] | None = None, login_at: float | None = None
) -> None:
    """As a wallet login leaves the session (portal/shopper.py): by default, just now."""
    with client.session_transaction(base_url=PORTAL) as session:
        session["wallet_user"] = {"login_at": login_at or time.time(), **(user or ALICE)}


def html_lang(text: str) -> str:
    match = re.search(r'<html lang="([^"]+)"', text)
    assert match
    return match.group(1)


# -- language ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "lang"),
    [
        (None, "en"),
        ("", "en"),
        ("zh-CN", "zh-CN"),
        ("zh", "zh-CN"),
        ("zh-Hans", "zh-CN"),
        ("zh-Hans-CN", "zh-CN"),
        ("zh-SG", "zh-CN"),
        ("zh-TW", "zh-CN"),
        ("zh-HK", "zh-CN"),
        ("ZH_cn", "zh-CN"),
        ("en-US", "en"),
        ("en-US,en;q=0.9,zh-CN;q=0.8", "en"),
        ("zh-CN,zh;q=0.9,en;q=0.8", "zh-CN"),
        ("en;q=0.4, zh-CN;q=0.6", "zh-CN"),  # q decides, not order
        ("zh;q=0.4, en;q=0.6", "en"),
        ("zh;q=0.5, en;q=0.5", "zh-CN"),  # equal q: header order
        ("fr, de;q=0.9, zh;q=0.5", "zh-CN"),  # the best we have that is acceptable
        ("fr, de;q=0.9, en;q=0.1, zh;q=0.05", "en"),
        ("fr-FR, ja", "en"),  # nothing we have: the default
        ("zh;q=0, en", "en"),  # q=0: "not this one"
        ("zh;q=0", "en"),
        ("zh;q=banana, en;q=0.1", "en"),  # a bad q-value is not trusted
        ("zh;q=2", "en"),
        ("*", "en"),
        (" , ;q=1, zh ", "zh-CN"),
        (",".join(["fr"] * 40) + ",zh", "en"),  # past the ranges we read
    ],
)
def test_negotiate(header: str | None, lang: str) -> None:
    assert i18n.negotiate(header) == lang


def test_accept_language_picks_the_page_language(client: FlaskClient) -> None:
    zh = get(client, "/", "zh-CN,zh;q=0.9,en;q=0.8").text
    assert html_lang(zh) == "zh-CN"
    assert "使用钱包登录" in zh and "Log in with wallet" not in zh
    assert "港湾咖啡" in zh and "Harbour" not in zh  # merchant_name_zh
    assert "文明上网。" in zh and "Be kind." not in zh  # terms_zh
    en = get(client, "/", "en-GB").text
    assert html_lang(en) == "en"
    assert "Log in with wallet" in en and "使用钱包登录" not in en
    assert "Harbour &amp; Co" in en and "Be kind." in en


def test_lang_parameter_overrides_and_is_remembered(client: FlaskClient) -> None:
    assert html_lang(get(client, "/?lang=zh-CN", "en").text) == "zh-CN"
    page = get(client, "/status", "en").text  # no parameter: the session remembers
    assert html_lang(page) == "zh-CN" and "我的连接" in page
    assert html_lang(get(client, "/?lang=EN", "zh-CN").text) == "en"  # any case
    assert html_lang(get(client, "/welcome", "zh-CN").text) == "en"


def test_bad_lang_parameter_is_ignored(client: FlaskClient) -> None:
    assert html_lang(get(client, "/?lang=fr", "zh").text) == "zh-CN"
    assert html_lang(get(client, "/?lang=<x>", "en").text) == "en"
    with client.session_transaction(base_url=PORTAL) as session:
        assert "lang" not in session


def test_zh_falls_back_to_english_merchant_texts_when_no_zh_variant(
    control: FakeControl,
) -> None:
    app = make_app(control, merchant_name_zh="", terms_zh="  ")
    page = get(app.test_client(), "/", "zh-CN").text
    assert "Harbour &amp; Co" in page and "Be kind." in page
    assert "使用钱包登录" in page


def test_language_switch_links_to_the_same_page_keeping_only_known_params(
    client: FlaskClient,
) -> None:
    page = get(client, "/?error=login_failed&logged_out=1&next=//evil.test", "en").text
    link = re.search(r'<a class="lang" href="([^"]+)"', page)
    assert link
    assert link.group(1).startswith("/?")
    assert "lang=zh-CN" in link.group(1) and "error=login_failed" in link.group(1)
    assert "logged_out=1" in link.group(1) and "evil" not in link.group(1)
    page = get(client, "/?error=%3Cscript%3E", "zh-CN").text
    link = re.search(r'<a class="lang" href="([^"]+)"', page)
    assert link and link.group(1) == "/?lang=en"
    assert 'href="/venue?lang=zh-CN"' in get(client, "/venue", "en").text
    # On a page that is not ours (a 404 for any path), the switch goes home.
    page = get(client, "//evil.test/x", "en").text
    assert 'class="lang" href="/?lang=zh-CN"' in page


def test_catalogues_match() -> None:
    en, zh = i18n.MESSAGES[i18n.EN], i18n.MESSAGES[i18n.ZH]
    assert set(en) == set(zh)
    for key in en:
        fields = {f for _, f, _, _ in string.Formatter().parse(en[key]) if f}
        assert fields == {f for _, f, _, _ in string.Formatter().parse(zh[key]) if f}, key
    for code in i18n.ERROR_CODES:
        assert f"error.{code}" in en


def test_t_falls_back_and_pluralizes() -> None:
    assert i18n.t("status.logout", lang="zh-CN") == "退出登录"
    assert i18n.t("no.such.key") == "no.such.key"  # outside a request: English, never a crash
    assert i18n.t("duration.minutes", count=1) == "1 minute"
    assert i18n.t("duration.minutes", count=2) == "2 minutes"


def test_add_messages_cannot_overwrite() -> None:
    i18n.add_messages({"en": {"status.logout": "X", "test.only": "Hi"}, "zh-CN": {}})
    try:
        assert i18n.t("status.logout") == "Log out"
        assert i18n.t("test.only", lang="zh-CN") == "Hi"  # missing in zh: English
    finally:
        del i18n.MESSAGES["en"]["test.only"]
    with pytest.raises(ValueError, match="unknown language"):
        i18n.add_messages({"fr": {}})


@pytest.mark.parametrize(
    ("minutes", "en", "zh"),
    [
        (0, "0 minutes", "0 分钟"),
        (1, "1 minute", "1 分钟"),
        (60, "60 minutes", "60 分钟"),
        (119, "119 minutes", "119 分钟"),
        (120, "2 hours", "2 小时"),
        (125, "2 hours 5 minutes", "2 小时 5 分钟"),
        (1441, "24 hours 1 minute", "24 小时 1 分钟"),
    ],
)
def test_duration(minutes: int, en: str, zh: str) -> None:
    assert i18n.duration(minutes, "en") == en
    assert i18n.duration(minutes, "zh-CN") == zh


@pytest.mark.parametrize(
    ("size", "shown"),
    [
        (-5, "0 MB"),
        (0, "0 MB"),
        (1, "< 0.1 MB"),
        (99_999, "< 0.1 MB"),
        (100_000, "0.1 MB"),
        (9_999_999, "9.9 MB"),  # rounded down: never more than is left
        (10_000_000, "10 MB"),
        (999_999_999, "999 MB"),
        (1_000_000_000, "1.0 GB"),
        (1_599_999_999, "1.5 GB"),
        (12_345_678_901, "12.3 GB"),
    ],
)
def test_data_size(size: int, shown: str) -> None:
    assert i18n.data_size(size) == shown


# -- branding ------------------------------------------------------------------------------


def test_brand_colour_and_logo(control: FakeControl) -> None:
    app = make_app(control, brand_color="#AA3300", logo_url="/static/logo.png")
    page = get(app.test_client(), "/").text
    assert "--brand: #aa3300;" in page
    assert '<meta name="theme-color" content="#aa3300">' in page
    assert '<img class="logo" src="/static/logo.png" alt=""' in page
    assert "background: var(--brand)" in page  # buttons and header use it


def test_https_logo_and_no_logo(control: FakeControl) -> None:
    page = get(make_app(control, logo_url="https://cdn.example/l.png").test_client(), "/").text
    assert 'src="https://cdn.example/l.png"' in page
    assert "<img" not in get(make_app(control).test_client(), "/").text


@pytest.mark.parametrize(
    "logo", ["javascript:alert(1)", "http://x.test/l.png", '/static/x" onerror="y', "//x.test/a"]
)
def test_unsafe_logo_is_dropped(control: FakeControl, logo: str) -> None:
    # Config validation refuses these; an app built from a Config object skips it.
    page = get(make_app(control, logo_url=logo).test_client(), "/").text
    assert "<img" not in page and "onerror" not in page and "alert(1)" not in page


def test_bad_brand_colour_falls_back(control: FakeControl) -> None:
    page = get(make_app(control, brand_color="red;}</style><x>").test_client(), "/").text
    assert "--brand: #0b7a75;" in page and "<x>" not in page


def test_brand_colours_stay_legible() -> None:
    """Whatever the merchant picks, text on it and links in it stay readable.

    Button labels are large bold text (WCAG: 3:1); the better of white and near-black on any
    colour reaches at least 4.2:1. Links use the colour darkened to 4.5:1 on the page.
    """
    steps = ("00", "33", "66", "80", "99", "cc", "ff")
    for color in (f"#{r}{g}{b}" for r in steps for g in steps for b in steps):
        brand = Brand.of(PortalConfig(brand_color=color), "en")
        assert contrast(brand.color, brand.on_color) >= 4.2, color
        assert contrast(brand.text_color, "#f4f5f8") >= 4.5, color
        assert contrast(readable_on("#ffffff", color), "#ffffff") >= 4.5, color


def test_light_brand_gets_dark_button_text() -> None:
    assert Brand.of(PortalConfig(brand_color="#ffd400"), "en").on_color != "#ffffff"
    assert Brand.of(PortalConfig(brand_color="#0b3d91"), "en").on_color == "#ffffff"


# -- splash --------------------------------------------------------------------------------


def test_splash_login_button_and_no_click_through_by_default(
    client: FlaskClient, control: FakeControl
) -> None:
    page = get(client, "/").text
    assert '<a class="button" href="/login/wallet">' in page
    assert "Log in with wallet" in page
    assert 'action="/continue"' not in page and 'name="accept"' not in page
    assert "<details" in page and "<summary>Terms of use</summary>" in page
    assert "<script" not in page
    with client.session_transaction(base_url=PORTAL) as session:
        session["csrf"] = "T" * 32
    resp = client.post(
        "/continue",
        data={"csrf_token": "T" * 32, "accept": "yes"},
        base_url=PORTAL,
        environ_overrides=ENV,
    )
    assert resp.status_code == 404
    assert control.ops("auth") == []


def test_splash_click_through_when_enabled(control: FakeControl) -> None:
    page = get(make_app(control, click_through=True).test_client(), "/", "zh-CN").text
    assert 'href="/login/wallet"' in page and "使用钱包登录" in page
    assert 'action="/continue"' in page and 'name="accept" value="yes" required' in page
    assert "同意并继续" in page and 'name="csrf_token"' in page


def test_splash_when_online_offers_welcome_and_status(
    client: FlaskClient, control: FakeControl
) -> None:
    online(control)
    page = get(client, "/").text
    assert "You’re online" in page
    assert 'href="/welcome"' in page and 'href="/status"' in page
    assert 'href="/login/wallet"' not in page


def test_logged_out_message_localized(client: FlaskClient) -> None:
    assert "You are logged out" in get(client, "/?logged_out=1").text
    assert "您已退出登录" in get(client, "/?logged_out=1", "zh").text
    assert "logged out" not in get(client, "/?logged_out=yes").text


@pytest.mark.parametrize("code", sorted(i18n.ERROR_CODES))
def test_error_codes_are_localized(client: FlaskClient, code: str) -> None:
    en = get(client, f"/?error={code}").text
    assert i18n.t(f"error.{code}", lang="en").replace("'", "&#39;") in en
    assert 'role="alert"' in en
    zh = get(client, f"/?error={code}", "zh-CN").text
    assert i18n.t(f"error.{code}", lang="zh-CN") in zh


@pytest.mark.parametrize(
    "code",
    [
        "%3Cscript%3Ealert(1)%3C/script%3E",
        "%22%3E%3Cimg%20src=x%20onerror=alert(1)%3E",
        "not_a_code_xyz",
        "error.login_failed",
        "__class__",
    ],
)
def test_unknown_error_codes_show_a_generic_message_and_reflect_nothing(
    client: FlaskClient, code: str
) -> None:
    page = get(client, f"/?error={code}").text
    assert "Something went wrong. Please try again." in page
    for fragment in ("<script", "alert(1)", "onerror", "not_a_code_xyz", "__class__", "<img"):
        assert fragment not in page
    assert "出了点问题" in get(client, f"/?error={code}", "zh-CN").text


# -- welcome -------------------------------------------------------------------------------


def test_welcome_shows_user_time_data_and_offers(client: FlaskClient, control: FakeControl) -> None:
    online(control, seconds=125 * 60, data=1_500_000_000)
    sign_in(client)
    resp = get(client, "/welcome")
    page = resp.text
    assert resp.status_code == 200 and resp.headers["Cache-Control"] == "no-store"
    assert "You’re online" in page
    assert "Signed in as Alice &lt;Wang&gt;" in page  # escaped
    assert "2 hours 5 minutes" in page and "1.5 GB" in page
    assert "Free pastry" in page and "With any latte." in page and "10th cup free" in page
    assert '<a href="https://example.com/offer?a=1&amp;b=2" rel="noopener noreferrer">' in page
    assert page.count('rel="noopener noreferrer"') == 1  # the offer without a url has no link
    assert 'href="/venue"' in page and 'href="/status"' in page
    assert "<script" not in page


def test_welcome_in_chinese(client: FlaskClient, control: FakeControl) -> None:
    online(control, seconds=59)
    sign_in(client, {"user_id": "u", "name": "王小明"})
    page = get(client, "/welcome", "zh-CN").text
    assert html_lang(page) == "zh-CN"
    assert "您已连接网络" in page and "已登录：王小明" in page and "1 分钟" in page
    assert "免费糕点" in page and "购买任意拿铁即送。" in page
    assert "10th cup free" in page  # no zh variant: the English one
    assert "在钱包中记住我，下次一键连接" in page


def test_welcome_without_a_name(client: FlaskClient, control: FakeControl) -> None:
    online(control, seconds=None)
    sign_in(client, {"user_id": "u", "name": None})
    page = get(client, "/welcome").text
    assert "Signed in with your wallet" in page and "Time left" not in page


def test_welcome_reconnect_form_when_enabled_and_signed_in(
    client: FlaskClient, control: FakeControl
) -> None:
    online(control)
    sign_in(client)
    page = get(client, "/welcome").text
    form = re.search(r'<form method="post" action="/reconnect">(.*?)</form>', page, re.S)
    assert form, "no reconnect form"
    assert re.search(r'name="csrf_token" value="[^"]+"', form.group(1))
    assert 'type="checkbox" name="remember" value="yes"' in form.group(1)
    assert "checked" not in form.group(1)  # opt-in, never pre-ticked
    assert "Remember me in my wallet for one-tap reconnect" in form.group(1)


def test_welcome_no_reconnect_form_without_wallet_user(
    client: FlaskClient, control: FakeControl
) -> None:
    online(control)
    page = get(client, "/welcome").text
    assert "You’re online" in page and "Signed in" not in page
    assert 'action="/reconnect"' not in page
    sign_in(client, {"user_id": "", "name": "x"})  # malformed: not a user
    assert 'action="/reconnect"' not in get(client, "/welcome").text


def test_welcome_no_reconnect_form_long_after_the_wallet_login(
    client: FlaskClient, control: FakeControl
) -> None:
    """A token is minted only right after a wallet login (portal/shopper.py), so the form
    is not offered later in the session either."""
    online(control)
    sign_in(client, login_at=time.time() - shopper.RECENT_LOGIN_SECONDS - 5)
    page = get(client, "/welcome").text
    assert "Signed in" in page and 'action="/reconnect"' not in page


def test_a_session_that_ended_takes_the_wallet_user_with_it(
    client: FlaskClient, control: FakeControl
) -> None:
    online(control)
    control.clients[PHONE]["session_id"] = "s1"
    sign_in(client, {**ALICE, "session_id": "s1"})
    assert "Signed in" in get(client, "/welcome").text
    # The gateway ended it (timeout, quota, a kick) and the phone is in a new session now.
    control.clients[PHONE]["session_id"] = "s2"
    assert "Signed in" not in get(client, "/welcome").text
    with client.session_transaction(base_url=PORTAL) as session:
        assert "wallet_user" not in session
    # Captive again: the same.
    sign_in(client, {**ALICE, "session_id": "s2"})
    control.clients[PHONE].update(state="captive", session_id=None)
    get(client, "/welcome")
    with client.session_transaction(base_url=PORTAL) as session:
        assert "wallet_user" not in session


def test_welcome_no_reconnect_form_when_disabled(control: FakeControl) -> None:
    online(control)
    client = make_app(control, reconnect=False).test_client()
    sign_in(client)
    page = get(client, "/welcome").text
    assert "Alice" in page and 'action="/reconnect"' not in page


@pytest.mark.parametrize("known", [True, False])
def test_welcome_when_not_online_shows_login(
    client: FlaskClient, control: FakeControl, known: bool
) -> None:
    if not known:
        del control.clients[PHONE]
    sign_in(client)
    resp = get(client, "/welcome")
    assert resp.status_code == 200
    assert "not online yet" in resp.text and 'href="/login/wallet"' in resp.text
    assert "Alice" not in resp.text and 'action="/reconnect"' not in resp.text
    assert 'class="note bad"' not in resp.text


def test_welcome_when_gateway_down_is_503(client: FlaskClient, control: FakeControl) -> None:
    control.fail = ControlError("the gateway did not answer in time")
    assert get(client, "/welcome").status_code == 503


def test_welcome_without_offers(control: FakeControl) -> None:
    online(control)
    page = get(make_app(control, offers=()).test_client(), "/welcome").text
    assert "No offers right now" in page


def test_welcome_says_reconnect_was_forgotten(client: FlaskClient, control: FakeControl) -> None:
    online(control)
    assert "One-tap reconnect is off" in get(client, "/welcome?forgotten=1").text


def test_offer_link_must_be_https(control: FakeControl) -> None:
    online(control)
    offers = (OfferConfig(title="Bad", url="javascript:alert(1)"),)
    page = get(make_app(control, offers=offers).test_client(), "/welcome").text
    assert "Bad" in page and "javascript" not in page


# -- status --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "shown"), [(1_500_000_000, "1.5 GB"), (250_000_000, "250 MB"), (0, "0 MB")]
)
def test_status_shows_data_left(
    client: FlaskClient, control: FakeControl, data: int, shown: str
) -> None:
    online(control, data=data)
    page = get(client, "/status").text
    assert "Data left" in page and f"<dd>{shown}</dd>" in page
    assert "剩余流量" in get(client, "/status", "zh-CN").text


def test_status_without_data_limit(client: FlaskClient, control: FakeControl) -> None:
    online(control, data=None)
    page = get(client, "/status").text
    assert "Data left" not in page and "50 minutes" in page


def test_status_links_to_offers_and_venue(client: FlaskClient) -> None:
    page = get(client, "/status").text
    assert 'href="/welcome"' in page and 'href="/venue"' in page


def test_status_in_chinese(client: FlaskClient, control: FakeControl) -> None:
    online(control, seconds=61)
    page = get(client, "/status", "zh-CN").text
    assert "已连接" in page and "2 分钟" in page and "退出登录" in page
    assert 'action="/logout"' in page


def test_logout_forgets_the_wallet_user(client: FlaskClient, control: FakeControl) -> None:
    online(control)
    sign_in(client)
    with client.session_transaction(base_url=PORTAL) as session:
        session["csrf"] = "T" * 32
    resp = client.post(
        "/logout", data={"csrf_token": "T" * 32}, base_url=PORTAL, environ_overrides=ENV
    )
    assert resp.status_code == 303
    with client.session_transaction(base_url=PORTAL) as session:
        assert "wallet_user" not in session


# -- venue ---------------------------------------------------------------------------------


def test_venue_page_escapes_and_splits_paragraphs(control: FakeControl) -> None:
    info = "Open 7–21 <b>daily</b>\nLevel 1\n\n<script>alert(1)</script>\r\n\r\nBye"
    resp = get(make_app(control, venue_info=info).test_client(), "/venue")
    assert resp.status_code == 200
    page = resp.text
    assert "<p>Open 7–21 &lt;b&gt;daily&lt;/b&gt;\nLevel 1</p>" in page
    assert "<p>&lt;script&gt;alert(1)&lt;/script&gt;</p>" in page and "<p>Bye</p>" in page
    assert "<script" not in page and "<b>" not in page
    assert "Harbour &amp; Co" in page and "Free pastry" in page
    assert 'href="/"' in page  # captive: a way to get online


def test_venue_reachable_while_gateway_is_down(client: FlaskClient, control: FakeControl) -> None:
    control.fail = ControlError("the gateway is not running (no control socket at /x)")
    page = get(client, "/venue", "zh-CN")
    assert page.status_code == 200 and "港湾咖啡" in page.text and "免费糕点" in page.text


def test_venue_paragraphs() -> None:
    assert venue_paragraphs("") == []
    assert venue_paragraphs("a\nb\n \n\nc\n") == ["a\nb", "c"]


# -- every page ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/welcome", "/status", "/venue", "/nope"])
@pytest.mark.parametrize("lang", ["en", "zh-CN"])
def test_every_page_is_mobile_safe_and_headed(
    client: FlaskClient, control: FakeControl, path: str, lang: str
) -> None:
    online(control, data=5_000_000)
    sign_in(client)
    resp = get(client, path, lang)
    page = resp.text
    assert resp.status_code == (404 if path == "/nope" else 200)
    assert html_lang(page) == lang
    assert '<meta name="viewport" content="width=device-width, initial-scale=1' in page
    assert "<script" not in page
    assert resp.headers["Cache-Control"] == "no-store"
    assert resp.headers["X-Frame-Options"] == "DENY"
    assert "default-src 'self'" in resp.headers["Content-Security-Policy"]
    assert "{" + "{" not in page and "error." not in page  # no template or catalogue leaks
    assert page.count("<h1") == 1


def test_static_files_are_served_on_the_portal_host(client: FlaskClient) -> None:
    resp = get(client, "/static/favicon.svg")
    assert resp.status_code == 200 and resp.mimetype == "image/svg+xml"
    resp = client.get("/static/favicon.svg", base_url="http://example.com/", environ_overrides=ENV)
    assert resp.status_code == 302  # a foreign host is intercepted, as before


def test_reconnect_page_renders_in_both_languages(app: Flask) -> None:
    link = PORTAL + "reconnect/tok"
    with app.test_request_context("/reconnect", headers={"Accept-Language": "zh-CN"}):
        page = render_template("reconnect.html", link=link, saved=True)
    assert "一键连接已开启" in page and f'href="{link}"' in page
    assert 'action="/reconnect/forget"' in page and 'name="csrf_token"' in page
    with app.test_request_context("/reconnect"):
        page = render_template("reconnect.html", link=link, saved=False)
    assert "couldn’t be reached" in page and "Forget me" in page
