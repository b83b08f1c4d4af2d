"""The splash page: log in with the wallet or, where the merchant allows it, accept the terms."""

from __future__ import annotations

from flask import Blueprint, abort, current_app, redirect, render_template, request
from werkzeug.wrappers import Response

from gateway.config import Config
from gateway.control_client import ControlError
from plaza.csrf import require_csrf
from portal import i18n
from portal.control import control, control_error_page, is_authorized, lookup
from portal.errors import error_page

bp = Blueprint("splash", __name__)

LOGIN_URL = "/login/wallet"  # the login blueprint's entry point; a plain link, no script


def error_key(code: str | None) -> str | None:
    """The catalogue key for an `?error=` code: a fixed table, so the URL is never reflected."""
    if not code:
        return None
    return f"error.{code}" if code in i18n.ERROR_CODES else "error.unknown"


@bp.get("/")
def index() -> str:
    return render_template(
        "splash.html",
        authorized=is_authorized(lookup(request.remote_addr or "")),
        logged_out=request.args.get("logged_out") == "1",
        error=error_key(request.args.get("error")),
    )


@bp.post("/continue")
def accept() -> Response | tuple[str, int]:
    config: Config = current_app.config["PLAZA_CONFIG"]
    if not config.portal.click_through:
        abort(404)  # the merchant requires a wallet login: there is no such form to post
    require_csrf()
    if request.form.get("accept") != "yes":
        return error_page(
            400, "Please accept the terms", "Tick “I accept the terms” before tapping Continue."
        )
    try:
        control().auth(request.remote_addr or "")
    except ControlError as exc:
        return control_error_page(exc)
    # 303 so the browser follows with a GET: a refresh of the next page never re-posts the form.
    # A full navigation to /welcome once authorized is what makes iOS show "Done".
    return redirect("/welcome", code=303)
