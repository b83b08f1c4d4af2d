"""The dashboard's sign-in under attack (cloud/dashboard/ratelimit.py, cloud/transport.py):
rotating IPv6 addresses, many networks at one account, a load balancer in front, and the
price of a refused guess. Every test runs on SQLite and PostgreSQL (tests/cloud/conftest)."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from cloud import create_app
from cloud import db as cloud_db
from cloud.dashboard import auth
from cloud.dashboard.ratelimit import (
    ACCOUNT_CAP,
    ACCOUNT_FREE,
    CLIENT_BUDGET,
    account_delay,
    client_of,
)
from cloud.models import Merchant, Venue
from tests.cloud.dashboard_helpers import CSRF_RE, EMAIL, LOGIN, PASSWORD, text
from tests.conftest import FakeClock

OWNER_HOME = "203.0.113.10"  # where the owner signed in before
WRONG = "not the password"


def attempt(
    client: FlaskClient,
    addr: str,
    email: str = EMAIL,
    password: str = PASSWORD,
    headers: dict[str, str] | None = None,
) -> Any:
    """One sign-in from `addr` (the TCP peer), with a fresh CSRF token."""
    page = client.get(LOGIN, environ_base={"REMOTE_ADDR": addr}, headers=headers or {})
    match = CSRF_RE.search(text(page))
    assert match, "no CSRF token"
    return client.post(
        LOGIN,
        data={"email": email, "password": password, "csrf_token": match.group(1)},
        environ_base={"REMOTE_ADDR": addr},
        headers=headers or {},
    )


def v6(net: int, host: int) -> str:
    """Address `host` in the /64 number `net` of 2001:db8::/32."""
    return f"2001:db8:{net >> 16:x}:{net & 0xFFFF:x}::{host:x}"


class HashCounter:
    """Counts password hashes computed: the real check, and the dummy one for unknown e-mails."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import cloud.accounts

        self.calls = 0
        for module in (cloud.accounts, auth):
            real = module.check_password_hash

            def counted(*args: Any, _real: Any = real) -> bool:
                self.calls += 1
                return _real(*args)

            monkeypatch.setattr(module, "check_password_hash", counted)


def test_an_ipv6_64_is_one_client() -> None:
    assert client_of("2001:db8:1:2::1") == client_of("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert client_of("2001:db8:1:3::1") != client_of("2001:db8:1:2::1")
    assert client_of("::ffff:192.0.2.7") == client_of("192.0.2.7") == "192.0.2.7"
    assert client_of("192.0.2.8") != client_of("192.0.2.7")


def test_a_hundred_addresses_of_one_64_are_throttled_as_one_client(
    client: FlaskClient, venue: Venue
) -> None:
    """Each guess from a new address of the same /64, each at another e-mail (so neither the
    per-e-mail nor the per-account limit is what stops it): the client's budget is."""
    answers = [
        attempt(client, v6(7, host), f"guess{host}@cafe.example", WRONG).status_code
        for host in range(1, 101)
    ]
    assert answers == [401] * CLIENT_BUDGET + [429] * (100 - CLIENT_BUDGET)
    # The owner elsewhere is not affected.
    assert attempt(client, v6(8, 1)).status_code == 303


def test_one_email_from_one_64_is_one_pair(client: FlaskClient, venue: Venue) -> None:
    for host in range(1, 6):
        assert attempt(client, v6(9, host), password=WRONG).status_code == 401
    refused = attempt(client, v6(9, 0xBEEF))  # the right password, a fresh address, same /64
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) == 15 * 60


def test_guesses_from_many_64s_at_one_account_back_off_exponentially(
    client: FlaskClient, venue: Venue, clock: FakeClock
) -> None:
    for net in range(ACCOUNT_FREE):
        assert attempt(client, v6(100 + net, 1), password=WRONG).status_code == 401
    waits = []
    for net in range(ACCOUNT_FREE, ACCOUNT_FREE + 12):
        refused = attempt(client, v6(100 + net, 1), password=WRONG)
        assert refused.status_code == 429, net
        wait = int(refused.headers["Retry-After"])
        waits.append(wait)
        clock.advance(wait)
        assert attempt(client, v6(100 + net, 2), password=WRONG).status_code == 401
    assert waits == [int(account_delay(n)) for n in range(ACCOUNT_FREE, ACCOUNT_FREE + 12)]
    assert waits[:4] == [2, 4, 8, 16] and waits[-1] == ACCOUNT_CAP  # doubling, then capped
    # The right password from a new place waits too: it is a guess like any other.
    assert attempt(client, v6(999, 1)).status_code == 429


def test_the_owner_is_not_locked_out_and_is_told(
    client: FlaskClient, app: Flask, venue: Venue, clock: FakeClock
) -> None:
    def browser() -> FlaskClient:
        return FlaskClient(app, use_cookies=True)

    assert attempt(browser(), OWNER_HOME).status_code == 303  # the owner's usual place
    clock.advance(3600)
    guesses = 0
    for net in range(40):  # a guesser on 40 networks, as fast as it is let
        answer = attempt(client, v6(200 + net, 1), password=WRONG)
        guesses += answer.status_code == 401
    assert 0 < guesses < 40  # the back-off held most of them off
    assert attempt(client, v6(300, 1)).status_code == 429  # even the right password, there
    owner = browser()
    assert attempt(owner, OWNER_HOME).status_code == 303  # from the usual place: straight in
    plural = "s" if guesses != 1 else ""
    notice = f"{guesses} failed sign-in{plural} to your account since your last visit"
    assert notice in text(owner.get("/dashboard/"))
    later = browser()  # told once
    assert attempt(later, OWNER_HOME).status_code == 303
    assert "failed sign-in" not in text(later.get("/dashboard/"))
    with cloud_db.session(app) as db:
        assert db.scalar(select(Merchant.failed_sign_ins).where(Merchant.email == EMAIL)) == 0


