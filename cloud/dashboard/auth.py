"""Merchant sign-in and sign-out, and who is signed in.

The session is Flask's signed cookie (security.DashboardSessionInterface) holding the
merchant id and the sign-in time; nothing is stored server-side, so any instance can serve
any page. A session ends when the browser closes or after SESSION_SECONDS, whichever comes
first. Because the cookie is stateless, signing out clears it in this browser but cannot
revoke a copy stolen earlier: HttpOnly, Secure over https and the 12 h limit bound that.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from flask import (
    Blueprint,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.typing import ResponseReturnValue
from sqlalchemy import select
from werkzeug.exceptions import HTTPException
from werkzeug.security import check_password_hash, generate_password_hash

from cloud.accounts import check_password
from cloud.api import now
from cloud.dashboard.blueprint import bp
from cloud.dashboard.ratelimit import LoginLimiter, client_of
from cloud.dashboard.security import add_headers, require_csrf, safe_next, template_globals
from cloud.db import get_db
from cloud.models import Merchant

SESSION_SECONDS = 12 * 3600
MERCHANT_KEY = "merchant_id"
SINCE_KEY = "signed_in_at"

F = TypeVar("F", bound=Callable[..., Any])


@functools.cache
def _dummy_hash() -> str:
    return generate_password_hash("not a real password")


def _limiter() -> LoginLimiter:
    return current_app.extensions["plaza_login_limiter"]


def guard(pages: Blueprint) -> Blueprint:
    """`pages`, a blueprint of merchant pages registered apart from the dashboard's own (the
    o2o and hospital pages, the plaza figures), behind the same guard: the signed-in merchant
    loaded before each request, the dashboard's headers after it, the CSRF field in its
    templates. `login_required` stays on each view, as on the dashboard's own."""
    pages.before_request(load_merchant)
    pages.after_request(add_headers)
    pages.context_processor(template_globals)
    return pages


@bp.before_request
def load_merchant() -> None:
    g.merchant = None
    if request.endpoint == "dashboard.static":  # the stylesheet needs no database
        return
    merchant_id, since = session.get(MERCHANT_KEY), session.get(SINCE_KEY)
    if not isinstance(merchant_id, str) or not isinstance(since, int | float):
        return
    if not 0 <= now() - since < SESSION_SECONDS:
        session.pop(MERCHANT_KEY, None)
        session.pop(SINCE_KEY, None)
        return
    g.merchant = get_db().get(Merchant, merchant_id)  # None if the merchant was removed


def login_required(view: F) -> F:
    """Send a signed-out browser to the sign-in page, remembering where it was going (a GET
    only: a form posted from an expired session is not replayed after sign-in)."""

    @functools.wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if g.get("merchant") is None:
            if request.method == "GET":
                return redirect(url_for("dashboard.login", next=request.full_path.rstrip("?")))
            return redirect(url_for("dashboard.login"))
        return view(*args, **kwargs)

    return wrapped  # type: ignore[return-value]


@bp.route("/login", methods=["GET", "POST"])
def login() -> ResponseReturnValue:
    target = safe_next(request.values.get("next"))
    if g.merchant is not None and request.method == "GET":
        return redirect(target)
    if request.method == "GET":
        return render_template("dashboard/login.html", next=target, email="")
    require_csrf()
    email = request.form.get("email", "").strip().lower()[:254]
    password = request.form.get("password", "")[:1024]
    limiter, db = _limiter(), get_db()
    client = client_of(request.remote_addr)
    t = now()
    merchant = db.scalar(select(Merchant).where(Merchant.email == email)) if email else None
    merchant_id = merchant.id if merchant is not None else None
    # Throttled attempts end here, before any password hash (an scrypt) is computed.
    wait = limiter.retry_after(db, client, email, merchant_id, t)
    if wait:
        when = f"{wait} s" if wait < 60 else f"{(wait + 59) // 60} min"
        response = current_app.make_response(
            (
                render_template(
                    "dashboard/login.html",
                    next=target,
                    email=email,
                    error=f"Too many attempts. Try again in {when}.",
                ),
                429,
            )
        )
        response.headers["Retry-After"] = str(wait)
        return response
    if merchant is None:
        check_password_hash(_dummy_hash(), password)  # same time as a wrong password
        ok = False
    else:
        ok = check_password(merchant, password)
    if not ok or merchant is None:
        limiter.failed(db, client, email, merchant_id, t)
        db.commit()
        return (
            render_template(
                "dashboard/login.html",
                next=target,
                email=email,
                error="That e-mail and password do not match.",
            ),
            401,
        )
    tried = limiter.succeeded(db, client, email, merchant, t)
    db.commit()
    session.clear()  # a fresh session (and CSRF token) for the signed-in merchant
    session[MERCHANT_KEY] = merchant.id
    session[SINCE_KEY] = t
    if tried:
        flash(failed_notice(tried))
    return redirect(target, 303)


def failed_notice(count: int) -> str:
    """What the merchant is told at sign-in when someone tried their account in between."""
    plural = "s" if count != 1 else ""
    return (
        f"{count} failed sign-in{plural} to your account since your last visit. If that was not "
        "you, someone may be guessing your password: choose a long one."
    )


@bp.post("/logout")
def logout() -> ResponseReturnValue:
    require_csrf()
    session.clear()
    flash("You are signed out.")
    return redirect(url_for("dashboard.login"), 303)


def error_page(exc: HTTPException) -> ResponseReturnValue:
    """Dashboard errors as pages, not the router API's JSON."""
    return (
        render_template("dashboard/error.html", code=exc.code, name=exc.name, text=exc.description),
        exc.code or 500,
    )


bp.register_error_handler(HTTPException, error_page)
