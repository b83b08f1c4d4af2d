"""One-tap reconnect for returning shoppers: a signed, revocable token held by their wallet.

Phones randomize their MAC per network and sometimes per connection, so a MAC is a session key,
not an identity. After a wallet login the shopper may opt in; the portal then issues a token
bound to this venue and to the wallet user, records its id so it can be revoked, and sends the
browser to the wallet's "add a pass" page (like "Add to Apple Wallet"): the shopper confirms
there and the wallet keeps the link. The portal holds no wallet credential and makes no call to
the wallet for this, and the wallet is in the walled garden, so it works while still captive.
Tapping the saved pass later (from any MAC) signs the phone in without the authorization round
trip. A provider without `pass_url` falls back to showing the link on our own page.

When the router is enrolled with a cloud, the wallet page also asks whether the venue may send
its offers when the shopper is back; if they agree, the wallet returns the browser to
`/reconnect/saved` with a consent proof it signed (plaza/wallet/consent.py). Only then is the
router told who the shopper is, proof attached, for the cloud to check: the cloud messages
nobody on the router's word alone. A token is minted only within minutes of a wallet login
(portal/shopper.py), never from a cookie or a tapped link.
"""

from __future__ import annotations

import logging
import secrets
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from flask import Blueprint, abort, current_app, redirect, render_template, request, session
from itsdangerous import BadSignature, URLSafeSerializer
from werkzeug.wrappers import Response

from gateway.config import PortalConfig
from gateway.control_client import ControlError
from plaza.csrf import require_csrf
from plaza.wallet import consent
from portal import i18n, push, shopper
from portal.control import control, control_error_page, unreachable
from portal.login import fail, provider

log = logging.getLogger("plaza.portal.reconnect")
bp = Blueprint("reconnect", __name__)

SALT = "plaza-reconnect-v1"
PENDING_KEY = "pending_link"  # the link sent to the wallet, until it returns with consent


SCHEMA = """
CREATE TABLE IF NOT EXISTS reconnect_tokens (
    jti VARCHAR(32) PRIMARY KEY,
    user_id VARCHAR(64) NOT NULL,
    created_at FLOAT NOT NULL,
    expires_at FLOAT NOT NULL,
    revoked_at FLOAT
)
"""


class TokenError(ValueError):
    """Why a token was refused; safe to log (holds no token material)."""


