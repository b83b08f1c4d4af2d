"""Per-client policy through the gateway, with the fake firewall and an injected clock:
overrides, quota and idle endings, access lists, the limit on clients, and the kernel objects."""

from collections.abc import Callable
from dataclasses import replace

import pytest

from gateway.config import AccountingConfig, Config, PolicyConfig
from gateway.gateway import Gateway
from tests.unit.conftest import MakeGateway

MAC, IP = "02:50:4c:00:00:01", "198.19.0.100"
MAC2, IP2 = "02:50:4c:00:00:02", "198.19.0.101"
MAC3, IP3 = "02:50:4c:00:00:03", "198.19.0.102"
S = "bbbb"  # a session id stand-in in object names


@pytest.fixture
def config(make_config: Callable[..., Config]) -> Config:
    return make_config(accounting=AccountingConfig(poll_seconds=1, interim_seconds=0))


def join(gw: Gateway, mac: str = MAC, ip: str = IP) -> None:
    assert gw.handle({"op": "lease", "action": "add", "mac": mac, "ip": ip})["ok"]


def auth(gw: Gateway, who: str = MAC, **overrides) -> dict:
    return gw.handle({"op": "auth", "client": who, **overrides})


def objects(gw: Gateway) -> dict[str, tuple]:
    """Kernel objects by kind and prefix, session id left out."""
    return {
        f"{kind}:{name.split('_')[0]}": spec for (kind, name), spec in gw.firewall.objects.items()
    }


def reasons(gw: Gateway) -> list[str]:
    return [s.reason for s in gw.store.ended_sessions()]


def test_an_unlimited_client_gets_counters_and_nothing_else(
    make_gateway: MakeGateway, config: Config, clock
) -> None:
    gw = make_gateway()
    join(gw)
    r = auth(gw)
    assert r["ok"], r
    assert objects(gw) == {"counter:up": (), "counter:down": ()}
    client = r["client"]
    assert client["policy"] == {"session_minutes": 60, "idle_seconds": 0, "quota_up_mb": 0,
                                "quota_down_mb": 0, "quota_total_mb": 0, "rate_up_kbit": 0,
                                "rate_down_kbit": 0}  # fmt: skip
    assert client["bytes_remaining"] is None and client["bytes_up"] == 0


def test_overrides_become_kernel_objects_and_are_stored(
    make_gateway: MakeGateway, config: Config, clock
) -> None:
    gw = make_gateway()
    join(gw)
    r = auth(gw, minutes=10, quota_total_mb=5, quota_down_mb=3, rate_down_kbit=8000)
    assert r["ok"], r
    assert objects(gw) == {
        "counter:up": (),
        "counter:down": (),
        "quota:qdown": (3_000_000,),
        "quota:qtotal": (5_000_000,),
        "limit:rdown": (1_000_000, 100_000),
    }
    maps = {name for name, _, value in gw.firewall.elements if value}
    assert maps == {"cnt_up4", "cnt_down4", "quota_down4", "quota_total_up4",
                    "quota_total_down4", "rate_down4"}  # fmt: skip
    assert r["client"]["bytes_remaining"] == 3_000_000
    assert r["client"]["seconds_remaining"] == 600
    # a new process reads the session's policy back
    gw2 = make_gateway(firewall=gw.firewall)
    assert gw2.table.find(MAC).policy == gw.table.find(MAC).policy
    assert gw2.reconcile() == 0


def test_venue_defaults_apply_and_overrides_win(
    make_gateway: MakeGateway, config: Config, clock
) -> None:
    config = replace(config, policy=PolicyConfig(quota_total_mb=100, rate_up_kbit=1000))
    gw = make_gateway(config)
    join(gw)
    policy = auth(gw, rate_up_kbit=0)["client"]["policy"]
    assert policy["quota_total_mb"] == 100 and policy["rate_up_kbit"] == 0
    r = auth(gw, quota_up_mb=500)  # extending: the session's policy, with this on top
    assert not r["ok"] and "larger than quota_total_mb" in r["error"]


