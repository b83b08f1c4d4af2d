"""The captive portal app, driven through Flask's test client with an in-memory gateway."""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from gateway.config import Config, PortalConfig
from gateway.control_client import ControlError
from portal import create_app, load_secret_key
from tests.fakes.control import FakeControl
from tests.portal_helpers import ON_INTERCEPT, ON_PORTAL, PHONE, PORTAL
from tests.unit.conftest import MakeConfig


@pytest.fixture
def control() -> FakeControl:
    fake = FakeControl()
    fake.clients[PHONE] = {
        "mac": "02:00:00:00:00:64",
        "ip": PHONE,
        "state": "captive",
        "seconds_remaining": None,
    }
    return fake


@pytest.fixture
def app(control: FakeControl) -> Flask:
    config = Config(
        portal=PortalConfig(
            merchant_name="Café <Zoë>", terms="No spam, please.", click_through=True
        )
    )
    return create_app(
        {"TESTING": True, "PLAZA_CONFIG": config, "CONTROL": control, "SECRET_KEY": "test"}
    )


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def get(client: FlaskClient, path: str, **kw: Any) -> Any:
    return client.get(path, base_url=PORTAL, environ_overrides=ON_PORTAL, **kw)


def post(client: FlaskClient, path: str, data: dict[str, str], **kw: Any) -> Any:
    return client.post(path, base_url=PORTAL, environ_overrides=ON_PORTAL, data=data, **kw)


def csrf(client: FlaskClient, path: str = "/") -> str:
    """The token from a form on `path`, as a browser would submit it."""
    match = re.search(r'name="csrf_token" value="([^"]+)"', get(client, path).text)
    assert match, "no CSRF field on the page"
    return match.group(1)


def accept(client: FlaskClient) -> Any:
    return post(client, "/continue", {"csrf_token": csrf(client), "accept": "yes"})


# -- interception --------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST", "HEAD", "PUT", "OPTIONS"])
def test_intercept_port_redirects_every_method_to_portal(
    client: FlaskClient, control: FakeControl, method: str
) -> None:
    resp = client.open(
        "/generate_204",
        method=method,
        base_url="http://connectivitycheck.gstatic.com/",
        environ_overrides=ON_INTERCEPT,
    )
    assert resp.status_code == 302
    assert resp.headers["Location"] == PORTAL
    assert resp.headers["Cache-Control"] == "no-store"
    assert "Set-Cookie" not in resp.headers
    assert control.calls == []  # the hot path never touches the control socket


def test_intercept_port_redirects_even_with_portal_host(client: FlaskClient) -> None:
    resp = client.get("/", base_url=PORTAL, environ_overrides=ON_INTERCEPT)
    assert resp.status_code == 302
    assert resp.headers["Location"] == PORTAL


@pytest.mark.parametrize("host", ["example.com", "captive.apple.com:80", "portal.plaza.test.evil"])
def test_foreign_host_on_portal_port_redirects(client: FlaskClient, host: str) -> None:
    resp = client.get("/", environ_overrides={**ON_PORTAL, "HTTP_HOST": host})
    assert resp.status_code == 302
    assert resp.headers["Location"] == PORTAL
    assert resp.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize("host", ["portal.plaza.test", "PORTAL.Plaza.Test:80", "198.19.0.1"])
def test_portal_names_are_served(client: FlaskClient, host: str) -> None:
    resp = client.get("/", environ_overrides={**ON_PORTAL, "HTTP_HOST": host})
    assert resp.status_code == 200


def test_intercept_reflects_nothing_from_the_request(client: FlaskClient) -> None:
    resp = client.get(
        '/<script>x</script>?next=//evil.example/"',
        base_url="http://evil.example/",
        environ_overrides=ON_INTERCEPT,
    )
    assert resp.headers["Location"] == PORTAL
    assert "evil" not in resp.text and "script" not in resp.text
    assert f'href="{PORTAL}"' in resp.text


