"""The wallet client's HTTPS (plaza/wallet/http.py): a provider's sessions share one SSL context
and one pool of kept-alive connections, and trust exactly the anchors they are given."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from lab.pki import LabCA
from plaza.wallet import LoginError
from plaza.wallet import http as wallet_http


class KeepAliveServer(ThreadingHTTPServer):
    """An HTTP/1.1 server that keeps connections open, as a real wallet's front end does
    (the sandbox wallet's werkzeug server closes every one), and counts them."""

    daemon_threads = True
    accepted = 0

    def get_request(self):  # type: ignore[no-untyped-def]
        conn, addr = super().get_request()
        self.accepted += 1
        return conn, addr


class Answer(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[KeepAliveServer, str, str]]:
    ca = LabCA(tmp_path / "ca")
    cert, key = ca.issue("wallet", ["127.0.0.1"])
    httpd = KeepAliveServer(("127.0.0.1", 0), Answer)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd, f"https://127.0.0.1:{httpd.server_address[1]}/", str(ca.cert_path)
    httpd.shutdown()
    httpd.server_close()


def test_sessions_borrowing_one_pool_share_a_kept_alive_connection(
    server: tuple[KeepAliveServer, str, str],
) -> None:
    httpd, url, ca_file = server
    pool = wallet_http.KeptAlive(ca_file)
    for _ in range(3):  # a login: its own session, closed at the end
        with wallet_http.new_session(ca_file, pool) as session:
            assert wallet_http.get_json(session, url, "test") == {"ok": True}
    assert httpd.accepted == 1


def test_sessions_of_their_own_each_connect(server: tuple[KeepAliveServer, str, str]) -> None:
    """What the pool saves: without it every session makes its own connection."""
    httpd, url, ca_file = server
    for _ in range(3):
        with wallet_http.new_session(ca_file) as session:
            assert wallet_http.get_json(session, url, "test") == {"ok": True}
    assert httpd.accepted == 3


def test_the_pool_trusts_only_its_anchors(
    server: tuple[KeepAliveServer, str, str], tmp_path: Path
) -> None:
    """Another CA's file, or the system's store (`ca_file = ""`), does not trust the server."""
    _httpd, url, _ca_file = server
    other = LabCA(tmp_path / "other")
    for anchors in (str(other.cert_path), ""):
        pool = wallet_http.KeptAlive(anchors)
        session = wallet_http.new_session(anchors, pool)
        with session, pytest.raises(LoginError, match="certificate was not trusted"):
            wallet_http.get_json(session, url, "test")


def test_empty_ca_file_means_the_system_store() -> None:
    trust = wallet_http.system_trust()
    expected = {"capath": trust} if Path(str(trust)).is_dir() else {"cafile": trust}
    if trust is True:
        expected = {"cafile": wallet_http.requests.certs.where()}
    assert wallet_http.trust_anchors("") == expected
    assert wallet_http.trust_anchors("/etc/plaza/wallet-ca.pem") == {
        "cafile": "/etc/plaza/wallet-ca.pem"
    }
