"""CSRF tokens for forms, kept in the signed session cookie: the portal's and the cloud
dashboard's forms use the same recipe (one implementation, one set of tests).

The portal runs on an open network where any other shopper can reach it, and the dashboard is
on the internet; a form is accepted only with the token its own page carried.
"""

from __future__ import annotations

import hmac
import secrets

from flask import request, session
from werkzeug.exceptions import BadRequest

from plaza.compress import mark_secret

CSRF_KEY = "csrf"
CSRF_FIELD = "csrf_token"


class CsrfError(BadRequest):
    name = "Form expired"
    description = "This form has expired or was not sent from this page. Please start again."


def csrf_token() -> str:
    """The browser session's token, created the first time a form needs it. The page that
    carries it is not compressed (plaza/compress.py: BREACH)."""
    mark_secret()
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
