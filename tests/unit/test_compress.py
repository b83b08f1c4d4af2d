"""gzip on the portal: pages with no secret are compressed when asked; a page that carries a
CSRF token never is (BREACH: another shopper on the open Wi-Fi sees the record sizes)."""

from __future__ import annotations

import gzip
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from gateway.config import Config, PortalConfig
from portal import create_app
from tests.fakes.control import FakeControl
from tests.portal_helpers import ON_PORTAL, PHONE, PORTAL

GZIP = {"Accept-Encoding": "gzip, deflate, br"}


def portal(control: FakeControl, click_through: bool) -> FlaskClient:
    config = Config(portal=PortalConfig(merchant_name="Café", click_through=click_through))
    app: Flask = create_app(
        {"TESTING": True, "PLAZA_CONFIG": config, "CONTROL": control, "SECRET_KEY": "test"}
    )
    return app.test_client()


@pytest.fixture
def control() -> FakeControl:
    fake = FakeControl()
    fake.clients[PHONE] = {"mac": "02:00:00:00:00:64", "ip": PHONE, "state": "captive",
                           "seconds_remaining": None}  # fmt: skip
    return fake


def get(client: FlaskClient, path: str, headers: dict[str, str] | None = None) -> Any:
    return client.get(path, base_url=PORTAL, environ_overrides=ON_PORTAL, headers=headers)


def test_a_page_without_secrets_is_gzipped_when_asked(control: FakeControl) -> None:
    client = portal(control, click_through=False)  # the splash has no form, so no token
    plain = get(client, "/")
    zipped = get(client, "/", GZIP)
    assert plain.status_code == zipped.status_code == 200
    assert "Content-Encoding" not in plain.headers and "csrf_token" not in plain.text
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert "Accept-Encoding" in zipped.headers["Vary"]
    assert int(zipped.headers["Content-Length"]) < len(plain.data)
    assert gzip.decompress(zipped.data) == plain.data


def test_a_page_with_a_csrf_token_is_never_gzipped(control: FakeControl) -> None:
    client = portal(control, click_through=True)  # the click-through form carries the token
    page = get(client, "/", GZIP)
    assert page.status_code == 200 and 'name="csrf_token"' in page.text
    assert "Content-Encoding" not in page.headers


def test_status_page_with_its_logout_token_is_not_gzipped(control: FakeControl) -> None:
    control.clients[PHONE].update(state="authorized", seconds_remaining=600)
    page = get(portal(control, click_through=False), "/status", GZIP)
    assert page.status_code == 200 and 'name="csrf_token"' in page.text
    assert "Content-Encoding" not in page.headers


def test_static_script_is_gzipped(control: FakeControl) -> None:
    client = portal(control, click_through=True)
    plain = get(client, "/static/push.js")
    zipped = get(client, "/static/push.js", GZIP)
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(zipped.data) == plain.data


def test_no_gzip_unless_asked_or_refused(control: FakeControl) -> None:
    client = portal(control, click_through=False)
    assert "Content-Encoding" not in get(client, "/").headers
    refused = get(client, "/", {"Accept-Encoding": "gzip;q=0, identity"})
    assert "Content-Encoding" not in refused.headers
