"""Response headers shared by every portal page, and the CSRF token in its templates.

The portal runs on an open network where any other shopper can reach it, so forms carry a
per-browser token kept in the signed session cookie, and pages may not be framed or cached.
"""

from __future__ import annotations

from flask import Flask, Response, request

from gateway.config import Config
from plaza.csrf import CSRF_FIELD, csrf_token

SECURITY_HEADERS = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'self'; style-src 'self' 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
}


def content_policy(config: Config) -> str:
    """The CSP for this portal. With one-tap reconnect on, forms may also lead to the wallet:
    browsers apply `form-action` to the redirect after a post (POST /reconnect -> 303 to the
    wallet's add-a-pass page), so the wallet's origin must be listed."""
    policy = SECURITY_HEADERS["Content-Security-Policy"]
    if config.reconnect.enabled:
        from plaza.wallet import wallet_origin

        wallet = wallet_origin(config.wallet)  # an https origin: the config was verified
        policy = policy.replace("form-action 'self'", f"form-action 'self' {wallet}")
    return policy


# HTTPS responses only (RFC 6797 7.2: a browser ignores it over plain HTTP, and the plain
# ports only redirect). No includeSubDomains: the portal's name is a venue's, and the venue's
# other hosts are none of the router's business; no preload for the same reason.
HSTS = "max-age=31536000"


def register(app: Flask) -> None:
    from portal import push

    policy = content_policy(app.config["PLAZA_CONFIG"])

    def add_headers(response: Response) -> Response:
        # Captive-network browsers cache aggressively; a cached "you are online" page is a lie.
        response.headers.setdefault("Cache-Control", "no-store")  # the RFC 8908 API: private
        response.headers.update(SECURITY_HEADERS)
        # connect-src per response: the router may be enrolled with its cloud while we run.
        response.headers["Content-Security-Policy"] = f"{policy}; {push.connect_src()}"
        if request.is_secure:
            # A shopper who has been here once goes straight to HTTPS next time: a neighbour
            # on the open Wi-Fi cannot answer their typed http://portal/ with a fake page.
            response.headers["Strict-Transport-Security"] = HSTS
        return response

    app.after_request(add_headers)
    app.jinja_env.globals["csrf_token"] = csrf_token
    app.jinja_env.globals["CSRF_FIELD"] = CSRF_FIELD
