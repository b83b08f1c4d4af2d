"""The shopper web app's wallet sign-in (issue 16 item 1): the cloud as an OIDC client of the
sandbox wallet with PKCE (plaza.wallet, the portal's client), the shop's own session cookie,
its pages (two languages, no script, strict CSP), and the sign-in's bad inputs. Every test
runs on SQLite and PostgreSQL (tests/cloud/conftest.py)."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from cloud import db as cloud_db
from cloud.o2o.shoppers import Shopper
from lab.wallet import app as wallet_app
from tests.cloud.o2o_helpers import CLOUD, SandboxWallet, csrf, get, post, sign_in
from tests.wallet_harness import Browser


def shoppers(app: Flask) -> list[tuple[str, str, str | None]]:
    with cloud_db.session(app) as db:
        rows = db.execute(select(Shopper.provider, Shopper.subject, Shopper.display_name))
        return sorted(tuple(r) for r in rows)


def cookie(client: FlaskClient, name: str) -> object:
    return client.get_cookie(name, domain="cloud.plaza.test", path="/plaza")


def test_a_shopper_signs_in_with_the_wallet(
    shop_app: Flask, client: FlaskClient, sandbox_wallet: SandboxWallet
):
    start = get(client, "/plaza/login/wallet")
    query = dict(parse_qsl(urlsplit(start.location).query))
    assert query["code_challenge_method"] == "S256" and query["code_challenge"]
    assert query["redirect_uri"] == CLOUD + "/plaza/login/callback"
    assert "plaza_shop=" in start.headers["Set-Cookie"]
    flags = start.headers["Set-Cookie"].lower()
    assert "httponly" in flags and "secure" in flags and "samesite=lax" in flags
    assert "path=/plaza" in flags
    back = wallet_app.approve(Browser(sandbox_wallet.ca_file), start.location, "alice", "1234")
    parts = urlsplit(back.location)
    done = get(client, f"{parts.path}?{parts.query}")
    assert done.status_code == 303 and done.location.endswith("/plaza/")
    home = get(client, "/plaza/").get_data(as_text=True)
    assert "Hello, Alice Wang" in home
    assert shoppers(shop_app) == [("oidc", "2088000000000001", "Alice Wang")]
    # Signing in again is the same shopper.
    assert sign_in(client, sandbox_wallet).status_code == 303
    assert len(shoppers(shop_app)) == 1
    assert client.get_cookie("plaza_dashboard") is None  # the merchant's cookie is another


def test_a_callback_from_another_login_or_browser_is_refused(
    shop_app: Flask, client: FlaskClient, sandbox_wallet: SandboxWallet, app: Flask
):
    start = get(client, "/plaza/login/wallet")
    back = wallet_app.approve(Browser(sandbox_wallet.ca_file), start.location, "alice", "1234")
    args = dict(parse_qsl(urlsplit(back.location).query))
    # Another browser (no transaction in its cookie) brings the code: refused.
    other = app.test_client()
    stolen = get(other, "/plaza/login/callback?" + urlencode(args))
    assert stolen.status_code == 303 and "error=failed" in stolen.location
    # This browser, but with a state that is not the one it sent: refused, and used up.
    forged = get(client, "/plaza/login/callback?" + urlencode({**args, "state": "x" * 32}))
    assert "error=failed" in forged.location
    assert "error=failed" in get(client, "/plaza/login/callback?" + urlencode(args)).location
    assert shoppers(shop_app) == []
    page = get(client, "/plaza/signin?error=failed").get_data(as_text=True)
    assert "did not complete" in page


def test_signing_in_comes_back_to_the_page_asked_for_and_only_inside_the_shop(
    shop_app: Flask, client: FlaskClient, sandbox_wallet: SandboxWallet, venue: object
):
    asked = get(client, "/plaza/payments/pay_0123456789abcdef")
    assert asked.status_code == 303
    assert asked.location.endswith("/plaza/signin?next=/plaza/payments/pay_0123456789abcdef")
    get(client, asked.location)
    assert sign_in(client, sandbox_wallet).location.endswith("/plaza/payments/pay_0123456789abcdef")
    for evil in ("https://evil.example/", "//evil.example/plaza/", "/dashboard/", "/plaza/../x"):
        get(client, "/plaza/signin?" + urlencode({"next": evil}))
        assert sign_in(client, sandbox_wallet).location.endswith("/plaza/"), evil


def test_signing_out_needs_the_forms_token(
    shop_app: Flask, client: FlaskClient, sandbox_wallet: SandboxWallet
):
    sign_in(client, sandbox_wallet)
    assert post(client, "/plaza/signout", {}).status_code == 400
    assert "Hello" in get(client, "/plaza/").get_data(as_text=True)
    token = csrf(get(client, "/plaza/"))
    assert post(client, "/plaza/signout", {"csrf_token": token}).status_code == 303
    assert "Hello" not in get(client, "/plaza/").get_data(as_text=True)


def test_pages_speak_chinese_or_english_with_no_script_and_a_strict_csp(
    shop_app: Flask, client: FlaskClient
):
    zh = client.get("/plaza/", base_url=CLOUD, headers={"Accept-Language": "zh-CN,zh;q=0.9"})
    body = zh.get_data(as_text=True)
    assert '<html lang="zh-CN">' in body and "用钱包登录" in body
    csp = zh.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp
    assert "frame-ancestors 'none'" in csp and "form-action 'self' https://127.0.0.1:" in csp
    assert "<script" not in body and "style=" not in body
    en = client.get("/plaza/?lang=en", base_url=CLOUD, headers={"Accept-Language": "zh-CN"})
    assert "Sign in with wallet" in en.get_data(as_text=True)
    kept = client.get("/plaza/signin", base_url=CLOUD, headers={"Accept-Language": "zh-CN"})
    assert '<html lang="en">' in kept.get_data(as_text=True)  # the ?lang= choice is kept
    assert get(client, "/plaza/static/shop.css").status_code == 200


def test_without_a_wallet_sign_in_says_it_is_unavailable(app: Flask, client: FlaskClient):
    answer = get(client, "/plaza/login/wallet")
    assert answer.status_code == 503 and "not available" in answer.get_data(as_text=True)
    with cloud_db.session(app) as db:
        assert db.scalar(select(func.count()).select_from(Shopper)) == 0


def test_the_alipay_dialect_signs_in_through_the_same_pages(
    shop_app: Flask, client: FlaskClient, sandbox_wallet: SandboxWallet
):
    """With PLAZA_CLOUD_WALLET_DIALECT=alipay the same routes speak the Alipay dialect (the
    portal's AlipayProvider: auth_code, the signed token call). The sandbox's one app is
    registered with the cloud's callback for this test only."""
    import dataclasses

    from cloud.o2o.settings import SIGN_IN_EXT

    shop_app.config["WALLET_DIALECT"] = "alipay"
    shop_app.extensions.pop(SIGN_IN_EXT, None)
    state = sandbox_wallet.app.extensions["wallet_alipay"]
    original = state.settings
    registered = dataclasses.replace(
        original.alipay_apps[0], redirect_uri=CLOUD + "/plaza/login/callback"
    )
    state.settings = dataclasses.replace(original, alipay_apps=(registered,))
    try:
        start = get(client, "/plaza/login/wallet")
        assert start.location.startswith(sandbox_wallet.url + "/oauth2/publicAppAuthorize.htm?")
        query = dict(parse_qsl(urlsplit(start.location).query))
        assert query["app_id"] == registered.app_id and query["state"]
        back = wallet_app.approve(Browser(sandbox_wallet.ca_file), start.location, "mei", "2468")
        assert "auth_code=" in back.location
        parts = urlsplit(back.location)
        done = get(client, f"{parts.path}?{parts.query}")
        assert done.status_code == 303 and done.location.endswith("/plaza/")
        # The same callback again (a replay): its transaction is used up, nobody signs in.
        replay = get(client, f"{parts.path}?{parts.query}")
        assert "error=failed" in replay.location
    finally:
        state.settings = original
    assert shoppers(shop_app) == [("alipay", "2088000000000003", "王美")]
    assert "王美" in get(client, "/plaza/").get_data(as_text=True)
