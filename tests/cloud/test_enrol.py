"""Enrolment with one-time claim codes."""

from __future__ import annotations

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from cloud import db as cloud_db
from cloud.models import ClaimCode, Device, Venue
from plaza import signing
from tests.cloud.conftest import CLOUD_KEY, enrol, new_claim
from tests.conftest import FakeClock


def _enrol(client: FlaskClient, code: str, **extra: object):
    body = {"claim_code": code, "public_key": signing.public_b64(signing.new_key()),
            "hostname": "r1", "version": "0.4.0", **extra}  # fmt: skip
    return client.post("/api/v1/enrol", json=body)


def test_enrol_gives_identity_and_cloud_key(app: Flask, client, clock: FakeClock, venue: Venue):
    code = new_claim(app, venue.id, clock())
    router = enrol(client, clock, code, hostname="plaza-lab-router")
    assert router.device_id.startswith("dev_")
    assert router.venue_id == venue.id
    assert router.cloud_public_key == signing.public_b64(CLOUD_KEY)
    with cloud_db.session(app) as db:
        device = db.get(Device, router.device_id)
        assert device is not None
        assert device.public_key == signing.public_b64(router.key)
        assert device.hostname == "plaza-lab-router" and device.enrolled_at == clock()
        claim = db.scalars(select(ClaimCode)).one()
        assert claim.used_at == clock() and claim.device_id == router.device_id
        # Only the hash is kept.
        assert code not in claim.code_hash and len(claim.code_hash) == 64


def test_claim_code_is_case_and_separator_tolerant(app, client, clock, venue):
    code = new_claim(app, venue.id, clock())
    assert _enrol(client, code.lower().replace("-", " ")).status_code == 201


def test_claim_used_twice_is_409_and_creates_no_second_device(app, client, clock, venue):
    code = new_claim(app, venue.id, clock())
    assert _enrol(client, code).status_code == 201
    again = _enrol(client, code)
    assert again.status_code == 409
    assert again.get_json() == {"error": "claim code already used"}
    with cloud_db.session(app) as db:
        assert len(db.scalars(select(Device)).all()) == 1


def test_expired_claim_is_410(app, client, clock, venue):
    code = new_claim(app, venue.id, clock(), days=1)
    clock.advance(86400 + 1)
    response = _enrol(client, code)
    assert response.status_code == 410
    assert "expired" in response.get_json()["error"]


def test_unknown_claim_is_404(client, venue):
    response = _enrol(client, "AAAA-BBBB-CCCC")
    assert response.status_code == 404
    assert response.get_json() == {"error": "unknown claim code"}


def test_bad_enrol_bodies_are_400_and_spend_no_code(app, client, clock, venue):
    code = new_claim(app, venue.id, clock())
    assert (
        client.post("/api/v1/enrol", data=b"{", content_type="application/json").status_code == 400
    )
    assert client.post("/api/v1/enrol", json=[code]).status_code == 400
    assert _enrol(client, code, public_key="not base64!").status_code == 400
    assert _enrol(client, code, public_key="AAAA").status_code == 400  # 3 bytes, not 32
    assert _enrol(client, code, hostname="x" * 100).status_code == 400
    assert _enrol(client, code).status_code == 201  # the code survived the bad attempts


STATUS = "/api/v1/enrol/status"


def test_enrol_status_answers_for_the_claimed_router_and_its_heartbeat(app, client, clock, venue):
    """plaza-provision verify asks with the claim code: before use, after use, after a
    heartbeat; the answer names only that router."""
    code = new_claim(app, venue.id, clock())
    before = client.post(STATUS, json={"claim_code": code})
    assert before.status_code == 200 and before.json["enrolled"] is False
    router = enrol(client, clock, code)
    after = client.post(STATUS, json={"claim_code": code.lower()}).json
    assert after["enrolled"] is True and after["device_id"] == router.device_id
    assert after["last_heartbeat_at"] is None and after["revoked"] is False
    clock.advance(5)
    assert router.post("/api/v1/device/heartbeat", {"uptime": 5}).status_code == 200
    beat = client.post(STATUS, json={"claim_code": code}).json
    assert beat["last_heartbeat_at"] == clock() and beat["time"] == clock()


def test_enrol_status_refuses_unknown_old_and_malformed_codes(app, client, clock, venue):
    assert client.post(STATUS, json={"claim_code": "NOPE-NOPE-NOPE"}).status_code == 404
    assert client.post(STATUS, json={"claim_code": 5}).status_code == 400
    code = new_claim(app, venue.id, clock())
    enrol(client, clock, code)
    clock.advance(31 * 86400)
    old = client.post(STATUS, json={"claim_code": code})
    assert old.status_code == 410 and "30 days" in old.json["error"]
