"""Image-baked enrolment (cloud/fleet.py): a router with the fleet secret asks, waits, and
joins only once the merchant approves; refused, revoked or unknown secrets get nothing."""

from __future__ import annotations

import pytest
from flask import Flask

from cloud import db as cloud_db
from cloud import fleet
from cloud.accounts import create_merchant, create_venue
from cloud.models import Device, PendingDevice, Venue
from plaza import signing
from tests.cloud.conftest import CLOUD_KEY
from tests.conftest import FakeClock

URL = "/api/v1/enrol/fleet"


def new_secret(app: Flask, merchant_id: str, t: float) -> str:
    with cloud_db.session(app) as db:
        secret = fleet.create_fleet_secret(db, merchant_id, t)
        db.commit()
        return secret


def ask(client, secret: str, public: str, tag: str = "main-st"):
    return client.post(
        URL,
        json={
            "fleet_secret": secret,
            "public_key": public,
            "venue_tag": tag,
            "hostname": "r9",
            "version": "0.1.0",
        },
    )


def test_a_router_waits_then_joins_the_venue_the_merchant_chose(app, client, clock, venue):
    secret = new_secret(app, venue.merchant_id, clock())
    public = signing.public_b64(signing.new_key())
    first = ask(client, secret, public)
    assert first.status_code == 202 and first.json["status"] == "pending"
    again = ask(client, secret, public)  # a reboot while waiting: the same request
    assert again.status_code == 202 and again.json["pending_id"] == first.json["pending_id"]
    with cloud_db.session(app) as db:
        waiting = fleet.pending_for(db, venue.merchant_id)
        assert [(p.venue_tag, p.hostname) for p in waiting] == [("main-st", "r9")]
        assert db.query(Device).count() == 0  # never auto-trusted
        device = fleet.approve(db, venue.merchant_id, waiting[0].id, venue.id, clock())
        db.commit()
        device_id = device.id
    joined = ask(client, secret, public)
    assert joined.status_code == 201
    assert joined.json == {
        "status": "approved",
        "device_id": device_id,
        "venue_id": venue.id,
        "cloud_public_key": signing.public_b64(CLOUD_KEY),
    }
    with cloud_db.session(app) as db:
        assert db.get(Device, device_id).public_key == public
        assert fleet.pending_for(db, venue.merchant_id) == []


def test_refused_revoked_and_unknown(app, client, clock, venue):
    secret = new_secret(app, venue.merchant_id, clock())
    public = signing.public_b64(signing.new_key())
    pending_id = ask(client, secret, public).json["pending_id"]
    with cloud_db.session(app) as db:
        fleet.reject(db, venue.merchant_id, pending_id, clock())
        db.commit()
    refused = ask(client, secret, public)
    assert refused.status_code == 403 and "refused" in refused.json["error"]
    assert ask(client, "fleet-nope", public).status_code == 403
    newer = new_secret(app, venue.merchant_id, clock())  # revokes the first
    other = signing.public_b64(signing.new_key())
    assert ask(client, secret, other).status_code == 403
    assert ask(client, newer, other).status_code == 202
    assert ask(client, newer, "not-a-key").status_code == 400


def test_decisions_belong_to_the_merchant(app, client, clock: FakeClock, venue: Venue) -> None:
    secret = new_secret(app, venue.merchant_id, clock())
    pending_id = ask(client, secret, signing.public_b64(signing.new_key())).json["pending_id"]
    with cloud_db.session(app) as db:
        other = create_merchant(db, "Bistro", "b@bistro.example", "correct horse b", clock())
        theirs = create_venue(db, other.id, "Bistro", clock(), None)
        db.commit()
        with pytest.raises(fleet.FleetError, match="no such router"):
            fleet.approve(db, other.id, pending_id, theirs.id, clock())
        with pytest.raises(fleet.FleetError, match="no such venue"):
            fleet.approve(db, venue.merchant_id, pending_id, theirs.id, clock())
        fleet.approve(db, venue.merchant_id, pending_id, venue.id, clock())
        with pytest.raises(fleet.FleetError, match="already decided"):
            fleet.reject(db, venue.merchant_id, pending_id, clock())


