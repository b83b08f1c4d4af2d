"""The shopper web app under /plaza: wallet sign-in, paying at a venue, the payment notify.

Mobile-first pages that need no JavaScript (plain forms and links) under a strict CSP. The
session is Flask's signed cookie, scoped to /plaza under its own name (`ShopSessionInterface`)
so it never meets the merchant dashboard's; it is HttpOnly, SameSite=Lax and Secure over
https. Forms carry plaza/csrf.py's token. The wallet sign-in is the portal's client
(plaza.wallet: OIDC with PKCE, or the Alipay dialect) with the transaction kept in this
session, so the callback is only accepted from the browser that started the sign-in.
"""

from __future__ import annotations

import logging
import secrets
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Flask,
    Response,
    abort,
    current_app,
    redirect,
    render_template,
    request,
    session,
)
from flask.blueprints import BlueprintSetupState
from flask.typing import ResponseReturnValue
from sqlalchemy import select

from cloud.api import now
from cloud.dashboard.security import DashboardSessionInterface
from cloud.db import get_db
from cloud.models import Venue
from cloud.o2o import settings, settlement, shoppers
from cloud.o2o.payments import WAIT, Payment, PaymentError, attach_trade, create_payment
from cloud.o2o.shop_texts import language, t
from cloud.o2o.shoppers import current_shopper, shopper_required
from cloud.o2o.trade_client import TradeError, yuan
from plaza.csrf import CSRF_FIELD, csrf_token, require_csrf
from plaza.wallet import LoginError
from plaza.wallet.base import origin_of

log = logging.getLogger("plaza.cloud.shop")

PREFIX = "/plaza"
COOKIE_NAME = "plaza_shop"
TXN_KEY = "shop_login_txn"
NEXT_KEY = "shop_next"
CALLBACK = "/plaza/login/callback"
NOTIFY = "/plaza/notify/alipay"

bp = Blueprint(
    "shop", __name__, url_prefix=PREFIX, template_folder="templates", static_folder="static"
)


class ShopSessionInterface(DashboardSessionInterface):
    """The dashboard's cookie rules, but under /plaza a cookie of the shop's own: a shopper's
    session and a merchant's never share a cookie, even in one browser."""

    def get_cookie_name(self, app: Flask) -> str:
        if request.path.startswith(PREFIX):
            return COOKIE_NAME
        return super().get_cookie_name(app)

    def get_cookie_path(self, app: Flask) -> str:
        if request.path.startswith(PREFIX):
            return PREFIX
        return super().get_cookie_path(app)


@bp.record_once
def _install(state: BlueprintSetupState) -> None:
    """Registered after the dashboard (cloud/__init__.py), so this interface replaces its."""
    state.app.session_interface = ShopSessionInterface()


def _csp() -> str:
    """No script; styles from our own sheet; forms post here, or to the wallet's cashier
    (a form's redirect to another origin needs form-action to allow it)."""
    try:
        url = settings.wallet_url(current_app)
    except settings.NotConfigured:
        url = ""
    wallet = f" {origin_of(url)}" if url.startswith("https://") else ""
    return (
        "default-src 'none'; style-src 'self'; img-src 'self' data:; "
        f"form-action 'self'{wallet}; frame-ancestors 'none'; base-uri 'none'"
    )


@bp.after_request
def _headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = _csp()
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers.setdefault("Cache-Control", "no-store")
    response.vary.add("Cookie")
    return response


@bp.context_processor
def _globals() -> dict[str, object]:
    return {
        "t": t,
        "lang": language,
        "csrf_token": csrf_token,
        "CSRF_FIELD": CSRF_FIELD,
        "shopper": current_shopper,
        "yuan": yuan,
    }


def safe_next(target: str | None) -> str:
    """A path inside the shop to come back to after sign-in; anything else is the home."""
    home = PREFIX + "/"
    if not target or len(target) > 1000 or any(ord(c) < 0x21 or c in "\\\x7f" for c in target):
        return home
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith(home) or ".." in parts.path:
        return home
    return target


# -- sign-in -----------------------------------------------------------------------------------


@bp.get("/")
def home() -> ResponseReturnValue:
    shopper = current_shopper()
    mine: list[Payment] = []
    if shopper is not None:
        query = select(Payment).where(Payment.shopper_id == shopper.id)
        mine = list(get_db().scalars(query.order_by(Payment.created_at.desc()).limit(20)))
    return render_template("shop/home.html", payments=mine)


@bp.get("/signin")
def signin() -> ResponseReturnValue:
    session[NEXT_KEY] = safe_next(request.args.get("next"))
    error = request.args.get("error")
    return render_template("shop/signin.html", error=error if error == "failed" else None)


def _redirect_uri() -> str:
    return settings.public_url(current_app) + CALLBACK


