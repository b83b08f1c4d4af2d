"""Presence push end to end on the cloud side: an opted-in login carries the one-tap link, a
later join queues the venue's offers in the outbox, and the worker delivers them to the real
sandbox wallet (HTTPS on 127.0.0.1, its message API and inbox) and to a local Web Push
service that decrypts them. Every test runs on SQLite and PostgreSQL (tests/cloud/conftest).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from cloud import cli, presence
from cloud import db as cloud_db
from cloud.models import PushJob, PushSubscription, ShopperLink
from cloud.push import presence_push, worker
from cloud.push.settings import PushSettings
from cloud.push.webpush import application_server_key
from cloud.venue_config import default_config, set_venue_config
from lab.pki import LabCA
from lab.push_receiver import PushReceiver
from lab.wallet import app as wallet_app
from lab.wallet.https import TLSServer, make_server
from lab.wallet.keys import provision
from lab.wallet.server import create_app as wallet_server
from portal.reconnect import Tokens
from tests.cloud.conftest import Router, consent_proof
from tests.conftest import FakeClock
from tests.wallet_harness import Browser

PRESENCE = "/api/v1/device/presence"
SUBSCRIBE = "/api/v1/push/subscribe"
PORTAL = "https://portal.plaza.test"
MAC = "02:00:00:00:00:0b"
ALICE, BOB = "2088000000000001", "2088000000000002"
UNKNOWN = "2088999999999999"  # no such wallet user
SUBJECT = "mailto:ops@plaza.test"
OFFERS = [
    {"id": "coffee", "title": "Two coffees for one", "body": "Until noon", "url": ""},
    {"id": "cake", "title": "Cake of the day", "body": "", "url": "https://cafe.example/cake"},
]


# -- the far ends: the sandbox wallet and a push service, on 127.0.0.1 --------------------------


@dataclass
class Wallet:
    """The sandbox wallet over real HTTPS; stop() and start() play an outage on one port."""

    root: Path
    cert: str
    key: str
    ca_file: str
    port: int
    material: dict[str, Any]
    app: Any
    server: TLSServer | None = None
    thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.server = make_server("127.0.0.1", self.port, self.app, self.cert, self.key)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        assert self.server is not None and self.thread is not None
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
        self.server = None

    def inbox(self, title: str, user: str = "alice", pin: str = "1234") -> list[Any]:
        """Messages with this title in the user's inbox, and the phone that read them."""
        phone = Browser(self.ca_file)
        wallet_app.sign_in(phone, self.url, user, pin)
        return [(m, phone) for m in wallet_app.messages(phone, self.url) if m.title == title]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> LabCA:
    return LabCA(tmp_path_factory.mktemp("push-ca") / "ca")


@pytest.fixture(scope="module")
def wallet(tmp_path_factory: pytest.TempPathFactory, pki: LabCA) -> Iterator[Wallet]:
    root = tmp_path_factory.mktemp("push-wallet")
    cert, key = pki.issue("wallet", ["wallet.test", "127.0.0.1"])
    probe = make_server("127.0.0.1", 0, None, str(cert), str(key))
    port = probe.server_port
    probe.server_close()
    material = provision(root / "keys", PORTAL, issuer=f"https://127.0.0.1:{port}")
    settings = json.loads(Path(material["settings"]).read_text())
    running = Wallet(root, str(cert), str(key), str(pki.cert_path), port, material, None)
    running.app = wallet_server(settings, clock=time.time)
    running.start()
    yield running
    if running.server is not None:
        running.stop()


@pytest.fixture(scope="module")
def receiver(pki: LabCA) -> Iterator[PushReceiver]:
    cert, key = pki.issue("push", ["127.0.0.1"])
    with PushReceiver(str(cert), str(key)).running() as running:
        yield running


def configure(app: Flask, **config: Any) -> None:
    """Change push settings after create_app, as a restart with new settings would."""
    app.config.update(config)
    app.extensions[presence_push.EXTENSION] = PushSettings.from_app(app)


