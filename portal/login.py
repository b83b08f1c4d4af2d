"""Wallet login: the authorization-code round trip, then the gateway lets the phone through.

The transaction (state, nonce, PKCE verifier) lives in the browser's signed session cookie:
the callback must come back to the same browser, which is the CSRF protection OAuth's `state`
is for. Redirects go only to the wallet's configured authorization endpoint and back to our own
pages; no URL from the request is ever used as a redirect target.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from flask import Blueprint, current_app, redirect, request, session
from werkzeug.wrappers import Response

from gateway.control_client import ControlError
from portal import shopper
from portal.control import control, unreachable

log = logging.getLogger("plaza.portal.login")
bp = Blueprint("login", __name__)

TXN_KEY = "login_txn"
CALLBACK = {"oidc": "login/callback", "alipay": "login/alipay/callback"}


def provider() -> Any:
    """One provider per app: it caches the wallet's discovery document and keys."""
    ext = current_app.extensions
    if "wallet_provider" not in ext:
        from plaza.wallet import make_provider  # only the login path pays for Authlib

        ext["wallet_provider"] = make_provider(current_app.config["PLAZA_CONFIG"].wallet)
    return ext["wallet_provider"]


def login_error() -> type[Exception]:
    from plaza.wallet import LoginError

    return LoginError


def redirect_uri() -> str:
    config = current_app.config["PLAZA_CONFIG"]
    return config.portal.url + CALLBACK[config.wallet.dialect]


def fail(code: str) -> Response:
    """Back to the splash with a fixed error code; the page maps it to a localized message."""
    return redirect(f"/?error={code}", code=303)


@bp.get("/login/wallet")
def start() -> Response:
    try:
        url, txn = provider().start(redirect_uri())
    except login_error() as exc:
        log.warning("login could not start for %s: %s", request.remote_addr, exc)
        return fail("wallet_unreachable")
    session[TXN_KEY] = txn
    return redirect(url, code=302)


@bp.get("/login/callback")
@bp.get("/login/alipay/callback")
def callback() -> Response:
    config = current_app.config["PLAZA_CONFIG"]
    if request.path != "/" + CALLBACK[config.wallet.dialect]:
        return fail("login_failed")  # the other dialect's callback: not ours to answer
    txn = session.pop(TXN_KEY, None)
    if not isinstance(txn, dict):
        return fail("session_expired")
    if request.args.get("error") == "access_denied":
        return fail("login_cancelled")
    who = request.remote_addr or ""
    try:
        user = provider().finish(request.args, txn, redirect_uri())
    except login_error() as exc:
        log.warning("wallet login refused for %s: %s", who, exc)
        return fail("wallet_unreachable" if "unreachable" in str(exc) else "login_failed")
    try:
        client = control().auth(who)
    except ControlError as exc:
        log.warning("gateway refused to authorize %s after login: %s", who, exc)
        return fail("gateway_unreachable" if unreachable(exc) else "login_failed")
    shopper.sign_in(user.user_id, user.display_name, client, at=time.time())
    log.info("%s signed in with the %s wallet", who, user.dialect)
    # A full-page navigation after authorization: iOS only shows "Done" after one.
    return redirect("/welcome", code=303)
