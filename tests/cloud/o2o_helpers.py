"""The plaza services' test helpers: the sandbox wallet over real HTTPS on 127.0.0.1 with its
trade API (notifies captured instead of sent, so a test delivers them when, how often and
in what order it likes), the cloud configured to use it, and a shopper's phone.

The fixtures that use these are in tests/cloud/conftest.py.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session, sessionmaker

from cloud import db as cloud_db
from cloud.o2o import booking, ledger
from cloud.o2o.booking_models import Booking
from cloud.o2o.shoppers import find_or_create
from lab.pki import LabCA
from lab.wallet import app as wallet_app
from lab.wallet.https import make_server
from lab.wallet.keys import provision
from lab.wallet.server import create_app as wallet_server
from plaza.wallet import rsa2
from tests.conftest import FakeClock
from tests.wallet_harness import Answer, Browser

CLOUD = "https://cloud.plaza.test"  # the cloud's public origin (PUBLIC_URL) in these tests
PORTAL = "https://portal.plaza.test"
NOTIFY = "/plaza/notify/alipay"
CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')
KEY_RE = re.compile(r'name="key" value="([^"]+)"')


@dataclass
class SandboxWallet:
    """The sandbox wallet, and the notifies it would have POSTed, in the order it made them."""

    url: str
    ca_file: str
    material: dict[str, Any]
    app: Flask
    notifies: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, url: str, params: dict[str, str]) -> None:
        with self.lock:
            self.notifies.append((url, dict(params)))

    def take_notifies(self) -> list[dict[str, str]]:
        with self.lock:
            taken = [params for _, params in self.notifies]
            self.notifies.clear()
        return taken

    def sign(self, params: dict[str, str]) -> dict[str, str]:
        """`params` signed as the wallet signs a notify (to forge a well-signed lie)."""
        key = rsa2.load_private_key(Path(self.material["settings"]).parent / "wallet-rsa2.key")
        out = {k: v for k, v in params.items() if k != "sign"}
        out["sign"] = rsa2.sign_notify(out, key)
        return out


@contextmanager
def serve_wallet(root: Path) -> Iterator[SandboxWallet]:
    pki = LabCA(root / "ca")
    cert, key = pki.issue("wallet", ["wallet.test", "127.0.0.1"])
    server = make_server("127.0.0.1", 0, None, str(cert), str(key))
    url = f"https://127.0.0.1:{server.server_port}"
    material = provision(root / "keys", PORTAL, issuer=url, cloud_base=CLOUD)
    settings = json.loads(Path(material["settings"]).read_text())
    app = wallet_server(settings, clock=time.time)
    server.app = app
    wallet = SandboxWallet(url, str(pki.cert_path), material, app)
    app.extensions["wallet_trade"].notifier = wallet.record
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield wallet
    finally:
        server.shutdown()
        server.server_close()


def configure_shop(app: Flask, wallet: SandboxWallet) -> None:
    """Point the cloud at the sandbox wallet for sign-in (OIDC) and payments (Alipay trade)."""
    oidc, trade = wallet.material["push"]["oidc"], wallet.material["trade"]
    app.config.update(
        PUBLIC_URL=CLOUD,
        WALLET_URL=wallet.url,
        WALLET_DIALECT="oidc",
        WALLET_CLIENT_ID=oidc["client_id"],
        WALLET_CLIENT_SECRET_FILE=oidc["client_secret_file"],
        WALLET_APP_ID=trade["app_id"],
        WALLET_APP_PRIVATE_KEY_FILE=trade["app_private_key_file"],
        WALLET_PUBLIC_KEY_FILE=trade["wallet_public_key_file"],
        WALLET_SELLER_ID=trade["seller_id"],
        WALLET_CA_BUNDLE=wallet.ca_file,
    )


def check_books(app: Flask) -> None:
    """The ledger balances: every posting sums to zero, and so does the whole."""
    with cloud_db.session(app) as db:
        assert ledger.check_balanced(db), ledger.balances(db)


def get(client: FlaskClient, path: str) -> Any:
    return client.get(path, base_url=CLOUD)


def post(client: FlaskClient, path: str, data: dict[str, str]) -> Any:
    return client.post(path, data=data, base_url=CLOUD)


IDEMPOTENCY_KEY = re.compile(r'name="idempotency_key" value="([^"]+)"')


def hold(client: FlaskClient, venue_id: str, slot_id: str) -> Any:
    """The signed-in shopper holds `slot_id` from the venue's booking page (its form's key)."""
    page = get(client, f"/plaza/v/{venue_id}/book")
    assert page.status_code == 200, page.status_code
    text = page.get_data(as_text=True)
    assert f"/plaza/book/{slot_id}" in text
    key = IDEMPOTENCY_KEY.search(text)
    assert key
    return post(client, f"/plaza/book/{slot_id}",
                {"csrf_token": csrf(page), "idempotency_key": key.group(1)})  # fmt: skip


def press(client: FlaskClient, booking_id: str, action: str, **extra: str) -> Any:
    """A button on the shopper's booking page (pay, cancel, ...)."""
    page = get(client, f"/plaza/bookings/{booking_id}")
    return post(client, f"/plaza/bookings/{booking_id}/{action}",
                {"csrf_token": csrf(page), **extra})  # fmt: skip


def csrf(page: Any) -> str:
    found = CSRF_RE.search(page.get_data(as_text=True))
    assert found, page.get_data(as_text=True)
    return found.group(1)


def as_shopper(app: Flask, client: FlaskClient, clock: Callable[[], float],
               user: str = "alice") -> str:  # fmt: skip
    """`client` signed in as the shopper `user` (made if new) without the wallet's round trip:
    the session a wallet login leaves behind. The shopper's id."""
    with cloud_db.session(app) as db:
        shopper = find_or_create(db, "oidc", user, user.title(), clock())
    with client.session_transaction("/plaza/") as session:
        session["shopper_id"], session["shopper_since"] = shopper.id, clock()
    return shopper.id