@pytest.fixture
def push_app(app: Flask, wallet: Wallet, pki: LabCA, tmp_path: Path) -> Flask:
    oidc = wallet.material["push"]["oidc"]
    configure(
        app,
        WALLET_URL=wallet.url,
        WALLET_DIALECT="oidc",
        WALLET_CLIENT_ID=oidc["client_id"],
        WALLET_CLIENT_SECRET_FILE=oidc["client_secret_file"],
        WALLET_CA_BUNDLE=str(pki.cert_path),
        WEBPUSH_CA_BUNDLE=str(pki.cert_path),
        VAPID_SUBJECT=SUBJECT,
        VAPID_KEY_FILE=str(tmp_path / "keys" / "vapid.pem"),
        # The local push service is on loopback, which the cloud refuses unless allowed.
        PUSH_ALLOWED_NETWORKS="127.0.0.0/8",
    )
    return app


@pytest.fixture
def shop(push_app: Flask, router: Router, request: pytest.FixtureRequest) -> str:
    """The router's venue with two offers, under a name unique to this test (the sandbox
    inbox is shared by the module). Returns the message title a push will carry."""
    name = f"Cafe {abs(hash(request.node.nodeid)) % 10**8}"
    config = default_config()
    config["branding"]["name"] = name
    config["offers"] = OFFERS
    with cloud_db.session(push_app) as db:
        set_venue_config(db, router.venue_id, config)
        db.commit()
    return f"Welcome back to {name}"


@pytest.fixture(scope="module")
def tokens(tmp_path_factory: pytest.TempPathFactory) -> Tokens:
    """The portal's own reconnect tokens, so the links here have the real shape."""
    path = tmp_path_factory.mktemp("portal") / "portal.db"
    return Tokens(path, "portal-secret", venue="portal.plaza.test", days=30)


# -- helpers ------------------------------------------------------------------------------------


def event(key: str, kind: str, at: float, mac: str = MAC, **extra: Any) -> dict[str, Any]:
    return {"key": key, "kind": kind, "mac": mac, "at": at, **extra}


def login(router: Router, key: str, at: float, user: str, url: str | None, mac: str = MAC) -> Any:
    """An opt-in as an honest router sends it: the link with the wallet's consent proof."""
    extra = {"connect_url": url, "consent": consent_proof(user, url, at)} if url else {}
    batch = [event(key, "login", at, mac, wallet_user=user, opt_in=True, **extra)]
    response = router.post(PRESENCE, {"events": batch})
    assert response.status_code == 200, response.get_json()
    return response


def join(router: Router, key: str, at: float, mac: str = MAC) -> None:
    response = router.post(PRESENCE, {"events": [event(key, "join", at, mac)]})
    assert response.status_code == 200, response.get_json()


def jobs(app: Flask) -> list[PushJob]:
    with cloud_db.session(app) as db:
        return list(db.scalars(select(PushJob).order_by(PushJob.id)))


def link_rows(app: Flask) -> list[tuple[str, str, str | None]]:
    with cloud_db.session(app) as db:
        rows = db.scalars(select(ShopperLink).order_by(ShopperLink.id))
        return [(r.mac, r.wallet_user, r.connect_url) for r in rows]


# -- the wallet channel ------------------------------------------------------------------------


def test_a_returning_shopper_gets_offers_and_the_one_tap_link_in_the_wallet(
    push_app: Flask, router: Router, clock: FakeClock, shop: str, wallet: Wallet, tokens: Tokens
) -> None:
    link = f"{PORTAL}/reconnect/{tokens.issue(ALICE)}"
    t = clock()
    login(router, "l1", t, ALICE, link)
    assert link_rows(push_app) == [(MAC, ALICE, link)]
    assert jobs(push_app) == []  # the login itself pushes nothing
    assert worker.run_once(push_app) == 0

    clock.advance(86400)
    join(router, "j1", clock())
    [job] = jobs(push_app)
    assert (job.kind, job.target, job.shopper, job.venue_id) == (
        "wallet",
        ALICE,
        ALICE,
        router.venue_id,
    )
    assert job.payload["title"] == shop and job.payload["link"] == link
    assert job.payload["offers"] == ["coffee", "cake"]
    assert job.payload["body"].splitlines() == [
        "Two coffees for one — Until noon",
        "Cake of the day",
        "Tap to connect to the Wi-Fi.",
    ]
    assert (job.attempts, job.next_attempt_at, job.sent_at) == (0, clock(), None)

    assert worker.run_once(push_app) == 1
    [job] = jobs(push_app)
    assert (job.attempts, job.sent_at, job.next_attempt_at, job.error) == (1, clock(), None, None)
    assert worker.run_once(push_app) == 0  # sent is sent

    [(message, phone)] = wallet.inbox(shop)
    assert message.body == job.payload["body"] and message.new
    assert wallet_app.tap(phone, message) == link  # the one tap opens the connect link
    assert tokens.check(link.rsplit("/", 1)[1]) == ALICE  # which the portal honours


