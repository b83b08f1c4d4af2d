"""What the portal's and `plaza-cloud run --cert`'s TLS listeners accept, tried with Python's
own ssl client: CBC suites and TLS 1.1 are refused, AES-GCM and TLS 1.3 work."""

from __future__ import annotations

import http.client
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from socket import create_connection

import pytest
from cheroot import wsgi

from gateway.config import Config, PortalConfig
from lab.pki import LabCA
from plaza import tls as portal_tls
from portal import cli as portal_cli

CBC_TLS12 = "ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES256-SHA384:ECDHE-ECDSA-AES128-SHA"
GCM_TLS12 = "ECDHE-ECDSA-AES128-GCM-SHA256"


def hello(environ, start_response):  # type: ignore[no-untyped-def]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    ca = LabCA(tmp_path_factory.mktemp("ca"))
    cert, key = ca.issue("portal.plaza.test", ["portal.plaza.test", "127.0.0.1"])
    return ca.cert_path, cert, key


def _portal_server(cert: Path, key: Path) -> wsgi.Server:
    """The portal's own TLS listener, as `plaza-portal run` builds it."""
    config = Config(portal=PortalConfig(cert_file=str(cert), key_file=str(key), https_port=0))
    (server,) = [s for s in portal_cli.build_servers(config, "127.0.0.1", hello) if s.ssl_adapter]
    return server


def _cloud_server(cert: Path, key: Path) -> wsgi.Server:
    server = wsgi.Server(("127.0.0.1", 0), hello)
    server.ssl_adapter = portal_tls.server_adapter(str(cert), str(key))  # as cloud/cli.py
    return server


@pytest.fixture(params=[_portal_server, _cloud_server], ids=["portal", "cloud"])
def port(request: pytest.FixtureRequest, pki: tuple[Path, Path, Path]) -> Iterator[int]:
    build: Callable[[Path, Path], wsgi.Server] = request.param
    server = build(pki[1], pki[2])
    server.prepare()
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    yield server.bind_addr[1]
    server.stop()


def handshake(
    port: int, ca: Path, ciphers: str | None = None, version: ssl.TLSVersion | None = None
) -> str:
    """The negotiated suite; raises ssl.SSLError when the server refuses."""
    ctx = ssl.create_default_context(cafile=str(ca))
    # The client offers what we ask for, weak or not: seclevel 0 lets it offer CBC and 1.1.
    ctx.set_ciphers(f"{ciphers or 'DEFAULT'}:@SECLEVEL=0")
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = version
    elif ciphers:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2  # the ciphers list only governs 1.2
    with (
        create_connection(("127.0.0.1", port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname="portal.plaza.test") as tls,
    ):
        return tls.cipher()[0]


def test_tls12_offering_only_cbc_suites_is_refused(port: int, pki: tuple[Path, ...]) -> None:
    with pytest.raises(ssl.SSLError):
        handshake(port, pki[0], CBC_TLS12)


def test_tls12_with_aes_gcm_works(port: int, pki: tuple[Path, ...]) -> None:
    assert handshake(port, pki[0], GCM_TLS12) == GCM_TLS12


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated")
def test_tls11_is_refused(port: int, pki: tuple[Path, ...]) -> None:
    with pytest.raises(ssl.SSLError):
        handshake(port, pki[0], "DEFAULT", ssl.TLSVersion.TLSv1_1)


def test_tls13_as_is(port: int, pki: tuple[Path, ...]) -> None:
    assert handshake(port, pki[0], version=ssl.TLSVersion.TLSv1_3).startswith("TLS_")


def test_a_stalled_client_does_not_hold_the_listener(port: int, pki: tuple[Path, ...]) -> None:
    """A client that connects and says nothing holds one worker, not the accept loop: another
    phone's handshake completes meanwhile (cheroot's own adapter shook hands in accept())."""
    with create_connection(("127.0.0.1", port), timeout=5):
        assert handshake(port, pki[0], version=ssl.TLSVersion.TLSv1_3).startswith("TLS_")


def test_plain_http_to_the_tls_port_is_told_so(port: int) -> None:
    with create_connection(("127.0.0.1", port), timeout=5) as raw:
        raw.sendall(b"GET / HTTP/1.1\r\nHost: portal.plaza.test\r\n\r\n")
        answer = raw.recv(4096)
    assert answer.startswith(b"HTTP/1.1 400 ") and b"HTTPS" in answer


def test_one_tls_connection_serves_several_requests(port: int, pki: tuple[Path, ...]) -> None:
    """Keep-alive, as a browser uses it for the login's redirect, callback and welcome page:
    three requests, one handshake."""
    ctx = ssl.create_default_context(cafile=str(pki[0]))
    conn = http.client.HTTPSConnection("portal.plaza.test", port, context=ctx, timeout=5)
    conn.sock = ctx.wrap_socket(
        create_connection(("127.0.0.1", port), timeout=5), server_hostname="portal.plaza.test"
    )
    first = conn.sock
    for _ in range(3):
        conn.request("GET", "/")
        response = conn.getresponse()
        assert (response.status, response.read()) == (200, b"ok")
    assert conn.sock is first
    conn.close()


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_an_rsa_certificate_keeps_working(
    tmp_path: Path, pki: tuple[Path, ...], version: ssl.TLSVersion
) -> None:
    """The lab issues ECDSA P-256 (cheaper handshakes); a venue's RSA certificate still serves."""
    ca = LabCA(pki[0].parent)
    cert, key = ca.issue("portal-rsa", ["portal.plaza.test", "127.0.0.1"], rsa_bits=2048)
    server = _portal_server(cert, key)
    server.prepare()
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    try:
        suite = handshake(server.bind_addr[1], pki[0], version=version)
    finally:
        server.stop()
    assert suite.startswith("TLS_" if version is ssl.TLSVersion.TLSv1_3 else "ECDHE-RSA-")
