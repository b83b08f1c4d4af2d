"""Messages pushed into a wallet user's inbox: the sandbox's API in both dialects, the wallet
app's inbox and tap, and the cloud's WalletMessenger against the HTTPS sandbox.

The API tests use the Flask test client with a fixed clock (fast, and every refusal is checked
to store nothing); the WalletMessenger tests use the real HTTPS sandbox (tests/wallet_harness.py) so
the client's TLS, Basic credentials and RSA2 signing meet the real thing.
"""

from __future__ import annotations

import base64
import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import pytest
from flask import Flask
from flask.testing import FlaskClient

from cloud.push import PushError, RecipientGone
from cloud.push.wallet import PUSH_METHOD, WalletMessenger, verified_answer
from lab.wallet import app as wallet_app
from lab.wallet.alipay import open_id
from lab.wallet.keys import APP_ID, CLOUD_CLIENT_ID, provision
from lab.wallet.messages import MAX_BODY, MAX_MESSAGES, MAX_REQUEST, MAX_TITLE
from lab.wallet.server import create_app
from plaza.wallet.alipay import AlipayProvider
from plaza.wallet.config import WalletConfig
from tests.wallet_harness import Answer, Browser, Sandbox

WALLET = "https://wallet.test"
NOW = 1_800_000_000.0
ALICE, BOB = "2088000000000001", "2088000000000002"
LINK = "https://portal.plaza.test/reconnect/InRva2VuIg.c2ln"
ODD_SECRET = "s3cret:with+plus/and%percent"  # what RFC 6749's form-encoding is for


