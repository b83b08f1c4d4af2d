"""The merchant dashboard: sign-in, CSRF, redirects, throttling, tenancy, figures, editor.

Every test runs on SQLite and PostgreSQL (conftest). Figures are checked twice: in the query
functions (exact numbers from a hand-made day of usage and presence) and in the rendered page
(the same numbers in the SVG's titles, data-value attributes and tiles).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from cloud import create_app
from cloud import db as cloud_db
from cloud.accounts import create_merchant, create_venue
from cloud.dashboard import charts, stats
from cloud.dashboard.editor import parse_garden
from cloud.dashboard.ratelimit import LoginLimiter
from cloud.dashboard.security import safe_next
from cloud.dashboard.views import mask_mac
from cloud.models import ClaimCode, Command, PresenceEvent, SignInFailure, UsageRecord, Venue
from cloud.venue_config import DEFAULT_CONFIG, MAX_GARDEN_DOMAINS, ConfigError, validate_config
from gateway.garden.venue import cloud_domains
from gateway.stations.policy import Policy, PolicyError, verify
from tests.cloud.conftest import Router, enrol, new_claim
from tests.cloud.dashboard_helpers import (
    CSRF_RE,
    EMAIL,
    LOGIN,
    PASSWORD,
    csrf,
    editor_form,
    sign_in,
    text,
)
from tests.conftest import FakeClock

OTHER_EMAIL, OTHER_PASSWORD = "boss@bistro.example", "correct horse battery"

# The seeded day: midnight UTC before the fake clock's 1_800_000_000 (08:00 that day).
MIDNIGHT = 1_799_971_200.0
DAY = "2027-01-15"
H = 3600.0
MAC_A, MAC_B, MAC_C, MAC_D = (f"02:aa:bb:cc:dd:{n:02x}" for n in (10, 11, 12, 13))


# -- helpers -------------------------------------------------------------------------------


@pytest.fixture
def other_venue(app: Flask, clock: FakeClock) -> Venue:
    """A second merchant's venue, for the tenancy tests."""
    with cloud_db.session(app) as db:
        merchant = create_merchant(db, "Bistro Due", OTHER_EMAIL, OTHER_PASSWORD, clock())
        venue = create_venue(db, merchant.id, "Bistro Due Harbour", clock())
        db.commit()
        return venue


def usage_row(
    router: Router,
    key: str,
    session: str,
    mac: str,
    started: float,
    start: float,
    end: float,
    up: int,
    down: int,
    venue_id: str | None = None,
) -> UsageRecord:
    return UsageRecord(
        device_id=router.device_id,
        venue_id=venue_id or router.venue_id,
        received_at=end,
        key=key,
        session_id=session,
        seq=0,
        mac=mac,
        ip="10.0.0.2",
        started_at=started,
        period_start=start,
        period_end=end,
        final=False,
        reason=None,
        bytes_up=up,
        packets_up=1,
        bytes_down=down,
        packets_down=1,
        total_bytes_up=up,
        total_bytes_down=down,
    )


def presence_row(router: Router, key: str, kind: str, mac: str, at: float) -> PresenceEvent:
    return PresenceEvent(
        device_id=router.device_id, venue_id=router.venue_id, key=key, kind=kind, mac=mac, at=at
    )


@pytest.fixture
def seeded(
    app: Flask, router: Router, client: FlaskClient, clock: FakeClock, other_venue: Venue
) -> Router:
    """One hand-made day at the router's venue (times as offsets from MIDNIGHT):

    A: session 01:00-01:25 (3 records, 100 up/1000 down each), join 01:00, leave 01:30;
       session 05:00-05:03 (7/70), join 05:00, leave 05:05; used the Wi-Fi 3 days before.
    B: session 01:50-02:10 (records ending 01:55 and 02:10, 50/500 each); online 40 days
       before (outside the 30-day lookback: not "returning").
    C: session 06:00-08:00, one record ending 08:00 (= now), 1 MB up / 5 MB down.
    D: joined 03:15, no leave, no usage; joined 10 days before.
    Plus a router at another merchant's venue with traffic in the same hours (must not count).
    """
    other = enrol(client, clock, new_claim(app, other_venue.id, clock()), hostname="other")
    m = MIDNIGHT
    rows: list[Any] = [
        usage_row(router, "a1", "sa", MAC_A, m + H, m + H, m + H + 300, 100, 1000),
        usage_row(router, "a2", "sa", MAC_A, m + H, m + H + 300, m + H + 900, 100, 1000),
        usage_row(router, "a3", "sa", MAC_A, m + H, m + H + 900, m + H + 1500, 100, 1000),
        usage_row(router, "a4", "sa2", MAC_A, m + 5 * H, m + 5 * H, m + 5 * H + 180, 7, 70),
        usage_row(
            router, "a0", "old-a", MAC_A, m - 3 * 86400, m - 3 * 86400, m - 3 * 86400 + 60, 1, 1
        ),
        usage_row(router, "b1", "sb", MAC_B, m + H + 3000, m + H + 3000, m + H + 3300, 50, 500),
        usage_row(router, "b2", "sb", MAC_B, m + H + 3000, m + 2 * H, m + 2 * H + 600, 50, 500),
        usage_row(
            router, "b0", "old-b", MAC_B, m - 40 * 86400, m - 40 * 86400, m - 40 * 86400 + 60, 1, 1
        ),
        usage_row(router, "c1", "sc", MAC_C, m + 6 * H, m + 6 * H, m + 8 * H, 1_000_000, 5_000_000),
        presence_row(router, "j-a1", "join", MAC_A, m + H),
        presence_row(router, "l-a1", "leave", MAC_A, m + H + 1800),
        presence_row(router, "j-a2", "join", MAC_A, m + 5 * H),
        presence_row(router, "l-a2", "leave", MAC_A, m + 5 * H + 300),
        presence_row(router, "j-d1", "join", MAC_D, m + 3 * H + 900),
        presence_row(router, "j-d0", "join", MAC_D, m - 10 * 86400),
        # The other merchant's venue: same hours, other MACs and one of ours.
        usage_row(
            other,
            "x1",
            "sx",
            "02:ff:00:00:00:01",
            m + H,
            m + H,
            m + H + 600,
            9999,
            99999,
            venue_id=other_venue.id,
        ),
        usage_row(
            other,
            "x2",
            "sx2",
            MAC_C,
            m + 8 * H,
            m + 8 * H,
            m + 8 * H + 60,
            1,
            1,
            venue_id=other_venue.id,
        ),
        presence_row(other, "j-x1", "join", "02:ff:00:00:00:02", m + H),
    ]
    rows[-1].venue_id = other_venue.id
    with cloud_db.session(app) as db:
        db.add_all(rows)
        db.commit()
    assert clock() == MIDNIGHT + 8 * H
    return router


