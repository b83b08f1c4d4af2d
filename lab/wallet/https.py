"""A threaded HTTPS server whose TLS handshakes happen in the worker threads.

werkzeug's own TLS mode shakes hands inside accept(), on the one listening thread, so a single
phone that opens a connection and stalls (a captive client often does) would freeze the wallet
for everyone. Here accept() returns at once and each connection's thread does its handshake,
with a deadline.

It closes every connection after one answer (werkzeug's server does). The lab's wallet itself
(`python -m lab.wallet.server`) is served by cheroot with keep-alive instead (server.py
`build_server`); this one stays for tests and helpers that bind first and set `.app` after.
"""

from __future__ import annotations

import ssl
from typing import Any

from werkzeug.serving import ThreadedWSGIServer

HANDSHAKE_SECONDS = 10.0


class TLSServer(ThreadedWSGIServer):
    def __init__(self, host: str, port: int, app: Any, cert: str, key: str) -> None:
        super().__init__(host, port, app)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(cert, key)
        self.socket = context.wrap_socket(
            self.socket, server_side=True, do_handshake_on_connect=False
        )
        self.ssl_context = context  # tells werkzeug the scheme is https

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            request.settimeout(HANDSHAKE_SECONDS)
            request.do_handshake()
            request.settimeout(None)
        except (TimeoutError, OSError, ssl.SSLError):
            self.shutdown_request(request)
            return
        super().process_request_thread(request, client_address)


def make_server(host: str, port: int, app: Any, cert: str, key: str) -> TLSServer:
    """Bound and listening; call serve_forever() (port 0 picks a free port: see server_port)."""
    return TLSServer(host, port, app, cert, key)