@pytest.fixture(scope="module")
def material(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return provision(tmp_path_factory.mktemp("wallet-keys"), "https://portal.plaza.test")


@pytest.fixture
def app(material: dict[str, Any]) -> Flask:
    settings = json.loads(Path(material["settings"]).read_text())
    settings["oidc_clients"].append(
        {"client_id": "odd", "name": "Odd Co", "redirect_uris": [], "client_secret": ODD_SECRET}
    )
    return create_app(settings, clock=lambda: NOW)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def cloud_secret(material: dict[str, Any]) -> str:
    return Path(material["push"]["oidc"]["client_secret_file"]).read_text()


@pytest.fixture
def alipay(material: dict[str, Any]) -> AlipayProvider:
    """The merchant app as the cloud holds it: signs requests, checks the wallet's answers."""
    config = WalletConfig(**material["alipay"])
    return AlipayProvider(config, clock=lambda: NOW)


class Phone:
    """A phone's browser on the Flask test client, for lab.wallet.app (one cookie jar)."""

    def __init__(self, app: Flask) -> None:
        self.client = app.test_client()

    def _wrap(self, response: Any) -> Answer:
        headers = {k.lower(): v for k, v in response.headers.items()}
        return Answer(response.status_code, headers, response.get_data(as_text=True))

    def get(self, url: str) -> Answer:
        return self._wrap(self.client.get(url))

    def post(self, url: str, data: dict[str, str]) -> Answer:
        return self._wrap(self.client.post(url, data=data))


def signed_in(app: Flask, user: str = "alice", pin: str = "1234") -> Phone:
    phone = Phone(app)
    assert wallet_app.sign_in(phone, WALLET, user, pin).status == 303
    return phone


def basic(client_id: str, secret: str) -> dict[str, str]:
    raw = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


def message(**over: Any) -> dict[str, Any]:
    return {"user": ALICE, "title": "Welcome back", "body": "10% off today", "link": LINK, **over}


def post(client: FlaskClient, secret: str, body: Any = None, **kw: Any) -> Any:
    kw.setdefault("headers", basic(CLOUD_CLIENT_ID, secret))
    return client.post(WALLET + "/v1/messages", json=message() if body is None else body, **kw)


def gateway(client: FlaskClient, params: dict[str, str], alipay: AlipayProvider) -> dict:
    """POST to gateway.do; the answer, only once the wallet's signature checks out."""
    answer = client.post(WALLET + "/gateway.do", data=params)
    assert answer.status_code == 200
    return verified_answer(answer.data, PUSH_METHOD, alipay)


def biz(**over: Any) -> dict[str, Any]:
    """An Alipay message's biz_content; a field given as None is left out."""
    fields = {"user_id": ALICE, "title": "Welcome back", "body": "10% off", "link": LINK, **over}
    return {k: v for k, v in fields.items() if v is not None}


def inbox(app: Flask, user: str = "alice", pin: str = "1234") -> list[wallet_app.InboxMessage]:
    return wallet_app.messages(signed_in(app, user, pin), WALLET)


# -- OIDC dialect: it works --------------------------------------------------------------------


def test_a_pushed_message_reaches_the_inbox_and_a_tap_opens_its_link(
    app: Flask, client: FlaskClient, cloud_secret: str
) -> None:
    answer = post(client, cloud_secret)
    assert answer.status_code == 201, answer.json
    assert answer.json["user"] == ALICE and answer.json["sent_at"] == int(NOW)
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", answer.json["id"])
    assert answer.headers["Cache-Control"] == "no-store"

    phone = signed_in(app)
    [got] = wallet_app.messages(phone, WALLET)
    assert (got.title, got.body, got.sender, got.new) == (
        "Welcome back",
        "10% off today",
        "Plaza Free Wi-Fi",
        True,
    )
    assert got.url == f"{WALLET}/messages/{answer.json['id']}"
    assert wallet_app.tap(phone, got) == LINK
    assert not wallet_app.messages(phone, WALLET)[0].new  # opened now
    assert wallet_app.tap(phone, got) == LINK  # and still there to tap again


def test_messages_are_per_user_and_newest_first(
    app: Flask, client: FlaskClient, cloud_secret: str
) -> None:
    for title in ("First", "Second"):
        assert post(client, cloud_secret, message(title=title)).status_code == 201
    assert post(client, cloud_secret, message(user=BOB, title="For Bob")).status_code == 201
    assert [m.title for m in inbox(app)] == ["Second", "First"]
    assert [m.title for m in inbox(app, "bob", "5678")] == ["For Bob"]
    assert inbox(app, "mei", "2468") == []


def test_one_user_cannot_open_anothers_message(
    app: Flask, client: FlaskClient, cloud_secret: str
) -> None:
    post(client, cloud_secret)
    [alices] = inbox(app)
    with pytest.raises(wallet_app.WalletAppError, match="answered 404"):
        wallet_app.tap(signed_in(app, "bob", "5678"), alices)
    assert inbox(app)[0].new  # bob's try did not mark it opened


def test_text_is_escaped_and_the_body_keeps_its_lines(
    app: Flask, client: FlaskClient, cloud_secret: str
) -> None:
    title, body = '<script>alert(1)</script> "Café" & co', "Line one\r\nLine <b>two</b>"
    assert post(client, cloud_secret, message(title=title, body=body)).status_code == 201
    page = signed_in(app).get(WALLET + "/messages").body
    assert "<script" not in page and "&lt;script&gt;" in page
    [got] = inbox(app)
    assert (got.title, got.body) == (title, "Line one\nLine <b>two</b>")


def test_limits_are_inclusive_and_any_https_site_may_be_linked(
    app: Flask, client: FlaskClient, cloud_secret: str
) -> None:
    fields = message(title="t" * MAX_TITLE, body="b" * MAX_BODY, link="https://shop.example/o?id=1")
    assert post(client, cloud_secret, fields).status_code == 201
    assert inbox(app)[0].title == "t" * MAX_TITLE


def test_a_full_inbox_drops_its_oldest(app: Flask, client: FlaskClient, cloud_secret: str) -> None:
    for i in range(MAX_MESSAGES + 1):
        assert post(client, cloud_secret, message(title=f"Offer {i}")).status_code == 201
    titles = [m.title for m in inbox(app)]
    assert len(titles) == MAX_MESSAGES
    assert titles[0] == f"Offer {MAX_MESSAGES}" and titles[-1] == "Offer 1"


def test_client_credentials_are_form_encoded_as_rfc_6749_says(client: FlaskClient) -> None:
    assert post(client, "", headers=basic("odd", ODD_SECRET)).status_code == 201
    raw = base64.b64encode(f"odd:{ODD_SECRET}".encode()).decode()  # not encoded: "+" is " "
    answer = post(client, "", headers={"Authorization": "Basic " + raw})
    assert answer.status_code == 401


# -- OIDC dialect: refusals ----------------------------------------------------------------------


def bearer(_: str) -> dict[str, str]:
    return {"Authorization": "Bearer abc"}


@pytest.mark.parametrize(
    ("headers", "message_part"),
    [
        (lambda s: {}, "client authentication required"),
        (bearer, "client authentication required"),
        (lambda s: basic("nobody", s), "unknown client_id"),
        (lambda s: basic(CLOUD_CLIENT_ID, s + "x"), "wrong client_secret"),
        (lambda s: basic(CLOUD_CLIENT_ID, ""), "wrong client_secret"),
        (lambda s: basic("plaza-portal", s), "a public client cannot send messages"),
    ],
    ids=["none", "bearer", "unknown-client", "bad-secret", "empty-secret", "public-client"],
)
def test_client_authentication_is_required(
    app: Flask, client: FlaskClient, cloud_secret: str, headers: Any, message_part: str
) -> None:
    answer = post(client, cloud_secret, headers=headers(cloud_secret))
    assert answer.status_code == 401
    assert answer.json["error"] == "invalid_client"
    assert message_part in answer.json["error_description"]
    assert answer.headers["WWW-Authenticate"].startswith("Basic ")
    assert inbox(app) == []


@pytest.mark.parametrize(
    ("body", "status", "error", "description"),
    [
        ({**message(), "extra": 1}, 400, "invalid_request", "unknown fields ['extra']"),
        ({"user": ALICE, "title": "x", "body": "y"}, 400, "invalid_request", "missing fields"),
        ([message()], 400, "invalid_request", "not a JSON object"),
        (message(user=2088000000000001), 400, "invalid_request", "user must be a string"),
        (message(title=None), 400, "invalid_request", "title must be a string"),
        (message(link=["https://x.test"]), 400, "invalid_request", "link must be a string"),
        (message(user="2088999999999999"), 404, "unknown_user", "no such user"),
        (message(user="alice"), 404, "unknown_user", "no such user"),  # a login is not an id
        (message(link="http://portal.plaza.test/x"), 400, "invalid_request", "https://"),
        (message(link="javascript:alert(1)"), 400, "invalid_request", "https://"),
        (message(link="//portal.plaza.test/x"), 400, "invalid_request", "https://"),
        (message(link="https://a b.test/"), 400, "invalid_request", "not a plain https://"),
        (message(link="https://x.test/" + "a" * 1024), 400, "invalid_request", "too long"),
        (message(title="t" * (MAX_TITLE + 1)), 400, "invalid_request", "title is too long"),
        (message(body="b" * (MAX_BODY + 1)), 400, "invalid_request", "body is too long"),
        (message(title="  "), 400, "invalid_request", "has no title"),
        (message(body=""), 400, "invalid_request", "has no body"),
        (message(title="Plaza \u202egnp.exe"), 400, "invalid_request", "cannot show"),
        (message(body="a\x00b"), 400, "invalid_request", "body contains characters"),
    ],
)
def test_refused_messages_store_nothing(
    app: Flask,
    client: FlaskClient,
    cloud_secret: str,
    body: Any,
    status: int,
    error: str,
    description: str,
) -> None:
    answer = post(client, cloud_secret, body)
    assert answer.status_code == status
    assert answer.json["error"] == error
    assert description in answer.json["error_description"]
    assert inbox(app) == []


def test_a_request_must_be_small_json(app: Flask, client: FlaskClient, cloud_secret: str) -> None:
    auth = basic(CLOUD_CLIENT_ID, cloud_secret)
    url = WALLET + "/v1/messages"
    answer = client.post(url, data=json.dumps(message()), headers=auth)  # no JSON content type
    assert answer.status_code == 415 and "application/json" in answer.json["error_description"]
    big = json.dumps(message(body="b" * MAX_REQUEST)).encode()
    answer = client.post(url, data=big, headers=auth, content_type="application/json")
    assert answer.status_code == 413 and answer.json["error"] == "request_too_large"
    answer = client.post(url, data=b"{not json", headers=auth, content_type="application/json")
    assert answer.status_code == 400 and "not a JSON object" in answer.json["error_description"]
    answer = client.post(url, data=b"\xff\xfe", headers=auth, content_type="application/json")
    assert answer.status_code == 400
    assert inbox(app) == []


# -- Alipay dialect ------------------------------------------------------------------------------


def test_alipay_push_by_user_id_and_by_open_id(
    app: Flask, client: FlaskClient, alipay: AlipayProvider
) -> None:
    answer = gateway(client, alipay.request_params(PUSH_METHOD, {}, biz(title="By id")), alipay)
    assert answer["code"] == "10000" and answer["msg"] == "Success"
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", answer["message_id"])
    fields = biz(title="By open_id")
    fields["open_id"] = open_id(APP_ID, fields.pop("user_id"))
    second = gateway(client, alipay.request_params(PUSH_METHOD, {}, fields), alipay)
    assert second["code"] == "10000"
    phone = signed_in(app)
    got = wallet_app.messages(phone, WALLET)
    assert [(m.title, m.sender) for m in got] == [
        ("By open_id", "Plaza Free Wi-Fi"),
        ("By id", "Plaza Free Wi-Fi"),
    ]
    assert got[1].url.endswith("/messages/" + answer["message_id"])
    assert wallet_app.tap(phone, got[0]) == LINK


def tampered(params: dict[str, str]) -> dict[str, str]:
    return {**params, "biz_content": params["biz_content"].replace("Welcome", "Hacked")}


def stale(alipay: AlipayProvider) -> dict[str, str]:
    alipay.clock = lambda: NOW - 3600
    try:
        return alipay.request_params(PUSH_METHOD, {}, biz())
    finally:
        alipay.clock = lambda: NOW


@pytest.mark.parametrize(
    ("make", "code", "sub_code", "sub_msg"),
    [
        (lambda p: tampered(p.request_params(PUSH_METHOD, {}, biz())), "40002",
         "isv.invalid-signature", "signature"),
        (lambda p: {**p.request_params(PUSH_METHOD, {}, biz()), "app_id": "2021000000000999"},
         "40002", "isv.invalid-app-id", "unknown app_id"),
        (stale, "40002", "isv.invalid-timestamp", "15 minutes"),
        (lambda p: p.request_params(PUSH_METHOD, {}), "40001", "isv.missing-biz-content",
         "biz_content"),
        (lambda p: p.request_params(PUSH_METHOD, {"biz_content": "[1]"}), "40002",
         "isv.invalid-biz-content", "not a JSON object"),
        (lambda p: p.request_params(PUSH_METHOD, {}, biz(user_id=None)), "40001",
         "isv.missing-user-id", "user_id or open_id"),
        (lambda p: p.request_params(PUSH_METHOD, {}, {**biz(), "open_id": "0abc"}), "40002",
         "isv.invalid-parameter", "not both"),
        (lambda p: p.request_params(PUSH_METHOD, {}, {**biz(), "color": "red"}), "40002",
         "isv.invalid-parameter", "unknown biz_content fields ['color']"),
        (lambda p: p.request_params(PUSH_METHOD, {}, biz(user_id=2088)), "40002",
         "isv.invalid-parameter", "user_id must be a string"),
        (lambda p: p.request_params(PUSH_METHOD, {}, biz(user_id="2088999999999999")), "40004",
         "USER_NOT_EXIST", "no such user"),
        (lambda p: p.request_params(PUSH_METHOD, {}, {**biz(user_id=None), "open_id": "0x"}),
         "40004", "USER_NOT_EXIST", "no such user"),
        (lambda p: p.request_params(PUSH_METHOD, {}, biz(link="http://portal.plaza.test/")),
         "40002", "isv.invalid-parameter", "https://"),
        (lambda p: p.request_params(PUSH_METHOD, {}, biz(title="t" * (MAX_TITLE + 1))), "40002",
         "isv.invalid-parameter", "title is too long"),
        (lambda p: p.request_params(PUSH_METHOD, {}, biz(body="b" * (MAX_BODY + 1))), "40002",
         "isv.invalid-parameter", "body is too long"),
    ],
    ids=[
        "tampered", "unknown-app", "stale", "no-biz", "biz-not-object", "no-user", "both-ids",
        "unknown-field", "user-not-string", "unknown-user", "unknown-open-id", "http-link",
        "long-title", "long-body",
    ],
)  # fmt: skip
def test_alipay_refusals_are_signed_and_store_nothing(
    app: Flask,
    client: FlaskClient,
    alipay: AlipayProvider,
    make: Any,
    code: str,
    sub_code: str,
    sub_msg: str,
) -> None:
    answer = gateway(client, make(alipay), alipay)
    assert (answer["code"], answer["sub_code"]) == (code, sub_code)
    assert sub_msg in answer["sub_msg"]
    assert inbox(app) == []


def test_the_login_methods_still_answer(client: FlaskClient, alipay: AlipayProvider) -> None:
    """Adding a method left the gateway's own ones (and its unknown-method refusal) alone."""
    params = alipay.request_params("alipay.system.oauth.token", {"grant_type": "x"})
    body = client.post(WALLET + "/gateway.do", data=params).get_data(as_text=True)
    assert "isv.grant-type-invalid" in body
    params = alipay.request_params("alipay.pass.message.pull", {})
    assert "isv.invalid-method" in client.post(WALLET + "/gateway.do", data=params).text


# -- the wallet app's inbox ----------------------------------------------------------------------


def test_the_inbox_asks_to_sign_in_and_its_form_signs_in(app: Flask) -> None:
    phone = Phone(app)
    page = phone.get(WALLET + "/messages")
    assert page.status == 200 and "Sign in to see your messages." in page.body
    assert page.headers["cache-control"] == "no-store"
    with pytest.raises(wallet_app.WalletAppError, match="nobody is signed in"):
        wallet_app.messages(phone, WALLET)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.body).group(1)  # type: ignore[union-attr]
    form = {"csrf_token": csrf, "login": "alice", "decision": "approve"}
    bad = phone.post(WALLET + "/messages/signin", {**form, "pin": "0000"})
    assert bad.status == 403 and "wrong PIN" in bad.body
    assert phone.post(WALLET + "/messages/signin", {"login": "alice", "pin": "1234"}).status == 400
    good = phone.post(WALLET + "/messages/signin", {**form, "pin": "1234"})
    assert good.status == 303 and good.location == "/messages"
    assert wallet_app.messages(phone, WALLET) == []


