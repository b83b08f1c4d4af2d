"""Wallet login, the RFC 8908 API, one-tap reconnect and the welcome page's push card
(portal/push.py), with a fake wallet and gateway."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask
from flask.testing import FlaskClient

from gateway.config import CloudConfig, PortalConfig, ReconnectConfig
from gateway.control_client import ControlError
from plaza import signing
from plaza.wallet import consent, rsa2
from portal import create_app, shopper
from portal.reconnect import TokenError, Tokens
from tests.fakes.control import FakeControl
from tests.unit.conftest import MakeConfig

PHONE = "198.19.0.100"
PORTAL = "https://portal.plaza.test/"
ENV = {"REMOTE_ADDR": PHONE, "SERVER_PORT": "443"}
BASE = "https://portal.plaza.test"


class LoginError(Exception):
    pass


class FakeWallet:
    """Stands in for plaza.wallet providers: checks state like they do, remembers calls."""

    def __init__(self) -> None:
        self.finished: list[Mapping[str, str]] = []

    def start(self, redirect_uri: str) -> tuple[str, dict]:
        return f"https://wallet.test/authorize?state=S1&redirect_uri={redirect_uri}", {
            "state": "S1"
        }

    def finish(self, args: Mapping[str, str], txn: dict, redirect_uri: str) -> Any:
        self.finished.append(dict(args))
        if args.get("state") != txn["state"]:
            raise LoginError("state mismatch")
        if args.get("code") == "down":
            raise LoginError("the wallet is unreachable")

        class User:
            user_id, display_name, dialect = "2088000000000001", "Alice Wang", "oidc"

        return User()

    def pass_url(self, link: str, title: str, offers: bool = False) -> str:
        extra = {"offers": "1"} if offers else {}
        return "https://wallet.test/passes/add?" + urlencode(
            {"client_id": "plaza-portal", "title": title, "link": link, **extra}
        )


@pytest.fixture
def control() -> FakeControl:
    fake = FakeControl()
    fake.clients[PHONE] = {"mac": "02:50:4c:00:00:01", "ip": PHONE, "state": "captive",
                           "seconds_remaining": None, "bytes_remaining": None}  # fmt: skip
    return fake


@pytest.fixture
def wallet(monkeypatch: pytest.MonkeyPatch) -> FakeWallet:
    import portal.login as login

    monkeypatch.setattr(login, "login_error", lambda: LoginError)
    return FakeWallet()


@pytest.fixture
def app(make_config: MakeConfig, control: FakeControl, wallet: FakeWallet) -> Flask:
    config = make_config(portal=PortalConfig(cert_file="/x.pem", key_file="/x.key"))
    app = create_app(
        {"PLAZA_CONFIG": config, "CONTROL": control, "SECRET_KEY": "k" * 32, "TESTING": True}
    )
    app.extensions["wallet_provider"] = wallet
    return app


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def get(client: FlaskClient, path: str) -> Any:
    return client.get(path, environ_overrides=ENV, base_url=BASE)


def login(client: FlaskClient, state: str = "S1") -> Any:
    start = get(client, "/login/wallet")
    assert start.status_code == 302
    assert start.headers["Location"].startswith("https://wallet.test/authorize")
    assert "redirect_uri=https://portal.plaza.test/login/callback" in start.headers["Location"]
    return get(client, f"/login/callback?code=abc&state={state}")


# -- RFC 8908 -------------------------------------------------------------------------------
def test_capport_api_while_captive(client: FlaskClient) -> None:
    r = get(client, "/api/captive")
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/captive+json"
    assert r.headers["Cache-Control"] == "private"
    assert r.json == {
        "captive": True,
        "user-portal-url": PORTAL,
        "venue-info-url": PORTAL + "venue",
    }


def test_capport_api_when_online(client: FlaskClient, control: FakeControl) -> None:
    control.clients[PHONE].update(state="authorized", seconds_remaining=1800)
    doc = get(client, "/api/captive").json
    assert doc["captive"] is False
    assert doc["seconds-remaining"] == 1800
    assert "bytes-remaining" not in doc  # not limited: not sent
    assert doc["can-extend-session"] is True
    control.clients[PHONE]["bytes_remaining"] = 10_000_000
    assert get(client, "/api/captive").json["bytes-remaining"] == 10_000_000


def test_capport_api_for_unknown_client_and_gateway_down(
    client: FlaskClient, control: FakeControl
) -> None:
    del control.clients[PHONE]
    assert get(client, "/api/captive").json["captive"] is True
    control.fail = ControlError("the gateway is not running (no control socket at /x)")
    assert get(client, "/api/captive").status_code == 503


def test_capport_document_is_small_utf8_json(client: FlaskClient) -> None:
    r = get(client, "/api/captive")
    assert len(r.data) <= 4096
    r.data.decode("utf-8")


# -- login ------------------------------------------------------------------------------------
def test_wallet_login_authorizes_and_lands_on_welcome(
    client: FlaskClient, control: FakeControl
) -> None:
    r = login(client)
    assert r.status_code == 303 and r.headers["Location"] == "/welcome"
    assert control.ops("auth") == [PHONE]
    with client.session_transaction(base_url=BASE) as s:
        user = s["wallet_user"]
        assert (user["user_id"], user["name"]) == ("2088000000000001", "Alice Wang")
        # Bound to the gateway session the login opened, and stamped as a wallet login.
        assert user["session_id"] == control.clients[PHONE]["session_id"] == "s1"
        assert abs(user["login_at"] - time.time()) < 60
        assert "login_txn" not in s  # single use


def test_forged_state_never_authorizes(client: FlaskClient, control: FakeControl) -> None:
    r = login(client, state="forged")
    assert r.status_code == 303 and r.headers["Location"] == "/?error=login_failed"
    assert control.ops("auth") == []


def test_callback_without_a_started_login_is_refused(
    client: FlaskClient, control: FakeControl, wallet: FakeWallet
) -> None:
    r = get(client, "/login/callback?code=abc&state=S1")
    assert r.headers["Location"] == "/?error=session_expired"
    assert wallet.finished == [] and control.ops("auth") == []


def test_replayed_callback_is_refused(client: FlaskClient, control: FakeControl) -> None:
    login(client)
    r = get(client, "/login/callback?code=abc&state=S1")
    assert r.headers["Location"] == "/?error=session_expired"
    assert control.ops("auth") == [PHONE]


def test_denied_consent_and_unreachable_wallet(client: FlaskClient, control: FakeControl) -> None:
    get(client, "/login/wallet")
    r = get(client, "/login/callback?error=access_denied&state=S1")
    assert r.headers["Location"] == "/?error=login_cancelled"
    get(client, "/login/wallet")
    r = get(client, "/login/callback?code=down&state=S1")
    assert r.headers["Location"] == "/?error=wallet_unreachable"
    assert control.ops("auth") == []


def test_other_dialects_callback_is_not_answered(client: FlaskClient, control: FakeControl) -> None:
    get(client, "/login/wallet")
    r = get(client, "/login/alipay/callback?auth_code=abc&state=S1")
    assert r.headers["Location"] == "/?error=login_failed"
    assert control.ops("auth") == []


def test_no_open_redirect_through_any_parameter(client: FlaskClient) -> None:
    for path in (
        "/login/wallet?next=https://evil.test",
        "/login/callback?redirect_uri=https://evil.test&state=x",
        "/?next=//evil.test",
        "/reconnect/x?next=https://evil.test",
    ):
        r = get(client, path)
        assert "evil" not in r.headers.get("Location", ""), path


# -- reconnect --------------------------------------------------------------------------------
def opt_in(client: FlaskClient, remember: str = "yes") -> Any:
    with client.session_transaction(base_url=BASE) as s:
        s["csrf"] = "T" * 32
    return client.post(
        "/reconnect",
        data={"csrf_token": "T" * 32, "remember": remember},
        environ_overrides=ENV,
        base_url=BASE,
    )


def test_reconnect_opt_in_then_one_tap_from_a_new_address(
    app: Flask, client: FlaskClient, control: FakeControl
) -> None:
    login(client)
    r = opt_in(client)
    # A full-page navigation to the wallet's add-a-pass page: the wallet keeps the link.
    assert r.status_code == 303
    target = urlsplit(r.headers["Location"])
    assert (target.scheme, target.netloc, target.path) == ("https", "wallet.test", "/passes/add")
    query = parse_qs(target.query)
    assert query["client_id"] == ["plaza-portal"]
    assert query["title"] == ["Plaza Demo Café Wi-Fi"]
    [link] = query["link"]
    assert link.startswith(PORTAL + "reconnect/")
    # Not enrolled with a cloud: no offers to consent to, and the gateway is told nothing.
    assert "offers" not in query and control.args == []
    # Later, a new MAC and a new address, a fresh browser: one tap.
    control.clients["198.19.0.150"] = {"mac": "02:aa:00:00:00:09", "ip": "198.19.0.150",
                                        "state": "captive", "seconds_remaining": None}  # fmt: skip
    fresh = app.test_client()
    r = fresh.get(
        link.removeprefix(PORTAL[:-1]),
        environ_overrides={**ENV, "REMOTE_ADDR": "198.19.0.150"},
        base_url=BASE,
    )
    assert r.status_code == 303 and r.headers["Location"] == "/welcome"
    assert control.ops("auth")[-1] == "198.19.0.150"


def test_opt_in_needs_the_box_ticked_a_login_and_the_csrf_token(
    app: Flask, client: FlaskClient
) -> None:
    assert opt_in(client).status_code == 403  # no wallet user in this browser
    login(client)
    r = opt_in(client, remember="no")
    assert r.status_code == 303 and r.headers["Location"] == "/welcome"
    r = client.post("/reconnect", data={"remember": "yes"}, environ_overrides=ENV, base_url=BASE)
    assert r.status_code == 400


def test_opt_in_shows_the_link_when_the_wallet_cannot_hold_passes(
    app: Flask, client: FlaskClient
) -> None:
    class NoPasses:
        start, finish = FakeWallet.start, FakeWallet.finish

        def __init__(self) -> None:
            self.finished: list[Mapping[str, str]] = []

    app.extensions["wallet_provider"] = NoPasses()
    login(client)
    r = opt_in(client)
    assert r.status_code == 200
    assert f'href="{PORTAL}reconnect/' in r.get_data(as_text=True)


def test_welcome_page_lets_the_opt_in_form_redirect_to_the_wallet(
    client: FlaskClient, control: FakeControl
) -> None:
    """Chromium applies form-action to the redirect after POST /reconnect: the wallet's origin
    must be allowed by the page that holds the form, or the 303 is blocked."""
    login(client)
    control.clients[PHONE]["state"] = "authorized"
    r = get(client, "/welcome")
    assert 'action="/reconnect"' in r.get_data(as_text=True)
    directives = [d.split() for d in r.headers["Content-Security-Policy"].split(";")]
    form_action = next(d for d in directives if d[0] == "form-action")
    assert form_action[1:] == ["'self'", "https://wallet.test"]
    assert "default-src 'self'" in r.headers["Content-Security-Policy"]


def test_tokens_refuse_forgery_other_venue_expiry_and_revocation(tmp_path: Path) -> None:
    tokens = Tokens(tmp_path / "p.db", "secret" * 6, venue="portal.plaza.test", days=1)
    good = tokens.issue("u1", now=1000.0)
    assert tokens.check(good, now=1001.0) == "u1"
    other_venue = Tokens(tmp_path / "p.db", "secret" * 6, venue="other.test", days=1)
    other_key = Tokens(tmp_path / "q.db", "another" * 6, venue="portal.plaza.test", days=1)
    for check, message in [
        (lambda: tokens.check(good[:-2] + "xx", now=1001.0), "bad signature"),
        (lambda: other_venue.check(good, now=1001.0), "another venue"),
        (lambda: other_key.check(good, now=1001.0), "bad signature"),
        (lambda: tokens.check(good, now=1000.0 + 86401), "expired"),
        (lambda: tokens.check("x" * 600), "too long"),
    ]:
        with pytest.raises(TokenError, match=message):
            check()
    assert tokens.revoke_user("u1", now=1002.0) == 1
    with pytest.raises(TokenError, match="revoked"):
        tokens.check(good, now=1003.0)


def test_bad_reconnect_token_never_authorizes(client: FlaskClient, control: FakeControl) -> None:
    r = get(client, "/reconnect/not-a-token")
    assert r.headers["Location"] == "/?error=login_failed"
    assert control.ops("auth") == []


def test_reconnect_is_off_when_disabled(make_config: MakeConfig, control: FakeControl) -> None:
    config = make_config(reconnect=ReconnectConfig(enabled=False))
    app = create_app({"PLAZA_CONFIG": config, "CONTROL": control, "SECRET_KEY": "k" * 32})
    r = app.test_client().get("/reconnect/anything", environ_overrides=ENV, base_url=BASE)
    assert r.status_code == 404


def test_forget_revokes_tokens_and_withdraws_the_opt_in(
    client: FlaskClient, control: FakeControl
) -> None:
    login(client)
    opt_in(client)
    with client.session_transaction(base_url=BASE) as s:
        s["csrf"] = "T" * 32
    r = client.post(
        "/reconnect/forget", data={"csrf_token": "T" * 32}, environ_overrides=ENV, base_url=BASE
    )
    assert r.status_code == 303 and r.headers["Location"] == "/welcome?forgotten=1"
    op, args = control.args[-1]
    assert op == "shopper" and args["opt_in"] is False and "connect_url" not in args
    with client.session_transaction(base_url=BASE) as s:
        assert "wallet_user" not in s  # forgotten here too


# -- reconnect tokens need a recent wallet login (issue 10, finding 6) --------------------------
def forget(client: FlaskClient) -> Any:
    with client.session_transaction(base_url=BASE) as s:
        s["csrf"] = "T" * 32
    return client.post(
        "/reconnect/forget", data={"csrf_token": "T" * 32}, environ_overrides=ENV, base_url=BASE
    )


def issued(app: Flask, user: str = "2088000000000001") -> int:
    """Live reconnect tokens of `user` (none until the portal's token store was first used)."""
    found = app.extensions.get("reconnect_tokens")
    return found.active(user) if found is not None else 0


def test_an_old_cookie_cannot_mint_a_token_even_when_minting_renewed_it(
    app: Flask, client: FlaskClient
) -> None:
    """The attack: keep the portal cookie from a login long ago and POST /reconnect for a
    fresh token (each mint re-signs the cookie, so it never aged out)."""
    login(client)
    assert opt_in(client).status_code == 303  # right after the wallet login: fine
    with client.session_transaction(base_url=BASE) as s:
        old = s["wallet_user"]["login_at"] - shopper.RECENT_LOGIN_SECONDS - 1
        s["wallet_user"] = {**s["wallet_user"], "login_at": old}
    r = opt_in(client)
    assert r.status_code == 303 and r.headers["Location"] == "/?error=session_expired"
    assert issued(app) == 1  # only the first


def test_a_tapped_link_signs_in_but_cannot_mint_another_token(
    app: Flask, client: FlaskClient, control: FakeControl
) -> None:
    login(client)
    link = parse_qs(urlsplit(opt_in(client).headers["Location"]).query)["link"][0]
    fresh = app.test_client()
    assert fresh.get(link.removeprefix(PORTAL[:-1]), environ_overrides=ENV,
                     base_url=BASE).status_code == 303  # fmt: skip
    with fresh.session_transaction(base_url=BASE) as s:
        assert s["wallet_user"]["login_at"] is None  # signed in by the tap, not the wallet
        s["csrf"] = "T" * 32
    r = fresh.post("/reconnect", data={"csrf_token": "T" * 32, "remember": "yes"},
                   environ_overrides=ENV, base_url=BASE)  # fmt: skip
    assert r.headers["Location"] == "/?error=session_expired"
    assert issued(app) == 1


def test_after_forget_or_session_end_the_cookie_mints_nothing(
    app: Flask, client: FlaskClient, control: FakeControl
) -> None:
    login(client)
    assert forget(client).status_code == 303
    assert opt_in(client).status_code == 403  # no wallet user left in this browser
    login(client)
    control.deauth(PHONE, reason="session-timeout")  # the gateway ended the session
    control.auth(PHONE)  # and the phone got online again some other way (a new session)
    assert opt_in(client).status_code == 403
    assert issued(app) == 0


# -- the wallet's consent proof (issue 10, finding 1) -------------------------------------------
WALLET_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def proof(user: str, link: str, origin: str = PORTAL[:-1]) -> str:
    return consent.issue(rsa2.private_pem(WALLET_KEY), "https://wallet.test", user, origin,
                         link, time.time())  # fmt: skip


def saved(client: FlaskClient, token: str) -> Any:
    return client.get(f"/reconnect/saved?proof={token}", environ_overrides=ENV, base_url=BASE)


def test_an_enrolled_portal_asks_consent_and_tells_the_gateway_only_with_the_proof(
    client: FlaskClient, control: FakeControl, enrolled: Path
) -> None:
    login(client)
    r = opt_in(client)
    query = parse_qs(urlsplit(r.headers["Location"]).query)
    assert query["offers"] == ["1"]
    [link] = query["link"]
    assert control.args == []  # nothing for the cloud before the wallet's say-so
    # A proof for someone else, or for another link, is not passed on.
    assert saved(client, proof("2088000000000099", link)).headers["Location"] == "/welcome"
    assert control.args == []
    opt_in(client)
    [link] = parse_qs(urlsplit(opt_in(client).headers["Location"]).query)["link"]
    assert saved(client, proof("2088000000000001", link + "x")).status_code == 303
    assert saved(client, "not-a-jwt").status_code == 303
    assert control.args == []
    # The wallet's proof for this shopper and this link: passed on, with the link.
    opt_in(client)
    [link] = parse_qs(urlsplit(opt_in(client).headers["Location"]).query)["link"]
    good = proof("2088000000000001", link)
    page = saved(client, good)
    assert page.status_code == 200 and "We saved a reconnect link" in page.get_data(as_text=True)
    [(op, args)] = control.args
    assert op == "shopper" and args["opt_in"] is True
    assert (args["connect_url"], args["consent"]) == (link, good)
    # The pending link is used once: the same return again tells nobody anything.
    assert saved(client, good).status_code == 303
    assert len(control.args) == 1


# -- the push card (portal/push.py) -------------------------------------------------------------
CLOUD = "https://cloud.plaza.test:8443"
VENUE = "ven_0123456789abcdef"


def enrol(state_dir: Path, cloud_url: str = CLOUD, venue: str = VENUE) -> None:
    """What `plaza-gateway enrol` leaves in the state directory."""
    identity = {"device_id": "dev_0123456789abcdef", "venue_id": venue, "cloud_url": cloud_url,
                "cloud_public_key": signing.public_b64(signing.new_key())}  # fmt: skip
    (state_dir / "cloud.json").write_text(json.dumps(identity))


@pytest.fixture
def enrolled(app: Flask) -> Path:
    state_dir = Path(app.config["PLAZA_CONFIG"].gateway.state_dir)
    enrol(state_dir)
    return state_dir


def card(client: FlaskClient) -> dict[str, str] | None:
    """The push card's data attributes on the welcome page, or None if there is none."""
    page = get(client, "/welcome").get_data(as_text=True)
    found = re.search(r'<section class="card" id="push"(.*?)>', page, re.S)
    if found is None:
        assert "/static/push.js" not in page  # no card, no script
        return None
    assert "/static/push.js" in page
    return dict(re.findall(r'data-(\w+)="([^"]*)"', found.group(1)))


def signed_in_and_online(client: FlaskClient, control: FakeControl) -> str:
    """Log in with the wallet and opt in to one-tap reconnect; return the reconnect token."""
    login(client)
    control.clients[PHONE]["state"] = "authorized"
    link = parse_qs(urlsplit(opt_in(client).headers["Location"]).query)["link"][0]
    return link.removeprefix(PORTAL + "reconnect/")


def test_an_opted_in_shopper_is_offered_push_with_the_token_of_this_browser(
    client: FlaskClient, control: FakeControl, enrolled: Path
) -> None:
    token = signed_in_and_online(client, control)
    data = card(client)
    assert data is not None
    assert (data["cloud"], data["venue"], data["token"]) == (CLOUD, VENUE, token)
    assert data["done"].startswith("Done") and data["denied"] and data["failed"]
    csp = get(client, "/welcome").headers["Content-Security-Policy"]
    assert f"connect-src 'self' {CLOUD}" in csp
    assert "script-src" not in csp and "default-src 'self'" in csp  # push.js is same-origin


def test_no_card_without_opt_in_enrolment_or_tls(
    app: Flask, client: FlaskClient, control: FakeControl, tmp_path: Path, make_config: MakeConfig
) -> None:
    login(client)
    control.clients[PHONE]["state"] = "authorized"
    enrol(Path(app.config["PLAZA_CONFIG"].gateway.state_dir))
    assert card(client) is None  # signed in, but no reconnect token in this browser
    opt_in(client)
    assert card(client) is not None
    # Not enrolled (cloud.json gone): no card, and the CSP names no cloud.
    (Path(app.config["PLAZA_CONFIG"].gateway.state_dir) / "cloud.json").unlink()
    assert card(client) is None
    assert get(client, "/welcome").headers["Content-Security-Policy"].endswith("connect-src 'self'")
    # A portal without TLS never puts the token in a page.
    plain = make_config()
    enrol(tmp_path)
    control.clients[PHONE]["state"] = "authorized"
    plain_app = create_app({"PLAZA_CONFIG": plain, "CONTROL": control, "SECRET_KEY": "k" * 32})
    assert not plain_app.config["SESSION_COOKIE_SECURE"]
    with plain_app.test_client() as browser:
        with browser.session_transaction() as s:
            user = {
                "user_id": "u1",
                "name": "A",
                "session_id": control.clients[PHONE]["session_id"],
            }
            s.update(wallet_user=user, connect_token="t0k")
        page = browser.get("/welcome", environ_overrides={"REMOTE_ADDR": PHONE}).text
        assert 'id="push"' not in page and "t0k" not in page


def test_a_tap_on_the_reconnect_link_offers_push_with_that_token(
    app: Flask, client: FlaskClient, control: FakeControl, enrolled: Path
) -> None:
    token = signed_in_and_online(client, control)
    fresh = app.test_client()  # another browser on the phone, no session yet
    assert fresh.get(f"/reconnect/{token}", environ_overrides=ENV, base_url=BASE).status_code == 303
    data = card(fresh)
    assert data is not None and data["token"] == token


def test_forget_me_drops_the_token_and_the_card(
    client: FlaskClient, control: FakeControl, enrolled: Path
) -> None:
    signed_in_and_online(client, control)
    assert card(client) is not None
    with client.session_transaction(base_url=BASE) as s:
        s["csrf"] = "T" * 32
    answer = client.post("/reconnect/forget", data={"csrf_token": "T" * 32},
                         environ_overrides=ENV, base_url=BASE)  # fmt: skip
    assert answer.status_code == 303
    assert card(client) is None


def test_the_session_cookie_is_secure_when_the_portal_has_tls(client: FlaskClient) -> None:
    cookie = get(client, "/login/wallet").headers["Set-Cookie"]  # the login state
    assert "Secure" in cookie and "HttpOnly" in cookie


def test_cloud_url_override_and_a_bad_cloud_file(
    tmp_path: Path, make_config: MakeConfig, control: FakeControl
) -> None:
    from portal import push

    config = make_config(
        portal=PortalConfig(cert_file="/x.pem", key_file="/x.key"),
        cloud=CloudConfig(url="https://eu.cloud.plaza.test/"),
    )
    app = create_app({"PLAZA_CONFIG": config, "CONTROL": control, "SECRET_KEY": "k" * 32})
    assert push.target(app) is None
    enrol(tmp_path)
    found = push.target(app)
    assert found is not None
    assert (found.cloud_url, found.origin) == ("https://eu.cloud.plaza.test",) * 2
    (tmp_path / "cloud.json").write_text('{"device_id": "dev_1"')  # killed mid-write
    assert push.target(app) is None  # no card rather than an error page


def test_the_service_worker_is_served_from_the_root(client: FlaskClient) -> None:
    answer = get(client, "/sw.js")
    assert answer.status_code == 200
    assert answer.mimetype == "text/javascript"
    assert answer.headers["Cache-Control"] == "no-cache"
    body = answer.get_data(as_text=True)
    assert 'addEventListener("push"' in body and 'addEventListener("notificationclick"' in body
    script = get(client, "/static/push.js")
    assert script.status_code == 200 and "pushManager.subscribe" in script.get_data(as_text=True)


def test_catalogues_have_the_push_texts() -> None:
    from portal import i18n

    for key in ("push.heading", "push.hint", "push.button", "push.done", "push.denied",
                "push.failed"):  # fmt: skip
        assert i18n.t(key, lang="en", merchant="M") != key
        assert i18n.t(key, lang="zh-CN", merchant="M") != i18n.t(key, lang="en", merchant="M")
