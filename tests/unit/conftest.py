"""The unit tests' shared set-up: a config over a temporary state directory, the store in it,
and a started Gateway on a fake firewall and the hand-moved clock (tests/conftest.py).

Written once here instead of in each test module, so a change to how a Gateway is built
(gateway/assemble.py) is made in one place. A module that needs other settings overrides
`config` with `make_config(...)`; a test that restarts the gateway calls `make_gateway`
again (same state directory, a fresh or the same fake kernel).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest

from gateway.assemble import open_gateway
from gateway.config import Config, GatewayConfig
from gateway.control_client import ControlClient
from gateway.daemon import Daemon
from gateway.gateway import Gateway
from gateway.stations.store import Store
from tests.conftest import FakeClock
from tests.fakes.firewall import FakeFirewall
from tests.wallet_harness import Browser, Sandbox, serve_sandbox


class MakeGateway(Protocol):
    def __call__(
        self,
        config: Config | None = None,
        firewall: FakeFirewall | None = None,
        *,
        store: Store | None = None,
        clock: Callable[[], float] | None = None,
    ) -> Gateway: ...


MakeConfig = Callable[..., Config]


@pytest.fixture
def make_config(tmp_path: Path) -> MakeConfig:
    """A Config whose state (database, control socket, access lists, cloud config) lives in
    the test's temporary directory; keyword arguments are the other sections."""

    def make(**sections: Any) -> Config:
        state = GatewayConfig(state_dir=str(tmp_path), control_socket=str(tmp_path / "ctl.sock"))
        return Config(gateway=sections.pop("gateway", state), **sections)

    return make


@pytest.fixture
def config(make_config: Callable[..., Config]) -> Config:
    return make_config()


@pytest.fixture
def store(config: Config) -> Store:
    return Store(config.db_path)


@pytest.fixture
def make_gateway(config: Config, clock: FakeClock) -> MakeGateway:
    """Build and start a Gateway the way the daemon does (gateway/assemble.py), on a fake
    firewall: called again, it is the same router restarted (its state directory kept)."""

    def make(
        config: Config | None = None,
        firewall: FakeFirewall | None = None,
        *,
        store: Store | None = None,
        clock: Callable[[], float] | None = None,
    ) -> Gateway:
        gw = open_gateway(
            config or default_config,
            firewall or FakeFirewall(),
            clock or default_clock,
            store=store,
        )
        gw.start()
        return gw

    default_config, default_clock = config, clock
    return make


@pytest.fixture
def gw(make_gateway: MakeGateway) -> Gateway:
    """A started gateway with no stations yet."""
    return make_gateway()


RunDaemon = Callable[[Config, Callable[[ControlClient, Gateway], None]], None]


@pytest.fixture
def run_daemon(make_gateway: MakeGateway) -> RunDaemon:
    """Serve the control socket of a gateway on `config` (real time, fake firewall) while
    `script(client, gateway)` runs in a worker thread."""

    def run(config: Config, script: Callable[[ControlClient, Gateway], None]) -> None:
        gw = make_gateway(config, clock=time.time)
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

    return run


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """The sandbox wallet over real HTTPS, one for the whole session (tests/wallet_harness.py)."""
    with serve_sandbox(tmp_path_factory.mktemp("wallet")) as served:
        yield served


@pytest.fixture
def wallet(sandbox: Sandbox) -> Iterator[Sandbox]:
    """The session's sandbox with its clock put back after the test."""
    yield sandbox
    sandbox.clock.offset = 0.0


@pytest.fixture
def browser(wallet: Sandbox) -> Browser:
    return wallet.browser()
