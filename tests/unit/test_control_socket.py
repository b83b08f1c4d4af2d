"""The control socket end to end, in-process with the fake firewall (no root needed)."""

import json
import socket
from pathlib import Path

import pytest

from gateway.config import Config
from gateway.control_client import ControlClient, ControlError
from gateway.daemon import AlreadyRunning, acquire_lock, check_socket_free
from gateway.gateway import Gateway
from tests.unit.conftest import RunDaemon

MAC = "02:50:4c:00:00:01"
IP = "198.19.0.100"


def raw(path: str, payload: bytes) -> dict:
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(path)
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        return json.loads(s.makefile("rb").read())


def test_requests_over_the_socket(run_daemon: RunDaemon, config: Config) -> None:
    def script(client: ControlClient, gw: Gateway) -> None:
        client.call("lease", action="add", mac=MAC, ip=IP, hostname="phone1")
        assert client.auth(IP, minutes=3)["state"] == "authorized"
        assert gw.firewall.allowed() == {(IP, MAC)}
        assert [c["mac"] for c in client.clients()] == [MAC]
        with pytest.raises(ControlError, match=r"not a client: 198\.19\.0\.9"):
            client.auth("198.19.0.9")
        path = config.gateway.control_socket
        assert raw(path, b"{not json\n") == {"ok": False, "error": "request is not valid JSON"}
        big = raw(path, b'{"op":"' + b"x" * 70000 + b'"}\n')
        assert big["ok"] is False and "larger than" in big["error"]
        # Nothing authorized was lost to the bad requests.
        assert client.client(MAC)["state"] == "authorized"
        assert gw.firewall.allowed() == {(IP, MAC)}

    run_daemon(config, script)
    assert not Path(config.gateway.control_socket).exists()  # cleaned up on stop


def test_socket_is_not_world_accessible(run_daemon: RunDaemon, config: Config) -> None:
    def script(client: ControlClient, gw: Gateway) -> None:
        mode = Path(config.gateway.control_socket).stat().st_mode & 0o777
        assert mode & 0o007 == 0

    run_daemon(config, script)


def test_second_daemon_is_refused(run_daemon: RunDaemon, config: Config) -> None:
    fd = acquire_lock(config)
    try:
        with pytest.raises(AlreadyRunning, match="another plaza-gateway"):
            acquire_lock(config)
    finally:
        import os

        os.close(fd)

    def script(client: ControlClient, gw: Gateway) -> None:
        with pytest.raises(AlreadyRunning, match="another daemon is answering"):
            check_socket_free(config.gateway.control_socket)

    run_daemon(config, script)


def test_stale_socket_from_a_killed_daemon_is_replaced(config: Config) -> None:
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(config.gateway.control_socket)
    stale.close()  # file remains, nobody listens
    check_socket_free(config.gateway.control_socket)
    assert not Path(config.gateway.control_socket).exists()


def test_client_reports_a_stopped_gateway(config: Config) -> None:
    with pytest.raises(ControlError, match="not running"):
        ControlClient(config.gateway.control_socket).clients()