def test_one_push_per_shopper_per_venue_per_interval(
    push_app: Flask, router: Router, clock: FakeClock, shop: str, tokens: Tokens
) -> None:
    t = clock()
    login(router, "l1", t, ALICE, f"{PORTAL}/reconnect/{tokens.issue(ALICE)}")
    for i, minutes in enumerate((10, 11, 30, 90, 239)):  # flapping on and off the Wi-Fi
        clock.now = t + minutes * 60
        join(router, f"j{i}", clock())
    assert len(jobs(push_app)) == 1
    # A new random MAC is still the same shopper (the wallet user) for the limit.
    clock.now = t + 3 * 3600
    login(router, "l2", clock(), ALICE, f"{PORTAL}/reconnect/a2", mac="02:00:00:00:00:0c")
    join(router, "j9", clock(), mac="02:00:00:00:00:0c")
    assert len(jobs(push_app)) == 1
    clock.now = t + 600 + 4 * 3600 + 1
    join(router, "j10", clock())
    assert len(jobs(push_app)) == 2
    # Another shopper is not limited by Alice.
    login(router, "l3", clock(), BOB, f"{PORTAL}/reconnect/b1", mac="02:00:00:00:00:0d")
    join(router, "j11", clock(), mac="02:00:00:00:00:0d")
    assert [j.shopper for j in jobs(push_app)] == [ALICE, ALICE, BOB]
    assert jobs(push_app)[2].payload["link"] == f"{PORTAL}/reconnect/b1"

    configure(push_app, PUSH_INTERVAL_HOURS=0.5)  # the interval is a setting
    clock.advance(1801)
    join(router, "j12", clock(), mac="02:00:00:00:00:0d")
    assert len(jobs(push_app)) == 4


def test_a_join_reported_long_after_the_fact_pushes_nothing(
    push_app: Flask, router: Router, clock: FakeClock, shop: str, tokens: Tokens
) -> None:
    """A router's outbox replayed after an outage: yesterday's join is no welcome now."""
    login(router, "l1", clock() - 3 * 3600, ALICE, f"{PORTAL}/reconnect/{tokens.issue(ALICE)}")
    join(router, "j1", clock() - 2 * 3600)
    assert jobs(push_app) == []
    join(router, "j2", clock() - 60)
    assert len(jobs(push_app)) == 1


def test_a_wallet_outage_is_retried_with_backoff_and_nothing_is_lost(
    push_app: Flask, router: Router, clock: FakeClock, shop: str, wallet: Wallet, tokens: Tokens
) -> None:
    link = f"{PORTAL}/reconnect/{tokens.issue(ALICE)}"
    login(router, "l1", clock(), ALICE, link)
    join(router, "j1", clock() + 60)
    clock.advance(60)
    wallet.stop()
    try:
        assert worker.run_once(push_app) == 0
        [job] = jobs(push_app)
        assert job.attempts == 1 and job.sent_at is None
        assert job.next_attempt_at == clock() + 30 and "unreachable" in (job.error or "")
        assert worker.run_once(push_app) == 0 and jobs(push_app)[0].attempts == 1  # not yet due
        clock.advance(30)
        assert worker.run_once(push_app) == 0
        [job] = jobs(push_app)
        assert job.attempts == 2 and job.next_attempt_at == clock() + 60  # doubled
    finally:
        wallet.start()
    clock.advance(60)
    assert worker.run_once(push_app) == 1
    [job] = jobs(push_app)
    assert (job.attempts, job.sent_at, job.error) == (3, clock(), None)
    assert len(wallet.inbox(shop)) == 1  # exactly once


