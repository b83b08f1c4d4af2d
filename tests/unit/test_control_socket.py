"""The control socket end to end, in-process with the fake firewall (no root needed)."""

import asyncio
import json
import socket
from pathlib import Path

import pytest

from gateway.config import Config, GatewayConfig
from gateway.control_client import ControlClient, ControlError
from gateway.daemon import AlreadyRunning, Daemon, acquire_lock, check_socket_free
from gateway.dataplane.nft import FakeFirewall
from gateway.gateway import Gateway
from gateway.stations.store import Store

MAC = "02:50:4c:00:00:01"
IP = "198.19.0.100"


def raw(path: str, payload: bytes) -> dict:
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(path)
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        return json.loads(s.makefile("rb").read())


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return Config(
        gateway=GatewayConfig(state_dir=str(tmp_path), control_socket=str(tmp_path / "ctl.sock"))
    )


def run_daemon(config: Config, script) -> None:
    """Serve the control socket while `script(client)` runs in a worker thread."""
    gw = Gateway(config, FakeFirewall(), Store(config.db_path))
    gw.start()
    daemon = Daemon(config, gw, lan_ifindex=None)

    async def main() -> None:
        task = asyncio.create_task(daemon.run())
        client = ControlClient(config.gateway.control_socket, timeout=2)
        for _ in range(100):
            if Path(config.gateway.control_socket).exists():
                break
            await asyncio.sleep(0.01)
        try:
            await asyncio.to_thread(script, client, gw)
        finally:
            daemon.stopping.set()
            await task

    asyncio.run(main())


def test_requests_over_the_socket(config: Config) -> None:
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


def test_socket_is_not_world_accessible(config: Config) -> None:
    def script(client: ControlClient, gw: Gateway) -> None:
        mode = Path(config.gateway.control_socket).stat().st_mode & 0o777
        assert mode & 0o007 == 0

    run_daemon(config, script)


def test_second_daemon_is_refused(config: Config) -> None:
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