class Tokens:
    """Issue, check and revoke tokens; the signing key is the portal's secret key. Rows live in the
    portal's SQLite file through the standard library (as gateway/stations/store.py does): the
    router install carries no ORM. One connection, serialized, for the portal's threads."""

    def __init__(self, db_path: Path | str, secret: str | bytes, venue: str, days: int) -> None:
        self._conn = sqlite3.connect(str(db_path), check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._conn.execute(SCHEMA)
            self._conn.execute(
                "CREATE INDEX IF NOT EXISTS ix_reconnect_tokens_user_id "
                "ON reconnect_tokens (user_id)"
            )
        self.signer = URLSafeSerializer(secret, salt=SALT)
        self.venue = venue
        self.days = days

    def _run(self, sql: str, args: tuple = ()) -> sqlite3.Cursor:
        with self._lock:
            return self._conn.execute(sql, args)

    def issue(self, user_id: str, now: float | None = None) -> str:
        now = time.time() if now is None else now
        jti = secrets.token_hex(16)
        expires = now + self.days * 86400
        self._run(
            "INSERT INTO reconnect_tokens (jti, user_id, created_at, expires_at) "
            "VALUES (?, ?, ?, ?)",
            (jti, user_id, now, expires),
        )
        return self.signer.dumps({"v": self.venue, "jti": jti, "sub": user_id, "exp": expires})

    def check(self, token: str, now: float | None = None) -> str:
        """Return the wallet user id the token stands for, or raise TokenError."""
        now = time.time() if now is None else now
        if len(token) > 512:
            raise TokenError("token too long")
        try:
            claims = self.signer.loads(token)
        except BadSignature:
            raise TokenError("bad signature") from None
        if not isinstance(claims, dict) or claims.get("v") != self.venue:
            raise TokenError("token for another venue")
        row = self._run(
            "SELECT user_id, expires_at, revoked_at FROM reconnect_tokens WHERE jti = ?",
            (str(claims.get("jti")),),
        ).fetchone()
        if row is None or row[0] != claims.get("sub"):
            raise TokenError("unknown token")
        user_id, expires_at, revoked_at = row
        if revoked_at is not None:
            raise TokenError("revoked")
        if expires_at <= now:
            raise TokenError("expired")
        return user_id

    def revoke_user(self, user_id: str, now: float | None = None) -> int:
        now = time.time() if now is None else now
        return self._run(
            "UPDATE reconnect_tokens SET revoked_at = ? WHERE user_id = ? AND revoked_at IS NULL",
            (now, user_id),
        ).rowcount

    def active(self, user_id: str) -> int:
        (count,) = self._run(
            "SELECT count(*) FROM reconnect_tokens WHERE user_id = ? AND revoked_at IS NULL",
            (user_id,),
        ).fetchone()
        return count


def tokens() -> Tokens:
    ext = current_app.extensions
    if "reconnect_tokens" not in ext:
        config = current_app.config["PLAZA_CONFIG"]
        ext["reconnect_tokens"] = Tokens(
            current_app.config.get("RECONNECT_DB") or Path(config.gateway.state_dir) / "portal.db",
            current_app.config["SECRET_KEY"],
            venue=config.portal.hostname,
            days=config.reconnect.token_days,
        )
    return ext["reconnect_tokens"]


def _enabled() -> None:
    if not current_app.config["PLAZA_CONFIG"].reconnect.enabled:
        abort(404)


def _signed_in(*, fresh: bool) -> dict[str, Any] | tuple[str, int]:
    """The wallet user of this browser in its running gateway session, or an error page; with
    `fresh`, only one who logged in with the wallet within shopper.RECENT_LOGIN_SECONDS."""
    try:
        client = control().client(request.remote_addr or "")
    except ControlError as exc:
        if unreachable(exc):
            return control_error_page(exc)
        client = {}  # unknown to the gateway: no session, so no wallet user either
    user = shopper.current(client)
    if user is None:
        abort(403)
    if fresh and not shopper.recent_login(user, time.time()):
        return fail("session_expired")
    return user


@bp.post("/reconnect")
def opt_in() -> str | Response | tuple[str, int]:
    """The shopper asked to be remembered: issue a token and send its link to the wallet.

    A 303 to the wallet's add-a-pass page is a full-page navigation away from the portal; the
    welcome page's CSP lets this form's redirect go there (portal.security.content_policy).
    """
    _enabled()
    require_csrf()
    user = _signed_in(fresh=True)
    if not isinstance(user, dict):
        return user
    if request.form.get("remember") != "yes":
        return redirect("/welcome", code=303)
    token = tokens().issue(user["user_id"])
    push.remember_token(token)
    config = current_app.config["PLAZA_CONFIG"]
    link = config.portal.url + "reconnect/" + token
    offers = push.target() is not None
    target = _pass_url(link, pass_title(config.portal), offers)
    if target is not None:
        if offers:
            session[PENDING_KEY] = link
        log.info("reconnect token issued for a wallet user; sent to the wallet to save it")
        return redirect(target, code=303)
    log.info("reconnect token issued for a wallet user; shown on the page (no wallet passes)")
    return render_template("reconnect.html", link=link, saved=False)


@bp.get("/reconnect/saved")
def saved() -> str | Response | tuple[str, int]:
    """The wallet saved the link and the shopper agreed to the venue's offers: pass the
    wallet's proof of that to the router, for the cloud. The portal checks only that the proof
    names this shopper and this link (the cloud checks the signature); anything else, or a
    visit without a pending link, changes nothing."""
    _enabled()
    user = _signed_in(fresh=False)
    if not isinstance(user, dict):
        return user
    link = session.pop(PENDING_KEY, None)
    proof = request.args.get("proof", "")
    claims = consent.peek(proof)
    if (
        not isinstance(link, str)
        or claims is None
        or claims.get("sub") != user["user_id"]
        or claims.get("link") != consent.link_digest(link)
    ):
        log.warning(
            "wallet consent refused for %s: not for this shopper's link", request.remote_addr
        )
        return redirect("/welcome", code=303)
    _tell_gateway(user["user_id"], link, proof)
    return render_template("reconnect.html", link=link, saved=True)


def _tell_gateway(user_id: str, link: str | None, proof: str | None = None) -> None:
    """Who this station's shopper is, with the wallet's consent proof, for the venue's offers
    pushed to their wallet when they come back (via the router's uplink to the cloud), or,
    with `link` None, that they want that no more. A gateway that cannot be told does not
    spoil the opt-in itself."""
    args: dict[str, Any] = {
        "client": request.remote_addr or "", "wallet_user": user_id, "opt_in": bool(link),
    }  # fmt: skip
    if link and proof:
        args["connect_url"] = link
        args["consent"] = proof
    try:
        control().call("shopper", **args)
    except ControlError as exc:
        log.warning("gateway not told of the opt-in: %s", exc)


def pass_title(portal: PortalConfig) -> str:
    """What the pass is called in the wallet: the venue's name, in the shopper's language."""
    name = i18n.localized(portal.merchant_name, portal.merchant_name_zh, i18n.current_lang())
    return f"{name} Wi-Fi"


def _pass_url(link: str, title: str, offers: bool) -> str | None:
    """The wallet's add-a-pass URL for `link` (asking consent to the venue's offers too, with
    `offers`), or None if this wallet cannot hold passes.

    A provider that cannot be built (say its key file went missing after a portal restart) must
    not turn an opt-in into an error page: the token is issued, so the shopper gets the link on
    our own page instead.
    """
    try:
        make = getattr(provider(), "pass_url", None)
        target = make(link, title, offers=offers) if make is not None else None
    except (ValueError, OSError) as exc:
        log.warning("no wallet pass for the reconnect link: %s", type(exc).__name__)
        return None
    if not isinstance(target, str) or not target.startswith("https://"):
        return None
    return target


@bp.get("/reconnect/<token>")
def tap(token: str) -> Response:
    """The one tap: the wallet opened our link on a phone that is (again) captive here."""
    _enabled()
    who = request.remote_addr or ""
    try:
        user_id = tokens().check(token)
    except TokenError as exc:
        log.warning("reconnect refused for %s: %s", who, exc)
        return fail("login_failed")
    try:
        client = control().auth(who)
    except ControlError as exc:
        log.warning("gateway refused reconnect for %s: %s", who, exc)
        return fail("gateway_unreachable" if unreachable(exc) else "login_failed")
    shopper.sign_in(user_id, None, client, at=None)  # signed in, but no wallet login
    push.remember_token(token)
    return redirect("/welcome", code=303)


@bp.post("/reconnect/forget")
def forget() -> Response | tuple[str, int]:
    """Revoke every reconnect token of the signed-in wallet user, and forget them here."""
    _enabled()
    require_csrf()
    user = _signed_in(fresh=False)
    if not isinstance(user, dict):
        return user
    count = tokens().revoke_user(user["user_id"])
    push.forget_token()
    session.pop(PENDING_KEY, None)
    _tell_gateway(user["user_id"], None)
    shopper.sign_out()
    log.info("revoked %d reconnect token(s) on request", count)
    return redirect("/welcome?forgotten=1", code=303)
