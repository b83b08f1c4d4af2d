"""What keeps the dashboard's browser session safe: cookie flags, CSRF tokens, the `next`
check, and the response headers.

The dashboard is the only part of the cloud that a browser talks to, and the only one with a
cookie, so all of this is scoped to its blueprint; the router API stays cookie-free JSON.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Flask, Response, request
from flask.sessions import SecureCookieSessionInterface

# CSRF tokens work as on the captive portal: one implementation for both sites.
from plaza.csrf import CSRF_FIELD, CSRF_KEY, CsrfError, csrf_token, require_csrf

__all__ = ["CSRF_FIELD", "CSRF_KEY", "CsrfError", "csrf_token", "require_csrf", "safe_next"]

COOKIE_NAME = "plaza_dashboard"
HOME = "/dashboard/"

# No script at all, styles only from our own stylesheet, charts as inline SVG (presentation
# attributes, which style-src does not govern). Images may come from https (the merchant's
# logo preview); forms only post back here; nothing may frame a page (clickjacking a "push
# to routers" button).
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'self'; img-src 'self' https: data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


class DashboardSessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie session with the dashboard's flags: HttpOnly always, SameSite=Lax
    (a cross-site POST arrives without the cookie, a link from an e-mail still signs in), and
    Secure whenever the request came over https, so one build serves both the embedded http
    default on 127.0.0.1 and TLS behind a load balancer (with ProxyFix setting the scheme)."""

    def get_cookie_name(self, app: Flask) -> str:
        return str(app.config.get("DASHBOARD_COOKIE_NAME", COOKIE_NAME))

    def get_cookie_path(self, app: Flask) -> str:
        return "/dashboard"  # the router API never needs it, so it never gets it

    def get_cookie_httponly(self, app: Flask) -> bool:
        return True

    def get_cookie_samesite(self, app: Flask) -> str:
        return str(app.config.get("SESSION_COOKIE_SAMESITE") or "Lax")

    def get_cookie_secure(self, app: Flask) -> bool:
        return bool(app.config.get("SESSION_COOKIE_SECURE")) or request.is_secure


def safe_next(target: str | None) -> str:
    """Where to go after signing in: `target` if it is a path on this site inside the
    dashboard, else the dashboard's home. Browsers read `//evil`, `/\\evil` and paths with
    tabs or newlines (which they strip) as another host, so anything odd is refused rather
    than repaired."""
    if not target or len(target) > 2000:
        return HOME
    if any(ord(c) < 0x21 or c in "\\\x7f" for c in target):
        return HOME
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or target.startswith("//"):
        return HOME
    if not (parts.path == "/dashboard" or parts.path.startswith(HOME)):
        return HOME
    if "/../" in parts.path or parts.path.endswith("/.."):
        return HOME
    return target


def template_globals() -> dict[str, object]:
    """What every dashboard template needs, on every blueprint of merchant pages: the CSRF
    field of its forms (base.html's sign-out form included)."""
    return {"csrf_token": csrf_token, "CSRF_FIELD": CSRF_FIELD}


def add_headers(response: Response) -> Response:
    """Every dashboard answer: strict CSP, no framing, and no caching of private pages."""
    response.headers.update(SECURITY_HEADERS)
    if request.endpoint != "dashboard.static":
        response.headers["Cache-Control"] = "no-store"
    return response