def test_a_push_that_cannot_go_out_in_time_is_given_up(
    app: Flask, router: Router, clock: FakeClock, tokens: Tokens
) -> None:
    """No wallet configured: the job waits (retried with backoff) and is dropped once stale."""
    set_offers(app, router.venue_id)
    login(router, "l1", clock(), ALICE, f"{PORTAL}/reconnect/{tokens.issue(ALICE)}")
    join(router, "j1", clock())
    assert worker.run_once(app) == 0
    [job] = jobs(app)
    assert "no wallet is configured" in (job.error or "") and job.next_attempt_at is not None
    created, waits = job.created_at, []
    while job.next_attempt_at is not None:
        waits.append(job.next_attempt_at - clock())
        clock.now = job.next_attempt_at
        assert worker.run_once(app) == 0
        [job] = jobs(app)
    assert waits == [30, 60, 120, 240, 480, 960]  # the next, 1800 s, would be past the hour
    assert clock() - created < 3600 and job.sent_at is None
    assert (
        job.error == "given up after 7 attempt(s): no wallet is configured (PLAZA_CLOUD_WALLET_URL)"
    )


def set_offers(app: Flask, venue_id: str) -> None:
    config = default_config()
    config["offers"] = OFFERS
    with cloud_db.session(app) as db:
        set_venue_config(db, venue_id, config)
        db.commit()


def test_a_wallet_user_who_is_gone_loses_the_link(
    push_app: Flask, router: Router, clock: FakeClock, shop: str, tokens: Tokens
) -> None:
    login(router, "l1", clock(), UNKNOWN, f"{PORTAL}/reconnect/{tokens.issue(UNKNOWN)}")
    login(router, "l2", clock(), ALICE, f"{PORTAL}/reconnect/a2", mac="02:00:00:00:00:0c")
    join(router, "j1", clock() + 60)
    clock.advance(60)
    assert worker.run_once(push_app) == 0
    [job] = jobs(push_app)
    assert job.next_attempt_at is None and job.sent_at is None
    assert (job.error or "").startswith("recipient gone: the wallet has no such user")
    assert link_rows(push_app) == [("02:00:00:00:00:0c", ALICE, f"{PORTAL}/reconnect/a2")]
    clock.advance(5 * 3600)
    join(router, "j2", clock())
    assert len(jobs(push_app)) == 1  # no link, no push


def test_the_alipay_dialect_is_configured_the_same_way(
    push_app: Flask, router: Router, clock: FakeClock, shop: str, wallet: Wallet, tokens: Tokens,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """And from the environment, as `plaza-cloud push-worker` reads it."""
    alipay = wallet.material["push"]["alipay"]
    presence.consent_check(push_app)  # consent keeps the test wallet's key (read once)
    for name in ("WALLET_DIALECT", "WALLET_CLIENT_ID", "WALLET_CLIENT_SECRET_FILE"):
        push_app.config.pop(name)
    push_app.config.pop("WALLET_PUBLIC_KEY_FILE")
    monkeypatch.setenv("PLAZA_CLOUD_WALLET_DIALECT", "alipay")
    monkeypatch.setenv("PLAZA_CLOUD_WALLET_APP_ID", alipay["app_id"])
    monkeypatch.setenv("PLAZA_CLOUD_WALLET_APP_PRIVATE_KEY_FILE", alipay["app_private_key_file"])
    monkeypatch.setenv("PLAZA_CLOUD_WALLET_PUBLIC_KEY_FILE", alipay["wallet_public_key_file"])
    configure(push_app)
    link = f"{PORTAL}/reconnect/{tokens.issue(BOB)}"
    login(router, "l1", clock(), BOB, link)
    join(router, "j1", clock() + 60)
    assert worker.run_once(push_app) == 1
    [(message, phone)] = wallet.inbox(shop, "bob", "5678")
    assert wallet_app.tap(phone, message) == link


# -- the one-tap link in the presence protocol ---------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://portal.plaza.test/reconnect/abc",
        "https://192.0.2.1/reconnect/abc",
        "https://portal.plaza.test/login/abc",
        "https://portal.plaza.test/reconnect/abc?x=1",
        "https://user@portal.plaza.test/reconnect/abc",
        "https://portal.plaza.test/reconnect/",
        "https://portal.plaza.test:99999/reconnect/abc",
        "https://-bad-.test/reconnect/abc",
        "https://portal.plaza.test/reconnect/" + "a" * 1000,
        42,
    ],
)
def test_a_bad_connect_url_is_refused_and_stores_nothing(
    app: Flask, router: Router, clock: FakeClock, url: Any
) -> None:
    batch = [event("e1", "login", clock(), wallet_user=ALICE, opt_in=True, connect_url=url)]
    response = router.post(PRESENCE, {"events": batch})
    assert response.status_code == 400
    assert (
        "connect_url must be https://<portal host>/reconnect/<token>"
        in response.get_json()["error"]
    )
    assert link_rows(app) == []