def test_a_tap_needs_a_signed_in_owner(app: Flask, client: FlaskClient, cloud_secret: str) -> None:
    message_id = post(client, cloud_secret).json["id"]
    stranger = Phone(app).get(f"{WALLET}/messages/{message_id}")
    assert stranger.status == 303 and stranger.location == "/messages"  # sign in first
    missing = signed_in(app).get(f"{WALLET}/messages/nope")
    assert missing.status == 404 and "not in your wallet" in missing.body


# -- the cloud's WalletMessenger against the HTTPS sandbox --------------------------------------


@pytest.fixture(params=["oidc", "alipay"])
def messenger(request: pytest.FixtureRequest, wallet: Sandbox) -> Iterator[WalletMessenger]:
    with WalletMessenger(**wallet.material["push"][request.param], ca_bundle=wallet.ca_file) as m:
        yield m


def test_the_cloud_pushes_and_the_phone_taps(
    messenger: WalletMessenger, wallet: Sandbox, browser: Browser
) -> None:
    title = f"Offer via {messenger.dialect}"
    message_id = messenger.send(ALICE, title, "Two coffees for one", LINK)
    wallet_app.sign_in(browser, wallet.issuer)
    [got] = [m for m in wallet_app.messages(browser, wallet.issuer) if m.title == title]
    assert got.url.endswith("/messages/" + message_id) and got.body == "Two coffees for one"
    assert wallet_app.tap(browser, got) == LINK