def sign_in(client: FlaskClient, wallet: SandboxWallet, user: str = "alice") -> Any:
    """The whole wallet sign-in as a phone does it; the cloud's last answer (a 303 home)."""
    start = get(client, "/plaza/login/wallet")
    assert start.status_code == 302, start.get_data(as_text=True)
    phone = Browser(wallet.ca_file)
    pins = {u["login"]: u["pin"] for u in wallet.material["users"]}
    back: Answer = wallet_app.approve(phone, start.location, user, pins[user])
    assert back.status == 302 and back.location.startswith(CLOUD), (back.status, back.location)
    parts = urlsplit(back.location)
    return get(client, f"{parts.path}?{parts.query}")


def pay_form(client: FlaskClient, venue_id: str) -> dict[str, str]:
    page = get(client, f"/plaza/v/{venue_id}/pay")
    assert page.status_code == 200, page.status_code
    key = KEY_RE.search(page.get_data(as_text=True))
    assert key
    return {"csrf_token": csrf(page), "key": key.group(1)}


def start_payment(
    client: FlaskClient, venue_id: str, amount: str = "10.00", subject: str = "Lunch", **over: str
) -> Any:
    """The pay form filled and sent: a 303 to the wallet's cashier URL when it worked."""
    data = {**pay_form(client, venue_id), "amount": amount, "subject": subject, **over}
    return post(client, f"/plaza/v/{venue_id}/pay", data)


def booking_row(app: Flask, booking_id: str) -> Booking:
    """The booking as the database holds it (no page, no sweep in between)."""
    with cloud_db.session(app) as db:
        found = db.get(Booking, booking_id)
        assert found is not None
        return found


def pay_deposit(client: FlaskClient, wallet: SandboxWallet, booking_id: str) -> dict[str, str]:
    """The booking's deposit paid at the cashier and its notify delivered (the shopper's
    browser is not sent back to the cloud: only the notify arrives); the notify."""
    start = press(client, booking_id, "deposit")
    assert start.status_code == 303 and start.location.startswith(wallet.url), start.location
    back = approve_payment(wallet, start.location)
    assert back.status == 302
    assert back.location.startswith(f"{CLOUD}/plaza/bookings/{booking_id}?out_trade_no=")
    (notify,) = wallet.take_notifies()
    assert deliver(client, notify).get_data(as_text=True) == "success"
    return notify


def hold_runs_out_at_the_cashier(client: FlaskClient, wallet: SandboxWallet, venue_id: str,
                                 slot_id: str, clock: FakeClock) -> tuple[str, Any]:  # fmt: skip
    """Alice signs in, holds `slot_id` and goes to pay its deposit, then dawdles at the
    cashier until her hold (10 minutes) has run out. Her booking's id and the cashier answer
    (its `location` is the payment's page at the wallet)."""
    assert sign_in(client, wallet).status_code == 303
    booking_id = hold(client, venue_id, slot_id).location.rsplit("/", 1)[1]
    start = press(client, booking_id, "deposit")
    clock.advance(11 * 60)
    return booking_id, start


def paid_after_the_seat_went(app: Flask, client: FlaskClient, wallet: SandboxWallet,
                             venue_id: str, slot_id: str, clock: FakeClock) -> str:  # fmt: skip
    """Alice's hold runs out at the cashier, Bob takes the one seat, then Alice pays and the
    wallet's notify is delivered (answered `success`: the money is in). Alice's booking id."""
    booking_id, start = hold_runs_out_at_the_cashier(client, wallet, venue_id, slot_id, clock)
    with cloud_db.session(app) as db:
        bob = find_or_create(db, "oidc", "bob-sub", "Bob", clock())
        booking.hold(db, slot_id, bob.id, clock())  # and bob takes the seat
    assert approve_payment(wallet, start.location).status == 302
    (notify,) = wallet.take_notifies()
    assert deliver(client, notify).get_data(as_text=True) == "success"
    return booking_id


def approve_payment(wallet: SandboxWallet, pay_url: str, user: str = "alice") -> Answer:
    pins = {u["login"]: u["pin"] for u in wallet.material["users"]}
    return wallet_app.pay(Browser(wallet.ca_file), pay_url, user, pins[user])


def deliver(client: FlaskClient, params: dict[str, str]) -> Any:
    """One notify POSTed to the cloud as the wallet would."""
    return client.post(NOTIFY, data=params, base_url=CLOUD)


def race(
    app: Flask,
    count: int,
    connections: int,
    work: Callable[[Session, int], str],
    refusal: type[Exception],
) -> Counter:
    """`count` threads start at once, each with a session from a pool of `connections` real
    connections; returns the outcome counts: what `work(db, i)` returned, or the `code` of the
    domain's refusal it raised (voucher claims, bookings, queue numbers race through this)."""
    engine = sa.create_engine(
        cloud_db.engine(app).url, pool_size=connections, max_overflow=0, pool_timeout=60
    )
    if engine.dialect.name == "sqlite":
        sa.event.listen(engine, "connect", cloud_db._sqlite_pragmas)
    factory = sessionmaker(engine, expire_on_commit=False)
    outcomes: Counter = Counter()
    lock = threading.Lock()
    start = threading.Barrier(count)

    def run(i: int) -> None:
        start.wait()
        with factory() as db:
            try:
                result = work(db, i)
            except refusal as exc:
                result = exc.code  # type: ignore[attr-defined]
        with lock:
            outcomes[result] += 1

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    engine.dispose()
    return outcomes