@pytest.mark.parametrize(
    "extra",
    [
        {"kind": "join"},
        {"kind": "login", "opt_in": False, "wallet_user": ALICE},
        {"kind": "login", "wallet_user": ALICE},
    ],
)
def test_connect_url_only_comes_with_an_opted_in_login(
    router: Router, clock: FakeClock, extra: dict[str, Any]
) -> None:
    bad = {**event("e1", "join", clock()), **extra, "connect_url": f"{PORTAL}/reconnect/abc"}
    response = router.post(PRESENCE, {"events": [bad]})
    assert response.status_code == 400
    assert "connect_url only comes with a login with opt_in" in response.get_json()["error"]


def test_connect_url_is_kept_canonical_and_replaced_by_each_login(
    app: Flask, router: Router, clock: FakeClock
) -> None:
    login(router, "l1", clock(), ALICE, "https://Portal.Plaza.Test:443/reconnect/tok.en-1_x")
    assert link_rows(app) == [(MAC, ALICE, f"{PORTAL}/reconnect/tok.en-1_x")]
    # Another port is another origin than the venue's registered portal host: refused.
    r = login(router, "l2", clock() + 1, ALICE, "https://portal.plaza.test:8443/reconnect/t2")
    assert r.get_json()["refused"] == 1
    assert link_rows(app) == [(MAC, ALICE, f"{PORTAL}/reconnect/tok.en-1_x")]
    # Someone else on this MAC: the previous user's link must not survive into their pushes.
    login(router, "l3", clock() + 2, BOB, f"{PORTAL}/reconnect/bob-1")
    assert link_rows(app) == [(MAC, BOB, f"{PORTAL}/reconnect/bob-1")]
    withdraw = event("l4", "login", clock() + 3, wallet_user=BOB, opt_in=False)
    login(router, "l5", clock() + 2.5, BOB, f"{PORTAL}/reconnect/t3")
    router.post(PRESENCE, {"events": [withdraw]})
    with cloud_db.session(app) as db:
        only = db.scalar(select(ShopperLink))
        assert only is not None and (only.opted_in, only.connect_url) == (False, None)


# -- Web Push ------------------------------------------------------------------------------------


def subscribe(client: FlaskClient, venue_id: str, subscription: Any, token: str,
              origin: str | None = PORTAL) -> Any:  # fmt: skip
    headers = {"Origin": origin} if origin is not None else {}
    body = {"venue_id": venue_id, "subscription": subscription, "connect_token": token}
    return client.post(SUBSCRIBE, json=body, headers=headers)


def browser_subscription(client: FlaskClient, receiver: PushReceiver) -> dict[str, Any]:
    """What the portal page's PushManager.subscribe() gives, with the cloud's public key."""
    answer = client.get("/api/v1/push/vapid-public-key")
    assert answer.status_code == 200 and answer.headers["Access-Control-Allow-Origin"] == "*"
    return receiver.subscribe(answer.get_json()["public_key"])


def test_a_subscribed_browser_gets_a_web_push_it_can_decrypt(
    push_app: Flask, client: FlaskClient, router: Router, clock: FakeClock, shop: str,
    receiver: PushReceiver, tokens: Tokens,
) -> None:  # fmt: skip
    token = tokens.issue(ALICE)
    link = f"{PORTAL}/reconnect/{token}"
    login(router, "l1", clock(), ALICE, link)
    subscription = browser_subscription(client, receiver)
    answer = subscribe(client, router.venue_id, subscription, token)
    assert answer.status_code == 201, answer.get_json()
    assert answer.headers["Access-Control-Allow-Origin"] == PORTAL
    assert "Origin" in answer.headers["Vary"]
    sid = answer.get_json()["id"]
    assert sid.startswith("wps_")
    # Subscribing again (the page reloaded) keeps one subscription.
    assert subscribe(client, router.venue_id, subscription, token).get_json()["id"] == sid

    clock.advance(3600)
    join(router, "j1", clock())
    clock.advance(60)
    assert sorted((j.kind, j.target) for j in jobs(push_app)) == [
        ("wallet", ALICE),
        ("webpush", sid),
    ]
    assert worker.run_once(push_app) == 2
    [delivery] = receiver.deliveries(subscription)
    got = delivery.json()
    assert got["title"] == shop and got["url"] == link and got["venue"] == router.venue_id
    assert [o["id"] for o in got["offers"]] == ["coffee", "cake"]
    assert delivery.claims["sub"] == SUBJECT and delivery.claims["aud"] == receiver.origin
    assert delivery.topic == router.venue_id.replace("_", "-")
    assert delivery.ttl == 3600 - 60  # what is left of the job's hour


