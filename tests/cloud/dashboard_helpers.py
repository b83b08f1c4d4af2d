"""The merchant dashboard as the tests drive it: the conftest merchant's sign-in, the CSRF
token a page carries, a response's text and the editor's form as a browser sends it back.

Kept out of the test modules so the dashboard, sign-in, consent, compression and venue
language tests share them without importing each other (tests/unit/test_test_modules.py).
"""

from __future__ import annotations

import re
from typing import Any

from flask.testing import FlaskClient

EMAIL, PASSWORD = "owner@cafe.example", "hunter2hunter2"  # conftest's `venue` merchant
LOGIN = "/dashboard/login"
CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf(client: FlaskClient, path: str = LOGIN) -> str:
    page = client.get(path)
    match = CSRF_RE.search(page.get_data(as_text=True))
    assert match, f"no CSRF token on {path}"
    return match.group(1)


def sign_in(client: FlaskClient, email: str = EMAIL, password: str = PASSWORD, **extra: str) -> Any:
    return client.post(
        LOGIN, data={"email": email, "password": password, "csrf_token": csrf(client), **extra}
    )


def text(response: Any) -> str:
    return response.get_data(as_text=True)


def editor_form(client: FlaskClient, venue_id: str) -> dict[str, str]:
    """The editor's fields as the browser would send them back unchanged."""
    html = text(client.get(f"/dashboard/venues/{venue_id}/editor"))
    form = html.split('id="editor"')[1].split("</form>")[0]
    fields = dict(re.findall(r'<input[^>]*name="([^"]+)"[^>]*value="([^"]*)"', form))
    fields.update(re.findall(r'<textarea[^>]*name="([^"]+)"[^>]*>([^<]*)</textarea>', form))
    return {
        k: v.replace("&#34;", '"').replace("&amp;", "&")
        for k, v in fields.items()
        if not k.endswith("-remove")
    }