def test_quota_exhaustion_stops_traffic_and_ends_the_session(
    make_gateway: MakeGateway, config: Config, clock
) -> None:
    gw = make_gateway()
    join(gw)
    auth(gw, quota_down_mb=1)
    fw = gw.firewall
    got = fw.traffic(IP, MAC, up=10_000, down=3_000_000)
    assert got < 1_000_000 + 10_000  # the kernel dropped what went over, at once
    assert gw.view(gw.table.find(MAC), clock())["state"] == "authorized"  # until the poll
    clock.advance(1)
    gw.poll()
    assert gw.table.find(MAC).state == "captive"
    assert reasons(gw) == ["quota"] and gw.ended_by_reason["quota"] == 1
    assert fw.allowed() == set() and fw.objects == {}
    (final,) = gw_records(gw)
    assert final["final"] and final["reason"] == "quota"
    assert final["bytes_down"] + final["bytes_up"] == got


def test_total_quota_counts_both_directions(
    make_gateway: MakeGateway, config: Config, clock
) -> None:
    gw = make_gateway()
    join(gw)
    auth(gw, quota_total_mb=1)
    gw.firewall.traffic(IP, MAC, up=600_000)
    gw.poll()
    assert gw.view(gw.table.find(MAC), clock())["bytes_remaining"] == 400_000
    gw.firewall.traffic(IP, MAC, down=600_000)
    gw.poll()
    assert reasons(gw) == ["quota"]


def test_idle_timeout_ends_a_quiet_session_only(
    make_gateway: MakeGateway, config: Config, clock
) -> None:
    gw = make_gateway()
    join(gw)
    join(gw, MAC2, IP2)
    auth(gw, MAC, idle_seconds=60)
    auth(gw, MAC2, idle_seconds=60)
    for _ in range(5):
        clock.advance(20)
        gw.firewall.traffic(IP2, MAC2, up=100)  # phone 2 keeps talking
        gw.poll()
    assert gw.table.find(MAC).state == "captive" and gw.table.find(MAC2).state == "authorized"
    assert reasons(gw) == ["idle-timeout"]
    assert gw.view(gw.table.find(MAC2), clock())["idle_seconds"] == 0


def test_view_shows_usage_and_idle_time(make_gateway: MakeGateway, config: Config, clock) -> None:
    gw = make_gateway()
    join(gw)
    auth(gw, quota_total_mb=10)
    gw.firewall.traffic(IP, MAC, up=3000, down=7000, size=1000)
    gw.poll()
    clock.advance(42)
    c = gw.handle({"op": "client", "client": IP})["client"]
    assert (c["bytes_up"], c["packets_up"], c["bytes_down"], c["packets_down"]) == (
        3000,
        3,
        7000,
        7,
    )
    assert c["idle_seconds"] == 42 and c["bytes_remaining"] == 10_000_000 - 10_000
    listed = gw.handle({"op": "clients"})["clients"]
    assert listed[0]["bytes_down"] == 7000


def test_blocked_mac_is_refused_and_kicked_at_start(
    make_gateway: MakeGateway, config: Config, clock
) -> None:
    gw = make_gateway()
    join(gw)
    join(gw, MAC2, IP2)
    auth(gw, MAC2)
    blocked = replace(config, policy=PolicyConfig(blocked_macs=(MAC.upper(), MAC2)))
    gw2 = make_gateway(blocked, gw.firewall)  # the venue blocked both; phone 2 was online
    assert reasons(gw2) == ["blocked"] and gw2.firewall.allowed() == set()
    r = auth(gw2, MAC)
    assert r == {"ok": False, "error": f"{MAC} is blocked by the venue ([policy] blocked_macs)"}


def test_trusted_mac_is_online_without_login_and_without_limits(
    make_gateway: MakeGateway, config: Config, clock
) -> None:
    trusted = replace(config, policy=PolicyConfig(trusted_macs=(MAC,), quota_total_mb=1,
                                                  max_clients=1))  # fmt: skip
    gw = make_gateway(trusted)
    join(gw)  # the till joins
    c = gw.table.find(MAC)
    assert c.state == "authorized" and c.trusted and c.expires_at is None
    assert objects(gw) == {"counter:up": (), "counter:down": ()}  # counted, never limited
    r = gw.handle({"op": "deauth", "client": MAC})
    assert not r["ok"] and "trusted MAC" in r["error"]
    join(gw, MAC2, IP2)
    assert auth(gw, MAC2)["ok"]  # the till does not take the one place
    clock.advance(10**6)
    gw.tick()
    assert gw.table.find(MAC).state == "authorized"
    # no longer trusted after a config change: its session ends at start
    gw2 = make_gateway(firewall=gw.firewall)
    assert gw2.table.find(MAC).state == "captive"
    assert "admin" in reasons(gw2)


