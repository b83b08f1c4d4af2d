"""`plaza-portal`: serve the captive portal with waitress on the router's LAN address.

One process listens on two ports: the portal port for the real pages, and the intercept port
that nftables redirects captive TCP/80 to. The app tells them apart by SERVER_PORT.
"""

from __future__ import annotations

import argparse
import logging
import sys

from waitress import create_server

from gateway.config import ConfigError, load
from portal import create_app

log = logging.getLogger("plaza.portal")


def listen_spec(host: str, ports: list[int]) -> str:
    """waitress' `listen` string; IPv6 literals need brackets."""
    shown = f"[{host}]" if ":" in host else host
    return " ".join(f"{shown}:{port}" for port in ports)


def run(config_path: str, listen: str | None) -> int:
    try:
        config = load(config_path)
    except ConfigError as exc:
        print(f"plaza-portal: {exc}", file=sys.stderr)
        return 2
    host = listen or config.lan.ip
    try:
        app = create_app({"PLAZA_CONFIG": config, "PORTAL_EXTRA_HOSTS": (host,) if listen else ()})
    except OSError as exc:
        print(f"plaza-portal: {exc}", file=sys.stderr)
        return 1
    ports = [config.portal.port, config.portal.intercept_port]
    try:
        server = create_server(app, listen=listen_spec(host, ports), threads=8, ident=None)
    except OSError as exc:
        print(f"plaza-portal: cannot listen on {host}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    log.info(
        "serving %s on %s (portal %d, intercept %d), redirecting captive requests to %s",
        config.portal.merchant_name,
        host,
        ports[0],
        ports[1],
        config.portal.url,
    )
    server.run()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="plaza-portal", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run", help="serve the portal")
    run_p.add_argument("--config", required=True, metavar="PATH", help="gateway config (TOML)")
    run_p.add_argument("--listen", metavar="HOST", help="bind this address instead of the LAN IP")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    return run(args.config, args.listen)


if __name__ == "__main__":
    sys.exit(main())