# -- sign-in, session, CSRF ----------------------------------------------------------------


def test_sign_in_with_the_right_password_reaches_the_venues(client: FlaskClient, venue: Venue):
    response = sign_in(client)
    assert response.status_code == 303
    assert response.headers["Location"] == "/dashboard/"
    home = client.get("/dashboard/")
    assert home.status_code == 200
    assert "Cafe Uno Main St" in text(home)
    assert f"/dashboard/venues/{venue.id}" in text(home)


def test_wrong_password_and_unknown_email_are_refused_alike(client: FlaskClient, venue):
    wrong = sign_in(client, password="hunter2hunter3")
    unknown = sign_in(client, email="nobody@cafe.example")
    for response in (wrong, unknown):
        assert response.status_code == 401
        assert "do not match" in text(response)
    assert client.get("/dashboard/").status_code == 302  # still signed out


def test_signed_out_pages_send_to_sign_in_with_next(client: FlaskClient, venue: Venue):
    response = client.get(f"/dashboard/venues/{venue.id}?day={DAY}")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/dashboard/login?next=")
    after = sign_in(client, next=f"/dashboard/venues/{venue.id}?day={DAY}")
    assert after.headers["Location"] == f"/dashboard/venues/{venue.id}?day={DAY}"


def test_session_cookie_flags(client: FlaskClient, venue: Venue):
    cookie = sign_in(client).headers["Set-Cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie
    assert "Path=/dashboard" in cookie
    assert "Secure" not in cookie  # plain http on 127.0.0.1
    secure = FlaskClient(client.application, use_cookies=True)
    token = CSRF_RE.search(text(secure.get(LOGIN, base_url="https://cloud.example"))).group(1)
    over_tls = secure.post(
        LOGIN,
        base_url="https://cloud.example",
        data={"email": EMAIL, "password": PASSWORD, "csrf_token": token},
    )
    assert over_tls.status_code == 303
    assert "Secure" in over_tls.headers["Set-Cookie"]


def test_sign_out_ends_the_session(signed_in: FlaskClient, venue: Venue):
    assert signed_in.get(f"/dashboard/venues/{venue.id}").status_code == 200
    token = csrf(signed_in, "/dashboard/")
    assert signed_in.post("/dashboard/logout", data={"csrf_token": token}).status_code == 303
    assert signed_in.get(f"/dashboard/venues/{venue.id}").status_code == 302


def test_session_expires_after_twelve_hours(signed_in: FlaskClient, clock: FakeClock):
    assert signed_in.get("/dashboard/").status_code == 200
    clock.advance(12 * 3600)
    assert signed_in.get("/dashboard/").status_code == 302


@pytest.mark.parametrize("token", [None, "", "forged-token"])
def test_sign_in_without_the_right_csrf_token_is_400(client: FlaskClient, venue, token):
    csrf(client)  # the session has a token; the form does not carry it
    data = {"email": EMAIL, "password": PASSWORD}
    if token is not None:
        data["csrf_token"] = token
    response = client.post(LOGIN, data=data)
    assert response.status_code == 400
    assert "expired" in text(response)
    assert client.get("/dashboard/").status_code == 302


@pytest.mark.parametrize("token", [None, "wrong"])
def test_signed_in_forms_without_the_right_csrf_token_are_400(
    app: Flask, signed_in: FlaskClient, venue: Venue, router: Router, token
):
    base = f"/dashboard/venues/{venue.id}"
    data = {} if token is None else {"csrf_token": token}
    for path, form in (
        (f"{base}/editor", {"name": "Hacked", "colour": "#000000", "base_version": "1"}),
        (f"{base}/push", {}),
        (f"{base}/claims", {}),
        ("/dashboard/logout", {}),
    ):
        assert signed_in.post(path, data={**form, **data}).status_code == 400, path
    with cloud_db.session(app) as db:
        assert db.get(Venue, venue.id).config_version == 1
        assert db.scalar(select(func.count()).select_from(Command)) == 0
        assert db.scalar(select(func.count()).select_from(ClaimCode)) == 1  # the router's
    assert signed_in.get("/dashboard/").status_code == 200  # logout was refused too


# -- open redirects ------------------------------------------------------------------------

EVIL_NEXT = [
    "https://evil.example/",
    "//evil.example/dashboard/",
    "/\\evil.example",
    "/\t/evil.example",
    "\\\\evil.example",
    "javascript:alert(1)",
    "/dashboard/../api/v1/device/config",
    "/api/v1/device/config",
    "http:/dashboard/",
    "dashboard/",
]


@pytest.mark.parametrize("target", EVIL_NEXT)
def test_next_never_leaves_the_dashboard(client: FlaskClient, venue: Venue, target: str):
    response = sign_in(client, next=target)
    assert response.status_code == 303
    assert response.headers["Location"] == "/dashboard/"
    signed_in = client.get(LOGIN, query_string={"next": target})  # already signed in
    assert signed_in.headers["Location"] == "/dashboard/"


def test_safe_next_keeps_dashboard_paths():
    assert safe_next("/dashboard/venues/ven_1?day=2027-01-15") == (
        "/dashboard/venues/ven_1?day=2027-01-15"
    )
    assert safe_next("/dashboard") == "/dashboard"
    assert all(safe_next(t) == "/dashboard/" for t in EVIL_NEXT)


# -- rate limiting -------------------------------------------------------------------------


def test_sign_in_is_throttled_per_address_and_email(
    client: FlaskClient, venue, other_venue, clock: FakeClock
):
    for _ in range(5):
        assert sign_in(client, password="wrong password").status_code == 401
    throttled = sign_in(client)  # even the right password waits now
    assert throttled.status_code == 429
    assert int(throttled.headers["Retry-After"]) == 15 * 60
    assert client.get("/dashboard/").status_code == 302
    # Another e-mail from the same address is its own key; another address too, once the
    # account's own back-off (2 s after five failures: tests/cloud/test_sign_in.py) is over.
    other = FlaskClient(client.application, use_cookies=True)
    assert sign_in(other, OTHER_EMAIL, OTHER_PASSWORD).status_code == 303
    elsewhere = FlaskClient(client.application, use_cookies=True)
    token = CSRF_RE.search(text(elsewhere.get(LOGIN))).group(1)
    form = {"email": EMAIL, "password": PASSWORD, "csrf_token": token}
    away = {"REMOTE_ADDR": "192.0.2.7"}
    assert elsewhere.post(LOGIN, environ_base=away, data=form).status_code == 429
    clock.advance(2)
    assert elsewhere.post(LOGIN, environ_base=away, data=form).status_code == 303
    clock.advance(15 * 60 - 2)
    assert sign_in(client).status_code == 303


def test_success_resets_the_failure_count(client: FlaskClient, venue: Venue):
    for _ in range(4):
        assert sign_in(client, password="wrong password").status_code == 401
    assert sign_in(client).status_code == 303
    fresh = FlaskClient(client.application, use_cookies=True)
    for _ in range(4):
        assert sign_in(fresh, password="wrong password").status_code == 401
    assert sign_in(fresh).status_code == 303


def test_every_instance_counts_the_same_failures(
    app: Flask, db_url: str, tmp_path: Path, clock: FakeClock, venue: Venue
):
    """Two cloud instances on one database (as behind a load balancer): guesses spread over
    both are counted together, and the table keeps no address or e-mail in the clear."""
    second = create_app({**{k: app.config[k] for k in ("CLOUD_KEY", "SECRET_KEY", "CLOCK")},
                         "DATABASE_URL": db_url, "INSTANCE_PATH": str(tmp_path / "i2"),
                         "TESTING": True})  # fmt: skip
    try:
        one, two = app.test_client(), second.test_client()
        for client in (one, two, one, two, one):
            assert sign_in(client, password="wrong password").status_code == 401
        assert sign_in(two).status_code == 429  # five failures between them
        with cloud_db.session(app) as db:
            rows = db.execute(select(SignInFailure)).scalars().all()
            assert [r.failures for r in rows] == [5, 5]  # this e-mail, and this client's budget
            assert all(EMAIL not in r.key and "127.0.0.1" not in r.key for r in rows)
        clock.advance(15 * 60)
        assert sign_in(one).status_code == 303
        with cloud_db.session(app) as db:  # a success clears the pair's key
            pair = LoginLimiter.key("127.0.0.1", EMAIL)
            assert db.get(SignInFailure, pair) is None
    finally:
        cloud_db.engine(second).dispose()


# -- tenancy -------------------------------------------------------------------------------


def venue_routes(venue_id: str) -> list[tuple[str, str, dict[str, str]]]:
    base = f"/dashboard/venues/{venue_id}"
    edit = {"name": "Taken over", "colour": "#000000", "base_version": "1", **HIJACK_POLICY,
            "garden": "evil.example\n*.cdn.evil.example"}  # fmt: skip
    return [
        ("GET", base, {}),
        ("GET", f"{base}?day={DAY}", {}),
        ("GET", f"{base}/editor", {}),
        ("POST", f"{base}/editor", edit),
        ("POST", f"{base}/push", {}),
        ("POST", f"{base}/claims", {}),
    ]


HIJACK_POLICY = {"session_minutes": "10080", "idle_minutes": "0", "quota_total_mb": "0",
                 "rate_down_kbit": "0", "rate_up_kbit": "0"}  # fmt: skip


def test_another_merchants_venue_is_404_on_every_route(
    app: Flask, client: FlaskClient, venue: Venue, other_venue: Venue, router: Router
):
    assert sign_in(client, OTHER_EMAIL, OTHER_PASSWORD).status_code == 303
    token = csrf(client, "/dashboard/")
    for venue_id in (venue.id, "ven_0000000000000000"):
        for method, path, form in venue_routes(venue_id):
            data = {**form, "csrf_token": token} if method == "POST" else None
            response = client.open(path, method=method, data=data)
            assert response.status_code == 404, (method, path)
            assert "Cafe Uno" not in text(response)
    home = text(client.get("/dashboard/"))
    assert "Bistro Due Harbour" in home and "Cafe Uno" not in home
    with cloud_db.session(app) as db:
        assert db.get(Venue, venue.id).config_version == 1
        assert db.get(Venue, venue.id).config["branding"]["name"] == "Cafe Uno Main St"
        assert db.get(Venue, venue.id).config["policy"] == DEFAULT_CONFIG["policy"]
        assert db.get(Venue, venue.id).config["garden"] == {"domains": []}
        assert db.scalar(select(func.count()).select_from(Command)) == 0
        assert db.scalar(select(func.count()).select_from(ClaimCode)) == 1  # the router's own
    # The owner reaches each of them (the 404s above were about ownership, not the routes).
    owner = FlaskClient(app, use_cookies=True)
    assert sign_in(owner).status_code == 303
    token = csrf(owner, "/dashboard/")
    for method, path, form in venue_routes(venue.id):
        data = {**form, "csrf_token": token} if method == "POST" else None
        assert owner.open(path, method=method, data=data).status_code in (200, 303), path


# -- figures -------------------------------------------------------------------------------


def test_visitors_per_hour(app: Flask, seeded: Router):
    with cloud_db.session(app) as db:
        per_hour = stats.visitors_per_hour(db, seeded.venue_id, stats.Window.day(MIDNIGHT))
    assert per_hour[:9] == [0, 2, 1, 1, 0, 1, 0, 0, 1]
    assert sum(per_hour[9:]) == 0


def test_data_per_hour(app: Flask, seeded: Router):
    with cloud_db.session(app) as db:
        up, down = stats.data_per_hour(db, seeded.venue_id, stats.Window.day(MIDNIGHT))
    assert up[:9] == [0, 350, 50, 0, 0, 7, 0, 0, 1_000_000]
    assert down[:9] == [0, 3500, 500, 0, 0, 70, 0, 0, 5_000_000]
    assert sum(up[9:]) == sum(down[9:]) == 0


def test_dwell_distribution(app: Flask, seeded: Router):
    with cloud_db.session(app) as db:
        dwell = stats.dwell(db, seeded.venue_id, stats.Window.day(MIDNIGHT))
    # 25 min and 20 min (15-30), 3 min (< 5), 120 min (> 2 h; a bucket's lower edge is in it)
    assert dwell.counts == [1, 0, 2, 0, 0, 1]
    assert dwell.sessions == 4
    assert dwell.mean_seconds == pytest.approx((25 + 20 + 3 + 120) * 60 / 4)


def test_returning_rate(app: Flask, seeded: Router):
    with cloud_db.session(app) as db:
        day = stats.returning(db, seeded.venue_id, stats.Window.day(MIDNIGHT))
        # The day after: only C's record at the other venue... and nothing here: 0 of 0.
        after = stats.returning(db, seeded.venue_id, stats.Window.day(MIDNIGHT + 86400))
        # 3 days before: A's first visit, nobody before it.
        before = stats.returning(db, seeded.venue_id, stats.Window.day(MIDNIGHT - 3 * 86400))
    assert (day.visitors, day.returning) == (4, 2)  # A (usage) and D (join); B too long ago
    assert day.rate == 0.5
    assert (after.visitors, after.returning, after.rate) == (0, 0, 0.0)
    assert (before.visitors, before.returning) == (1, 0)


def test_live_clients(app: Flask, seeded: Router, clock: FakeClock):
    with cloud_db.session(app) as db:
        live = stats.live_clients(db, seeded.venue_id, clock())
        later = stats.live_clients(db, seeded.venue_id, clock() + 13 * H)
    assert [c.mac for c in live] == [MAC_C, MAC_D]  # A left, B's usage is hours old
    c, d = live
    assert (c.bytes_up, c.bytes_down, c.last_seen, c.joined_at) == (
        1_000_000,
        5_000_000,
        clock(),
        None,
    )
    assert (d.bytes_up, d.bytes_down, d.joined_at) == (0, 0, MIDNIGHT + 3 * H + 900)
    assert later == []  # D's join is older than the live window by then


def test_venue_page_shows_the_figures(signed_in: FlaskClient, seeded: Router, clock):
    page = signed_in.get(f"/dashboard/venues/{seeded.venue_id}?day={DAY}")
    assert page.status_code == 200
    html = text(page)
    assert "<script" not in html
    assert "2027-01-15 00:00 to 2027-01-16 00:00 UTC" in html
    visitors = html.split('id="chart-visitors"')[1].split("</figure>")[0]
    assert re.findall(r'data-value="(\d+)"><title>([^<]+)</title>', visitors) == [
        ("2", "01:00: 2"),
        ("1", "02:00: 1"),
        ("1", "03:00: 1"),
        ("1", "05:00: 1"),
        ("1", "08:00: 1"),
    ]
    dwell = html.split('id="chart-dwell"')[1].split("</figure>")[0]
    assert re.findall(r'data-value="(\d+)"', dwell) == ["1", "2", "1"]
    assert "4 sessions, 42 min on average." in dwell
    returning = html.split('id="chart-returning"')[1].split("</figure>")[0]
    assert "50% of 4 visitors had been here before." in returning
    data = html.split('id="chart-data"')[1].split("</figure>")[0]
    assert "08:00: down 5.0 MB" in data and "08:00: up 1.0 MB" in data
    assert re.search(r'id="tile-visitors">4<', html)
    assert re.search(r'id="tile-returning">50%<', html)
    assert re.search(r'id="tile-dwell">42 min<', html)
    assert re.search(r'id="tile-live">2<', html)
    # Live clients: masked MACs only.
    assert mask_mac(MAC_C) in html and mask_mac(MAC_D) in html
    for mac in (MAC_A, MAC_B, MAC_C, MAC_D):
        assert mac not in html
    assert "02:ff:00" not in html  # nothing from the other venue


def test_venue_page_default_window_and_bad_day(signed_in: FlaskClient, seeded: Router):
    html = text(signed_in.get(f"/dashboard/venues/{seeded.venue_id}"))
    assert "2027-01-14 09:00 to 2027-01-15 09:00 UTC" in html  # the 24 h up to this hour
    bad = signed_in.get(f"/dashboard/venues/{seeded.venue_id}?day=2027-13-45")
    assert bad.status_code == 200
    assert "That is not a date" in text(bad)


def test_security_headers_on_every_page(signed_in: FlaskClient, venue: Venue):
    for path in (
        "/dashboard/",
        f"/dashboard/venues/{venue.id}",
        f"/dashboard/venues/{venue.id}/editor",
        LOGIN,
    ):
        response = signed_in.get(path)
        csp = response.headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp and "script-src" not in csp, path
        assert "'unsafe-inline'" not in csp
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["Cache-Control"] == "no-store"
        assert "<script" not in text(response) and " style=" not in text(response), path
    css = signed_in.get("/dashboard/static/dashboard.css")
    assert css.status_code == 200 and b".chart .bar.s0" in css.data


def test_devices_online_and_offline(
    app: Flask, signed_in: FlaskClient, router: Router, clock: FakeClock
):
    health = {
        "uptime": 7200,
        "load": [0.42, 0.3, 0.2],
        "mem_used_bytes": 1,
        "mem_total_bytes": 2,
        "clients": {"captive": 3, "authorized": 7},
        "version": "0.4.1",
        "config_version": 1,
        "outbox_backlog": 0,
    }
    assert router.post("/api/v1/device/heartbeat", health).status_code == 200
    page = text(signed_in.get(f"/dashboard/venues/{router.venue_id}"))
    row = page.split(f'id="device-{router.device_id}"')[1].split("</tr>")[0]
    assert "online" in row and "offline" not in row
    assert "0.4.1" in row and "7 online, 3 at the splash" in row
    assert "2 h 00 min" in row and "0.42" in row
    clock.advance(89)
    with cloud_db.session(app) as db:
        assert stats.devices(db, router.venue_id, clock())[0].online
    clock.advance(1)  # 90 s = three missed heartbeats
    page = text(signed_in.get(f"/dashboard/venues/{router.venue_id}"))
    row = page.split(f'id="device-{router.device_id}"')[1].split("</tr>")[0]
    assert "offline" in row
    assert "0 of 1 router online" in text(signed_in.get("/dashboard/"))


# -- editor --------------------------------------------------------------------------------


def test_editor_save_bumps_the_version_and_reaches_the_router(
    app: Flask, signed_in: FlaskClient, router: Router, venue: Venue
):
    form = editor_form(signed_in, venue.id)
    assert form["base_version"] == "1" and form["name"] == "Cafe Uno Main St"
    form.update(
        {
            "name": "Cafe Uno",
            "colour": "#aa3300",
            "terms": "Be nice.",
            "new-title": "Two for one",
            "new-body": "Until noon",
            "new-url": "https://cafe.example/offer",
        }
    )
    saved = signed_in.post(f"/dashboard/venues/{venue.id}/editor", data=form)
    assert saved.status_code == 303
    page = text(signed_in.get(saved.headers["Location"]))
    assert "Saved as version 2" in page
    config = router.get("/api/v1/device/config").get_json()
    assert config["version"] == 2
    assert config["config"]["branding"] == {  # the editor writes language maps
        "name": {"en": "Cafe Uno"},
        "logo_url": "",
        "colour": "#aa3300",
        "terms": {"en": "Be nice."},
    }
    [offer] = config["config"]["offers"]
    assert (offer["title"], offer["body"], offer["url"]) == (
        {"en": "Two for one"},
        {"en": "Until noon"},
        "https://cafe.example/offer",
    )
    assert config["config"]["policy"]["session_minutes"] == 60  # untouched by the editor
    # Edit the offer, then remove it.
    form = editor_form(signed_in, venue.id)
    assert form["offer-0-id"] == offer["id"]
    form["offer-0-title"] = "Three for two"
    assert signed_in.post(f"/dashboard/venues/{venue.id}/editor", data=form).status_code == 303
    config = router.get("/api/v1/device/config").get_json()
    assert config["version"] == 3
    assert [(o["id"], o["title"]) for o in config["config"]["offers"]] == [
        (offer["id"], {"en": "Three for two"})
    ]
    form = editor_form(signed_in, venue.id)
    form["offer-0-remove"] = "1"
    assert signed_in.post(f"/dashboard/venues/{venue.id}/editor", data=form).status_code == 303
    config = router.get("/api/v1/device/config").get_json()
    assert (config["version"], config["config"]["offers"]) == (4, [])


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        (
            {"new-title": "Deal", "new-url": "http://cafe.example/"},
            "new-url",
            "New offer link: must be an https:// URL",
        ),
        ({"new-body": "a body without a title"}, "new-title", "New offer title: must be text"),
        ({"colour": "red"}, "colour", "Colour: must be #rrggbb"),
        ({"name": "   "}, "name", "Venue name: must be text of 1 to 80"),
        ({"logo_url": "javascript:alert(1)"}, "logo_url", "Logo URL: must be an https:// URL"),
    ],
)
def test_editor_shows_validation_errors_and_keeps_input(
    app: Flask, signed_in: FlaskClient, venue: Venue, change, field, message
):
    form = {**editor_form(signed_in, venue.id), **change}
    response = signed_in.post(f"/dashboard/venues/{venue.id}/editor", data=form)
    assert response.status_code == 400
    html = text(response)
    assert message in html
    assert re.search(rf'name="{field}"[^>]*aria-invalid="true"', html), field
    for value in change.values():
        if value.strip():
            assert value.replace('"', "&#34;") in html or value in html  # the input is kept
    with cloud_db.session(app) as db:
        assert db.get(Venue, venue.id).config_version == 1