def test_the_cloud_learns_a_user_is_gone(messenger: WalletMessenger) -> None:
    with pytest.raises(RecipientGone, match="no such user") as caught:
        messenger.send("2088999999999999", "Hi", "there", LINK)
    assert not caught.value.retry


def test_the_cloud_is_told_why_a_message_was_refused(messenger: WalletMessenger) -> None:
    with pytest.raises(PushError, match="too long") as caught:
        messenger.send(ALICE, "t" * (MAX_TITLE + 1), "b", LINK)
    assert not caught.value.retry and not isinstance(caught.value, RecipientGone)
    with pytest.raises(PushError, match="https://"):
        messenger.send(ALICE, "t", "b", "http://portal.plaza.test/")  # refused before sending


def test_a_wrong_secret_is_not_retried(wallet: Sandbox, tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("not-the-secret\n")
    config = {**wallet.material["push"]["oidc"], "client_secret_file": str(tmp_path / "secret")}
    with (
        WalletMessenger(**config, ca_bundle=wallet.ca_file) as m,
        pytest.raises(PushError, match="client credentials") as caught,
    ):
        m.send(ALICE, "t", "b", LINK)
    assert caught.value.status == 401 and not caught.value.retry


def test_an_alipay_answer_without_the_wallets_signature_is_not_believed(
    wallet: Sandbox, tmp_path: Path
) -> None:
    other = provision(tmp_path, "https://portal.plaza.test")["push"]["alipay"]
    config = {**wallet.material["push"]["alipay"]}
    config["wallet_public_key_file"] = other["wallet_public_key_file"]
    with (
        WalletMessenger(**config, ca_bundle=wallet.ca_file) as m,
        pytest.raises(PushError, match="signature check") as caught,
    ):
        m.send("2088999999999999", "t", "b", LINK)  # not even a "gone" is believed
    assert not isinstance(caught.value, RecipientGone)


def test_an_unreachable_wallet_is_retried_later(wallet: Sandbox) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connection refused
        config = {**wallet.material["push"]["oidc"], "base_url": f"https://127.0.0.1:{port}"}
        with (
            WalletMessenger(**config, ca_bundle=wallet.ca_file) as m,
            pytest.raises(PushError, match="unreachable") as caught,
        ):
            m.send(ALICE, "t", "b", LINK)
    assert caught.value.retry


def test_an_untrusted_wallet_certificate_is_refused(wallet: Sandbox, tmp_path: Path) -> None:
    from lab.pki import LabCA

    other_ca = LabCA(tmp_path / "ca")
    config = wallet.material["push"]["oidc"]
    with (
        WalletMessenger(**config, ca_bundle=str(other_ca.cert_path)) as m,
        pytest.raises(PushError, match="SSLError"),
    ):
        m.send(ALICE, "t", "b", LINK)


@pytest.mark.parametrize(
    ("over", "message_part"),
    [
        ({"base_url": "http://wallet.test"}, "https://"),
        ({"dialect": "wechat"}, "dialect"),
        ({"client_secret_file": ""}, "client_id and client_secret_file"),
        ({"client_secret_file": "/nonexistent/secret"}, "client_secret_file"),
        ({"dialect": "alipay"}, "app_id, app_private_key_file"),
    ],
)
def test_a_bad_configuration_fails_at_start(
    wallet: Sandbox, over: dict[str, str], message_part: str
) -> None:
    with pytest.raises(ValueError, match=message_part):
        WalletMessenger(**{**wallet.material["push"]["oidc"], **over})
