"""HSTS on the portal (portal/security.py, issue 10): on every HTTPS response, never on the
plain-HTTP port or the intercept port (RFC 6797 7.2), and never with includeSubDomains (the
portal's host name is the venue's: its other hosts are not the router's to pin)."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask

from gateway.config import Config, PortalConfig
from portal import create_app
from tests.fakes.control import FakeControl
from tests.portal_helpers import PHONE

HTTPS = "https://portal.plaza.test/"
HTTP = "http://portal.plaza.test/"


@pytest.fixture
def app() -> Flask:
    control = FakeControl()
    control.clients[PHONE] = {"mac": "02:00:00:00:00:64", "ip": PHONE, "state": "captive",
                              "seconds_remaining": None}  # fmt: skip
    config = Config(portal=PortalConfig(cert_file="/nonexistent/cert.pem", key_file="/k.pem"))
    assert config.portal.tls
    return create_app(
        {"TESTING": True, "PLAZA_CONFIG": config, "CONTROL": control, "SECRET_KEY": "test"}
    )


def fetch(app: Flask, base: str, port: str, path: str = "/", **kw: Any) -> Any:
    return app.test_client().get(
        path, base_url=base, environ_overrides={"REMOTE_ADDR": PHONE, "SERVER_PORT": port}, **kw
    )


@pytest.mark.parametrize("path", ["/", "/api/captive", "/status", "/no-such-page"])
def test_every_https_response_carries_hsts(app: Flask, path: str) -> None:
    response = fetch(app, HTTPS, "443", path)
    assert response.status_code in (200, 404)
    assert response.headers["Strict-Transport-Security"] == "max-age=31536000"
    assert "includesubdomains" not in response.headers["Strict-Transport-Security"].lower()


@pytest.mark.parametrize(
    ("base", "port"),
    [(HTTP, "80"), (HTTP, "8080"), ("http://captive.apple.com/", "8080"), (HTTP, "443")],
)
def test_plain_http_never_carries_hsts(app: Flask, base: str, port: str) -> None:
    """The plain portal port and the intercept port answer a redirect to HTTPS, without
    HSTS (a browser must ignore it there, and a probe host must never be pinned)."""
    response = fetch(app, base, port)
    assert response.status_code == 302 if port != "443" else response.status_code == 200
    assert "Strict-Transport-Security" not in response.headers


def test_a_portal_without_tls_sends_no_hsts() -> None:
    app = create_app(
        {"TESTING": True, "PLAZA_CONFIG": Config(), "CONTROL": FakeControl(), "SECRET_KEY": "t"}
    )
    response = fetch(app, HTTP, "80", "/api/captive")
    assert "Strict-Transport-Security" not in response.headers