def test_an_expired_subscription_is_deleted(
    push_app: Flask, client: FlaskClient, router: Router, clock: FakeClock, shop: str,
    receiver: PushReceiver, tokens: Tokens,
) -> None:  # fmt: skip
    token = tokens.issue(ALICE)
    login(router, "l1", clock(), ALICE, f"{PORTAL}/reconnect/{token}")
    subscription = browser_subscription(client, receiver)
    assert subscribe(client, router.venue_id, subscription, token).status_code == 201
    receiver.answer_with(subscription, 410)
    join(router, "j1", clock() + 60)
    assert worker.run_once(push_app) == 1  # the wallet message; the browser's is gone
    with cloud_db.session(push_app) as db:
        assert db.scalar(select(func.count()).select_from(PushSubscription)) == 0
    webpush = [j for j in jobs(push_app) if j.kind == "webpush"]
    assert webpush[0].error is not None and "recipient gone" in webpush[0].error
    assert link_rows(push_app) != []  # the wallet opt-in stays


def test_bad_subscriptions_are_refused_and_store_nothing(
    push_app: Flask, client: FlaskClient, router: Router, clock: FakeClock,
    receiver: PushReceiver, tokens: Tokens,
) -> None:  # fmt: skip
    token = tokens.issue(ALICE)
    login(router, "l1", clock(), ALICE, f"{PORTAL}/reconnect/{token}")
    good = browser_subscription(client, receiver)
    venue = router.venue_id
    bad_keys = {**good, "keys": {**good["keys"], "p256dh": "AAAA"}}
    for answer, status, message in (
        (subscribe(client, venue, {**good, "endpoint": "http://x.test/p"}, token), 400, "https://"),
        (subscribe(client, venue, bad_keys, token), 400, "P-256"),
        (subscribe(client, venue, [good], token), 400, "JSON object"),
        (subscribe(client, venue, good, "not a token!"), 400, "connect_token"),
        (subscribe(client, venue, good, tokens.issue(ALICE)), 403, "no opted-in shopper"),
        (subscribe(client, "ven_0000000000000000", good, token), 403, "no opted-in shopper"),
        (subscribe(client, venue, good, token, "https://evil.example"), 403, "no opted-in"),
        (subscribe(client, venue, good, token, "http://portal.plaza.test"), 403, "https Origin"),
        (subscribe(client, venue, good, token, None), 403, "https Origin"),
        (client.post(SUBSCRIBE, data=b"{", headers={"Origin": PORTAL}), 400, "not JSON"),
        (client.post(SUBSCRIBE, json={"venue_id": venue}, headers={"Origin": PORTAL}), 400, "body"),
    ):
        assert answer.status_code == status, answer.get_json()
        assert message in answer.get_json()["error"]
        assert "Access-Control-Allow-Origin" not in answer.headers
    with cloud_db.session(push_app) as db:
        assert db.scalar(select(func.count()).select_from(PushSubscription)) == 0
    # An opted-out shopper's link no longer subscribes anyone.
    router.post(PRESENCE, {"events": [event("l2", "login", clock(), wallet_user=ALICE,
                                            opt_in=False)]})  # fmt: skip
    assert subscribe(client, venue, good, token).status_code == 403


class Table:
    """DNS for the cloud from a table (PUSH_RESOLVER): tests never use real DNS."""

    def __init__(self, **names: list[str]) -> None:
        self.names = {name.replace("_", "."): addrs for name, addrs in names.items()}

    def __call__(self, host: str, port: int) -> list[str]:
        if host not in self.names:
            raise OSError(f"{host}: no such name")
        return self.names[host]


