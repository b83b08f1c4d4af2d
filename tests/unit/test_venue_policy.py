"""The venue's default policy from the cloud's config file: new sessions get it, running ones
keep theirs, and a bad or missing file falls back to the router's own defaults."""

import json
import os
from pathlib import Path

import pytest

from gateway.gateway import Gateway
from tests.unit.conftest import MakeGateway

MAC, MAC2 = "02:50:4c:00:00:01", "02:50:4c:00:00:02"


@pytest.fixture
def gw(make_gateway: MakeGateway) -> Gateway:
    gateway = make_gateway()
    for mac, ip in ((MAC, "198.19.0.100"), (MAC2, "198.19.0.101")):
        gateway.handle({"op": "lease", "action": "add", "mac": mac, "ip": ip})
    return gateway


def write(gw: Gateway, policy: object, version: int = 2) -> None:
    path = Path(gw.config.gateway.state_dir) / "cloud-config.json"
    path.write_text(json.dumps({"version": version, "config": {"policy": policy}}))
    os.utime(path, ns=(version * 10**9, version * 10**9))  # a distinct mtime per write


def policy_of(gw: Gateway, mac: str) -> dict:
    return gw.handle({"op": "client", "client": mac})["client"]["policy"]


def test_cloud_defaults_apply_to_new_sessions_only(gw: Gateway) -> None:
    gw.handle({"op": "auth", "client": MAC})
    write(gw, {"session_minutes": 30, "idle_minutes": 10, "quota_total_mb": 500,
               "rate_down_kbit": 8000, "rate_up_kbit": 2000})  # fmt: skip
    gw.tick()
    assert policy_of(gw, MAC)["session_minutes"] == 60  # the running session keeps its own
    new = gw.handle({"op": "auth", "client": MAC2})["client"]
    assert new["policy"] == {"session_minutes": 30, "idle_seconds": 600, "quota_up_mb": 0,
                             "quota_down_mb": 0, "quota_total_mb": 500, "rate_up_kbit": 2000,
                             "rate_down_kbit": 8000}  # fmt: skip
    assert new["seconds_remaining"] == 30 * 60


@pytest.mark.parametrize(
    "bad",
    [
        {"session_minutes": 0},
        {"session_minutes": 10, "idle_minutes": 10},  # idle could never fire
        {"rate_down_kbit": -1},
        {"quota_total_mb": "lots"},
        "not an object",
    ],
)
def test_bad_or_removed_cloud_policy_falls_back_to_the_routers(gw: Gateway, bad: object) -> None:
    write(gw, {"session_minutes": 30}, version=2)
    gw.tick()
    write(gw, bad, version=3)
    gw.tick()
    assert gw.handle({"op": "auth", "client": MAC})["client"]["policy"]["session_minutes"] == 60
    (Path(gw.config.gateway.state_dir) / "cloud-config.json").unlink()
    gw.tick()
    assert gw.table.default_minutes == 60


def test_a_cloud_session_longer_than_the_routers_cap_is_cut_to_it(gw: Gateway) -> None:
    cap = gw.config.session.max_minutes
    write(gw, {"session_minutes": cap * 3, "rate_down_kbit": 4000})
    gw.tick()
    granted = gw.handle({"op": "auth", "client": MAC})["client"]
    assert granted["policy"]["session_minutes"] == cap  # the venue's other limits still apply
    assert granted["policy"]["rate_down_kbit"] == 4000
