"""Answer every captive request with a redirect to the portal, and do it cheaply.

nftables sends all of a captive phone's TCP/80 here, so this path carries OS probes and every
app's background traffic. It is plain WSGI in front of Flask: no routing, no session, no control
socket call. Nothing from the request is echoed, so it cannot be used as an open redirect or to
reflect markup.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Iterable
from typing import Any

from portal.security import SECURITY_HEADERS

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def bare_host(host: str) -> str:
    """The Host header without port, trailing dot or IPv6 brackets, lowercased."""
    host = host.strip().lower()
    if host.startswith("["):
        host = host[1 : host.find("]")] if "]" in host else host[1:]
    else:
        host = host.partition(":")[0]
    return host.rstrip(".")


class Interceptor:
    def __init__(
        self,
        app: WSGIApp,
        *,
        portal_url: str,
        intercept_port: int,
        portal_hosts: Iterable[str],
        plain_port: int | None = None,
    ) -> None:
        """`plain_port`: the portal's own HTTP port when the portal also serves HTTPS; requests
        there are sent to the HTTPS portal too (logins and the RFC 8908 API are TLS-only)."""
        self.app = app
        self.intercept_port = str(intercept_port)
        self.plain_port = str(plain_port) if plain_port else None
        self.portal_hosts = frozenset(bare_host(h) for h in portal_hosts)
        link = html.escape(portal_url)
        self.body = (
            '<!doctype html><html lang="en"><meta charset="utf-8"><title>Wi-Fi sign-in</title>'
            f'<p>Sign in to use this Wi-Fi: <a href="{link}">{link}</a></p></html>\n'
        ).encode()
        self.headers = [
            ("Location", portal_url),
            ("Cache-Control", "no-store"),
            ("Content-Type", "text/html; charset=utf-8"),
            ("Content-Length", str(len(self.body))),
            *SECURITY_HEADERS.items(),
        ]

    def intercepted(self, environ: dict[str, Any]) -> bool:
        if environ.get("SERVER_PORT") in (self.intercept_port, self.plain_port):
            return True
        return bare_host(environ.get("HTTP_HOST", "")) not in self.portal_hosts

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        if not self.intercepted(environ):
            return self.app(environ, start_response)
        start_response("302 Found", list(self.headers))
        return [self.body]
