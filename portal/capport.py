"""The RFC 8908 Captive Portal API: what an OS asks before (and instead of) probing.

Android 11+ and iOS 14+ read this document from the URL in DHCP option 114 and trust it over
their probes, so it must identify the client exactly as the gateway does (by its address on
the LAN) and never be cached across clients.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response, current_app, request

from gateway.control_client import ControlError
from portal.control import control, unreachable

bp = Blueprint("capport", __name__)

MEDIA_TYPE = "application/captive+json"


def document(client: dict[str, Any] | None) -> dict[str, Any]:
    """The API document for one client's gateway view (None: unknown to the gateway)."""
    portal = current_app.config["PLAZA_CONFIG"].portal
    captive = client is None or client.get("state") != "authorized"
    doc: dict[str, Any] = {
        "captive": captive,
        "user-portal-url": portal.url,
        "venue-info-url": portal.url + "venue",
    }
    if not captive:
        # Only when the session really is limited (RFC 8908 section 5).
        if client.get("seconds_remaining") is not None:
            doc["seconds-remaining"] = int(client["seconds_remaining"])
        if client.get("bytes_remaining") is not None:
            doc["bytes-remaining"] = int(client["bytes_remaining"])
        doc["can-extend-session"] = True  # signing in again extends the session
    return doc


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