# -- splash and continue -------------------------------------------------------------------


def test_splash_renders_merchant_terms_and_form(client: FlaskClient) -> None:
    resp = get(client, "/")
    assert resp.status_code == 200
    assert "Café &lt;Zoë&gt;" in resp.text  # autoescaped
    assert "No spam, please." in resp.text
    assert 'name="viewport"' in resp.text
    assert 'action="/continue"' in resp.text and 'name="accept"' in resp.text
    assert "<script" not in resp.text
    assert resp.headers["Cache-Control"] == "no-store"
    assert resp.headers["X-Frame-Options"] == "DENY"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Referrer-Policy"] == "no-referrer"
    assert "default-src 'self'" in resp.headers["Content-Security-Policy"]
    cookie = resp.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_csrf_token_is_per_browser(app: Flask) -> None:
    assert csrf(app.test_client()) != csrf(app.test_client())


def test_splash_links_to_status_when_authorized(client: FlaskClient, control: FakeControl) -> None:
    control.clients[PHONE]["state"] = "authorized"
    text = get(client, "/").text
    assert 'href="/status"' in text
    assert 'action="/continue"' not in text


def test_splash_still_renders_when_gateway_is_down(
    client: FlaskClient, control: FakeControl
) -> None:
    control.fail = ControlError("the gateway is not running (no control socket at /x)")
    resp = get(client, "/")
    assert resp.status_code == 200
    assert 'action="/continue"' in resp.text


def test_continue_without_csrf_is_refused(client: FlaskClient, control: FakeControl) -> None:
    get(client, "/")  # the session exists, the form field does not
    resp = post(client, "/continue", {"accept": "yes"})
    assert resp.status_code == 400
    assert "expired" in resp.text
    assert control.ops("auth") == []


def test_continue_with_wrong_csrf_is_refused(client: FlaskClient, control: FakeControl) -> None:
    csrf(client)
    resp = post(client, "/continue", {"csrf_token": "forged-ü", "accept": "yes"})
    assert resp.status_code == 400
    assert control.ops("auth") == []


def test_continue_with_another_browsers_token_is_refused(app: Flask, control: FakeControl) -> None:
    token = csrf(app.test_client())
    resp = post(app.test_client(), "/continue", {"csrf_token": token, "accept": "yes"})
    assert resp.status_code == 400
    assert control.ops("auth") == []


def test_continue_without_checkbox_is_refused(client: FlaskClient, control: FakeControl) -> None:
    resp = post(client, "/continue", {"csrf_token": csrf(client)})
    assert resp.status_code == 400
    assert "accept the terms" in resp.text
    assert control.ops("auth") == []


def test_continue_authorizes_the_remote_address(client: FlaskClient, control: FakeControl) -> None:
    resp = post(
        client,
        "/continue",
        {"csrf_token": csrf(client), "accept": "yes"},
        headers={"X-Forwarded-For": "198.19.0.200"},
    )
    assert resp.status_code == 303
    assert resp.headers["Location"] == "/welcome"  # a full navigation once online: iOS "Done"
    assert control.ops("auth") == [PHONE]
    assert control.clients[PHONE]["state"] == "authorized"


@pytest.mark.parametrize(
    "message",
    [
        "the gateway is not running (no control socket at /run/plaza/control.sock)",
        "the gateway did not answer in time",
        "cannot talk to the gateway: Permission denied",
    ],
)
def test_continue_when_gateway_unreachable_is_503(
    client: FlaskClient, control: FakeControl, message: str
) -> None:
    token = csrf(client)
    control.fail = ControlError(message)
    resp = post(client, "/continue", {"csrf_token": token, "accept": "yes"})
    assert resp.status_code == 503
    assert message in resp.text
    assert "Traceback" not in resp.text
    assert resp.headers["Cache-Control"] == "no-store"