def test_editor_offer_row_errors_point_at_the_row(signed_in: FlaskClient, venue: Venue, app):
    form = {**editor_form(signed_in, venue.id), "new-title": "First"}
    assert signed_in.post(f"/dashboard/venues/{venue.id}/editor", data=form).status_code == 303
    form = {**editor_form(signed_in, venue.id), "new-title": "Second"}
    assert signed_in.post(f"/dashboard/venues/{venue.id}/editor", data=form).status_code == 303
    form = editor_form(signed_in, venue.id)
    form["offer-1-url"] = "ftp://files.example/"
    response = signed_in.post(f"/dashboard/venues/{venue.id}/editor", data=form)
    assert response.status_code == 400
    assert "Offer 2 link: must be an https:// URL" in text(response)
    assert re.search(r'name="offer-1-url"[^>]*aria-invalid="true"', text(response))


def test_editor_refuses_a_save_based_on_an_old_version(
    app: Flask, signed_in: FlaskClient, venue: Venue
):
    stale = editor_form(signed_in, venue.id)
    fresh = {**editor_form(signed_in, venue.id), "name": "Saved elsewhere"}
    assert signed_in.post(f"/dashboard/venues/{venue.id}/editor", data=fresh).status_code == 303
    stale["name"] = "My stale edit"
    response = signed_in.post(f"/dashboard/venues/{venue.id}/editor", data=stale)
    assert response.status_code == 409
    assert "changed elsewhere" in text(response) and "My stale edit" in text(response)
    assert 'name="base_version" value="2"' in text(response)  # saving again now works
    with cloud_db.session(app) as db:
        assert db.get(Venue, venue.id).config["branding"]["name"] == {"en": "Saved elsewhere"}