def test_a_throttled_attempt_computes_no_password_hash(
    client: FlaskClient, venue: Venue, monkeypatch: pytest.MonkeyPatch
) -> None:
    hashes = HashCounter(monkeypatch)
    for _ in range(5):
        assert attempt(client, "192.0.2.50", password=WRONG).status_code == 401
    assert hashes.calls == 5
    assert attempt(client, "192.0.2.50").status_code == 429  # the pair
    assert attempt(client, "192.0.2.50", "nobody@cafe.example", WRONG).status_code == 401
    assert hashes.calls == 6  # the dummy hash for an unknown e-mail, while not throttled
    for n in range(CLIENT_BUDGET):  # the address's budget, at unknown e-mails
        attempt(client, "192.0.2.51", f"n{n}@cafe.example", WRONG)
    before = hashes.calls
    for n in range(10):
        assert attempt(client, "192.0.2.51", f"m{n}@cafe.example", WRONG).status_code == 429
        assert attempt(client, "192.0.2.51").status_code == 429
    assert hashes.calls == before  # not one scrypt for twenty refused attempts


def load_balanced(app: Flask, db_url: str, tmp_path: Path, proxies: int) -> Flask:
    """A second instance on the same database, behind `proxies` proxies."""
    return create_app({**{k: app.config[k] for k in ("CLOUD_KEY", "SECRET_KEY", "CLOCK")},
                       "DATABASE_URL": db_url, "INSTANCE_PATH": str(tmp_path / f"lb{proxies}"),
                       "TESTING": True, "TRUSTED_PROXIES": proxies})  # fmt: skip


BALANCER = "10.0.0.2"  # the TCP peer of every request behind the load balancer


@pytest.mark.parametrize("proxies", [0, 1])
def test_x_forwarded_for_counts_only_from_trusted_proxies(
    app: Flask, db_url: str, tmp_path: Path, venue: Venue, proxies: int
) -> None:
    lb = load_balanced(app, db_url, tmp_path, proxies)
    try:
        owner, guesser = lb.test_client(), lb.test_client()
        home = {"X-Forwarded-For": OWNER_HOME, "X-Forwarded-Proto": "https"}
        assert attempt(owner, BALANCER, headers=home).status_code == 303
        for n in range(5):  # a guesser naming a new address each time
            forged = {"X-Forwarded-For": f"198.51.100.{n}"}
            assert attempt(guesser, BALANCER, password=WRONG, headers=forged).status_code == 401
        again = attempt(guesser, BALANCER, headers={"X-Forwarded-For": "198.51.100.9"})
        back = attempt(FlaskClient(lb, use_cookies=True), BALANCER, headers=home)
        if proxies == 0:
            # The header changes nothing: all of it is one client, the balancer.
            assert again.status_code == 429 and back.status_code == 429
            assert "Strict-Transport-Security" not in back.headers  # "https" not believed
        else:
            # The proxy's word is the client: the guesser's new address is a new pair (the
            # account back-off still holds it), the owner's usual place goes straight in.
            assert again.status_code == 429 and int(again.headers["Retry-After"]) <= 2
            assert back.status_code == 303
            assert back.headers["Strict-Transport-Security"] == "max-age=31536000"
    finally:
        cloud_db.engine(lb).dispose()


def test_a_bad_trusted_proxies_setting_stops_the_start(
    app: Flask, db_url: str, tmp_path: Path
) -> None:
    for bad in ("one", "-1", "11"):
        with pytest.raises(ValueError, match="PLAZA_CLOUD_TRUSTED_PROXIES"):
            load_balanced(app, db_url, tmp_path, bad)  # type: ignore[arg-type]


def test_hsts_only_over_tls(client: FlaskClient, venue: Venue) -> None:
    plain = client.get(LOGIN)
    assert "Strict-Transport-Security" not in plain.headers
    for path in (LOGIN, "/api/v1/push/vapid-public-key", "/no/such/page"):
        secure = client.get(path, base_url="https://cloud.example")
        assert secure.headers["Strict-Transport-Security"] == "max-age=31536000", path
    # A client's own X-Forwarded-Proto is not a proxy's (no trusted proxies by default).
    forged = client.get(LOGIN, headers={"X-Forwarded-Proto": "https"})
    assert "Strict-Transport-Security" not in forged.headers


def test_the_instance_dir_and_database_are_private(tmp_path: Path) -> None:
    from cloud import migrations

    instance = tmp_path / "instance"
    instance.mkdir(mode=0o755)  # made by someone else first, too open
    instance.chmod(0o755)
    url = f"sqlite:///{instance / 'cloud.db'}"
    migrations.upgrade(url)
    app = create_app({"DATABASE_URL": url, "INSTANCE_PATH": str(instance)})
    try:
        assert stat.S_IMODE(instance.stat().st_mode) == 0o700
        assert stat.S_IMODE((instance / "cloud.db").stat().st_mode) == 0o600
        fresh = tmp_path / "fresh" / "instance"
        other = create_app({"DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}",
                            "INSTANCE_PATH": str(fresh)})  # fmt: skip
        cloud_db.engine(other).dispose()
        assert stat.S_IMODE(fresh.stat().st_mode) == 0o700
        assert stat.S_IMODE((tmp_path / "x.db").stat().st_mode) == 0o600
    finally:
        cloud_db.engine(app).dispose()
