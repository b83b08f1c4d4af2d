"""Headless Chromium subscribes to the venue's offers from the welcome page, and shows them.

Everything is on 127.0.0.1: the portal over HTTPS (a lab CA that this Chromium trusts, the
name portal.plaza.test mapped to loopback), the cloud (cheroot in a thread, SQLite) and the
stand-in push service (lab/push_receiver.py). The one thing Chromium cannot do offline is ask
its vendor's push service for an endpoint, so `PushManager.subscribe` is replaced in the page
by one that checks the key it is given and returns a subscription at the local push service;
everything else is the real browser: the service worker registration, the permission, the
page's cross-origin POST under its CSP, and the worker's `push` event, delivered through the
DevTools protocol with the payload the cloud sent and the push service decrypted.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cheroot import wsgi
from sqlalchemy import select

from cloud import create_app as cloud_app
from cloud import db as cloud_db
from cloud import migrations
from cloud.accounts import create_merchant, create_venue
from cloud.enrol import create_claim
from cloud.models import PushSubscription
from cloud.push import worker
from cloud.venue_config import default_config, set_venue_config
from gateway.config import Config, GatewayConfig, PortalConfig
from lab.browser import trust_lab_ca
from lab.pki import LabCA
from lab.push_receiver import PushReceiver
from lab.wallet.https import make_server
from portal import create_app as portal_app
from portal.reconnect import tokens
from tests.browser.conftest import ARGS, ARTIFACTS, CHROMIUM
from tests.cloud.conftest import Router, enrol
from tests.consent_wallet import consent_proof, write_public_key
from tests.fakes.control import FakeControl

HOST = "portal.plaza.test"
ALICE = "2088000000000001"
OFFERS = [
    {"id": "coffee", "title": "Two coffees for one", "body": "Until noon", "url": ""},
    {"id": "cake", "title": "Cake of the day", "body": "", "url": ""},
]
# Chromium's own PushManager.subscribe needs its vendor's push service; this one returns the
# subscription the test made at the local push service, and keeps the key it was asked for.
STUB = """
(() => {
  const made = %s;
  window.__plaza_push = {asked: null};
  const bytes = (key) => btoa(String.fromCharCode(...new Uint8Array(key)))
    .replace(/\\+/g, "-").replace(/\\//g, "_").replace(/=+$/, "");
  if (typeof PushManager === "undefined") return;
  PushManager.prototype.getSubscription = async function () { return null; };
  PushManager.prototype.subscribe = async function (options) {
    window.__plaza_push.asked = {
      key: bytes(options.applicationServerKey), visible: options.userVisibleOnly};
    return {endpoint: made.endpoint, options: options, toJSON: () => made,
            unsubscribe: async () => true};
  };
})();
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def venue(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The cloud, the portal and the push service, running; plus the shopper's link."""
    tmp = tmp_path_factory.mktemp("push-browser")
    ca = LabCA(tmp / "ca")
    # The cloud, with a venue that has offers and an enrolled router.
    url = f"sqlite:///{tmp / 'cloud.db'}"
    migrations.upgrade(url)
    cloud = cloud_app({
        "DATABASE_URL": url, "INSTANCE_PATH": str(tmp / "instance"),
        "VAPID_KEY_FILE": str(tmp / "vapid.pem"), "VAPID_SUBJECT": "mailto:ops@plaza.test",
        "WEBPUSH_CA_BUNDLE": str(ca.cert_path),
        "PUSH_ALLOWED_NETWORKS": "127.0.0.0/8",  # the local push service; refused by default
        "WALLET_PUBLIC_KEY_FILE": str(write_public_key(tmp)),  # checks shoppers' consent
    })  # fmt: skip
    now = time.time()
    port = free_port()
    with cloud_db.session(cloud) as db:
        merchant = create_merchant(db, "Cafe Uno", "owner@cafe.example", "flat white please", now)
        place = create_venue(db, merchant.id, "Cafe Uno Main St", now, f"{HOST}:{port}")
        code = create_claim(db, place.id, now)
        config = default_config()
        config["branding"]["name"] = "Cafe Uno"
        config["offers"] = OFFERS
        set_venue_config(db, place.id, config)
        db.commit()
    router: Router = enrol(cloud.test_client(), time.time, code)  # type: ignore[arg-type]
    server = wsgi.Server(("127.0.0.1", 0), cloud, numthreads=4, server_name="plaza-test")
    server.prepare()
    threading.Thread(target=server.serve, daemon=True).start()
    cloud_url = f"http://127.0.0.1:{server.bind_addr[1]}"
    # The portal: HTTPS on loopback, its router enrolled with that cloud.
    state = tmp / "state"
    state.mkdir()
    (state / "cloud.json").write_text(json.dumps({
        "device_id": router.device_id, "venue_id": router.venue_id, "cloud_url": cloud_url,
        "cloud_public_key": router.cloud_public_key,
    }))  # fmt: skip
    cert, key = ca.issue("portal", [HOST])
    settings = Config(
        gateway=GatewayConfig(state_dir=str(state)),
        portal=PortalConfig(hostname=HOST, https_port=port, cert_file=str(cert), key_file=str(key)),
    )
    control = FakeControl()
    control.clients["127.0.0.1"] = {"mac": "02:50:4c:00:00:01", "ip": "127.0.0.1",
                                    "state": "captive", "seconds_remaining": None}  # fmt: skip
    portal = portal_app({"PLAZA_CONFIG": settings, "CONTROL": control, "SECRET_KEY": "k" * 32})
    https = make_server("127.0.0.1", port, portal, str(cert), str(key))
    threading.Thread(target=https.serve_forever, daemon=True).start()
    # The shopper opted in earlier: the portal issued a token, the router reported the link.
    with portal.app_context():
        token = tokens().issue(ALICE)
    link = f"{settings.portal.url}reconnect/{token}"
    at = time.time() - 7200
    proof = consent_proof(ALICE, link, at, origin=f"https://{HOST}:{port}")  # the wallet's
    login = {"key": "l1", "kind": "login", "mac": "02:50:4c:00:00:01", "at": at,
             "wallet_user": ALICE, "opt_in": True, "connect_url": link,
             "consent": proof}  # fmt: skip
    answer = router.post("/api/v1/device/presence", {"events": [login]})
    assert answer.status_code == 200 and answer.get_json()["refused"] == 0
    push_cert, push_key = ca.issue("push", ["127.0.0.1"])
    try:
        with PushReceiver(str(push_cert), str(push_key)).running() as receiver:
            yield {"ca": ca, "cloud": cloud, "router": router, "link": link,
                   "portal_url": settings.portal.url, "receiver": receiver}  # fmt: skip
    finally:
        https.shutdown()
        https.server_close()
        server.stop()
        cloud_db.engine(cloud).dispose()


@contextlib.contextmanager
def chromium(ca: LabCA) -> Iterator[Any]:
    """Debian's Chromium trusting the lab CA (in a private HOME), portal.plaza.test on loopback."""
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), f"{CHROMIUM} missing: apt-get install chromium"
    with tempfile.TemporaryDirectory(prefix="plaza-push-browser-") as home:
        trust_lab_ca(Path(home), str(ca.cert_path))
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=CHROMIUM, headless=True, env={**os.environ, "HOME": home},
                args=[*ARGS, f"--host-resolver-rules=MAP {HOST} 127.0.0.1"],
            )  # fmt: skip
            try:
                yield browser
            finally:
                browser.close()