@pytest.mark.parametrize(
    ("endpoint", "reason"),
    [
        ("https://127.0.0.1/push/x", "IP address"),
        ("https://[::1]/push/x", "IP address"),
        ("https://10.0.0.1/push/x", "IP address"),
        ("https://169.254.169.254/latest/meta-data/", "IP address"),
        ("https://internal.example/push/x", "non-public address"),
        ("https://nowhere.example/push/x", "does not resolve"),
    ],
)
def test_subscriptions_to_non_public_push_services_are_refused(
    push_app: Flask, client: FlaskClient, router: Router, clock: FakeClock,
    receiver: PushReceiver, tokens: Tokens, endpoint: str, reason: str,
) -> None:  # fmt: skip
    """The cloud would POST there later: a blind request forger inside its network."""
    configure(push_app, PUSH_ALLOWED_NETWORKS="", PUSH_RESOLVER=Table(
        internal_example=["10.1.2.3"]))  # fmt: skip
    token = tokens.issue(ALICE)
    login(router, "l1", clock(), ALICE, f"{PORTAL}/reconnect/{token}")
    good = browser_subscription(client, receiver)
    answer = subscribe(client, router.venue_id, {**good, "endpoint": endpoint}, token)
    assert answer.status_code == 400, answer.get_json()
    assert answer.get_json()["error"].startswith("subscription: ")
    assert reason in answer.get_json()["error"]
    with cloud_db.session(push_app) as db:
        assert db.scalar(select(func.count()).select_from(PushSubscription)) == 0


def test_a_push_service_that_turned_private_since_the_subscription_is_not_contacted(
    push_app: Flask, client: FlaskClient, router: Router, clock: FakeClock, shop: str,
    receiver: PushReceiver, tokens: Tokens,
) -> None:  # fmt: skip
    """DNS rebinding: public when the browser subscribed, loopback when the worker sends."""
    table = Table(push_test=["93.184.216.34"])
    configure(push_app, PUSH_ALLOWED_NETWORKS="", PUSH_RESOLVER=table)
    token = tokens.issue(ALICE)
    login(router, "l1", clock(), ALICE, f"{PORTAL}/reconnect/{token}")
    real = browser_subscription(client, receiver)
    port = receiver.server.server_port
    renamed = {**real, "endpoint": real["endpoint"].replace(f"127.0.0.1:{port}",
                                                            f"push.test:{port}")}  # fmt: skip
    assert subscribe(client, router.venue_id, renamed, token).status_code == 201
    table.names["push.test"] = ["127.0.0.1"]
    refusals = len(receiver.refusals)
    join(router, "j1", clock() + 60)
    clock.advance(60)
    assert worker.run_once(push_app) == 1  # the wallet message only
    [job] = [j for j in jobs(push_app) if j.kind == "webpush"]
    assert job.sent_at is None and job.next_attempt_at is None  # dropped, not retried
    assert job.error is not None and "non-public address" in job.error
    assert receiver.deliveries(real) == [] and len(receiver.refusals) == refusals


def test_the_preflight_allows_only_a_json_post_from_an_https_origin(client: FlaskClient) -> None:
    answer = client.options(SUBSCRIBE, headers={
        "Origin": PORTAL, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    })  # fmt: skip
    assert answer.status_code == 204
    assert answer.headers["Access-Control-Allow-Origin"] == PORTAL
    assert answer.headers["Access-Control-Allow-Methods"] == "POST"
    assert answer.headers["Access-Control-Allow-Headers"] == "Content-Type"
    assert "Access-Control-Allow-Credentials" not in answer.headers
    refused = client.options(SUBSCRIBE, headers={"Origin": "http://portal.plaza.test"})
    assert refused.status_code == 403 and "Access-Control-Allow-Origin" not in refused.headers


def test_the_subscriber_cap_keeps_the_newest(
    push_app: Flask, client: FlaskClient, router: Router, clock: FakeClock,
    receiver: PushReceiver, tokens: Tokens,
) -> None:  # fmt: skip
    token = tokens.issue(ALICE)
    login(router, "l1", clock(), ALICE, f"{PORTAL}/reconnect/{token}")
    key = application_server_key(PushSettings.from_app(push_app).vapid_key())
    ids = []
    for _ in range(7):
        clock.advance(1)
        answer = subscribe(client, router.venue_id, receiver.subscribe(key), token)
        ids.append(answer.get_json()["id"])
    with cloud_db.session(push_app) as db:
        assert set(db.scalars(select(PushSubscription.id))) == set(ids[2:])


# -- workers ---------------------------------------------------------------------------------------


