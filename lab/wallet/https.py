"""An HTTPS server for tests and lab helpers that bind first and set `.app` after.

The wallet's own listener (server.py `build_server`: cheroot, keep-alive, TLS handshakes in the
worker threads, plaza/tls.py) wrapped in the few names of the standard library's servers that
callers use: `server_port`, `app`, `serve_forever()`, `shutdown()`, `server_close()`. A test
often needs the port before it can build the app (the wallet's issuer names it), so the
listener binds at once and the app it serves can be set later. One way to serve HTTPS in the
project: werkzeug's server, used here before, closed every connection and shook hands on its
listening thread.
"""

from __future__ import annotations

from typing import Any

from cheroot import wsgi

# The wallet's listener, as `python -m lab.wallet.server` runs it.
from lab.wallet.server import build_server


class TLSServer:
    """Bound and listening from construction; serves `app` (settable until the first request)."""

    def __init__(self, host: str, port: int, app: Any, cert: str, key: str) -> None:
        self.app = app
        self.server: wsgi.Server = build_server(host, port, self._dispatch, cert, key)
        self.server.prepare()  # binds, listens and starts the worker threads
        self.server_port: int = self.server.bind_addr[1]

    def _dispatch(self, environ: dict, start_response: Any) -> Any:
        if self.app is None:
            start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
            return [b"no app yet\n"]
        return self.app(environ, start_response)

    def serve_forever(self) -> None:
        self.server.serve()

    def shutdown(self) -> None:
        self.server.stop()  # from another thread: serve() returns; idempotent

    def server_close(self) -> None:
        self.server.stop()  # a server never served still holds its port and workers


def make_server(host: str, port: int, app: Any, cert: str, key: str) -> TLSServer:
    """Bound and listening; call serve_forever() (port 0 picks a free port: see server_port)."""
    return TLSServer(host, port, app, cert, key)
