"""The dashboard's one blueprint and what it brings to the app: its session settings, the
sign-in throttle, template globals and response headers. Apart from the package so the page
modules (auth, editor, views) can register on it without importing the package that imports
them."""

from __future__ import annotations

from flask import Blueprint
from flask.blueprints import BlueprintSetupState

from cloud.dashboard import security

bp = Blueprint(
    "dashboard",
    __name__,
    url_prefix="/dashboard",
    template_folder="templates",
    static_folder="static",
)


@bp.record_once
def _install(state: BlueprintSetupState) -> None:
    """The dashboard is the app's only cookie user, so it brings its own session settings."""
    from cloud.dashboard.ratelimit import LoginLimiter

    app = state.app
    app.session_interface = security.DashboardSessionInterface()
    app.extensions["plaza_login_limiter"] = LoginLimiter()


bp.context_processor(security.template_globals)
bp.after_request(security.add_headers)
