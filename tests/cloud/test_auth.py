"""Signed requests: every way a router request can be refused (docs/cloud-protocol.md)."""

from __future__ import annotations

import pytest
from flask import Flask
from sqlalchemy import func, select

from cloud import create_app
from cloud import db as cloud_db
from cloud.models import Device, Nonce
from plaza import signing
from tests.cloud.conftest import Router, enrol, new_claim

HB = "/api/v1/device/heartbeat"


def test_signed_heartbeat_is_accepted(router: Router):
    response = router.post(HB, {"uptime": 5})
    assert response.status_code == 200, response.get_json()


@pytest.mark.parametrize("header", signing.HEADERS)
def test_missing_header_is_401(router: Router, header: str):
    response = router.post(HB, {"uptime": 5}, drop=[header])
    assert response.status_code == 401
    assert header in response.get_json()["error"]


def test_unsigned_request_is_401(client):
    response = client.post(HB, json={"uptime": 5})
    assert response.status_code == 401
    assert response.get_json()["error"].startswith("missing header")


def test_unknown_device_is_401(router: Router):
    response = router.post(HB, {"uptime": 5}, device_id="dev_0000000000000000")
    assert response.status_code == 401
    assert response.get_json() == {"error": "unknown or revoked device"}


def test_bad_signature_is_401(router: Router):
    headers = router.headers("POST", HB, b'{"uptime": 5}')
    # The signature covers the body: a changed body no longer verifies.
    response = router.client.post(HB, data=b'{"uptime": 6}', headers=headers)
    assert response.status_code == 401
    assert response.get_json() == {"error": "bad signature"}


def test_signature_covers_path_and_query(router: Router):
    headers = router.headers("GET", "/api/v1/device/commands?wait=0", b"")
    response = router.client.get("/api/v1/device/commands?wait=1", headers=headers)
    assert response.status_code == 401


def test_garbage_signature_is_401(router: Router):
    response = router.post(HB, {"uptime": 5}, extra={"X-Plaza-Signature": "!!notbase64"})
    assert response.status_code == 401


def test_replayed_nonce_is_409(router: Router):
    nonce = "n" * 20
    assert router.post(HB, {"uptime": 5}, nonce=nonce).status_code == 200
    replay = router.post(HB, {"uptime": 5}, nonce=nonce)
    assert replay.status_code == 409
    assert replay.get_json() == {"error": "replayed request"}


def test_exact_replay_of_the_same_bytes_is_409(router: Router):
    body = b'{"uptime": 5}'
    headers = router.headers("POST", HB, body)
    first = router.client.post(HB, data=body, headers=headers)
    second = router.client.post(HB, data=body, headers=headers)
    assert (first.status_code, second.status_code) == (200, 409)


@pytest.mark.parametrize("skew", [-301, 301])
def test_clock_skew_either_way_is_401(router: Router, clock, skew: int):
    response = router.post(HB, {"uptime": 5}, timestamp=clock() + skew)
    assert response.status_code == 401
    assert "clock skew" in response.get_json()["error"]


@pytest.mark.parametrize("skew", [-300, 300])
def test_skew_at_the_limit_is_accepted(router: Router, clock, skew: int):
    assert router.post(HB, {"uptime": 5}, timestamp=clock() + skew).status_code == 200


def test_another_routers_credential_is_401(app: Flask, client, clock, venue, router: Router):
    other = enrol(client, clock, new_claim(app, venue.id, clock()), hostname="other")
    # Signed with router A's key but naming router B.
    response = router.post(HB, {"uptime": 5}, device_id=other.device_id)
    assert response.status_code == 401
    assert response.get_json() == {"error": "bad signature"}
    with cloud_db.session(app) as db:
        assert db.get(Device, other.device_id).last_heartbeat_at is None


def test_revoked_device_is_401(app: Flask, router: Router):
    with cloud_db.session(app) as db:
        db.get(Device, router.device_id).revoked = True
        db.commit()
    response = router.post(HB, {"uptime": 5})
    assert response.status_code == 401
    assert response.get_json() == {"error": "unknown or revoked device"}


def test_malformed_nonce_is_401(router: Router):
    assert router.post(HB, {"uptime": 5}, nonce="short").status_code == 401


def test_expired_nonces_are_purged_and_replays_then_fail_on_time(app: Flask, router: Router, clock):
    nonce = "p" * 20
    signed_at = clock()
    assert router.post(HB, {"uptime": 5}, nonce=nonce).status_code == 200
    clock.advance(400)
    assert router.post(HB, {"uptime": 6}).status_code == 200  # triggers the purge
    with cloud_db.session(app) as db:
        left = db.scalars(select(Nonce.nonce)).all()
        assert nonce not in left and len(left) == 1
    # The purged nonce cannot be replayed: its timestamp is now outside the window.
    replay = router.post(HB, {"uptime": 5}, nonce=nonce, timestamp=signed_at)
    assert replay.status_code == 401


def test_nonce_uniqueness_is_enforced_by_the_database(app: Flask, router: Router, clock):
    """What makes several instances agree: the constraint, not process memory."""
    assert router.post(HB, {"uptime": 5}, nonce="q" * 20).status_code == 200
    other = create_app({k: app.config[k] for k in ("DATABASE_URL", "CLOUD_KEY", "CLOCK")}
                       | {"INSTANCE_PATH": app.instance_path})  # fmt: skip
    try:
        replay = Router(other.test_client(), clock, router.device_id, router.key)
        assert replay.post(HB, {"uptime": 5}, nonce="q" * 20).status_code == 409
    finally:
        cloud_db.engine(other).dispose()
    with cloud_db.session(app) as db:
        count = db.scalar(select(func.count()).select_from(Nonce).where(Nonce.nonce == "q" * 20))
        assert count == 1


@pytest.mark.parametrize("device_id", ["dev_\x7f", "x" * 300, "dev_ZZZZZZZZZZZZZZZZ"])
def test_malformed_device_id_is_401(router: Router, device_id: str):
    assert router.post(HB, {"uptime": 5}, device_id=device_id).status_code == 401
