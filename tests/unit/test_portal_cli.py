"""`plaza-portal run`: config errors, and a real cheroot server on two loopback ports."""

from __future__ import annotations

import http.client
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.config import Config, GatewayConfig, PortalConfig, to_toml
from portal.cli import listeners, main


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_bad_config_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "plaza.toml"
    path.write_text("[portal]\nport = 0\n")
    assert main(["run", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "port out of range" in err and str(path) in err


def test_listeners_add_https_only_with_a_certificate() -> None:
    plain = Config()
    assert listeners(plain, "198.19.0.1") == [
        ("198.19.0.1", 80, False),
        ("198.19.0.1", 8080, False),
    ]
    tls = Config(portal=PortalConfig(cert_file="/c.pem", key_file="/k.pem"))
    assert ("198.19.0.1", 443, True) in listeners(tls, "198.19.0.1")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Config, subprocess.Popen[str]]]:
    config = Config(
        gateway=GatewayConfig(
            state_dir=str(tmp_path), control_socket=str(tmp_path / "absent.sock")
        ),
        portal=PortalConfig(port=free_port(), intercept_port=free_port(), merchant_name="Loop"),
    )
    path = tmp_path / "plaza.toml"
    path.write_text(to_toml(config))
    proc = subprocess.Popen(
        [sys.executable, "-m", "portal.cli", "run", "--config", str(path), "--listen", "127.0.0.1"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", config.portal.intercept_port), 0.2).close()
                break
            except OSError:
                assert proc.poll() is None, proc.communicate()[1]
                assert time.monotonic() < deadline, "portal did not start"
                time.sleep(0.05)
        yield config, proc
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def fetch(port: int, path: str = "/") -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", path)
    resp = conn.getresponse()
    resp.read()
    conn.close()
    return resp


def test_serves_portal_and_intercept_ports(
    served: tuple[Config, subprocess.Popen[str]],
) -> None:
    config, proc = served
    probe = fetch(config.portal.intercept_port, "/hotspot-detect.html")
    assert probe.status == 302
    assert probe.getheader("Location") == config.portal.url
    assert probe.getheader("Server") == "plaza"  # no software or version disclosed
    # The gateway is not running: the splash still renders, signing in would say so.
    assert fetch(config.portal.port).status == 200
    proc.terminate()
    log = proc.communicate(timeout=10)[1]
    assert "serving Loop on 127.0.0.1" in log
