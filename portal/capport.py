"""The RFC 8908 Captive Portal API: what an OS asks before (and instead of) probing.

Android 11+ and iOS 14+ read this document from the URL in DHCP option 114 and trust it over
their probes, so it must identify the client exactly as the gateway does (by its address on
the LAN) and never be cached across clients.
"""

from __future__ import annotations

import json
import math
from typing import Any

from flask import Blueprint, Response, current_app, request

from gateway.control_client import ControlError
from portal.control import control, unreachable

bp = Blueprint("capport", __name__)

MEDIA_TYPE = "application/captive+json"


def document(client: Any) -> dict[str, Any]:
    """The API document for one client's gateway view (None: unknown to the gateway)."""
    portal = current_app.config["PLAZA_CONFIG"].portal
    if not isinstance(client, dict):
        client = None
    captive = client is None or client.get("state") != "authorized"
    doc: dict[str, Any] = {
        "captive": captive,
        "user-portal-url": portal.url,
        "venue-info-url": portal.url + "venue",
    }
    if client is not None and not captive:
        # Only when the session really is limited (RFC 8908 section 5).
        for key in ("seconds", "bytes"):
            left = _count(client.get(f"{key}_remaining"))
            if left is not None:
                doc[f"{key}-remaining"] = left
        doc["can-extend-session"] = True  # signing in again extends the session
    return doc


def _count(value: Any) -> int | None:
    """A whole number of seconds or bytes as RFC 8908 has it (0 or more), None for no limit.
    What the control socket sends is JSON: a daemon of another version, or a bug, must not
    turn the API every phone polls into a 500 (int("x"), int(inf))."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return max(0, int(value))


@bp.get("/api/captive")
def api() -> Response:
    try:
        client = control().client(request.remote_addr or "")
    except ControlError as exc:
        if unreachable(exc):
            body = {"error": "the Wi-Fi gateway is not available"}
            return Response(json.dumps(body), 503, content_type="application/json")
        client = None  # not known to the gateway (yet): captive
    response = Response(
        json.dumps(document(client), separators=(",", ":")), content_type=MEDIA_TYPE
    )
    response.headers["Cache-Control"] = "private"
    return response