class ServiceWorker:
    """The page's service worker as DevTools sees it: pushes go in, notifications come out."""

    NOTIFICATIONS = """navigator.serviceWorker.ready
        .then(r => r.getNotifications())
        .then(ns => ns.map(n => ({title: n.title, body: n.body, url: n.data && n.data.url,
                                  tag: n.tag})))"""

    def __init__(self, context: Any, page: Any, origin: str) -> None:
        self.page, self.origin = page, origin
        self.cdp = context.new_cdp_session(page)
        self.registrations: dict[str, str] = {}
        self.cdp.on("ServiceWorker.workerRegistrationUpdated", lambda e: self.registrations.update(
            {r["scopeURL"]: r["registrationId"] for r in e["registrations"]}))  # fmt: skip
        self.cdp.send("ServiceWorker.enable")

    def push(self, data: str) -> None:
        """Deliver `data` as a push message to the portal's worker (registered by the page)."""
        deadline = time.monotonic() + 10
        while f"{self.origin}/" not in self.registrations and time.monotonic() < deadline:
            self.page.wait_for_timeout(100)
        self.cdp.send("ServiceWorker.deliverPushMessage", {
            "origin": self.origin, "registrationId": self.registrations[f"{self.origin}/"],
            "data": data,
        })  # fmt: skip

    def notifications(self, count: int) -> list[dict[str, Any]]:
        """The worker's notifications, once there are `count` (or after 10 s)."""
        shown: list[dict[str, Any]] = []
        deadline = time.monotonic() + 10
        while len(shown) < count and time.monotonic() < deadline:
            self.page.wait_for_timeout(100)
            shown = self.page.evaluate(self.NOTIFICATIONS)
        return shown