def test_max_clients_refuses_one_more_but_lets_sessions_extend(
    make_gateway: MakeGateway, config: Config, clock
) -> None:
    gw = make_gateway(replace(config, policy=PolicyConfig(max_clients=2)))
    for mac, ip in ((MAC, IP), (MAC2, IP2), (MAC3, IP3)):
        join(gw, mac, ip)
    assert auth(gw, MAC)["ok"] and auth(gw, MAC2)["ok"]
    r = auth(gw, MAC3)
    assert r == {"ok": False, "error": "the venue's limit of 2 clients online is reached; "
                 "try again later"}  # fmt: skip
    assert auth(gw, MAC, minutes=30)["ok"]  # extending is not joining
    gw.handle({"op": "deauth", "client": MAC2})
    assert auth(gw, MAC3)["ok"]


def test_mac_trust_readmission_respects_the_limit(
    make_gateway: MakeGateway, config: Config, clock
) -> None:
    config = replace(config, policy=PolicyConfig(max_clients=1))
    config = replace(config, reconnect=replace(config.reconnect, trust_mac=True))
    gw = make_gateway(config)
    join(gw)
    auth(gw, MAC, minutes=1)
    clock.advance(61)
    gw.tick()  # session-timeout: MAC trust would let it back in
    join(gw, MAC2, IP2)
    auth(gw, MAC2)
    join(gw, MAC, "198.19.0.150")
    assert gw.table.find(MAC).state == "captive"  # the venue is full


def test_address_change_ends_the_session_and_keeps_its_usage(
    make_gateway: MakeGateway, config: Config, clock
) -> None:
    """A MAC at a new address is no proof of the same phone: its session ends (a MAC clone
    must not inherit it), and what the session used is still accounted for."""
    gw = make_gateway()
    join(gw)
    auth(gw, quota_total_mb=5)
    gw.firewall.traffic(IP, MAC, down=4000)
    join(gw, MAC, "198.19.0.150")
    assert gw.table.find(MAC).state == "captive"
    assert gw.firewall.allowed() == set()
    assert reasons(gw) == ["address-changed"]
    gw.poll()
    records = gw_records(gw)
    assert sum(r["bytes_down"] for r in records) == 4000
    assert gw.reconcile() == 0


def test_new_quota_on_extension_resizes_in_place(
    make_gateway: MakeGateway, config: Config, clock
) -> None:
    gw = make_gateway()
    join(gw)
    auth(gw, quota_total_mb=1, rate_up_kbit=100)
    gw.firewall.traffic(IP, MAC, down=400_000)
    assert auth(gw, quota_total_mb=2, rate_up_kbit=200)["ok"]  # a top-up
    assert objects(gw)["quota:qtotal"] == (2_000_000,)
    assert objects(gw)["limit:rup"][0] == 25_000
    assert list(gw.firewall.quota_used.values()) == [400_000]  # kept what it used
    gw.poll()
    assert gw.view(gw.table.find(MAC), clock())["bytes_remaining"] == 1_600_000


def test_kernel_drift_in_policy_objects_is_repaired(
    make_gateway: MakeGateway, config: Config, clock
) -> None:
    gw = make_gateway()
    join(gw)
    auth(gw, rate_down_kbit=800, quota_up_mb=2)
    fw = gw.firewall
    key = next(k for k in fw.objects if k[0] == "limit")
    fw.objects[key] = (1, 1)  # someone changed the rate by hand
    fw.elements = {e for e in fw.elements if e[0] != "quota_up4"}  # and dropped a map element
    assert gw.reconcile() == 5  # limit and its element replaced (4), quota element back
    assert fw.objects[key] == (100_000, 15_140)
    assert gw.reconcile() == 0


def test_a_failed_kernel_change_falls_back_to_reconciling(
    make_gateway: MakeGateway, config: Config, clock
) -> None:
    gw = make_gateway()
    join(gw)
    gw.firewall.fail_next = "Error: Could not process rule: No such file or directory"
    assert auth(gw)["ok"]
    assert gw.firewall.allowed() == {(IP, MAC)} and gw.repairs > 0


def gw_records(gw: Gateway) -> list[dict]:
    from gateway.stations.outbox import Outbox

    return Outbox(gw.store).all()
