"""One-tap reconnect for returning shoppers: a signed, revocable token held by their wallet.

Phones randomize their MAC per network and sometimes per connection, so a MAC is a session key,
not an identity. After a wallet login the shopper may opt in; the portal then issues a token
bound to this venue and to the wallet user, records its id so it can be revoked, and sends the
browser to the wallet's "add a pass" page (like "Add to Apple Wallet"): the shopper confirms
there and the wallet keeps the link. The portal holds no wallet credential and makes no call to
the wallet for this, and the wallet is in the walled garden, so it works while still captive.
Tapping the saved pass later (from any MAC) signs the phone in without the authorization round
trip. A provider without `pass_url` falls back to showing the link on our own page.
"""

from __future__ import annotations

import logging
import secrets
import time
from pathlib import Path
from typing import Any

from flask import Blueprint, abort, current_app, redirect, render_template, request, session
from itsdangerous import BadSignature, URLSafeSerializer
from sqlalchemy import Float, String, create_engine, select, update
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from werkzeug.wrappers import Response

from gateway.config import PortalConfig
from gateway.control_client import ControlError
from portal import i18n, push
from portal.control import control, unreachable
from portal.login import USER_KEY, fail, provider
from portal.security import require_csrf

log = logging.getLogger("plaza.portal.reconnect")
bp = Blueprint("reconnect", __name__)

SALT = "plaza-reconnect-v1"


class Base(DeclarativeBase):
    pass


class ReconnectToken(Base):
    __tablename__ = "reconnect_tokens"

    jti: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float)
    revoked_at: Mapped[float | None] = mapped_column(Float)


class TokenError(ValueError):
    """Why a token was refused; safe to log (holds no token material)."""


class Tokens:
    """Issue, check and revoke tokens; the signing key is the portal's secret key."""

    def __init__(self, db_path: Path | str, secret: str | bytes, venue: str, days: int) -> None:
        url = "sqlite://" if str(db_path) == ":memory:" else f"sqlite:///{db_path}"
        self.engine = create_engine(url)
        Base.metadata.create_all(self.engine)
        self.signer = URLSafeSerializer(secret, salt=SALT)
        self.venue = venue
        self.days = days

    def issue(self, user_id: str, now: float | None = None) -> str:
        now = time.time() if now is None else now
        jti = secrets.token_hex(16)
        expires = now + self.days * 86400
        with Session(self.engine) as db, db.begin():
            db.add(ReconnectToken(jti=jti, user_id=user_id, created_at=now, expires_at=expires))
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
        with Session(self.engine) as db:
            row = db.get(ReconnectToken, str(claims.get("jti")))
        if row is None or row.user_id != claims.get("sub"):
            raise TokenError("unknown token")
        if row.revoked_at is not None:
            raise TokenError("revoked")
        if row.expires_at <= now:
            raise TokenError("expired")
        return row.user_id

    def revoke_user(self, user_id: str, now: float | None = None) -> int:
        now = time.time() if now is None else now
        with Session(self.engine) as db, db.begin():
            result = db.execute(
                update(ReconnectToken)
                .where(ReconnectToken.user_id == user_id, ReconnectToken.revoked_at.is_(None))
                .values(revoked_at=now)
            )
            return result.rowcount

    def active(self, user_id: str) -> int:
        with Session(self.engine) as db:
            rows = db.scalars(
                select(ReconnectToken).where(
                    ReconnectToken.user_id == user_id, ReconnectToken.revoked_at.is_(None)
                )
            ).all()
            return len(rows)


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


def _wallet_user() -> dict[str, Any]:
    user = session.get(USER_KEY)
    if not isinstance(user, dict) or not user.get("user_id"):
        abort(403)
    return user


@bp.post("/reconnect")
def opt_in() -> str | Response:
    """The shopper asked to be remembered: issue a token and send its link to the wallet.

    A 303 to the wallet's add-a-pass page is a full-page navigation away from the portal; the
    welcome page's CSP lets this form's redirect go there (portal.security.content_policy).
    """
    _enabled()
    require_csrf()
    user = _wallet_user()
    if request.form.get("remember") != "yes":
        return redirect("/welcome", code=303)
    token = tokens().issue(user["user_id"])
    push.remember_token(token)
    config = current_app.config["PLAZA_CONFIG"]
    link = config.portal.url + "reconnect/" + token
    _tell_gateway(user["user_id"], link)
    target = _pass_url(link, pass_title(config.portal))
    if target is not None:
        log.info("reconnect token issued for a wallet user; sent to the wallet to save it")
        return redirect(target, code=303)
    log.info("reconnect token issued for a wallet user; shown on the page (no wallet passes)")
    return render_template("reconnect.html", link=link, saved=False)


def _tell_gateway(user_id: str, link: str | None) -> None:
    """Who this station's shopper is, for the venue's offers pushed to their wallet when they
    come back (via the router's uplink to the cloud), or, with `link` None, that they want
    that no more. Only ever after the shopper's own opt-in; a gateway that cannot be told
    does not spoil the opt-in itself."""
    args = {"client": request.remote_addr or "", "wallet_user": user_id, "opt_in": bool(link)}
    if link and link.startswith("https://"):  # the cloud pushes only https links
        args["connect_url"] = link
    try:
        control().call("shopper", **args)
    except ControlError as exc:
        log.warning("gateway not told of the opt-in: %s", exc)


def pass_title(portal: PortalConfig) -> str:
    """What the pass is called in the wallet: the venue's name, in the shopper's language."""
    name = i18n.localized(portal.merchant_name, portal.merchant_name_zh, i18n.current_lang())
    return f"{name} Wi-Fi"


def _pass_url(link: str, title: str) -> str | None:
    """The wallet's add-a-pass URL for `link`, or None if this wallet cannot hold passes.

    A provider that cannot be built (say its key file went missing after a portal restart) must
    not turn an opt-in into an error page: the token is issued, so the shopper gets the link on
    our own page instead.
    """
    try:
        make = getattr(provider(), "pass_url", None)
        target = make(link, title) if make is not None else None
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
        control().auth(who)
    except ControlError as exc:
        log.warning("gateway refused reconnect for %s: %s", who, exc)
        return fail("gateway_unreachable" if unreachable(exc) else "login_failed")
    session[USER_KEY] = {"user_id": user_id, "name": None}
    push.remember_token(token)
    return redirect("/welcome", code=303)


@bp.post("/reconnect/forget")
def forget() -> Response:
    """Revoke every reconnect token of the signed-in wallet user."""
    _enabled()
    require_csrf()
    user = _wallet_user()
    count = tokens().revoke_user(user["user_id"])
    push.forget_token()
    _tell_gateway(user["user_id"], None)
    log.info("revoked %d reconnect token(s) on request", count)
    return redirect("/welcome?forgotten=1", code=303)
