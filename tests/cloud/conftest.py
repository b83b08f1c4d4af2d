"""Cloud fixtures: an app on SQLite or PostgreSQL (each test gets a fresh, migrated database),
a merchant with a venue, and `Router`, an enrolled device that signs its requests.

PostgreSQL runs as a private cluster for the session (lab/postgres.py), never a system
service. Its absence is a failure, not a skip: CI installs it, and a silently skipped half of
the suite would hide exactly the dialect bugs these tests exist for. Each test's database is
copied from a template migrated once (CREATE DATABASE ... TEMPLATE), which is much faster than
migrating per test; SQLite does the same with a file copy.
"""

from __future__ import annotations

import itertools
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from cloud import create_app, migrations
from cloud import db as cloud_db
from cloud.accounts import create_merchant, create_venue
from cloud.enrol import create_claim
from cloud.models import Venue
from lab.postgres import PostgresCluster, PostgresUnavailable
from plaza import signing
from tests.cloud.dashboard_helpers import sign_in
from tests.cloud.o2o_helpers import SandboxWallet, check_books, configure_shop, serve_wallet
from tests.conftest import FakeClock
from tests.consent_wallet import PORTAL_HOST, consent_proof, write_public_key

__all__ = ["PORTAL_HOST", "consent_proof"]  # the cloud tests' consent helpers, from one place

BACKENDS = ["sqlite", "postgresql"]
CLOUD_KEY = signing.new_key()
_db_numbers = itertools.count(1)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    try:
        cluster = PostgresCluster(database="plaza_template", durable=False)
    except PostgresUnavailable as exc:
        pytest.fail(f"PostgreSQL is required for the cloud tests: {exc}", pytrace=False)
    try:
        cluster.start()
    except Exception as exc:
        tail = cluster.log_tail()
        cluster.stop()
        pytest.fail(f"could not start a private PostgreSQL cluster: {exc}\n{tail}", pytrace=False)
    try:
        migrations.upgrade(cluster.url)
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cloud-template") / "template.db"
    migrations.upgrade(f"sqlite:///{path}")
    return path


def _pg_admin(cluster: PostgresCluster) -> sa.Engine:
    url = cluster.url.replace("/plaza_template?", "/postgres?")
    return sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)


@pytest.fixture
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh migrated database of the backend the test is parametrized with."""
    backend = getattr(request, "param", "sqlite")
    if backend == "sqlite":
        path = tmp_path / "cloud.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite:///{path}"
        return
    cluster: PostgresCluster = request.getfixturevalue("pg_cluster")
    name = f"plaza_test_{next(_db_numbers)}"
    admin = _pg_admin(cluster)
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE plaza_template'))
    try:
        yield cluster.url.replace("/plaza_template?", f"/{name}?")
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test that uses the database (directly or through app/client) runs on both
    backends, unless it asks for `sqlite_only`."""
    if "db_url" in metafunc.fixturenames and "sqlite_only" not in metafunc.fixturenames:
        metafunc.parametrize("db_url", BACKENDS, indirect=True)


@pytest.fixture
def sqlite_only() -> None:
    """Marks a test as SQLite-only (CLI, file-based behaviour)."""


@pytest.fixture
def cloud(tmp_path: Path) -> list[str]:
    """The `plaza-cloud` global options pointing at a fresh instance dir and SQLite database
    (the command tests run it with tests/cloud/cli_helpers.py's `run`)."""
    return ["--instance", str(tmp_path / "instance"), "--database-url",
            f"sqlite:///{tmp_path / 'cli.db'}"]  # fmt: skip


@pytest.fixture
def app(db_url: str, tmp_path: Path, clock: FakeClock) -> Iterator[Flask]:
    app = create_app(
        {
            "DATABASE_URL": db_url,
            "INSTANCE_PATH": str(tmp_path / "instance"),
            "CLOUD_KEY": CLOUD_KEY,
            "SECRET_KEY": "test",
            "CLOCK": clock,
            "COMMAND_POLL_SECONDS": 0.05,
            "TESTING": True,
            "WALLET_PUBLIC_KEY_FILE": str(write_public_key(tmp_path)),
        }
    )
    yield app
    cloud_db.engine(app).dispose()