def test_editor_saves_session_policy_and_walled_garden(
    app: Flask, signed_in: FlaskClient, router: Router, venue: Venue
):
    html = text(signed_in.get(f"/dashboard/venues/{venue.id}/editor"))
    assert re.search(r'name="session_minutes" type="number"[^>]*min="1" max="10080"', html)
    assert re.search(r'name="rate_down_kbit" type="number"[^>]*min="0" max="100000000"', html)
    assert "keep the limits they logged in with" in html and "0 means no limit" in html
    assert "wallet's own sites are always included" in html
    form = editor_form(signed_in, venue.id)
    assert (form["session_minutes"], form["idle_minutes"], form["garden"]) == ("60", "15", "")
    form.update(
        {
            "session_minutes": " 45 ",
            "idle_minutes": "10",
            "quota_total_mb": "500",
            "rate_down_kbit": "8000",
            "rate_up_kbit": "0",
            "garden": "\r\n  Menu.Cafe.Example.  \r\n\r\n*.PAY.example\n\tmenu.cafe.example\r\n \n",
        }
    )
    saved = signed_in.post(f"/dashboard/venues/{venue.id}/editor", data=form)
    assert saved.status_code == 303
    assert "Saved as version 2" in text(signed_in.get(saved.headers["Location"]))
    config = router.get("/api/v1/device/config").get_json()
    assert config["version"] == 2
    assert config["config"]["policy"] == {
        "session_minutes": 45,
        "idle_minutes": 10,
        "quota_total_mb": 500,
        "rate_down_kbit": 8000,
        "rate_up_kbit": 0,
    }
    assert config["config"]["garden"] == {"domains": ["menu.cafe.example", "*.pay.example"]}
    assert cloud_domains(config["config"]["garden"]) == ["menu.cafe.example", "*.pay.example"]
    assert config["config"]["branding"]["name"] == {"en": "Cafe Uno Main St"}  # the rest kept
    # The editor shows what was stored, and saving it unchanged stores the same again.
    form = editor_form(signed_in, venue.id)
    assert (form["session_minutes"], form["quota_total_mb"]) == ("45", "500")
    assert form["garden"] == "menu.cafe.example\n*.pay.example"
    assert signed_in.post(f"/dashboard/venues/{venue.id}/editor", data=form).status_code == 303
    config = router.get("/api/v1/device/config").get_json()
    assert config["version"] == 3
    assert config["config"]["garden"]["domains"] == ["menu.cafe.example", "*.pay.example"]
    # Emptying the garden is allowed.
    form = {**editor_form(signed_in, venue.id), "garden": "\r\n  \r\n"}
    assert signed_in.post(f"/dashboard/venues/{venue.id}/editor", data=form).status_code == 303
    assert router.get("/api/v1/device/config").get_json()["config"]["garden"] == {"domains": []}


