"""Signed commands over the long poll."""

from __future__ import annotations

import time

import pytest
from flask import Flask

from cloud import commands
from cloud import db as cloud_db
from cloud.models import Command
from plaza import signing
from tests.cloud.conftest import CLOUD_KEY, Router, enrol, new_claim

POLL = "/api/v1/device/commands"


def issue(app: Flask, device_id: str, op: str, args: dict, now: float, ttl: int = 300) -> str:
    with cloud_db.session(app) as db:
        command = commands.issue(db, CLOUD_KEY, device_id, op, args, now, ttl)
        db.commit()
        return command.id


def test_issued_command_reaches_the_router_signed(app: Flask, router: Router, clock):
    cid = issue(app, router.device_id, "authorize", {"client": "02:00:00:00:00:0A", "minutes": 30},
                clock())  # fmt: skip
    response = router.get(f"{POLL}?wait=5")
    assert response.status_code == 200
    [command] = response.get_json()["commands"]
    assert command["id"] == cid
    assert command["op"] == "authorize"
    assert command["args"] == {"client": "02:00:00:00:00:0a", "minutes": 30}
    assert command["device_id"] == router.device_id
    assert command["expires_at"] - command["issued_at"] == 300
    # The router verifies with the cloud key it pinned at enrolment.
    signing.verify_command(signing.load_public(router.cloud_public_key), command)
    tampered = {**command, "op": "kick"}
    with pytest.raises(signing.SignatureError):
        signing.verify_command(signing.load_public(router.cloud_public_key), tampered)


def test_command_is_redelivered_until_its_result(app: Flask, router: Router, clock):
    cid = issue(app, router.device_id, "refresh-config", {}, clock())
    assert len(router.get(f"{POLL}?wait=0").get_json()["commands"]) == 1
    assert len(router.get(f"{POLL}?wait=0").get_json()["commands"]) == 1
    result = router.post(f"{POLL}/{cid}/result", {"ok": False, "error": "busy"})
    assert result.status_code == 200 and result.get_json() == {}
    assert router.get(f"{POLL}?wait=0").get_json() == {"commands": []}
    with cloud_db.session(app) as db:
        done = db.get(Command, cid)
        assert (done.ok, done.error, done.done_at) == (False, "busy", clock())
    # A resent result is accepted and changes nothing.
    assert router.post(f"{POLL}/{cid}/result", {"ok": True}).status_code == 200
    with cloud_db.session(app) as db:
        assert db.get(Command, cid).ok is False


def test_expired_command_is_not_delivered(app: Flask, router: Router, clock):
    issue(app, router.device_id, "kick", {"client": "192.168.50.10"}, clock(), ttl=60)
    clock.advance(61)
    assert router.get(f"{POLL}?wait=0").get_json() == {"commands": []}


def test_long_poll_waits_then_returns_empty(router: Router):
    started = time.monotonic()
    response = router.get(f"{POLL}?wait=1")
    elapsed = time.monotonic() - started
    assert response.get_json() == {"commands": []}
    assert 0.9 <= elapsed < 5


def test_long_poll_answers_at_once_when_pending(app: Flask, router: Router, clock):
    issue(app, router.device_id, "refresh-config", {}, clock())
    started = time.monotonic()
    assert len(router.get(f"{POLL}?wait=30").get_json()["commands"]) == 1
    assert time.monotonic() - started < 1


def test_commands_go_only_to_their_device(app: Flask, client, clock, venue, router: Router):
    other = enrol(client, clock, new_claim(app, venue.id, clock()))
    cid = issue(app, router.device_id, "refresh-config", {}, clock())
    assert other.get(f"{POLL}?wait=0").get_json() == {"commands": []}
    # ... and only their device may report the result.
    assert other.post(f"{POLL}/{cid}/result", {"ok": True}).status_code == 404
    assert len(router.get(f"{POLL}?wait=0").get_json()["commands"]) == 1


@pytest.mark.parametrize("wait", ["31", "-1", "x", "1.5"])
def test_bad_wait_is_400(router: Router, wait: str):
    assert router.get(f"{POLL}?wait={wait}").status_code == 400


BAD_RESULTS = [{}, {"ok": "yes"}, {"ok": True, "error": 5}, {"ok": True, "extra": 1},
               {"ok": False, "error": "a\u0000"}]  # fmt: skip


@pytest.mark.parametrize("body", BAD_RESULTS)
def test_bad_result_is_400(app: Flask, router: Router, clock, body):
    cid = issue(app, router.device_id, "refresh-config", {}, clock())
    assert router.post(f"{POLL}/{cid}/result", body).status_code == 400


BAD_COMMANDS = [
    ("shell", {"cmd": "reboot"}, "unknown op"),
    ("exec", {}, "unknown op"),
    ("authorize", {}, "client"),
    ("authorize", {"client": "not-an-address"}, "client"),
    ("authorize", {"client": "02:00:00:00:00:0a", "minutes": 0}, "minutes"),
    ("authorize", {"client": "02:00:00:00:00:0a", "minutes": "5"}, "minutes"),
    ("kick", {"client": "10.0.0.1", "minutes": 5}, "unexpected argument"),
    ("refresh-config", {"client": "10.0.0.1"}, "unexpected argument"),
]


@pytest.mark.parametrize("op,args,message", BAD_COMMANDS)
def test_bad_commands_are_refused_at_issue_time(app: Flask, router: Router, clock, op, args,
                                                message):  # fmt: skip
    with cloud_db.session(app) as db:
        with pytest.raises(commands.CommandError, match=message):
            commands.issue(db, CLOUD_KEY, router.device_id, op, args, clock())
        db.rollback()
    assert router.get(f"{POLL}?wait=0").get_json() == {"commands": []}


def test_no_command_for_unknown_device(app: Flask, venue, clock):
    with cloud_db.session(app) as db, pytest.raises(commands.CommandError, match="no active"):
        commands.issue(db, CLOUD_KEY, "dev_0000000000000000", "refresh-config", {}, clock())