def new_job(venue_id: str, user: str, at: float) -> PushJob:
    return PushJob(
        venue_id=venue_id, kind="wallet", target=user, shopper=user, payload={}, created_at=at,
        attempts=0, next_attempt_at=at,
    )  # fmt: skip


def test_two_workers_never_send_the_same_job_twice(
    push_app: Flask, router: Router, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two run_once loops at once on one outbox: every job sent exactly once. On PostgreSQL
    the claim is SELECT ... FOR UPDATE SKIP LOCKED; on SQLite the conditional UPDATE alone."""
    with cloud_db.session(push_app) as db:
        for i in range(60):
            db.add(new_job(router.venue_id, f"u{i}", clock()))
        db.commit()
    sent: list[int] = []
    lock = threading.Lock()

    def deliver(_db: Any, job: PushJob, _channels: Any, _at: float) -> None:
        time.sleep(0.005)  # a network call's worth: the workers overlap
        with lock:
            sent.append(job.id)

    monkeypatch.setattr(worker, "deliver", deliver)
    statements: list[str] = []
    engine = cloud_db.engine(push_app)

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    sa.event.listen(engine, "before_cursor_execute", record)
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def loop() -> None:
        try:
            start.wait()
            while worker.run_once(push_app, limit=7):
                pass
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=loop) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    sa.event.remove(engine, "before_cursor_execute", record)
    assert errors == []
    assert len(sent) == 60 and len(set(sent)) == 60
    assert all(j.sent_at is not None and j.attempts == 1 for j in jobs(push_app))
    skip_locked = any("FOR UPDATE SKIP LOCKED" in s for s in statements)
    assert skip_locked == (engine.dialect.name == "postgresql")


def test_a_crashed_workers_jobs_come_due_again_after_the_lease(
    push_app: Flask, router: Router, clock: FakeClock
) -> None:
    with cloud_db.session(push_app) as db:
        db.add(new_job(router.venue_id, "u", clock()))
        db.commit()
        assert worker.claim(db, clock()) != []  # claimed, then the worker died
        db.commit()
        assert worker.claim(db, clock() + 10) == []
        db.commit()
        assert len(worker.claim(db, clock() + worker.LEASE_SECONDS)) == 1
        db.rollback()


def test_backoff_doubles_honours_retry_after_and_is_capped() -> None:
    assert [worker.backoff(n) for n in (1, 2, 3, 4)] == [30, 60, 120, 240]
    assert worker.backoff(20) == worker.BACKOFF_MAX
    assert worker.backoff(1, retry_after=100) == 100
    assert worker.backoff(1, retry_after=10**9) == worker.BACKOFF_MAX


def test_settings_come_from_the_environment_and_bad_ones_stop_the_start(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PLAZA_CLOUD_PUSH_INTERVAL_HOURS", "2")
    assert PushSettings.from_app(app).interval_seconds == 7200
    assert PushSettings.from_app(app).messenger() is None  # no wallet: pushes wait
    monkeypatch.setenv("PLAZA_CLOUD_PUSH_INTERVAL_HOURS", "soon")
    with pytest.raises(ValueError, match="PLAZA_CLOUD_PUSH_INTERVAL_HOURS: not a number"):
        PushSettings.from_app(app)
    monkeypatch.setenv("PLAZA_CLOUD_PUSH_INTERVAL_HOURS", "0")
    with pytest.raises(ValueError, match="must be more than 0"):
        PushSettings.from_app(app)
    monkeypatch.delenv("PLAZA_CLOUD_PUSH_INTERVAL_HOURS")
    monkeypatch.setenv("PLAZA_CLOUD_WALLET_URL", "http://wallet.test")
    with pytest.raises(ValueError, match="https://"):
        PushSettings.from_app(app).messenger()


def test_the_push_worker_command(
    sqlite_only: None, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    cloud = ["--instance", str(tmp_path / "i"), "--database-url", f"sqlite:///{tmp_path / 'c.db'}"]
    assert cli.main([*cloud, "migrate"]) == 0
    capsys.readouterr()
    assert cli.main([*cloud, "push-worker", "--once"]) == 0
    out = capsys.readouterr().out
    assert "no wallet configured" in out and out.strip().endswith("sent 0")
    monkeypatch.setenv("PLAZA_CLOUD_WALLET_URL", "https://wallet.test")  # but no credentials
    assert cli.main([*cloud, "push-worker", "--once"]) == 2
    assert "client_id and client_secret_file" in capsys.readouterr().err
