"""plaza-provision verify: services, the router's own checks, the cloud's view of the
heartbeat, the captive probe; each line ok/fail/skip with what to do."""

from __future__ import annotations

import io
import json

from provisioning import errors
from provisioning.cloud_status import heartbeat_line
from provisioning.report import JsonReporter
from provisioning.verify import VerifyPlan, captive_line, verify
from tests.fakes.ssh import FakeRouter

UNITS = {"plaza-gateway", "plaza-portal", "plaza-dnsmasq"}
ROUTER_OK = [
    {"check": "nft", "status": "ok", "reason": "table inet plaza is loaded"},
    {"check": "portal-https", "status": "ok", "reason": "portal.cafe verified"},
]


def fetch_answer(status: int, data: dict):
    calls = []

    def fetch(url: str, body: bytes):
        calls.append((url, json.loads(body)))
        return status, data

    return fetch, calls


def run(router: FakeRouter, plan: VerifyPlan, fetch=None, probe=None) -> tuple[int, dict]:
    out = io.StringIO()
    fetch = fetch or fetch_answer(500, {})[0]
    kwargs = {"probe": probe} if probe else {}
    code = verify(router, plan, JsonReporter(out), fetch, **kwargs)
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    return code, {x["check"]: x for x in lines if "check" in x}


def test_all_ok_asks_the_cloud_with_the_claim_code() -> None:
    fetch, calls = fetch_answer(
        200,
        {
            "enrolled": True,
            "device_id": "dev_1",
            "revoked": False,
            "last_heartbeat_at": 990.0,
            "time": 1000.0,
        },
    )
    router = FakeRouter(active=set(UNITS), checks=ROUTER_OK)
    plan = VerifyPlan(cloud="https://cloud.example/", claim="K7Q4", lan_probe="http://a.test/")
    code, lines = run(router, plan, fetch, probe=lambda url: (302, "https://portal.cafe/"))
    assert code == errors.OK
    assert calls == [("https://cloud.example/api/v1/enrol/status", {"claim_code": "K7Q4"})]
    assert lines["heartbeat"]["reason"] == "the cloud saw device dev_1 10 s ago"
    assert lines["captive-probe"]["reason"] == "http://a.test/ answered 302 → https://portal.cafe/"
    assert {f"service {u}" for u in UNITS} <= lines.keys()
    assert all(x["status"] == "ok" for x in lines.values())


def test_a_stopped_service_fails_with_what_to_do() -> None:
    router = FakeRouter(active={"plaza-gateway", "plaza-dnsmasq"}, checks=ROUTER_OK)
    code, lines = run(router, VerifyPlan())
    assert code == errors.CHECK_FAILED
    portal = lines["service plaza-portal"]
    assert portal["status"] == "fail" and "journalctl -u plaza-portal" in portal["reason"]
    assert lines["heartbeat"]["status"] == "skip" and "--claim" in lines["heartbeat"]["reason"]
    assert lines["captive-probe"]["status"] == "skip"


def test_a_router_without_the_agent_says_run_flash() -> None:
    router = FakeRouter(active=set(UNITS))
    code, lines = run(router, VerifyPlan())
    assert code == errors.CHECK_FAILED and "run flash" in lines["router"]["reason"]


def test_router_check_lines_pass_through_with_root() -> None:
    bad = [{"check": "nft", "status": "fail", "reason": "table inet plaza is not loaded"}]
    router = FakeRouter(active=set(UNITS), checks=bad)
    code, lines = run(router, VerifyPlan(root="/tmp/r", portal_ca="/etc/ssl/lab-ca.pem"))
    assert code == errors.CHECK_FAILED and lines["nft"]["status"] == "fail"
    assert [
        "plaza-provision-agent",
        "--root",
        "/tmp/r",
        "check",
        "--portal-ca",
        "/etc/ssl/lab-ca.pem",
    ] in router.calls


def test_heartbeat_answers_from_the_cloud() -> None:
    def line(status, data):
        return heartbeat_line("https://c", "K", fetch_answer(status, data)[0])

    assert "does not know this claim code" in line(404, {"error": "unknown"})["reason"]
    assert "was not used" in line(200, {"enrolled": False, "time": 1})["reason"]
    assert "revoked" in line(200, {"enrolled": True, "revoked": True, "device_id": "d"})["reason"]
    never = line(200, {"enrolled": True, "device_id": "d", "last_heartbeat_at": None, "time": 5})
    assert never["status"] == "fail" and "never sent a heartbeat" in never["reason"]
    stale = line(200, {"enrolled": True, "device_id": "d", "last_heartbeat_at": 0, "time": 91})
    assert stale["status"] == "fail" and "91 s ago" in stale["reason"]
    fresh = line(200, {"enrolled": True, "device_id": "d", "last_heartbeat_at": 1, "time": 91})
    assert fresh["status"] == "ok"
    assert "answered 410" in line(410, {"error": "claim code used more than 30 days ago"})["reason"]

    def down(url, body):
        raise OSError("Connection refused")

    unreachable = heartbeat_line("https://c", "K", down)
    assert unreachable["status"] == "fail" and "cannot reach the cloud" in unreachable["reason"]


def test_captive_probe_needs_a_redirect() -> None:
    assert captive_line("http://a/", lambda u: (204, ""))["status"] == "fail"
    assert captive_line("http://a/", lambda u: (511, "https://p/"))["status"] == "ok"

    def no_answer(url):
        raise OSError("timed out")

    assert "on the router's LAN" in captive_line("http://a/", no_answer)["reason"]


def test_unreachable_router_is_an_error_not_a_check() -> None:
    out = io.StringIO()
    router = FakeRouter(ssh="wrong-key")
    try:
        verify(router, VerifyPlan(), JsonReporter(out), fetch_answer(500, {})[0])
    except errors.ProvisionError as exc:
        assert exc.code == errors.UNREACHABLE
    else:
        raise AssertionError("no error")