def test_a_shopper_taps_notify_me_and_the_offers_arrive_as_a_notification(
    venue: dict[str, Any],
) -> None:
    cloud, receiver, link = venue["cloud"], venue["receiver"], venue["link"]
    public_key = cloud.test_client().get("/api/v1/push/vapid-public-key").get_json()["public_key"]
    made = receiver.subscribe(public_key)
    origin = venue["portal_url"].rstrip("/")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with chromium(venue["ca"]) as browser:
        context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
        context.grant_permissions(["notifications"], origin=origin)
        context.add_init_script(STUB % json.dumps(made))
        page = context.new_page()
        page.set_default_timeout(15000)
        problems: list[str] = []
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        service_worker = ServiceWorker(context, page, origin)

        page.goto(link)  # the one tap from the wallet's saved pass
        assert page.url == f"{origin}/welcome"
        page.wait_for_selector("#push button", state="visible")
        page.screenshot(path=str(ARTIFACTS / "push-01-offer.png"), full_page=True)
        page.click("#push button")
        status, deadline = "", time.monotonic() + 15
        while not status and time.monotonic() < deadline:  # (no eval under this CSP)
            page.wait_for_timeout(100)
            status = page.inner_text("#push [role=status]")
        page.screenshot(path=str(ARTIFACTS / "push-02-subscribed.png"), full_page=True)
        assert status.startswith("Done"), (status, problems)
        assert page.is_hidden("#push button")
        asked = page.evaluate("window.__plaza_push.asked")
        assert asked == {"key": public_key, "visible": True}

        # The cloud holds the subscription, for the shopper the link stands for.
        with cloud_db.session(cloud) as db:
            [row] = db.scalars(select(PushSubscription)).all()
            assert (row.endpoint, row.wallet_user) == (made["endpoint"], ALICE)
            assert row.venue_id == venue["router"].venue_id

        # The shopper walks in again: the cloud pushes, the push service decrypts.
        router = venue["router"]
        join = {"key": "j1", "kind": "join", "mac": "02:50:4c:00:00:01", "at": time.time()}
        assert router.post("/api/v1/device/presence", {"events": [join]}).status_code == 200
        assert worker.run_once(cloud) >= 1
        [delivery] = receiver.deliveries(made)
        sent = delivery.json()
        assert sent["title"] == "Welcome back to Cafe Uno" and sent["url"] == link

        # The browser's service worker gets that payload and shows it.
        service_worker.push(delivery.payload.decode())
        [note] = service_worker.notifications(1)
        assert note["title"] == "Welcome back to Cafe Uno"
        assert "Two coffees for one" in note["body"] and "Cake of the day" in note["body"]
        assert note["url"] == link  # the tap opens the one-tap link on this portal
        assert note["tag"] == f"plaza-{router.venue_id}"
        assert not [p for p in problems if "Content Security Policy" in p], problems


def test_a_push_cannot_send_the_shopper_off_the_portal(venue: dict[str, Any]) -> None:
    """The worker opens only links on its own origin: a payload naming another site gets the
    portal's front page instead (no open redirect through a notification)."""
    origin = venue["portal_url"].rstrip("/")
    with chromium(venue["ca"]) as browser:
        context = browser.new_context()
        context.grant_permissions(["notifications"], origin=origin)
        page = context.new_page()
        page.goto(f"{origin}/venue")
        state = page.evaluate("""async () => {
            const r = await navigator.serviceWorker.register("/sw.js", {scope: "/"});
            await navigator.serviceWorker.ready;
            return r.active ? "active" : "waiting";
        }""")
        assert state == "active"
        service_worker = ServiceWorker(context, page, origin)
        for n, data in enumerate([
            {"title": "Hi", "url": "https://evil.example/steal", "venue": "v1"},
            {"title": "Hi", "url": "javascript:alert(1)", "venue": "v2"},
            "not json at all",
        ]):  # fmt: skip
            service_worker.push(data if isinstance(data, str) else json.dumps(data))
            shown = service_worker.notifications(n + 1)
        assert [note["url"] for note in shown] == [f"{origin}/"] * 3