@bp.get("/login/wallet")
def login_start() -> ResponseReturnValue:
    try:
        url, txn = settings.sign_in_provider(current_app).start(_redirect_uri())
    except (settings.NotConfigured, LoginError, ValueError) as exc:
        log.warning("shopper sign-in could not start: %s", exc)
        return render_template("shop/signin.html", error="unavailable"), 503
    session[TXN_KEY] = txn
    return redirect(url, code=302)


@bp.get("/login/callback")
def login_callback() -> ResponseReturnValue:
    txn = session.pop(TXN_KEY, None)
    if not isinstance(txn, dict):
        return redirect(PREFIX + "/signin?error=failed", code=303)
    try:
        provider = settings.sign_in_provider(current_app)
        user = provider.finish(request.args, txn, _redirect_uri())
    except (settings.NotConfigured, LoginError) as exc:
        log.warning("shopper sign-in refused: %s", exc)
        return redirect(PREFIX + "/signin?error=failed", code=303)
    target = safe_next(session.get(NEXT_KEY))
    lang = session.get("lang")
    shopper = shoppers.find_or_create(
        get_db(), user.dialect, user.user_id, user.display_name, now()
    )
    shoppers.sign_in(shopper, now())
    if lang:
        session["lang"] = lang
    return redirect(target, code=303)


@bp.post("/signout")
def signout() -> ResponseReturnValue:
    require_csrf()
    session.clear()
    return redirect(PREFIX + "/", code=303)


# -- paying ------------------------------------------------------------------------------------


def _venue(venue_id: str) -> Venue:
    venue = get_db().get(Venue, venue_id) if venue_id.startswith("ven_") else None
    if venue is None:
        abort(404)
    return venue


def parse_yuan(text: str) -> int | None:
    return settlement.fen(text.strip().replace(",", "")) if isinstance(text, str) else None


@bp.route("/v/<venue_id>/pay", methods=["GET", "POST"])
@shopper_required
def pay(venue_id: str) -> ResponseReturnValue:
    venue = _venue(venue_id)
    form = {"amount": "", "subject": "", "key": secrets.token_urlsafe(18)}
    if request.method == "GET":
        return render_template("shop/pay.html", venue=venue, form=form, error=None)
    require_csrf()
    form = {k: request.form.get(k, "")[:300] for k in form}
    amount = parse_yuan(form["amount"])
    shopper = current_shopper()
    assert shopper is not None
    try:
        client = settings.trade_client(current_app)
        payment, _ = create_payment(
            get_db(), shopper_id=shopper.id, venue_id=venue.id, amount=amount or 0,
            subject=form["subject"], purpose="order", idempotency_key=form["key"],
            app_id=client.app_id, seller_id=client.seller_id, at=now(),
        )  # fmt: skip
        if payment.state != WAIT:
            return redirect(f"{PREFIX}/payments/{payment.id}", code=303)
        base = settings.public_url(current_app)
        notify_url, return_url = base + NOTIFY, f"{base}{PREFIX}/payments/{payment.id}"
        trade_no = client.create(payment.id, payment.amount, payment.subject, notify_url)
        attach_trade(get_db(), payment, trade_no)
        url = client.pay_url(payment.id, payment.amount, payment.subject, notify_url, return_url)
    except PaymentError as exc:
        return render_template("shop/pay.html", venue=venue, form=form, error=exc.code), 400
    except (settings.NotConfigured, TradeError) as exc:
        log.warning("payment could not start: %s", exc)
        return render_template("shop/pay.html", venue=venue, form=form, error="unavailable"), 503
    return redirect(url, code=303)


@bp.get("/payments/<payment_id>")
@shopper_required
def payment(payment_id: str) -> ResponseReturnValue:
    """The payment's page, where the wallet sends the shopper back: the return is no proof
    of payment, so a payment still waiting is asked about (a query) before it is shown."""
    shopper = current_shopper()
    db = get_db()
    found = db.get(Payment, payment_id)
    if found is None or shopper is None or found.shopper_id != shopper.id:
        abort(404)
    if found.state == WAIT:
        try:
            client = settings.trade_client(current_app)
            settlement.reconcile_one(db, client, found.id, now())
        except (settings.NotConfigured, TradeError) as exc:
            log.info("payment %s not queried: %s", found.id, exc)
        found = db.get(Payment, payment_id, populate_existing=True)
    return render_template("shop/payment.html", payment=found, venue=db.get(Venue, found.venue_id))


@bp.post("/notify/alipay")
def notify() -> ResponseReturnValue:
    """The wallet's asynchronous notify: `success` once applied (or already applied), else
    a refusal, which makes the wallet try again later."""
    params = {k: v for k, v in request.form.items()}
    try:
        settlement.handle_notify(get_db(), settings.trade_client(current_app), params, now())
    except settlement.NotifyError as exc:
        log.warning("notify refused: %s", exc)
        return Response("fail", status=exc.status, content_type="text/plain")
    except settings.NotConfigured:
        return Response("fail", status=503, content_type="text/plain")
    return Response("success", content_type="text/plain")