def test_editor_garden_takes_the_maximum_after_dropping_duplicates(
    app: Flask, signed_in: FlaskClient, venue: Venue
):
    names = [f"h{i}.example" for i in range(MAX_GARDEN_DOMAINS)]
    garden = "\n".join(names + [n.upper() for n in names[:20]])  # 220 lines, 200 names
    form = {**editor_form(signed_in, venue.id), "garden": garden}
    assert signed_in.post(f"/dashboard/venues/{venue.id}/editor", data=form).status_code == 303
    with cloud_db.session(app) as db:
        assert db.get(Venue, venue.id).config["garden"]["domains"] == names


LONG_NAME = "a" * 300 + ".example"
TOO_MANY = "\n".join(f"h{i}.example" for i in range(MAX_GARDEN_DOMAINS + 1))


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"session_minutes": "abc"}, "session_minutes",
         "Session length: must be a whole number from 1 to 10,080"),
        ({"session_minutes": "0"}, "session_minutes", "Session length: must be a whole number"),
        ({"session_minutes": "10081"}, "session_minutes", "Session length: must be a whole"),
        ({"session_minutes": "  "}, "session_minutes", "Session length: must be a whole number"),
        ({"idle_minutes": "-5"}, "idle_minutes",
         "Idle timeout: must be a whole number from 0 to 10,080"),
        ({"quota_total_mb": "1e3"}, "quota_total_mb",
         "Data per session: must be a whole number from 0 to 10,000,000"),
        ({"quota_total_mb": "12.5"}, "quota_total_mb", "Data per session: must be a whole number"),
        ({"rate_down_kbit": "100000001"}, "rate_down_kbit",
         "Download speed: must be a whole number from 0 to 100,000,000"),
        ({"rate_down_kbit": "9" * 5000}, "rate_down_kbit", "Download speed: must be a whole"),
        ({"rate_up_kbit": "1_000"}, "rate_up_kbit", "Upload speed: must be a whole number"),
        ({"rate_up_kbit": "\u0663"}, "rate_up_kbit", "Upload speed: must be a whole number"),
        ({"idle_minutes": "60"}, "idle_minutes",
         "Idle timeout: must be shorter than the session (60 minutes), or 0 for no idle timeout"),
        ({"session_minutes": "10", "idle_minutes": "15"}, "idle_minutes",
         "Idle timeout: must be shorter than the session (10 minutes)"),
        ({"garden": "shop.test/1.2.3.4"}, "garden",
         "Walled garden: line 1, &#39;shop.test/1.2.3.4&#39;, is not a host name"),
        ({"garden": "shop.test\n*.com"}, "garden",
         "Walled garden: line 2, &#39;*.com&#39;, is not a host name"),
        ({"garden": "shop.test\n*.CO.UK"}, "garden",
         "Walled garden: *.co.uk would open every site under the public suffix co.uk"),
        ({"garden": "cafe.example\rserver=/evil.example/1.2.3.4"}, "garden",
         "Walled garden: line 1, &#39;cafe.example\\rserver=/evil.example/1.2.3.4&#39;, is not"),
        ({"garden": "ok.example\r\nbad host.example"}, "garden",
         "Walled garden: line 2, &#39;bad host.example&#39;, is not a host name"),
        ({"garden": "a.example\x0bb.example"}, "garden", "Walled garden: line 1,"),
        ({"garden": "a.example\u2028b.example"}, "garden", "Walled garden: line 1,"),
        ({"garden": "*.*.example"}, "garden", "Walled garden: line 1,"),
        ({"garden": "<script>alert(1)</script>"}, "garden",
         "Walled garden: line 1, &#39;&lt;script&gt;alert(1)&lt;/script&gt;&#39;, is not"),
        ({"garden": LONG_NAME}, "garden", "Walled garden: line 1, &#39;" + "a" * 59 + "…&#39;"),
        ({"garden": TOO_MANY}, "garden", "Walled garden: at most 200 names; this list has 201"),
        ({"garden": "a" * 60_000}, "garden", "Walled garden: too long; at most 200 names"),
    ],
)  # fmt: skip
def test_editor_refuses_bad_policy_and_garden_input(
    app: Flask, signed_in: FlaskClient, venue: Venue, change, field, message
):
    form = {**editor_form(signed_in, venue.id), **change, "name": "Kept name"}
    response = signed_in.post(f"/dashboard/venues/{venue.id}/editor", data=form)
    assert response.status_code == 400
    html = text(response)
    assert message in html
    assert re.search(rf'name="{field}"[^>]*aria-invalid="true"', html), field
    assert "<script>alert" not in html
    for value in [*change.values(), "Kept name"]:  # the merchant's input is kept
        if field == "garden" and value in change.values():
            kept = html.split('name="garden"')[1].split(">", 1)[1].split("</textarea>")[0]
            assert kept.replace("&lt;", "<").replace("&gt;", ">") == value
        else:
            assert f'value="{value}"' in html
    with cloud_db.session(app) as db:
        stored = db.get(Venue, venue.id)
        assert stored.config_version == 1
        assert stored.config["branding"]["name"] == "Cafe Uno Main St"
        assert stored.config["policy"] == DEFAULT_CONFIG["policy"]
        assert stored.config["garden"] == {"domains": []}


