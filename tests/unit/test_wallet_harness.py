"""The sandbox wallet on 127.0.0.1 over real HTTPS, and a browser to drive it.

The other test_wallet_* modules import its fixtures (`*_fixture`, used by their names). The
server runs in a thread for the whole session, with TLS from a throwaway lab CA that clients
trust through `ca_file`; its clock is real time plus an offset that a test can push forward to
expire codes.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests

from lab.pki import LabCA
from lab.wallet.https import make_server
from lab.wallet.keys import provision
from lab.wallet.server import create_app
from plaza.wallet.config import WalletConfig

PORTAL = "https://portal.plaza.test"
OIDC_CALLBACK = PORTAL + "/login/callback"
ALIPAY_CALLBACK = PORTAL + "/login/alipay/callback"


class ShiftClock:
    """Real time plus an offset: expiry tests move it forward instead of sleeping."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: str

    @property
    def location(self) -> str:
        return self.headers.get("location", "")

    def query(self) -> dict[str, str]:
        """The query of the Location this answer redirects to (the portal's callback args)."""
        return dict(parse_qsl(urlsplit(self.location).query))


@dataclass
class Browser:
    """A phone's browser for lab.wallet.app.approve: one cookie jar, redirects not followed."""

    ca_file: str
    session: requests.Session = field(default_factory=requests.Session)

    def __post_init__(self) -> None:
        self.session.trust_env = False
        self.session.verify = self.ca_file

    def _wrap(self, r: requests.Response) -> Answer:
        return Answer(r.status_code, {k.lower(): v for k, v in r.headers.items()}, r.text)

    def get(self, url: str) -> Answer:
        return self._wrap(self.session.get(url, allow_redirects=False, timeout=5))

    def post(self, url: str, data: dict[str, str]) -> Answer:
        return self._wrap(self.session.post(url, data=data, allow_redirects=False, timeout=5))


@dataclass
class Sandbox:
    issuer: str
    ca_file: str
    clock: ShiftClock
    material: dict

    def oidc_config(self, **over: str) -> WalletConfig:
        fields = {**self.material["oidc"], "ca_file": self.ca_file, **over}
        return WalletConfig(**fields)

    def alipay_config(self, **over: str) -> WalletConfig:
        fields = {**self.material["alipay"], "ca_file": self.ca_file, **over}
        return WalletConfig(**fields)

    def browser(self) -> Browser:
        return Browser(self.ca_file)


@pytest.fixture(scope="session", name="sandbox")
def sandbox_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    root: Path = tmp_path_factory.mktemp("wallet")
    ca = LabCA(root / "ca")
    cert, key = ca.issue("wallet", ["wallet.test", "127.0.0.1"])
    clock = ShiftClock()
    server = make_server("127.0.0.1", 0, None, str(cert), str(key))
    issuer = f"https://127.0.0.1:{server.server_port}"
    material = provision(root / "keys", PORTAL, issuer=issuer)
    server.app = create_app(_settings(material), clock=clock)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Sandbox(issuer, str(ca.cert_path), clock, material)
    finally:
        server.shutdown()
        server.server_close()


CONFIDENTIAL = {"client_id": "plaza-confidential", "client_secret": "s3cret-" + "x" * 24}


def _settings(material: dict) -> dict:
    """The provisioned settings plus a confidential client, to test client authentication."""
    settings = json.loads(Path(material["settings"]).read_text())
    settings["oidc_clients"].append(
        {**CONFIDENTIAL, "name": "Plaza (confidential)", "redirect_uris": [OIDC_CALLBACK]}
    )
    return settings


@pytest.fixture(name="wallet")
def wallet_fixture(sandbox: Sandbox) -> Iterator[Sandbox]:
    """The session's sandbox with its clock put back after the test."""
    yield sandbox
    sandbox.clock.offset = 0.0


@pytest.fixture(name="browser")
def browser_fixture(wallet: Sandbox) -> Browser:
    return wallet.browser()


def test_sandbox_serves_https_with_the_lab_ca(wallet: Sandbox, browser: Browser) -> None:
    answer = browser.get(wallet.issuer + "/.well-known/openid-configuration")
    assert answer.status == 200
    assert '"issuer":"' + wallet.issuer in answer.body.replace(" ", "")


def test_sandbox_refuses_clients_that_do_not_trust_its_ca(wallet: Sandbox) -> None:
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(wallet.issuer + "/health", timeout=5)


def test_a_stalled_connection_does_not_block_others(wallet: Sandbox, browser: Browser) -> None:
    import socket

    host, port = urlsplit(wallet.issuer).hostname, urlsplit(wallet.issuer).port
    with socket.create_connection((host, port)):  # opens, never says hello
        started = time.monotonic()
        assert browser.get(wallet.issuer + "/health").status == 200
        assert time.monotonic() - started < 2


def test_provision_writes_private_keys_0600(wallet: Sandbox) -> None:
    for key in ("app_private_key_file",):
        assert Path(wallet.material["alipay"][key]).stat().st_mode & 0o077 == 0
    assert Path(wallet.material["settings"]).stat().st_mode & 0o077 == 0
    assert replace(wallet.oidc_config()).issuer == wallet.issuer
