"""`plaza-cloud`: serve the cloud, migrate its database, and the few operator tasks that come
before a dashboard exists (merchants, venues, claim codes, commands).

Settings come from the environment as for the WSGI app (see cloud/__init__.py), or from
--database-url / --instance. `run` serves with cheroot, which is enough for one instance; at
scale run `gunicorn -k gthread --threads 32 'cloud:create_app()'` behind a load balancer
(threads, because command long polls wait up to 30 s).
"""

from __future__ import annotations

import argparse
import getpass
import json
import signal
import sys
import threading
import time
from typing import Any

from flask import Flask

THREADS = 32  # long polls hold a thread each for up to 30 s
DEFAULT_PORT = 8700


class CliError(Exception):
    pass


def _app(args: argparse.Namespace) -> Flask:
    from cloud import create_app

    config: dict[str, Any] = {}
    if args.database_url:
        config["DATABASE_URL"] = args.database_url
    if args.instance:
        config["INSTANCE_PATH"] = args.instance
    return create_app(config)


def cmd_migrate(args: argparse.Namespace) -> int:
    from cloud import migrations

    app = _app(args)
    url = app.config["DATABASE_URL"]
    migrations.upgrade(url)
    print(f"database at revision {migrations.current(url)}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from cheroot import wsgi

    from cloud import migrations
    from plaza import tls

    app = _app(args)
    url = app.config["DATABASE_URL"]
    if url.startswith("sqlite"):
        migrations.upgrade(url)  # the embedded default needs no set-up step
    elif migrations.current(url) is None:
        raise CliError("the database has no schema: run `plaza-cloud migrate` first")
    server = wsgi.Server((args.host, args.port), app, numthreads=THREADS, server_name="plaza")
    server.max_request_body_size = app.config["MAX_CONTENT_LENGTH"]
    if bool(args.cert) != bool(args.key):
        raise CliError("--cert and --key go together")
    if args.cert:
        server.ssl_adapter = tls.server_adapter(args.cert, args.key)
    server.prepare()
    host, port = server.bind_addr[:2]
    scheme = "https" if args.cert else "http"
    print(f"plaza-cloud listening on {scheme}://{host}:{port}", flush=True)

    # Serve from a thread and stop from the main one: cheroot's stop() joins its workers,
    # which it cannot do from a signal handler interrupting serve() itself.
    stopping = threading.Event()
    for signo in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signo, lambda *_: stopping.set())
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    stopping.wait()
    server.stop()
    return 0


def _password(args: argparse.Namespace) -> str:
    if args.password:
        return args.password
    if sys.stdin.isatty():
        first = getpass.getpass("password: ")
        if first != getpass.getpass("again: "):
            raise CliError("passwords differ")
        return first
    return sys.stdin.readline().rstrip("\n")


def _in_session(args: argparse.Namespace, work: Any) -> Any:
    """Run `work(db, app)` in one transaction, committed if it returns."""
    from cloud import db as cloud_db

    app = _app(args)
    with cloud_db.session(app) as db:
        result = work(db, app)
        db.commit()
    cloud_db.engine(app).dispose()
    return result


def cmd_create_merchant(args: argparse.Namespace) -> int:
    from cloud.accounts import create_merchant

    password = _password(args)
    merchant = _in_session(
        args, lambda db, _: create_merchant(db, args.name, args.email, password, time.time())
    )
    print(merchant.id)
    return 0


def cmd_create_venue(args: argparse.Namespace) -> int:
    from cloud.accounts import create_venue

    venue = _in_session(
        args,
        lambda db, _: create_venue(db, args.merchant_id, args.name, time.time(), args.portal_host),
    )
    print(venue.id)
    return 0


def cmd_set_portal_host(args: argparse.Namespace) -> int:
    from cloud.accounts import set_portal_host

    venue = _in_session(args, lambda db, _: set_portal_host(db, args.venue_id, args.host))
    print(venue.portal_host or "none")
    return 0


def cmd_create_claim(args: argparse.Namespace) -> int:
    from cloud.enrol import create_claim

    print(_in_session(args, lambda db, _: create_claim(db, args.venue_id, time.time(), args.days)))
    return 0


def cmd_command(args: argparse.Namespace) -> int:
    from cloud import commands

    cmd_args: dict[str, Any] = {}
    if args.client is not None:
        cmd_args["client"] = args.client
    if args.minutes is not None:
        cmd_args["minutes"] = args.minutes

    def work(db: Any, app: Flask) -> dict[str, Any]:
        key = app.config["CLOUD_KEY"]
        issued = commands.issue(db, key, args.device_id, args.op, cmd_args, time.time(), args.ttl)
        return issued.signed

    print(json.dumps(_in_session(args, work)))
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    from cloud.models import Device

    def work(db: Any, _: Flask) -> None:
        device = db.get(Device, args.device_id)
        if device is None:
            raise CliError(f"no device {args.device_id}")
        device.revoked = True

    _in_session(args, work)
    print(f"revoked {args.device_id}")
    return 0


def cmd_push_worker(args: argparse.Namespace) -> int:
    from cloud.push import worker
    from cloud.push.settings import PushSettings

    app = _app(args)
    try:
        messenger = PushSettings.of(app).messenger()  # refuse a bad wallet setting now
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if messenger is None:
        print("plaza-cloud push-worker: no wallet configured; wallet pushes wait", flush=True)
    else:
        messenger.close()
    if args.once:
        print(f"sent {worker.run_once(app)}")
        return 0
    print("plaza-cloud push-worker running", flush=True)
    worker.serve(app, interval=args.interval)
    return 0