def opt_in_event(
    key: str,
    at: float,
    user: str,
    mac: str = "02:00:00:00:00:0b",
    token: str | None = None,
    **override: Any,
) -> dict[str, Any]:
    """A `login` with opt-in as an honest router sends it: the shopper's link and the wallet's
    consent proof for it (override any field to forge)."""
    link = f"https://{PORTAL_HOST}/reconnect/{token or 'tok-' + key}"
    proof = consent_proof(user, link, at)
    event = {"key": key, "kind": "login", "mac": mac, "at": at, "wallet_user": user,
             "opt_in": True, "connect_url": link, "consent": proof}  # fmt: skip
    event.update(override)
    return event


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def venue(app: Flask, clock: FakeClock) -> Venue:
    with cloud_db.session(app) as db:
        merchant = create_merchant(db, "Cafe Uno", "owner@cafe.example", "hunter2hunter2", clock())
        venue = create_venue(db, merchant.id, "Cafe Uno Main St", clock(), PORTAL_HOST)
        db.commit()
        return venue


def new_claim(app: Flask, venue_id: str, now: float, days: float = 7) -> str:
    with cloud_db.session(app) as db:
        code = create_claim(db, venue_id, now, days)
        db.commit()
        return code


class Router:
    """An enrolled router as the cloud sees it: its key, its id, and signed requests. The
    signing parameters can be overridden per call to forge the bad inputs."""

    def __init__(self, client: FlaskClient, clock: FakeClock, device_id: str, key: Any) -> None:
        self.client, self.clock, self.device_id, self.key = client, clock, device_id, key
        self.cloud_public_key = ""
        self.venue_id = ""

    def headers(self, method: str, path: str, body: bytes, **override: Any) -> dict[str, str]:
        headers = signing.sign_request(
            override.pop("key", self.key),
            override.pop("device_id", self.device_id),
            method,
            path,
            body,
            int(override.pop("timestamp", self.clock())),
            override.pop("nonce", None),
        )
        headers.update(override.pop("extra", {}))
        for name in override.pop("drop", ()):
            headers.pop(name)
        assert not override, override
        return headers

    def request(self, method: str, path: str, payload: Any = None, raw: bytes | None = None,
                **override: Any) -> Any:  # fmt: skip
        body = (
            raw if raw is not None else (b"" if payload is None else json.dumps(payload).encode())
        )
        headers = self.headers(method, path, body, **override)
        if body:
            headers["Content-Type"] = "application/json"
        return self.client.open(path, method=method, data=body, headers=headers)

    def get(self, path: str, **override: Any) -> Any:
        return self.request("GET", path, **override)

    def post(self, path: str, payload: Any = None, **override: Any) -> Any:
        return self.request("POST", path, payload, **override)


def enrol(client: FlaskClient, clock: FakeClock, code: str, hostname: str = "plaza-test") -> Router:
    key = signing.new_key()
    response = client.post(
        "/api/v1/enrol",
        json={"claim_code": code, "public_key": signing.public_b64(key), "hostname": hostname,
              "version": "0.4.0"},
    )  # fmt: skip
    assert response.status_code == 201, response.get_json()
    router = Router(client, clock, response.get_json()["device_id"], key)
    router.cloud_public_key = response.get_json()["cloud_public_key"]
    router.venue_id = response.get_json()["venue_id"]
    return router


@pytest.fixture
def router(app: Flask, client: FlaskClient, clock: FakeClock, venue: Venue) -> Router:
    return enrol(client, clock, new_claim(app, venue.id, clock()))


@pytest.fixture
def signed_in(client: FlaskClient, venue: Venue) -> FlaskClient:
    """A dashboard client signed in as the `venue` fixture's merchant."""
    response = sign_in(client)
    assert response.status_code == 303
    return client


# -- the plaza services (issue 16): the sandbox wallet's trade API, and books that balance ----


@pytest.fixture(scope="session")
def sandbox_wallet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxWallet]:
    with serve_wallet(tmp_path_factory.mktemp("o2o-wallet")) as wallet:
        yield wallet


@pytest.fixture
def books(app: Flask) -> Iterator[Flask]:
    """The app, whose ledger must balance when the test is over, whatever the test did."""
    yield app
    check_books(app)


@pytest.fixture
def shop_app(books: Flask, sandbox_wallet: SandboxWallet) -> Flask:
    """The cloud signing shoppers in and taking payments with the sandbox wallet."""
    configure_shop(books, sandbox_wallet)
    sandbox_wallet.take_notifies()
    return books
