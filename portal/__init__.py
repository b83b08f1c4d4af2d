"""Plaza's captive portal: the page a shopper's phone is sent to before it may go online.

The portal holds no session state of its own: the gateway daemon is the only authority on who is
authorized, and the portal asks it over the control socket for every decision that matters.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import Any

from flask import Flask

from gateway.config import Config
from gateway.control_client import ControlClient
from plaza import compress
from portal import (
    capport,
    errors,
    login,
    pages,
    push,
    reconnect,
    security,
    splash,
    status,
    venue,
)
from portal.intercept import Interceptor

SECRET_KEY_BYTES = 32


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build the portal app.

    Keys read from `test_config`: PLAZA_CONFIG (gateway Config), CONTROL (anything with the
    ControlClient interface), SECRET_KEY, PORTAL_EXTRA_HOSTS (further Host names served as the
    portal rather than intercepted, e.g. a --listen address), CLOUD_CONFIG_FILE (the venue's
    cloud-managed branding and offers; default <state_dir>/cloud-config.json), plus any Flask
    setting.
    """
    app = Flask(__name__)
    app.config.update(
        SESSION_COOKIE_NAME="plaza_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        PORTAL_EXTRA_HOSTS=(),
    )
    if test_config:
        app.config.update(test_config)
    config: Config = app.config.setdefault("PLAZA_CONFIG", Config())
    # With TLS the plain port only redirects (portal.intercept), so the cookie never needs
    # plain HTTP; marked Secure it cannot be read off an open Wi-Fi by a neighbour.
    if "SESSION_COOKIE_SECURE" not in (test_config or {}):
        app.config["SESSION_COOKIE_SECURE"] = config.portal.tls
    app.config.setdefault("CONTROL", ControlClient(config.gateway.control_socket))
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = load_secret_key(secret_key_path(config))
    venue.init_app(app, config)

    app.register_blueprint(splash.bp)
    app.register_blueprint(status.bp)
    app.register_blueprint(pages.bp)  # also: language, branding and t() for every page
    app.register_blueprint(capport.bp)
    app.register_blueprint(login.bp)
    app.register_blueprint(reconnect.bp)
    app.register_blueprint(push.bp)
    errors.register(app)
    security.register(app)
    compress.install(app)  # gzip for pages with no secret in them (BREACH)

    # Wrapping the WSGI callable, not a before_request hook, so that a phone's stream of
    # probes and app traffic is answered before Flask routes, opens a session or renders.
    portal_hosts = {config.portal.hostname, config.lan.ip, *app.config["PORTAL_EXTRA_HOSTS"]}
    if config.lan.ip6:
        portal_hosts.add(config.lan.ip6)
    app.wsgi_app = Interceptor(
        app.wsgi_app,
        portal_url=config.portal.url,
        intercept_port=config.portal.intercept_port,
        portal_hosts=portal_hosts,
        plain_port=config.portal.port if config.portal.tls else None,
    )
    return app


def secret_key_path(config: Config) -> Path:
    return Path(config.portal.secret_key_file or Path(config.gateway.state_dir) / "portal.key")


def load_secret_key(path: Path) -> bytes:
    """Read the session-signing key, creating it on first run.

    The key is persisted so a portal restart does not invalidate every phone's CSRF token
    mid-form. It is written to a temporary file and hard-linked into place so a crash never
    leaves a truncated key and two racing starts agree on one key.
    """
    if not path.exists():
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(secrets.token_bytes(SECRET_KEY_BYTES))
                out.flush()
                os.fsync(out.fileno())
            with contextlib.suppress(FileExistsError):  # another start won; use its key
                os.link(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    key = path.read_bytes()
    if len(key) < 16:
        raise OSError(f"{path}: secret key too short ({len(key)} bytes); delete it to regenerate")
    return key