@pytest.mark.parametrize(
    ("missing", "field", "message"),
    [
        ("session_minutes", "session_minutes", "Session length: missing from the form"),
        ("rate_up_kbit", "rate_up_kbit", "Upload speed: missing from the form"),
        ("garden", "garden", "Walled garden: missing from the form"),
    ],
)
def test_editor_refuses_a_form_with_a_field_missing(
    app: Flask, signed_in: FlaskClient, venue: Venue, missing, field, message
):
    form = {**editor_form(signed_in, venue.id), "name": "Kept name"}
    del form[missing]
    response = signed_in.post(f"/dashboard/venues/{venue.id}/editor", data=form)
    assert response.status_code == 400
    html = text(response)
    assert message in html and 'value="Kept name"' in html
    assert re.search(rf'name="{field}"[^>]*aria-invalid="true"', html), field
    with cloud_db.session(app) as db:
        assert db.get(Venue, venue.id).config_version == 1


def test_editor_keeps_policy_and_garden_input_on_a_stale_save(
    app: Flask, signed_in: FlaskClient, venue: Venue
):
    stale = editor_form(signed_in, venue.id)
    fresh = {**editor_form(signed_in, venue.id), "session_minutes": "30"}
    assert signed_in.post(f"/dashboard/venues/{venue.id}/editor", data=fresh).status_code == 303
    stale.update({"session_minutes": "90", "garden": "menu.cafe.example"})
    response = signed_in.post(f"/dashboard/venues/{venue.id}/editor", data=stale)
    assert response.status_code == 409
    html = text(response)
    assert 'name="session_minutes" type="number"' in html and 'value="90"' in html
    assert ">menu.cafe.example</textarea>" in html
    with cloud_db.session(app) as db:
        assert db.get(Venue, venue.id).config["policy"]["session_minutes"] == 30


