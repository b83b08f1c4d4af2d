"""gzip on the cloud: the dashboard's pages carry a CSRF token (the sign-out form; the claim
code page also its code), so none is compressed; its stylesheet is, when asked."""

from __future__ import annotations

import gzip
import re

import pytest
from flask.testing import FlaskClient

from cloud.models import Venue
from tests.cloud.dashboard_helpers import LOGIN, csrf, sign_in

GZIP = {"Accept-Encoding": "gzip"}


@pytest.fixture
def merchant(client: FlaskClient, venue: Venue) -> FlaskClient:
    assert sign_in(client).status_code == 303
    return client


def test_sign_in_page_with_its_token_is_not_gzipped(client: FlaskClient) -> None:
    page = client.get(LOGIN, headers=GZIP)
    assert page.status_code == 200 and 'name="csrf_token"' in page.text
    assert "Content-Encoding" not in page.headers


def test_claim_code_page_is_not_gzipped(merchant: FlaskClient, venue: Venue) -> None:
    token = csrf(merchant, f"/dashboard/venues/{venue.id}/editor")
    page = merchant.post(
        f"/dashboard/venues/{venue.id}/claims", data={"csrf_token": token}, headers=GZIP
    )
    assert page.status_code == 200 and re.search(r'id="claim-code">[0-9A-Z-]+<', page.text)
    assert "Content-Encoding" not in page.headers


def test_merchant_pages_are_not_gzipped(merchant: FlaskClient, venue: Venue) -> None:
    for path in (
        "/dashboard/",
        f"/dashboard/venues/{venue.id}",
        f"/dashboard/venues/{venue.id}/editor",
    ):
        page = merchant.get(path, headers=GZIP, follow_redirects=True)
        assert page.status_code == 200, path
        assert "Content-Encoding" not in page.headers, path


def test_stylesheet_is_gzipped_when_asked(client: FlaskClient) -> None:
    path = "/dashboard/static/dashboard.css"
    plain = client.get(path)
    zipped = client.get(path, headers=GZIP)
    assert "Content-Encoding" not in plain.headers
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert "Accept-Encoding" in zipped.headers["Vary"]
    assert gzip.decompress(zipped.data) == plain.data
    assert len(zipped.data) < len(plain.data) / 2
