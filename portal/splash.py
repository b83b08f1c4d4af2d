"""The splash page and its one action: accept the terms and go online."""

from __future__ import annotations

from flask import Blueprint, current_app, redirect, render_template, request
from werkzeug.wrappers import Response

from gateway.control_client import ControlError
from portal.control import control, control_error_page, is_authorized, lookup
from portal.errors import error_page
from portal.security import require_csrf

bp = Blueprint("splash", __name__)


@bp.get("/")
def index() -> str:
    config = current_app.config["PLAZA_CONFIG"]
    return render_template(
        "splash.html",
        authorized=is_authorized(lookup(request.remote_addr or "")),
        logged_out=request.args.get("logged_out") == "1",
        minutes=config.session.default_minutes,
    )


@bp.post("/continue")
def accept() -> Response | tuple[str, int]:
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
    return redirect("/status?welcome=1", code=303)