@pytest.mark.parametrize("session", [1, 10, 60, 10080])
@pytest.mark.parametrize("idle", [0, 1, 9, 10, 11, 59, 60, 61, 10080])
def test_cloud_refuses_the_idle_timeouts_the_router_refuses(session: int, idle: int):
    config = {**DEFAULT_CONFIG, "policy": {**DEFAULT_CONFIG["policy"],
              "session_minutes": session, "idle_minutes": idle}}  # fmt: skip
    try:
        verify(Policy(session_minutes=session, idle_seconds=idle * 60), "cloud policy")
    except PolicyError:
        with pytest.raises(ConfigError, match=r"^policy\.idle_minutes: must be shorter"):
            validate_config(config)
    else:
        assert validate_config(config)["policy"]["idle_minutes"] == idle


def test_parse_garden_lines():
    assert parse_garden("") == []
    assert parse_garden(" \r\n\n\t\n") == []
    assert parse_garden("B.example\r\n\r\nb.example.\n  *.C.example  \nb.EXAMPLE") == [
        "b.example",
        "*.c.example",
    ]
    hostile_lines = (
        "a.example\rb.example",
        "a.example\x00",
        "a.example b.example",
        ".",
        "a.example/x",
        "a.example#x",
        "*",
        "-a.example",
        "\u212aafe.example",
    )
    for hostile in hostile_lines:
        with pytest.raises(ConfigError, match=r"^garden\.domains: line 1, "):
            parse_garden(hostile)