def test_a_leaked_secret_cannot_flood_the_list(app, client, clock, venue, monkeypatch):
    monkeypatch.setattr(fleet, "MAX_PENDING", 2)
    secret = new_secret(app, venue.merchant_id, clock())
    codes = [
        ask(client, secret, signing.public_b64(signing.new_key())).status_code for _ in range(3)
    ]
    assert codes == [202, 202, 429]
    with cloud_db.session(app) as db:
        assert db.query(PendingDevice).count() == 2


def test_dashboard_lists_waiting_routers_and_approves_one(app, client, clock, venue, signed_in):
    from tests.cloud.dashboard_helpers import csrf, text

    page = signed_in.get("/dashboard/")
    assert "Routers waiting for approval" in text(page)
    token = csrf(signed_in, "/dashboard/fleet")
    made = signed_in.post("/dashboard/fleet/secret", data={"csrf_token": token})
    assert made.status_code == 200
    secret = text(made).split('id="fleet-secret">')[1].split("<")[0]
    assert secret.startswith("fleet-")
    public = signing.public_b64(signing.new_key())
    pending_id = ask(client, secret, public, tag=venue.id).json["pending_id"]
    listed = text(signed_in.get("/dashboard/fleet"))
    assert "r9" in listed and venue.id in listed and "No router is waiting" not in listed
    # Without the CSRF token nothing is decided.
    bare = signed_in.post(f"/dashboard/fleet/{pending_id}/approve", data={"venue_id": venue.id})
    assert bare.status_code == 400
    done = signed_in.post(
        f"/dashboard/fleet/{pending_id}/approve", data={"csrf_token": token, "venue_id": venue.id}
    )
    assert done.status_code == 303
    assert ask(client, secret, public).status_code == 201
    assert "No router is waiting" in text(signed_in.get("/dashboard/fleet"))
    # Deciding again, or for a made-up id: 404, as if it did not exist.
    again = signed_in.post(f"/dashboard/fleet/{pending_id}/reject", data={"csrf_token": token})
    assert again.status_code == 404
    bogus = signed_in.post("/dashboard/fleet/pnd_x/approve", data={"csrf_token": token})
    assert bogus.status_code == 404


def test_dashboard_fleet_needs_sign_in(client, venue) -> None:
    assert client.get("/dashboard/fleet").status_code == 302
    assert client.post("/dashboard/fleet/secret").status_code == 302


def test_the_router_agent_waits_joins_and_signs_as_its_device(app, client, clock, venue, tmp_path):
    """provisioning/fleet_enrol.py against this cloud: pending on the first boot, the same row
    after a reboot, then the identity; the router's requests then verify as that device."""
    from provisioning.fleet_enrol import PENDING_KEY, FleetEnrolment
    from tests.cloud.conftest import Router

    secret = new_secret(app, venue.merchant_id, clock())

    def post(url: str, body: dict):
        response = client.post(url.removeprefix("https://cloud.test"), json=body)
        return response.status_code, response.json

    def boot() -> FleetEnrolment:
        return FleetEnrolment(
            tmp_path,
            "https://cloud.test",
            secret,
            venue.id,
            post,
            clock,
            clock.advance,
            hostname="r9",
        )

    assert boot().once() is None and boot().once() is None  # two boots, one request
    with cloud_db.session(app) as db:
        (waiting,) = fleet.pending_for(db, venue.merchant_id)
        fleet.approve(db, venue.merchant_id, waiting.id, venue.id, clock())
        db.commit()
    identity = boot().run(interval=30, timeout=60)
    assert identity.venue_id == venue.id and not (tmp_path / PENDING_KEY).exists()
    key = signing.load_private((tmp_path / "device.key").read_bytes())
    router = Router(client, clock, identity.device_id, key)
    assert router.post("/api/v1/device/heartbeat", {"uptime": 1}).status_code == 200