def test_continue_refused_by_gateway_is_403(client: FlaskClient, control: FakeControl) -> None:
    token = csrf(client)
    del control.clients[PHONE]
    resp = post(client, "/continue", {"csrf_token": token, "accept": "yes"})
    assert resp.status_code == 403
    assert f"not a client: {PHONE}" in resp.text


# -- status and logout ---------------------------------------------------------------------


def test_status_after_login_shows_time_left_and_ip(client: FlaskClient) -> None:
    assert get(client, accept(client).headers["Location"]).status_code == 200
    page = get(client, "/status?welcome=1")
    assert page.status_code == 200
    assert "Authorized" in page.text and "Not authorized" not in page.text
    assert "now online" in page.text
    assert "60 minutes" in page.text
    assert PHONE in page.text
    assert 'action="/logout"' in page.text
    assert page.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize(("seconds", "shown"), [(61, "2 minutes"), (59, "1 minute<"), (None, "No")])
def test_status_rounds_minutes_up(
    client: FlaskClient, control: FakeControl, seconds: int | None, shown: str
) -> None:
    control.clients[PHONE].update(state="authorized", seconds_remaining=seconds)
    assert shown in get(client, "/status").text


def test_status_when_captive(client: FlaskClient) -> None:
    page = get(client, "/status?welcome=1")
    assert "Not authorized" in page.text
    assert "now online" not in page.text
    assert 'action="/logout"' not in page.text


def test_status_when_gateway_down_is_503(client: FlaskClient, control: FakeControl) -> None:
    control.fail = ControlError("the gateway did not answer in time")
    assert get(client, "/status").status_code == 503


def test_logout_deauthorizes_and_says_so(client: FlaskClient, control: FakeControl) -> None:
    accept(client)
    resp = post(client, "/logout", {"csrf_token": csrf(client, "/status")})
    assert resp.status_code == 303
    assert resp.headers["Location"] == "/?logged_out=1"
    assert control.reasons == ["logout"]
    assert control.ops("deauth") == [PHONE]
    assert control.clients[PHONE]["state"] == "captive"
    assert "You are logged out" in get(client, resp.headers["Location"]).text


def test_logout_twice_is_still_logged_out(client: FlaskClient, control: FakeControl) -> None:
    token = csrf(client)
    resp = post(client, "/logout", {"csrf_token": token})  # already captive
    assert resp.status_code == 303
    assert resp.headers["Location"] == "/?logged_out=1"


def test_logout_without_csrf_is_refused(client: FlaskClient, control: FakeControl) -> None:
    accept(client)
    assert post(client, "/logout", {}).status_code == 400
    assert control.ops("deauth") == []
    assert control.clients[PHONE]["state"] == "authorized"


def test_logout_when_gateway_down_is_503(client: FlaskClient, control: FakeControl) -> None:
    token = csrf(client)
    control.fail = ControlError("the gateway is not running (no control socket at /x)")
    assert post(client, "/logout", {"csrf_token": token}).status_code == 503


def test_unknown_page_is_a_plain_404(client: FlaskClient) -> None:
    resp = get(client, "/nope")
    assert resp.status_code == 404
    assert 'href="/"' in resp.text
    assert resp.headers["X-Frame-Options"] == "DENY"


# -- secret key ----------------------------------------------------------------------------


def test_secret_key_is_created_once_with_mode_0600(tmp_path: Any) -> None:
    path = tmp_path / "portal.key"
    key = load_secret_key(path)
    assert len(key) == 32
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_secret_key(path) == key
    assert [p.name for p in tmp_path.iterdir()] == ["portal.key"]


def test_default_secret_key_lives_in_state_dir(
    tmp_path: Any, make_config: MakeConfig, control: FakeControl
) -> None:
    config = make_config()
    app = create_app({"PLAZA_CONFIG": config, "CONTROL": control})
    assert app.config["SECRET_KEY"] == (tmp_path / "portal.key").read_bytes()
