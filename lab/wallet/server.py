"""The sandbox wallet's Flask app and its command line.

    python -m lab.wallet.server --settings wallet.json --listen 198.18.0.20:443 \\
        --cert wallet.pem --key wallet.key

One app answers both dialects on one host (wallet.test): OpenID Connect at /authorize, /token,
/userinfo, /jwks.json and /.well-known/openid-configuration; the Alipay dialect at
/oauth2/publicAppAuthorize.htm and /gateway.do (with the trade API and its cashier page, see
lab.wallet.trade); for both, saved passes at /passes (see
lab.wallet.passes) and messages pushed by merchant apps (POST /v1/messages, or the gateway
method alipay.pass.message.push) in the inbox at /messages (see lab.wallet.messages).
Everything is kept in memory: a restart forgets signed-in browsers, codes, tokens, passes and
messages, and makes a new ID-token signing key.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

from cheroot import wsgi
from flask import Flask, Response, jsonify

from lab.wallet import alipay, messages, oidc, passes, trade
from lab.wallet.settings import WalletSettings, load_settings, settings_from_dict
from plaza import tls


def create_app(
    settings: WalletSettings | dict[str, Any], *, clock: Callable[[], float] = time.time
) -> Flask:
    """The sandbox wallet. `clock` (Unix seconds) drives code/token expiry and timestamp checks."""
    if not isinstance(settings, WalletSettings):
        settings = settings_from_dict(settings)
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=secrets.token_bytes(32),  # per run: restarting signs every browser out
        SESSION_COOKIE_NAME="wallet_session",
        SESSION_COOKIE_SECURE=True,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        PERMANENT_SESSION_LIFETIME=dt.timedelta(days=30),
        MAX_CONTENT_LENGTH=64 * 1024,
    )
    app.config["WALLET_SETTINGS"] = settings
    oidc.init(app, settings, clock)
    alipay.init(app, settings, clock)
    trade.init(app)  # the Alipay trade API and its cashier page
    passes.init(app, settings, clock)
    messages.init(app, settings, clock)

    @app.get("/health")
    def health() -> Response:
        return jsonify(ok=True, issuer=settings.issuer)

    return app


# Served like the portal (portal/cli.py): cheroot, HTTP/1.1 keep-alive, TLS handshakes in the
# worker threads. werkzeug's server closed every connection, so each login cost the wallet four
# handshakes (two from the phone, the token and userinfo calls from the portal) and the portal
# two of its own; a browser and the portal's pooled back-channel reuse a connection instead.
THREADS = 16
ACCEPT_BACKLOG = 1024  # a storm of phones connects at once (bench/join_storm.py)
KEEP_ALIVE_LIMIT = 1000  # cheroot's default of 10 would close the 11th phone's connection


def build_server(host: str, port: int, app: Any, cert: str, key: str) -> wsgi.Server:
    """The wallet's HTTPS listener on (host, port); call prepare() then serve()."""
    server = wsgi.Server((host, port), app, numthreads=THREADS, request_queue_size=ACCEPT_BACKLOG)
    server.keep_alive_conn_limit = KEEP_ALIVE_LIMIT
    server.ssl_adapter = tls.server_adapter(cert, key)
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="the Plaza lab's sandbox wallet (HTTPS)")
    parser.add_argument("--settings", required=True, help="settings JSON from lab.wallet.keys")
    parser.add_argument(
        "--listen", required=True, action="append", help="HOST:PORT or [IPV6]:PORT; repeatable"
    )
    parser.add_argument("--cert", required=True, help="certificate chain (PEM) for wallet.test")
    parser.add_argument("--key", required=True, help="its private key (PEM)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="wallet: %(message)s")
    app = create_app(load_settings(args.settings))
    servers = []
    for listen in args.listen:
        host, _, port = listen.rpartition(":")
        servers.append(build_server(host.strip("[]"), int(port), app, args.cert, args.key))
        servers[-1].prepare()
        logging.info("serving %s on https://%s", app.config["WALLET_SETTINGS"].issuer, listen)
    threads = [threading.Thread(target=s.serve, daemon=True) for s in servers]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            thread.join()
    except KeyboardInterrupt:
        pass
    finally:
        for server in servers:
            server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
