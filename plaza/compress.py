"""gzip for pages that carry no secret, so BREACH has nothing to guess.

BREACH recovers a secret from the compressed size of a page that holds both the secret and
text the attacker chooses (a reflected query string, a form value). The attacker here is easy
to find: any other shopper on the open Wi-Fi sees the sizes of the portal's TLS records. So a
page whose body holds a secret is never compressed: every page that rendered a CSRF token
(`plaza.csrf.csrf_token` calls `mark_secret`), which covers the reconnect page (its link
holds the reconnect token), the welcome page and every dashboard page a merchant is signed
in to (the sign-out form), hence the claim code too. Anything else may be compressed: static
files (CSS, SVG, script) and pages with nothing to steal, such as the splash and error pages.

Only successful (200) text answers of the types below and longer than `MIN_BYTES` are
compressed, and only when the request says `Accept-Encoding: gzip`. JSON is never compressed:
the device API and the RFC 8908 API are small, and some of their answers hold tokens.
"""

from __future__ import annotations

import gzip

from flask import Flask, Response, g, request

COMPRESSIBLE = frozenset(
    {"text/html", "text/css", "text/javascript", "application/javascript", "image/svg+xml"}
)
MIN_BYTES = 512  # below this the gzip header and a round of CPU buy nothing
LEVEL = 6  # zlib's default: most of the gain for a fraction of level 9's CPU on a router
_FLAG = "plaza_secret_in_body"


def mark_secret() -> None:
    """This response's body holds a secret: never compress it (call inside a request)."""
    setattr(g, _FLAG, True)


def _wants_gzip() -> bool:
    return request.accept_encodings["gzip"] > 0


def gzip_response(response: Response) -> Response:
    """after_request hook: compress `response` in place when it is safe and worth it."""
    if response.mimetype not in COMPRESSIBLE:
        return response
    response.vary.add("Accept-Encoding")  # a cache must not give gzip to a client without it
    if (
        response.status_code != 200
        or "Content-Encoding" in response.headers
        or getattr(g, _FLAG, False)
        or not _wants_gzip()
        or (response.is_streamed and not response.direct_passthrough)  # a generator: leave it
    ):
        return response
    response.direct_passthrough = False  # a static file: read it, it is small
    body = response.get_data()
    if len(body) < MIN_BYTES:
        return response
    response.set_data(gzip.compress(body, compresslevel=LEVEL, mtime=0))
    response.headers["Content-Encoding"] = "gzip"
    etag, weak = response.get_etag()
    if etag and not weak:
        response.set_etag(etag, weak=True)  # the bytes differ from the uncompressed entity's
    return response


def install(app: Flask) -> None:
    app.after_request(gzip_response)
