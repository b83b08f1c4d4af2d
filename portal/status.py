"""Where a shopper sees their time and data left and can sign out."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, redirect, render_template, request
from werkzeug.wrappers import Response

from gateway.control_client import ControlError
from plaza.csrf import require_csrf
from portal import shopper
from portal.control import control, control_error_page, is_authorized, lookup, unreachable
from portal.i18n import data_size

bp = Blueprint("status", __name__)


def minutes_left(seconds: int | None) -> int | None:
    """Rounded up, so the page never says 0 minutes while time remains."""
    if seconds is None:
        return None
    return max(0, -(-seconds // 60))


def data_left(client: dict[str, Any] | None) -> str | None:
    """Human-readable bytes remaining, or None when the session has no data quota."""
    remaining = client.get("bytes_remaining") if client else None
    if isinstance(remaining, bool) or not isinstance(remaining, int):
        return None
    return data_size(remaining)


@bp.get("/status")
def show() -> str | tuple[str, int]:
    who = request.remote_addr or ""
    try:
        client = control().client(who)
    except ControlError as exc:
        if unreachable(exc):
            return control_error_page(exc)
        client = None  # the gateway does not know this client: so it is not signed in
    authorized = is_authorized(client)
    shopper.current(client)  # a session that ended takes the wallet user with it
    seconds = client.get("seconds_remaining") if client else None
    return render_template(
        "status.html",
        authorized=authorized,
        minutes=minutes_left(seconds),
        data=data_left(client) if authorized else None,
        ip=who,
        welcome=authorized and request.args.get("welcome") == "1",
    )


@bp.post("/logout")
def logout() -> Response | tuple[str, int]:
    require_csrf()
    who = request.remote_addr or ""
    try:
        control().deauth(who, reason="logout")
    except ControlError as exc:
        # A second tap, or a session that just expired: already logged out is what was asked.
        if unreachable(exc) or is_authorized(lookup(who)):
            return control_error_page(exc)
    shopper.sign_out()  # logged out of the Wi-Fi is logged out of the portal
    return redirect("/?logged_out=1", code=303)
