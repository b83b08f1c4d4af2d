"""Plaza cloud: device fleet, usage ingestion, venue config, commands and presence.

`create_app()` is the WSGI entry point (`gunicorn 'cloud:create_app()'`). Settings come from
the environment, overridable by the `config` mapping (tests):

- `PLAZA_CLOUD_DATABASE_URL` (DATABASE_URL): default SQLite `cloud.db` in the instance dir;
  `postgresql+psycopg://user@host/db` at scale.
- `PLAZA_CLOUD_KEY` (CLOUD_KEY): the command-signing key, PEM; default `cloud.key` in the
  instance dir, generated on first use (mode 0600).
- `PLAZA_CLOUD_SECRET_KEY` (SECRET_KEY): default `secret_key` in the instance dir.
- `PLAZA_CLOUD_INSTANCE` (or config INSTANCE_PATH): the instance dir itself, created 0700
  (it holds the keys and the SQLite database; an existing one is tightened to 0700).
- `PLAZA_CLOUD_TRUSTED_PROXIES` (TRUSTED_PROXIES): proxies in front whose X-Forwarded-For
  and -Proto are believed; default 0 (cloud/transport.py).

The schema is Alembic's job (`plaza-cloud migrate`); the app never creates tables itself, so
several instances starting together cannot race on it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from flask import Flask

MAX_BODY = 1024 * 1024  # docs/cloud-protocol.md: a usage batch is at most 1 MiB


def create_app(config: dict[str, Any] | None = None) -> Flask:
    from cloud import api, dashboard, db, device_api, enrol, fleet, keys, presence, transport

    config = dict(config or {})
    instance = config.pop("INSTANCE_PATH", None) or os.environ.get("PLAZA_CLOUD_INSTANCE")
    app = Flask(__name__, instance_path=str(Path(instance).resolve()) if instance else None)
    instance_dir = Path(app.instance_path)
    private_dir(instance_dir)
    app.config.from_mapping(
        DATABASE_URL=os.environ.get("PLAZA_CLOUD_DATABASE_URL")
        or f"sqlite:///{instance_dir / 'cloud.db'}",
        MAX_CONTENT_LENGTH=MAX_BODY,
        CLOCK=time.time,
        COMMAND_POLL_SECONDS=1.0,  # how often a long poll looks at the database
        COMMAND_TTL_SECONDS=300,
        NONCE_PURGE_SECONDS=60,  # how often (per process) expired nonces are deleted
    )
    app.config.update(config)
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = keys.secret_key(
            instance_dir, os.environ.get("PLAZA_CLOUD_SECRET_KEY")
        )
    key = app.config.get("CLOUD_KEY")
    if key is None or isinstance(key, str | bytes):
        pem = key.decode() if isinstance(key, bytes) else key
        app.config["CLOUD_KEY"] = keys.cloud_key(
            instance_dir, pem or os.environ.get("PLAZA_CLOUD_KEY")
        )
    db.init_app(app, app.config["DATABASE_URL"])
    transport.install(app)
    api.register(app)
    app.register_blueprint(enrol.bp)
    app.register_blueprint(fleet.bp)
    app.register_blueprint(device_api.bp)
    app.register_blueprint(dashboard.bp)
    from cloud.o2o import shop  # the shopper web app (/plaza); after the dashboard: its cookie

    app.register_blueprint(shop.bp)
    from cloud.o2o import voucher_admin  # vouchers: /plaza/vouchers, /plaza/staff, dashboard

    voucher_admin.register(app)
    from cloud.transit import reader_api, views  # transit: /plaza/transit, /api/v1/transit

    app.register_blueprint(views.bp)
    app.register_blueprint(reader_api.bp)
    from cloud.o2o import booking_admin  # bookings: /plaza/bookings, dashboard, check-in

    booking_admin.register(app)
    from cloud.o2o import queue_admin  # service windows: /plaza/queues, kiosk, screen, dashboard

    queue_admin.register(app)
    from cloud import hospital  # the hospital's FHIR R4 API (/fhir/r4), arrival by presence

    hospital.register(app)
    from cloud.dashboard import plaza_views  # the merchant's funnel and plaza charts

    plaza_views.register(app)
    from cloud.push import presence_push  # presence push: join hook, subscriptions

    presence_push.init_app(app)
    presence.consent_check(app)  # the wallet's key, read now: a missing file stops the start
    return app


def private_dir(path: Path) -> None:
    """`path` as a directory only its owner can enter: created 0700, tightened if it exists
    (the keys inside are 0600, but the SQLite database and its WAL follow the umask)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o077:
        path.chmod(0o700)
