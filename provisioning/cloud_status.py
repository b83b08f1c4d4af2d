"""Asks the cloud whether a router is enrolled and heartbeating: `POST /api/v1/enrol/status`
with the claim code the technician used (cloud/enrol.py), from the laptop, so the answer is
the cloud's own view and not the router's opinion of itself."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

HEARTBEAT_FRESH = 90  # seconds: the dashboard shows a router offline after this much silence

Fetch = Callable[[str, bytes], tuple[int, dict[str, Any]]]


def http_fetch(ca_bundle: str = "", timeout: float = 10.0) -> Fetch:
    context = ssl.create_default_context(cafile=ca_bundle or None)

    def fetch(url: str, body: bytes) -> tuple[int, dict[str, Any]]:
        request = urllib.request.Request(
            url, data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout, context=context) as resp:
                return resp.status, json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as exc:
            try:
                return exc.code, json.loads(exc.read() or b"{}")
            except ValueError:
                return exc.code, {}

    return fetch


def heartbeat_line(cloud: str, claim: str, fetch: Fetch) -> dict[str, str]:
    """The `heartbeat` verify line from the cloud's answer."""

    def fail(reason: str) -> dict[str, str]:
        return {"check": "heartbeat", "status": "fail", "reason": reason}

    try:
        status, data = fetch(
            cloud.rstrip("/") + "/api/v1/enrol/status", json.dumps({"claim_code": claim}).encode()
        )
    except (OSError, ValueError) as exc:
        return fail(f"cannot reach the cloud at {cloud} from here: {exc}; check --cloud")
    if status == 404:
        return fail("the cloud does not know this claim code: check --claim")
    if status != 200:
        return fail(f"the cloud answered {status}: {data.get('error', '')}")
    if not data.get("enrolled"):
        return fail("the claim code was not used: no router enrolled with it; run flash")
    if data.get("revoked"):
        return fail(f"device {data.get('device_id')} is revoked in the dashboard")
    last, now = data.get("last_heartbeat_at"), data.get("time")
    if not isinstance(last, int | float) or not isinstance(now, int | float):
        return fail(
            f"device {data.get('device_id')} is enrolled but never sent a heartbeat: "
            "is plaza-gateway running, can the router reach the cloud?"
        )
    age = now - last
    if age > HEARTBEAT_FRESH:
        return fail(
            f"device {data.get('device_id')}: last heartbeat {age:.0f} s ago (over "
            f"{HEARTBEAT_FRESH} s): check the router's WAN and plaza-gateway"
        )
    return {
        "check": "heartbeat",
        "status": "ok",
        "reason": f"the cloud saw device {data.get('device_id')} {age:.0f} s ago",
    }
