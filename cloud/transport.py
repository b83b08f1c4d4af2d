"""How a request reached the cloud, and what it is told about transport: which proxies'
X-Forwarded-* headers to believe, and HSTS.

`TRUSTED_PROXIES` (PLAZA_CLOUD_TRUSTED_PROXIES) is the number of proxies in front of the app
that append to X-Forwarded-For and set X-Forwarded-Proto. 0, the default, believes none of
it: a client could otherwise name any address it likes and walk round the sign-in throttle,
or claim https. Behind one load balancer it is 1; without it, every browser shares the load
balancer's address, and one guesser throttles everyone (cloud/dashboard/ratelimit.py).

HSTS (`Strict-Transport-Security: max-age=31536000`) goes on every answer that went out over
TLS: the request came over https, or a trusted proxy said so. Over plain http it would be
ignored by browsers anyway (RFC 6797 §8.1), and the embedded default on 127.0.0.1 is http.

`plaza-cloud run --cert` speaks TLS with the portal's settings (plaza/tls.py: TLS 1.2 with
AEAD suites only, and TLS 1.3), called from there like the portal's CSRF and gzip rules until
the shared bottom floor of issue 12 holds all three.
"""

from __future__ import annotations

import os

from flask import Flask, Response, request
from werkzeug.middleware.proxy_fix import ProxyFix

from plaza import compress  # as cloud/dashboard/security.py shares the portal's CSRF

HSTS = "max-age=31536000"
ENV = "PLAZA_CLOUD_TRUSTED_PROXIES"


def trusted_proxies(app: Flask) -> int:
    raw = app.config.get("TRUSTED_PROXIES")
    if raw is None or raw == "":
        raw = os.environ.get(ENV) or 0
    try:
        count = int(raw)
    except (TypeError, ValueError):
        raise ValueError(f"{ENV}: not a whole number: {raw!r}") from None
    if not 0 <= count <= 10:
        raise ValueError(f"{ENV}: the number of proxies in front, 0 to 10, got {count}")
    return count


def install(app: Flask) -> None:
    """ProxyFix for exactly the configured proxies (none by default), and HSTS."""
    count = trusted_proxies(app)
    app.config["TRUSTED_PROXIES"] = count
    if count:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=count, x_proto=count)  # type: ignore[method-assign]
    app.after_request(_hsts)
    compress.install(app)  # gzip for pages with no secret in them (BREACH): plaza/compress.py


def _hsts(response: Response) -> Response:
    if request.is_secure:
        response.headers["Strict-Transport-Security"] = HSTS
    return response
