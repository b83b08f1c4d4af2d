"""`plaza-portal`: serve the captive portal on the router's LAN address.

Three listeners share one app: the portal over HTTPS (pages and the RFC 8908 API), the portal
over plain HTTP (kept so a phone that types the name still lands somewhere: it is redirected to
HTTPS), and the intercept port that nftables sends captive TCP/80 to. The app tells them apart
by SERVER_PORT. cheroot serves all three: one threaded server library with built-in TLS.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from cheroot import wsgi

from gateway.config import Config, ConfigError, load
from plaza import logs
from plaza.tls import server_adapter
from portal import create_app

log = logging.getLogger("plaza.portal")
THREADS = 16  # per listener; each request is short (no upstream call but the control socket)
# A crowd joining together (a tour bus, a match ending) opens hundreds of connections at once;
# cheroot's defaults (backlog 5, 10 kept-alive) drop and close them (see bench/join_storm.py).
ACCEPT_BACKLOG = 1024
KEEP_ALIVE_LIMIT = 1000
MAX_HEADER_BYTES = 16 * 1024
EXIT_DISABLED = 3  # as `plaza-gateway run`: the config says enabled '0' (a config error is 2)
MAX_BODY_BYTES = 64 * 1024


def listeners(config: Config, host: str) -> list[tuple[str, int, bool]]:
    """(host, port, tls) for every socket the portal serves."""
    out = [(host, config.portal.port, False), (host, config.portal.intercept_port, False)]
    if config.portal.tls:
        out.append((host, config.portal.https_port, True))
    return out


def build_servers(config: Config, host: str, app) -> list[wsgi.Server]:
    servers = []
    for addr, port, tls in listeners(config, host):
        server = wsgi.Server(
            (addr, port),
            app,
            numthreads=THREADS,
            server_name="plaza",  # no version leak
            request_queue_size=ACCEPT_BACKLOG,
        )
        server.keep_alive_conn_limit = KEEP_ALIVE_LIMIT
        # Phones' requests are small; anything bigger is refused (413/414/431) before the app.
        server.max_request_header_size = MAX_HEADER_BYTES
        server.max_request_body_size = MAX_BODY_BYTES
        if tls:
            server.ssl_adapter = server_adapter(config.portal.cert_file, config.portal.key_file)
        servers.append(server)
    return servers


def run(
    config_path: str,
    listen: str | None,
    log_format: str = "logfmt",
    log_timestamps: bool | None = None,
) -> int:
    try:
        config = load(config_path)
    except ConfigError as exc:
        print(f"plaza-portal: {exc}", file=sys.stderr)
        return 2
    if not config.gateway.enabled:
        print(
            f"plaza-portal: {config_path}: disabled (gateway enabled is off: "
            "`plaza-gateway --config PATH check-config` says how to enable it)",
            file=sys.stderr,
        )
        return EXIT_DISABLED
    logs.configure(config.gateway.log_level, log_format, log_timestamps)  # one knob per router
    host = listen or config.lan.ip
    # Dual stack: captive IPv6 HTTP is redirected to the router's IPv6 address, and phones
    # may reach the portal's name over either family.
    hosts = [host] if listen else [h for h in (config.lan.ip, config.lan.ip6) if h]
    try:
        app = create_app({"PLAZA_CONFIG": config, "PORTAL_EXTRA_HOSTS": (host,) if listen else ()})
        servers = [s for h in hosts for s in build_servers(config, h, app)]
        for server in servers:
            server.prepare()  # binds now, so a busy port is reported before we say "serving"
    except (OSError, ValueError) as exc:
        print(f"plaza-portal: cannot serve on {host}: {exc}", file=sys.stderr)
        return 1
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    threads = [threading.Thread(target=s.serve, daemon=True) for s in servers]
    for thread in threads:
        thread.start()
    log.info(
        "serving %s on %s (%s), redirecting captive requests to %s",
        config.portal.merchant_name,
        " ".join(hosts),
        ", ".join(f"{p}{'/tls' if tls else ''}" for _, p, tls in listeners(config, host)),
        config.portal.url,
    )
    stop.wait()
    for server in servers:
        server.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="plaza-portal", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run", help="serve the portal")
    run_p.add_argument(
        "--config", required=True, metavar="PATH", help="gateway config (TOML or UCI)"
    )
    run_p.add_argument("--listen", metavar="HOST", help="bind this address instead of the LAN IP")
    logs.add_arguments(run_p)
    args = parser.parse_args(argv)
    return run(args.config, args.listen, args.log_format, args.log_timestamps)


if __name__ == "__main__":
    sys.exit(main())