def test_push_issues_refresh_config_to_each_router(
    app: Flask,
    client: FlaskClient,
    signed_in: FlaskClient,
    router: Router,
    venue: Venue,
    clock: FakeClock,
):
    second = enrol(client, clock, new_claim(app, venue.id, clock()), hostname="second")
    token = csrf(signed_in, f"/dashboard/venues/{venue.id}/editor")
    response = signed_in.post(f"/dashboard/venues/{venue.id}/push", data={"csrf_token": token})
    assert response.status_code == 303
    assert "Asked 2 routers to fetch the config now." in text(signed_in.get(response.location))
    for r in (router, second):
        [command] = r.get("/api/v1/device/commands?wait=0").get_json()["commands"]
        assert (command["op"], command["args"], command["device_id"]) == (
            "refresh-config",
            {},
            r.device_id,
        )
    with cloud_db.session(app) as db:
        assert db.scalar(select(func.count()).select_from(Command)) == 2


def test_claim_code_is_shown_once_and_enrols_a_router(
    app: Flask, client: FlaskClient, signed_in: FlaskClient, venue: Venue, clock: FakeClock
):
    token = csrf(signed_in, f"/dashboard/venues/{venue.id}/editor")
    response = signed_in.post(f"/dashboard/venues/{venue.id}/claims", data={"csrf_token": token})
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    code = re.search(r'id="claim-code">([0-9A-Z-]+)<', text(response)).group(1)
    assert code not in text(signed_in.get(f"/dashboard/venues/{venue.id}/editor"))
    router = enrol(client, clock, code, hostname="new-router")
    assert router.venue_id == venue.id
    page = text(signed_in.get(f"/dashboard/venues/{venue.id}"))
    assert "new-router" in page


# -- pure parts ----------------------------------------------------------------------------


def test_bar_chart_geometry():
    chart = charts.bar_chart(
        "t", "T", "s", ["a", "b", "c"], [[0, 5, 10], [0, 5, 0]], ["x", "y"], charts.count
    )
    assert [t.text for t in chart.y_ticks] == ["0", "5", "10"]
    first = next(b for b in chart.bars if b.series == 0)
    tall = next(b for b in chart.bars if b.value == 10)
    assert tall.y == chart.top and tall.y + tall.height == pytest.approx(chart.bottom)
    stacked = [b for b in chart.bars if b.title.startswith("b:")]
    assert [b.title for b in stacked] == ["b: x 5", "b: y 5"]
    assert stacked[1].y + stacked[1].height == pytest.approx(stacked[0].y)  # on top of x
    assert first.value == 5 and first.title == "b: x 5"  # the zeros of "a" draw no bar
    assert charts.nice_ceiling(0) == 1 and charts.nice_ceiling(7) == 10
    assert charts.nice_ceiling(2) == 2 and charts.nice_ceiling(2.1) == 2.5
    assert charts.data_size(5_000_000) == "5.0 MB" and charts.data_size(999) == "999 B"


def test_mask_mac():
    assert mask_mac("02:aa:bb:cc:dd:0a") == "02:••:••:••:dd:0a"