def cmd_reconcile_payments(args: argparse.Namespace) -> int:
    """Settle payments that never got their notify, by asking the wallet (cron: every minute)."""
    import dataclasses

    from cloud import db as cloud_db
    from cloud.o2o import settings, settlement

    app = _app(args)
    try:
        client = settings.trade_client(app)
    except (settings.NotConfigured, ValueError) as exc:
        raise CliError(str(exc)) from None
    with app.app_context(), cloud_db.session(app) as db:
        result = settlement.reconcile(db, client, app.config["CLOCK"](), after=args.after)
    print(json.dumps(dataclasses.asdict(result)))
    return 1 if result.failed else 0


def cmd_bookings_sweep(args: argparse.Namespace) -> int:
    """Release expired holds, settle late deposits, queue reminders, close the day's bookings
    (cron: every minute; cloud/o2o/booking_jobs.py)."""
    import dataclasses

    from cloud import db as cloud_db
    from cloud.o2o import booking_jobs, settings

    app = _app(args)
    try:
        client = settings.trade_client(app)
    except (settings.NotConfigured, ValueError):
        client = None  # no wallet: deposits wait, the rest goes on
    with app.app_context(), cloud_db.session(app) as db:
        base = settings.setting(app, "PUBLIC_URL").rstrip("/")
        result = booking_jobs.sweep(db, app.config["CLOCK"](), client, base)
    print(json.dumps(dataclasses.asdict(result)))
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="plaza-cloud", description=__doc__.splitlines()[0])
    p.add_argument("--database-url", help="overrides PLAZA_CLOUD_DATABASE_URL")
    p.add_argument("--instance", help="instance dir (keys, default SQLite database)")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="serve the API with cheroot")
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--port", type=int, default=DEFAULT_PORT)
    run.add_argument("--cert", help="PEM certificate chain: serve HTTPS (one-box deployments)")
    run.add_argument("--key", help="PEM private key for --cert")
    run.set_defaults(func=cmd_run)
    sub.add_parser("migrate", help="upgrade the schema to the newest revision").set_defaults(
        func=cmd_migrate
    )
    m = sub.add_parser("create-merchant", help="add a merchant; prints its id")
    m.add_argument("name")
    m.add_argument("email")
    m.add_argument("--password", help="else prompted for, or read from standard input")
    m.set_defaults(func=cmd_create_merchant)
    v = sub.add_parser("create-venue", help="add a venue; prints its id")
    v.add_argument("merchant_id")
    v.add_argument("name")
    v.add_argument(
        "--portal-host",
        help="the routers' portal host name (its certificate's); shoppers' consent must name it",
    )
    v.set_defaults(func=cmd_create_venue)
    h = sub.add_parser(
        "set-portal-host", help="register (or, with '', clear) a venue's portal host"
    )
    h.add_argument("venue_id")
    h.add_argument("host")
    h.set_defaults(func=cmd_set_portal_host)
    c = sub.add_parser("create-claim", help="a one-time enrolment code; printed once")
    c.add_argument("venue_id")
    c.add_argument("--days", type=float, default=7)
    c.set_defaults(func=cmd_create_claim)
    k = sub.add_parser("command", help="send a signed command to a router")
    k.add_argument("device_id")
    k.add_argument("op", help="authorize | kick | refresh-config")
    k.add_argument("--client", help="MAC or IP address (authorize, kick)")
    k.add_argument("--minutes", type=int, help="session length (authorize)")
    k.add_argument("--ttl", type=int, default=300, help="seconds until the command expires")
    k.set_defaults(func=cmd_command)
    r = sub.add_parser("revoke", help="refuse every further request from a router")
    r.add_argument("device_id")
    r.set_defaults(func=cmd_revoke)
    w = sub.add_parser("push-worker", help="send queued pushes (wallet, Web Push)")
    w.add_argument("--interval", type=float, default=1.0, help="seconds between idle looks")
    w.add_argument("--once", action="store_true", help="send one batch, then exit")
    w.set_defaults(func=cmd_push_worker)
    rp = sub.add_parser("reconcile-payments", help="ask the wallet about unnotified payments")
    rp.add_argument("--after", type=float, default=120.0, help="seconds a payment may wait")
    rp.set_defaults(func=cmd_reconcile_payments)
    bs = sub.add_parser("bookings-sweep", help="expire holds, send reminders, close bookings")
    bs.set_defaults(func=cmd_bookings_sweep)
    from cloud.transit import cli as transit_cli

    transit_cli.add_parser(sub, _app)
    from cloud.hospital import seed as hospital_seed

    hospital_seed.add_parser(sub, _app)
    return p


CLOUD_MODULES = ("sqlalchemy", "alembic", "psycopg", "pywebpush")


def missing_cloud_install() -> str | None:
    """The first of the cloud's own dependencies this install lacks, or None: a router
    install (`pip install .`) has none of them and says so in one line, not a traceback."""
    import importlib.util

    return next((m for m in CLOUD_MODULES if importlib.util.find_spec(m) is None), None)


def main(argv: list[str] | None = None) -> int:
    if (missing := missing_cloud_install()) is not None:
        print(
            f"plaza-cloud: this is a router install ({missing} is missing); "
            "the cloud needs: pip install 'plaza[cloud]'",
            file=sys.stderr,
        )
        return 2
    from sqlalchemy.exc import OperationalError, ProgrammingError

    from cloud.accounts import AccountError
    from cloud.commands import CommandError
    from cloud.enrol import ClaimError

    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except (CliError, AccountError, ClaimError, CommandError) as exc:
        print(f"plaza-cloud: {exc}", file=sys.stderr)
        return 2
    except (OperationalError, ProgrammingError) as exc:
        first = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        print(f"plaza-cloud: database error: {first} (run `plaza-cloud migrate`?)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
