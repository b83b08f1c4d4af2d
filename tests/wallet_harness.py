"""The sandbox wallet on 127.0.0.1 over real HTTPS, and a browser to drive it.

The server runs in a thread for the whole test session (the `sandbox` fixture in
tests/unit/conftest.py), with TLS from a throwaway lab CA that clients trust through
`ca_file`; its clock is real time plus an offset that a test can push forward to expire codes.
Kept out of the test modules so the wallet tests share it without importing each other.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests

from lab.pki import LabCA
from lab.wallet.app import approve
from lab.wallet.https import make_server
from lab.wallet.keys import provision
from lab.wallet.server import create_app
from plaza.wallet import WalletProvider
from plaza.wallet.config import WalletConfig
from plaza.wallet.http import KeptAlive

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


@contextmanager
def serve_sandbox(root: Path) -> Iterator[Sandbox]:
    """The sandbox wallet with its keys and CA under `root`, served until the block ends."""
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


class PooledProvider(WalletProvider, Protocol):
    pool: KeptAlive


def pooled_logins(
    provider: PooledProvider, browser: Browser, callback: str, monkeypatch: pytest.MonkeyPatch
) -> int:
    """Log alice and bob in through `provider`; how many requests its pool made for them.
    Fails unless every call went through the pool's one connection pool, whose SSL context
    was made with the trust anchors once: no call may load them again (urllib3 did, per new
    connection: ~28 ms with the system's store; plaza/wallet/http.py)."""
    loads = []
    real = ssl.SSLContext.load_verify_locations
    monkeypatch.setattr(
        ssl.SSLContext, "load_verify_locations", lambda *a, **k: loads.append(a) or real(*a, **k)
    )
    for user, pin in (("alice", "1234"), ("bob", "5678")):
        url, txn = provider.start(callback)
        answer = approve(browser, url, user=user, pin=pin)  # type: ignore[arg-type]
        assert provider.finish(answer.query(), txn, callback).display_name
    pools = provider.pool.poolmanager.pools
    [pool] = [pools[key] for key in pools.keys()]  # noqa: SIM118 - no iteration of its own
    assert [a for a in loads if a[0] is provider.pool.ssl_context] == []
    return pool.num_requests
