"""The merchant dashboard: sign-in, venues and devices, live clients, charts, and the offer
and splash editor, as server-rendered pages under /dashboard.

Plain HTML forms and inline SVG, no script: it works on any phone, and the CSP can forbid
script outright (security.py). Every venue page goes through `tenancy.own_venue`, so a
merchant only ever reaches its own venues; another merchant's venue is a 404, as if it did
not exist.

| module | holds |
|---|---|
| `security.py` | cookie flags, CSRF, the `next` check, response headers |
| `ratelimit.py` | the sign-in throttle (client, client + e-mail, account), before any hash |
| `auth.py` | sign-in, sign-out, `login_required`, the signed-in merchant |
| `tenancy.py` | `own_venue`: the one place a venue id from a URL becomes a row |
| `stats.py` | the SQL aggregates behind every figure |
| `charts.py` | bar-chart geometry for the SVG templates |
| `views.py` | the venues list and the venue page |
| `editor.py` | branding/offers editor, push-to-routers, claim codes |
"""

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


@bp.context_processor
def _template_globals() -> dict[str, object]:
    return {"csrf_token": security.csrf_token, "CSRF_FIELD": security.CSRF_FIELD}


bp.after_request(security.add_headers)

from cloud.dashboard import auth, editor, views  # noqa: E402  (routes register on bp)

__all__ = ["auth", "bp", "editor", "views"]
