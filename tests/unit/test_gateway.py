"""The gateway core with the fake firewall and a real SQLite file: restart, drift, bad requests."""

import pytest

from gateway.config import Config
from gateway.gateway import Gateway
from tests.conftest import FakeClock
from tests.fakes.firewall import FakeFirewall
from tests.unit.conftest import MakeGateway

MAC = "02:50:4c:00:00:01"
IP = "198.19.0.100"


def lease(gw: Gateway, mac: str = MAC, ip: str = IP, action: str = "add") -> dict:
    return gw.handle({"op": "lease", "action": action, "mac": mac, "ip": ip, "hostname": "p1"})


def test_auth_adds_element_and_deauth_removes_it(
    make_gateway: MakeGateway, config: Config, clock: FakeClock
) -> None:
    gw = make_gateway()
    assert lease(gw)["ok"]
    r = gw.handle({"op": "auth", "client": IP, "minutes": 5})
    assert r["ok"] and r["client"]["state"] == "authorized"
    assert gw.firewall.allowed() == {(IP, MAC)}
    r = gw.handle({"op": "deauth", "client": MAC, "reason": "logout"})
    assert r["ok"] and r["client"]["state"] == "captive"
    assert gw.firewall.allowed() == set()
    assert [s.reason for s in gw.store.ended_sessions()] == ["logout"]


def test_restart_restores_authorized_clients(
    make_gateway: MakeGateway, config: Config, clock: FakeClock
) -> None:
    gw = make_gateway()
    lease(gw)
    gw.handle({"op": "auth", "client": MAC})
    # A new process: fresh table, fresh (empty) kernel; state comes back from SQLite.
    fw = FakeFirewall()
    gw2 = make_gateway(firewall=fw)
    assert fw.calls[0] == ("apply", ((IP, MAC),))
    assert fw.current(config) and fw.allowed() == {(IP, MAC)}
    assert gw2.handle({"op": "client", "client": IP})["client"]["state"] == "authorized"


def test_sessions_that_expired_while_down_end_at_start(
    make_gateway: MakeGateway, config: Config, clock: FakeClock
) -> None:
    gw = make_gateway()
    lease(gw)
    gw.handle({"op": "auth", "client": MAC, "minutes": 1})
    clock.advance(120)
    gw2 = make_gateway()
    assert gw2.firewall.allowed() == set()
    assert [s.reason for s in gw2.store.ended_sessions()] == ["session-timeout"]


def test_reconciler_repairs_drift(
    make_gateway: MakeGateway, config: Config, clock: FakeClock
) -> None:
    gw = make_gateway()
    lease(gw)
    gw.handle({"op": "auth", "client": MAC})
    fw = gw.firewall
    # someone edited the kernel: our client's element gone, a stranger's added
    fw.elements = {e for e in fw.elements if e[0] != "auth4"}
    fw.elements.add(("auth4", "198.19.0.200 . 02:50:4c:00:00:99", None))
    assert gw.reconcile() == 2
    assert fw.allowed() == {(IP, MAC)}
    assert gw.reconcile() == 0
    fw.flush()  # the whole table was flushed
    assert gw.reconcile() == 1
    assert fw.allowed() == {(IP, MAC)}
    assert gw.reconcile() == 0


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        ([1, 2], "must be a JSON object"),
        ({"op": "launch"}, "unknown op"),
        ({"op": "auth"}, "'client' must be a non-empty string"),
        ({"op": "auth", "client": "198.19.0.77"}, "not a client: 198.19.0.77"),
        ({"op": "auth", "client": MAC, "minutes": "5"}, "'minutes' must be an integer"),
        ({"op": "deauth", "client": MAC}, "is not authorized"),
        ({"op": "deauth", "client": MAC, "reason": "quota"}, "'reason' must be 'admin' or"),
        ({"op": "deauth", "client": MAC, "reason": "bored"}, "bad request for deauth"),
        ({"op": "lease", "action": "boom", "mac": MAC, "ip": IP}, "unknown lease action"),
        ({"op": "lease", "action": "add", "mac": "zz", "ip": IP}, "not a MAC address"),
    ],
)
def test_bad_requests_get_one_line_errors_and_lose_nothing(
    make_gateway: MakeGateway, config: Config, clock: FakeClock, request_: object, message: str
) -> None:
    gw = make_gateway()
    lease(gw, mac="02:50:4c:00:00:05", ip="198.19.0.105")
    gw.handle({"op": "auth", "client": "198.19.0.105"})
    lease(gw)
    before = gw.firewall.allowed()
    r = gw.handle(request_)
    assert r["ok"] is False and message in r["error"] and "\n" not in r["error"]
    assert gw.firewall.allowed() == before == {("198.19.0.105", "02:50:4c:00:00:05")}


