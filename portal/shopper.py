"""Who the shopper on this browser is: the wallet user in the session cookie, and how far the
portal trusts that word.

The cookie is the browser's, and Flask re-signs it (with a fresh timestamp) whenever the
session changes, so "a wallet user is in the cookie" proves little by itself. Three rules keep
it honest:
- it belongs to one gateway session: the wallet user is recorded with the gateway's
  `session_id` of the login, and forgotten as soon as the gateway says this station is in
  another session or none (logout, timeout, quota, a kick);
- only a wallet login counts as a recent login (`login_at`): a one-tap reconnect signs the
  browser in, but cannot be used to mint another reconnect token, so a cookie (or a
  reconnect link) never turns into a way online that outlives the wallet's say-so;
- "Forget me" and logout forget it.
"""

from __future__ import annotations

from typing import Any

from flask import session

USER_KEY = "wallet_user"
RECENT_LOGIN_SECONDS = 600.0  # a reconnect token needs a wallet login this fresh
MAX_NAME = 64


def sign_in(
    user_id: str, name: str | None, client: dict[str, Any] | None, *, at: float | None
) -> None:
    """Remember the wallet user for this gateway session; `at` is the wallet login's time,
    None for a one-tap reconnect (no wallet round trip)."""
    session[USER_KEY] = {
        "user_id": user_id,
        "name": name,
        "session_id": (client or {}).get("session_id"),
        "login_at": at,
    }


def sign_out() -> None:
    session.pop(USER_KEY, None)


def current(client: dict[str, Any] | None) -> dict[str, Any] | None:
    """The wallet user of this browser if the gateway's `client` is still in the session they
    signed in to; otherwise None, and the session forgets them (the session ended)."""
    user = session.get(USER_KEY)
    if user is None:
        return None
    user_id = user.get("user_id") if isinstance(user, dict) else None
    if not isinstance(user_id, str) or not user_id:
        sign_out()
        return None
    if client is not None and (
        client.get("state") != "authorized" or client.get("session_id") != user.get("session_id")
    ):
        sign_out()
        return None
    name = user.get("name")
    name = " ".join(name.split())[:MAX_NAME] if isinstance(name, str) else ""
    login_at = user.get("login_at")
    if isinstance(login_at, bool) or not isinstance(login_at, int | float):
        login_at = None
    return {"user_id": user_id, "name": name or None, "login_at": login_at}


def recent_login(user: dict[str, Any] | None, now: float) -> bool:
    """Whether `user` came from a wallet login within RECENT_LOGIN_SECONDS."""
    at = (user or {}).get("login_at")
    return at is not None and 0 <= now - at <= RECENT_LOGIN_SECONDS
