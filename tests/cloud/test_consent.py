"""The cloud believes no router about wallet users: opt-ins need the wallet's consent proof.

The attack from the security review (issue 10, finding 1): one signed presence batch from a
rooted router named 500 wallet users who had never been at the venue, each with a link of the
router's choosing, and then reported them all as joining; the cloud queued 500 "Welcome back"
messages with the router's (phishing) link. Each way a router can try it is a test here: no
proof, a proof the wallet did not sign, a real proof for someone else, for another venue, for
another link, an expired one, a replayed one. Refused opt-ins are counted on the dashboard.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from cloud import db as cloud_db
from cloud.accounts import AccountError, portal_host, set_portal_host
from cloud.models import ConsentProof, Device, PushJob, ShopperLink, Venue
from cloud.push import presence_push
from tests.cloud.conftest import PORTAL_HOST, Router, consent_proof, opt_in_event
from tests.cloud.dashboard_helpers import sign_in
from tests.conftest import FakeClock

PRESENCE = "/api/v1/device/presence"
PHISH = "https://portal-plaza.example/reconnect/win-a-prize"
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def pushing(app: Flask) -> Flask:
    """The app, whose presence push hook is on (create_app wires it), as `plaza-cloud run`."""
    assert presence_push.join_hook in presence_push.presence.JOIN_HOOKS
    return app


def mac(i: int) -> str:
    return f"02:00:00:00:{i // 256:02x}:{i % 256:02x}"


def join(key: str, at: float, i: int) -> dict[str, Any]:
    return {"key": key, "kind": "join", "mac": mac(i), "at": at}


def count(app: Flask, model: Any) -> int:
    with cloud_db.session(app) as db:
        return db.scalar(select(func.count()).select_from(model)) or 0


def device(app: Flask, router: Router) -> Device:
    with cloud_db.session(app) as db:
        found = db.get(Device, router.device_id)
        assert found is not None
        db.expunge(found)
        return found


def post(router: Router, *events: dict[str, Any]) -> dict[str, Any]:
    response = router.post(PRESENCE, {"events": list(events)})
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def test_the_reviewed_attack_500_users_without_proof_queue_nothing(
    pushing: Flask, router: Router, clock: FakeClock, client: FlaskClient
) -> None:
    t = clock()
    logins = [
        {"key": f"l{i}", "kind": "login", "mac": mac(i), "at": t, "wallet_user": f"2088{i:012d}",
         "opt_in": True, "connect_url": PHISH}
        for i in range(500)
    ]  # fmt: skip
    assert post(router, *logins)["refused"] == 500
    assert post(router, *(join(f"j{i}", t + 60, i) for i in range(500)))["refused"] == 0
    assert count(pushing, ShopperLink) == 0
    assert count(pushing, PushJob) == 0
    seen = device(pushing, router)
    assert seen.presence_refused == 500
    assert seen.presence_refused_reason == "opt-in without the wallet's consent proof"
    # The merchant sees it on the venue page, against this router.
    sign_in(client)
    page = client.get(f"/dashboard/venues/{router.venue_id}").get_data(as_text=True)
    assert f'id="refused-{router.device_id}"' in page
    assert "500 shopper opt-ins refused: no wallet consent" in page


@pytest.mark.parametrize(
    ("forge", "reason"),
    [
        ({"consent": "proof-for-the-phishing-link"}, "another link"),
        ({"wallet_user": "2088000000000099"}, "another wallet user"),
        ({"connect_url": f"https://{PORTAL_HOST}/reconnect/swapped"}, "another link"),
        ({"connect_url": PHISH}, "not on the venue's portal host"),
        ({"consent": "e30.e30.e30"}, "not signed by the wallet"),
        ({"consent": None}, "without the wallet's consent proof"),
    ],
)
def test_a_proof_that_does_not_fit_this_login_is_refused(
    pushing: Flask, router: Router, clock: FakeClock, forge: dict[str, Any], reason: str
) -> None:
    event = opt_in_event("l1", clock(), "2088000000000001", mac=mac(1))
    event.update(forge)
    if event["consent"] == "proof-for-the-phishing-link":  # a real proof, for another link
        event["consent"] = consent_proof("2088000000000001", PHISH, clock())
    if event["consent"] is None:
        del event["consent"]
    assert post(router, event)["refused"] == 1
    assert post(router, join("j1", clock() + 60, 1))["accepted"] == 1
    assert (count(pushing, ShopperLink), count(pushing, PushJob)) == (0, 0)
    assert reason in (device(pushing, router).presence_refused_reason or "")


def test_a_proof_signed_by_another_key_or_for_another_venue_or_stale_is_refused(
    pushing: Flask, router: Router, clock: FakeClock
) -> None:
    t, user = clock(), "2088000000000001"
    link = f"https://{PORTAL_HOST}/reconnect/tok-1"
    forged = consent_proof(user, link, t, key=OTHER_KEY)
    elsewhere = consent_proof(user, link, t, origin="https://portal.other-venue.example")
    stale = consent_proof(user, link, t - 2 * 86400)
    early = consent_proof(user, link, t - 3600)  # real, but not from this login
    for i, proof in enumerate((forged, elsewhere, stale, early)):
        event = opt_in_event(f"l{i}", t, user, mac=mac(1), consent=proof, connect_url=link)
        assert post(router, event)["refused"] == 1, i
    assert count(pushing, ShopperLink) == 0
    assert device(pushing, router).presence_refused == 4


def test_a_used_proof_cannot_be_replayed_to_opt_a_shopper_back_in(
    pushing: Flask, router: Router, clock: FakeClock
) -> None:
    t, user = clock(), "2088000000000001"
    honest = opt_in_event("l1", t, user, mac=mac(1))
    assert post(router, honest) == {"accepted": 1, "duplicates": 0, "refused": 0}
    assert count(pushing, ConsentProof) == 1
    withdraw = {"key": "l2", "kind": "login", "mac": mac(1), "at": t + 5, "wallet_user": user,
                "opt_in": False}  # fmt: skip
    post(router, withdraw)
    replay = {**honest, "key": "l3", "at": t + 10}
    assert post(router, replay)["refused"] == 1
    assert "already used" in (device(pushing, router).presence_refused_reason or "")
    with cloud_db.session(pushing) as db:
        link = db.scalar(select(ShopperLink))
        assert link is not None and not link.opted_in
    # A resend of the honest batch itself is a duplicate, not a refusal.
    assert post(router, honest) == {"accepted": 0, "duplicates": 1, "refused": 0}


def test_an_honest_opt_in_is_linked_and_pushed_with_its_own_link(
    pushing: Flask, router: Router, clock: FakeClock
) -> None:
    t = clock()
    post(router, opt_in_event("l1", t, "2088000000000001", mac=mac(1), token="alice-1"))
    post(router, join("j1", t + 60, 1))
    with cloud_db.session(pushing) as db:
        [job] = db.scalars(select(PushJob)).all()
    assert job.payload["link"] == f"https://{PORTAL_HOST}/reconnect/alice-1"


def test_a_venue_without_a_registered_portal_host_believes_no_opt_in(
    pushing: Flask, router: Router, clock: FakeClock
) -> None:
    with cloud_db.session(pushing) as db:
        set_portal_host(db, router.venue_id, None)
        db.commit()
    assert post(router, opt_in_event("l1", clock(), "2088000000000001"))["refused"] == 1
    assert "no registered portal host" in (device(pushing, router).presence_refused_reason or "")


def test_a_cloud_without_the_wallet_key_believes_no_opt_in(
    pushing: Flask, router: Router, clock: FakeClock
) -> None:
    pushing.config["WALLET_PUBLIC_KEY_FILE"] = ""
    pushing.extensions.pop("plaza_consent", None)
    assert post(router, opt_in_event("l1", clock(), "2088000000000001"))["refused"] == 1
    assert count(pushing, ShopperLink) == 0


def test_links_made_before_consent_proofs_are_never_pushed(
    pushing: Flask, router: Router, clock: FakeClock
) -> None:
    """What migration 0005 leaves of an old link: no consent_jti, so no push."""
    with cloud_db.session(pushing) as db:
        db.add(ShopperLink(venue_id=router.venue_id, mac=mac(1), wallet_user="2088000000000001",
                           opted_in=True, updated_at=clock(), connect_url=PHISH))  # fmt: skip
        db.commit()
    post(router, join("j1", clock(), 1))
    assert count(pushing, PushJob) == 0


def test_the_venue_push_budget_caps_shoppers_per_hour(
    pushing: Flask, router: Router, clock: FakeClock
) -> None:
    pushing.config["PUSH_VENUE_HOURLY_BUDGET"] = 3
    pushing.extensions[presence_push.EXTENSION] = presence_push.PushSettings.from_app(pushing)
    t = clock()
    for i in range(5):
        post(router, opt_in_event(f"l{i}", t, f"20880000000000{i:02d}", mac=mac(i)))
    post(router, *(join(f"j{i}", t + 60, i) for i in range(5)))
    with cloud_db.session(pushing) as db:
        shoppers = db.scalars(select(PushJob.shopper)).all()
    assert len(shoppers) == 3
    # An hour later the budget is there again.
    clock.now = t + 3601 + 60
    post(router, join("j9", clock(), 4))
    assert count(pushing, PushJob) == 4


@pytest.mark.parametrize("bad", ["1.2.3.4", "localhost", "portal.example:0", "a b.example", ""])
def test_a_portal_host_must_be_a_dns_name(bad: str) -> None:
    with pytest.raises(AccountError):
        portal_host(bad)


def test_portal_host_is_kept_in_one_spelling() -> None:
    assert portal_host("Portal.Plaza.Test.:443") == "portal.plaza.test"
    assert portal_host("portal.plaza.test:8443") == "portal.plaza.test:8443"


def test_venue_fixture_has_its_portal_host(app: Flask, venue: Venue) -> None:
    assert venue.portal_host == PORTAL_HOST


def test_the_merchant_registers_the_portal_host_in_the_dashboard(
    app: Flask, client: FlaskClient, venue: Venue
) -> None:
    sign_in(client)
    editor = f"/dashboard/venues/{venue.id}/editor"
    page = client.get(editor).get_data(as_text=True)
    assert f'value="{PORTAL_HOST}"' in page and 'action="/dashboard/venues/' in page
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token is not None
    url = f"/dashboard/venues/{venue.id}/portal-host"
    bad = client.post(url, data={"csrf_token": token.group(1), "portal_host": "10.0.0.1"})
    assert bad.status_code == 400 and "Portal address: portal host must be" in bad.text
    good = client.post(url, data={"csrf_token": token.group(1), "portal_host": "WiFi.Cafe.Example"})
    assert good.status_code == 303
    with cloud_db.session(app) as db:
        assert db.get(Venue, venue.id).portal_host == "wifi.cafe.example"
    assert client.post(url, data={"portal_host": "x.example"}).status_code == 400  # no CSRF


def test_another_merchant_cannot_move_a_venues_portal_host(
    app: Flask, client: FlaskClient, venue: Venue, clock: FakeClock
) -> None:
    from cloud.accounts import create_merchant

    with cloud_db.session(app) as db:
        create_merchant(db, "Rival", "rival@shop.example", "rival-password-1", clock())
        db.commit()
    sign_in(client, "rival@shop.example", "rival-password-1")
    page = client.get("/dashboard/").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token is not None  # the sign-out form's
    data = {"csrf_token": token.group(1), "portal_host": "evil.example"}
    answer = client.post(f"/dashboard/venues/{venue.id}/portal-host", data=data)
    assert answer.status_code == 404
    with cloud_db.session(app) as db:
        assert db.get(Venue, venue.id).portal_host == PORTAL_HOST


def test_a_missing_wallet_key_file_stops_the_start(tmp_path: Path) -> None:
    from cloud import create_app

    with pytest.raises(ValueError, match="PLAZA_CLOUD_WALLET_PUBLIC_KEY_FILE"):
        create_app({"DATABASE_URL": f"sqlite:///{tmp_path / 'c.db'}", "SECRET_KEY": "k",
                    "INSTANCE_PATH": str(tmp_path / "i"),
                    "WALLET_PUBLIC_KEY_FILE": str(tmp_path / "missing.pub")})  # fmt: skip