def test_lease_release_ends_the_session(
    make_gateway: MakeGateway, config: Config, clock: FakeClock
) -> None:
    gw = make_gateway()
    lease(gw)
    gw.handle({"op": "auth", "client": MAC})
    assert lease(gw, action="del")["ok"]
    assert gw.firewall.allowed() == set()
    assert [s.reason for s in gw.store.ended_sessions()] == ["left"]


V6 = "2001:db8:19::1:a"
V6B = "2001:db8:19::1:b"


def test_ipv6_addresses_follow_the_session_into_the_kernel_and_the_database(
    make_gateway: MakeGateway, config: Config, clock: FakeClock
) -> None:
    gw = make_gateway()
    lease(gw)
    gw.neighbour(MAC, V6)
    gw.handle({"op": "auth", "client": V6})
    assert gw.firewall.allowed() == {(IP, MAC), (V6, MAC)}
    gw.neighbour(MAC, V6B)  # a new temporary address during the session
    assert gw.firewall.allowed() == {(IP, MAC), (V6, MAC), (V6B, MAC)}
    gw.neighbour(MAC, V6, failed=True)
    assert gw.firewall.allowed() == {(IP, MAC), (V6B, MAC)}
    fw = FakeFirewall()  # restart: addresses come back from SQLite
    gw2 = make_gateway(firewall=fw)
    assert fw.allowed() == {(IP, MAC), (V6B, MAC)}
    assert gw2.handle({"op": "client", "client": V6B})["client"]["ipv6"] == [V6B]
    gw2.handle({"op": "deauth", "client": V6B})
    assert fw.allowed() == set()


def test_clients_listing_in_pages_and_ping_counts(
    make_gateway: MakeGateway, config: Config, clock: FakeClock
) -> None:
    gw = make_gateway()
    for i in range(7):
        mac = f"02:00:00:00:01:{i:02x}"
        gw.handle({"op": "lease", "action": "add", "mac": mac, "ip": f"198.19.0.{10 + i}"})
        if i % 2 == 0:
            gw.handle({"op": "auth", "client": mac})
    assert gw.handle({"op": "ping"}) == {"ok": True, "clients": 7, "authorized": 4}
    gw.handle({"op": "deauth", "client": "02:00:00:00:01:00"})
    assert gw.handle({"op": "ping"})["authorized"] == 3
    pages, offset = [], 0
    while offset is not None:
        answer = gw.handle({"op": "clients", "offset": offset, "limit": 3})
        pages.append([c["mac"] for c in answer["clients"]])
        offset = answer["next"]
    assert [len(p) for p in pages] == [3, 3, 1]
    whole = [c["mac"] for c in gw.handle({"op": "clients"})["clients"]]
    assert [mac for page in pages for mac in page] == whole
    assert not gw.handle({"op": "clients", "limit": 0})["ok"]
    assert not gw.handle({"op": "clients", "limit": 2, "offset": -1})["ok"]
    restarted = make_gateway()
    assert restarted.handle({"op": "ping"})["authorized"] == 3


def test_sessions_with_the_same_limits_share_one_policy(
    make_gateway: MakeGateway, config: Config, clock: FakeClock
) -> None:
    gw = make_gateway()
    for i in range(3):
        mac = f"02:00:00:00:02:{i:02x}"
        gw.handle({"op": "lease", "action": "add", "mac": mac, "ip": f"198.19.0.{30 + i}"})
        gw.handle({"op": "auth", "client": mac, "quota_total_mb": 100})
    policies = {id(c.policy) for c in gw.table.authorized()}
    assert len(policies) == 1
    restarted = make_gateway()
    assert len({id(c.policy) for c in restarted.table.authorized()}) == 1
