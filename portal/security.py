"""Response headers and CSRF tokens shared by every portal page.

The portal runs on an open network where any other shopper can reach it, so forms carry a
per-browser token kept in the signed session cookie, and pages may not be framed or cached.
"""

from __future__ import annotations

import hmac
import secrets

from flask import Flask, Response, request, session
from werkzeug.exceptions import BadRequest

SECURITY_HEADERS = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'self'; style-src 'self' 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
}

CSRF_KEY = "csrf"
CSRF_FIELD = "csrf_token"


class CsrfError(BadRequest):
    name = "Form expired"
    description = "This form has expired or was not sent from this page. Please start again."


def csrf_token() -> str:
    """The browser session's token, created the first time a form needs it."""
    token = session.get(CSRF_KEY)
    if not isinstance(token, str) or not token:
        token = secrets.token_urlsafe(32)
        session[CSRF_KEY] = token
    return token


def require_csrf() -> None:
    """Refuse (400) a form whose token does not match the session's."""
    expected = session.get(CSRF_KEY)
    sent = request.form.get(CSRF_FIELD, "")
    if not isinstance(expected, str) or not expected or not sent:
        raise CsrfError()
    # Bytes, because compare_digest refuses non-ASCII str and a form field can hold anything.
    if not hmac.compare_digest(sent.encode(), expected.encode()):
        raise CsrfError()


def _headers(response: Response) -> Response:
    # Captive-network browsers cache aggressively; a cached "you are online" page is a lie.
    response.headers.setdefault("Cache-Control", "no-store")  # the RFC 8908 API sets private
    response.headers.update(SECURITY_HEADERS)
    return response


def register(app: Flask) -> None:
    app.after_request(_headers)
    app.jinja_env.globals["csrf_token"] = csrf_token
    app.jinja_env.globals["CSRF_FIELD"] = CSRF_FIELD
