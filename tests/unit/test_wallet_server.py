"""The sandbox wallet as the lab runs it (`python -m lab.wallet.server`): cheroot over TLS with
keep-alive, so a phone's consent page and approval, and the portal's token and userinfo calls
through its pooled back-channel, each reuse one connection; a stalled client blocks no one."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cheroot import wsgi

from lab.pki import LabCA
from lab.wallet.keys import provision
from lab.wallet.server import build_server, create_app
from plaza.wallet.http import KeptAlive, new_session

PORTAL = "https://portal.plaza.test"


@dataclass
class Served:
    server: wsgi.Server
    port: int
    ca: Path

    def accepts(self) -> int:
        return self.server.stats["Accepts"]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("wallet")
    ca = LabCA(root / "ca")
    cert, key = ca.issue("wallet", ["wallet.test", "127.0.0.1"])
    server = build_server("127.0.0.1", 0, None, str(cert), str(key))  # type: ignore[arg-type]
    server.prepare()
    port = server.bind_addr[1]
    material = provision(root / "keys", PORTAL, issuer=f"https://127.0.0.1:{port}")
    server.wsgi_app = create_app(json.loads(Path(material["settings"]).read_text()))
    server.stats["Enabled"] = True
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    yield Served(server, port, ca.cert_path)
    server.stop()


def test_a_browser_reuses_its_connection(served: Served) -> None:
    ctx = ssl.create_default_context(cafile=str(served.ca))
    conn = http.client.HTTPSConnection("127.0.0.1", served.port, context=ctx, timeout=5)
    before = served.accepts()
    for _ in range(3):
        conn.request("GET", "/health")
        response = conn.getresponse()
        assert response.status == 200 and b'"ok":true' in response.read().replace(b" ", b"")
        assert not response.will_close
    conn.close()
    assert served.accepts() - before == 1


def test_the_portals_back_channel_reuses_its_connection(served: Served) -> None:
    """What the portal's provider does per login (token, then userinfo), through its pool."""
    pool = KeptAlive(str(served.ca))
    before = served.accepts()
    for _ in range(2):
        with new_session(str(served.ca), pool) as session:
            assert session.get(f"https://127.0.0.1:{served.port}/health", timeout=5).ok
    assert served.accepts() - before == 1


def test_a_stalled_connection_does_not_block_others(served: Served) -> None:
    ctx = ssl.create_default_context(cafile=str(served.ca))
    with socket.create_connection(("127.0.0.1", served.port)):  # opens, never says hello
        started = time.monotonic()
        conn = http.client.HTTPSConnection("127.0.0.1", served.port, context=ctx, timeout=5)
        conn.request("GET", "/health")
        assert conn.getresponse().status == 200
        conn.close()
        assert time.monotonic() - started < 2


def test_clients_that_do_not_trust_the_lab_ca_are_refused(served: Served) -> None:
    conn = http.client.HTTPSConnection("127.0.0.1", served.port, timeout=5)
    with pytest.raises(ssl.SSLCertVerificationError):
        conn.request("GET", "/health")
