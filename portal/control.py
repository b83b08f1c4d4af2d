"""The portal's link to the gateway daemon, and what its failures mean for a shopper."""

from __future__ import annotations

from typing import Any

from flask import current_app

from gateway.control_client import ControlError
from portal.errors import error_page

# Phrases ControlClient uses when the daemon cannot be reached at all (vs. refusing a request).
UNREACHABLE = ("not running", "did not answer", "cannot talk")


def control() -> Any:
    return current_app.config["CONTROL"]


def unreachable(exc: ControlError) -> bool:
    text = str(exc)
    return any(phrase in text for phrase in UNREACHABLE)


def lookup(who: str) -> dict[str, Any] | None:
    """The gateway's view of a client, or None if it cannot say (unknown client, daemon down).

    Pages that only inform (the splash) degrade to "not signed in" rather than fail.
    """
    try:
        return control().client(who)
    except ControlError:
        return None


def is_authorized(client: dict[str, Any] | None) -> bool:
    return client is not None and client.get("state") == "authorized"


def control_error_page(exc: ControlError) -> tuple[str, int]:
    if unreachable(exc):
        return error_page(
            503, "Wi-Fi is not ready", f"The Wi-Fi gateway is not available: {exc}. Try again soon."
        )
    return error_page(403, "Could not connect you", f"The Wi-Fi gateway refused: {exc}.")
