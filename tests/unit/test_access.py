"""Run-time trusted and blocked MACs: take effect at once, survive a restart, never lift what
the config lists, and an unreadable file loses nothing of the config's lists."""

from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.config import Config, PolicyConfig
from tests.conftest import FakeClock
from tests.unit.conftest import MakeGateway

MAC = "02:50:4c:00:00:01"
TILL = "02:50:4c:00:00:99"
IP = "198.19.0.100"


@pytest.fixture
def config(make_config: Callable[..., Config]) -> Config:
    return make_config(policy=PolicyConfig(blocked_macs=("02:66:00:00:00:01",)))


def test_block_ends_the_session_now_and_survives_a_restart(
    make_gateway: MakeGateway, config: Config, clock: FakeClock
) -> None:
    gw = make_gateway()
    gw.handle({"op": "lease", "action": "add", "mac": MAC, "ip": IP})
    gw.handle({"op": "auth", "client": MAC})
    r = gw.handle({"op": "access", "action": "block", "mac": MAC.upper()})
    assert r["ok"] and MAC in r["access"]["blocked"]
    assert gw.firewall.allowed() == set()
    assert gw.table.clients[MAC].last_end_reason == "blocked"
    gw2 = make_gateway()
    refused = gw2.handle({"op": "auth", "client": MAC})
    assert not refused["ok"] and "blocked" in refused["error"]
    assert gw2.handle({"op": "access", "action": "unblock", "mac": MAC})["ok"]
    assert gw2.handle({"op": "auth", "client": MAC})["ok"]


def test_trust_lets_a_station_in_at_once(
    make_gateway: MakeGateway, config: Config, clock: FakeClock
) -> None:
    gw = make_gateway()
    gw.handle({"op": "lease", "action": "add", "mac": TILL, "ip": "198.19.0.99"})
    gw.handle({"op": "access", "action": "trust", "mac": TILL})
    assert ("198.19.0.99", TILL) in gw.firewall.allowed()
    gw.handle({"op": "access", "action": "untrust", "mac": TILL})
    assert gw.firewall.allowed() == set()


def test_config_lists_are_not_lifted_at_run_time(
    make_gateway: MakeGateway, config: Config, clock: FakeClock
) -> None:
    gw = make_gateway()
    r = gw.handle({"op": "access", "action": "unblock", "mac": "02:66:00:00:00:01"})
    assert not r["ok"] and "edit it there" in r["error"]
    for bad in ({"action": "shell", "mac": MAC}, {"action": "block", "mac": "nonsense"},
                {"action": "block", "mac": "01:00:5e:00:00:01"}):  # fmt: skip
        assert not gw.handle({"op": "access", **bad})["ok"]


def test_unreadable_file_keeps_the_config_lists(
    make_gateway: MakeGateway, config: Config, clock: FakeClock
) -> None:
    (Path(config.gateway.state_dir) / "access.json").write_text("{not json")
    gw = make_gateway()
    lists = gw.handle({"op": "access-lists"})["access"]
    assert lists["blocked"] == ["02:66:00:00:00:01"] and lists["runtime_blocked"] == []
