"""Station detection without a kernel: neighbour messages and queued first packets."""

import pytest

from gateway.gateway import Gateway
from gateway.stations import detect
from gateway.stations.detect import Detector
from gateway.stations.neighbours import NUD_FAILED, NUD_PROBE, NUD_REACHABLE, NUD_STALE, Neighbours
from tests.conftest import FakeClock
from tests.unit.conftest import MakeGateway

MAC = "02:50:4c:00:00:01"
EVIL = "02:66:00:00:00:66"
IP = "198.19.0.100"
V6 = "2001:db8:19::1:a"
LAN = 7


@pytest.fixture
def gw(make_gateway: MakeGateway) -> Gateway:
    gateway = make_gateway()
    gateway.handle({"op": "lease", "action": "add", "mac": MAC, "ip": IP})
    gateway.handle({"op": "auth", "client": MAC})
    return gateway


class Probes:
    def __init__(self) -> None:
        self.asked: list[tuple[str, str]] = []

    def __call__(self, ip: str, mac: str) -> None:
        self.asked.append((ip, mac))


def watcher(gw: Gateway, clock: FakeClock) -> tuple[Neighbours, Probes]:
    probes = Probes()
    return Neighbours(gw, LAN, probes, clock), probes


def state(gw: Gateway) -> str:
    return gw.table.clients[MAC].state.value


def test_reachable_neighbour_adds_an_ipv6_address(gw: Gateway, clock: FakeClock) -> None:
    n, _ = watcher(gw, clock)
    n.message(LAN, NUD_REACHABLE, V6, MAC, 0)
    assert (V6, MAC) in gw.firewall.allowed()
    n.message(LAN + 1, NUD_REACHABLE, "2001:db8:19::9", MAC, 0)  # another interface
    assert gw.table.clients[MAC].ip6 == (V6,)


def test_flush_is_not_a_departure(gw: Gateway, clock: FakeClock) -> None:
    n, probes = watcher(gw, clock)
    n.message(LAN, NUD_FAILED, IP, None, 0)  # `ip neigh flush`: FAILED, no probe sent
    assert state(gw) == "authorized" and probes.asked == []


def test_failure_is_confirmed_by_probing_the_holder(gw: Gateway, clock: FakeClock) -> None:
    n, probes = watcher(gw, clock)
    n.message(LAN, NUD_FAILED, IP, None, 3)
    assert probes.asked == [(IP, MAC)] and state(gw) == "authorized"
    n.message(LAN, NUD_PROBE, IP, MAC, 0)  # our re-probe under way: no answer yet
    clock.advance(3)
    n.message(LAN, NUD_FAILED, IP, None, 3)  # the holder's own MAC did not answer either
    assert state(gw) == "captive"
    assert gw.table.clients[MAC].last_end_reason == "left"
    assert n.departures == 1


def test_forged_claim_that_goes_quiet_does_not_log_the_victim_out(
    gw: Gateway, clock: FakeClock
) -> None:
    n, probes = watcher(gw, clock)
    n.message(LAN, NUD_REACHABLE, IP, EVIL, 0)  # forged ARP: ignored, the lease holds IP
    n.message(LAN, NUD_FAILED, IP, None, 3)  # the attacker went quiet
    assert probes.asked == [(IP, MAC)]
    n.message(LAN, NUD_REACHABLE, IP, MAC, 1)  # the victim answers the unicast probe
    clock.advance(20)
    n.message(LAN, NUD_FAILED, IP, None, 3)  # a later failure starts a new confirmation
    assert state(gw) == "authorized" and len(probes.asked) == 2


def test_stale_confirmation_does_not_count(gw: Gateway, clock: FakeClock) -> None:
    n, probes = watcher(gw, clock)
    n.message(LAN, NUD_FAILED, IP, None, 3)
    clock.advance(60)
    n.message(LAN, NUD_FAILED, IP, None, 3)
    assert state(gw) == "authorized" and len(probes.asked) == 2


def release(gw: Gateway, mac: str = MAC, ip: str = IP) -> dict:
    return gw.handle({"op": "lease", "action": "del", "mac": mac, "ip": ip})


def test_a_forged_release_is_refuted_by_the_holder(gw: Gateway, clock: FakeClock) -> None:
    """A DHCPRELEASE with the victim's MAC, client-id and address, sent by anyone: only a
    probe of the holder's MAC; the holder answers and stays online."""
    n, probes = watcher(gw, clock)
    gw.confirm_departure = n.confirm
    assert release(gw) == {"ok": True}
    assert probes.asked == [(IP, MAC)]
    assert state(gw) == "authorized" and gw.firewall.allowed() == {(IP, MAC)}
    n.message(LAN, NUD_PROBE, IP, MAC, 0)  # the probe under way
    n.message(LAN, NUD_REACHABLE, IP, MAC, 1)  # the holder answers
    clock.advance(3)
    n.message(LAN, NUD_FAILED, IP, None, 3)  # a later failure starts over, it is no departure
    assert state(gw) == "authorized" and n.departures == 0 and len(probes.asked) == 2


def test_a_release_nobody_answers_for_is_a_departure(gw: Gateway, clock: FakeClock) -> None:
    n, probes = watcher(gw, clock)
    assert probes.asked == []
    gw.confirm_departure = n.confirm
    release(gw)
    assert probes.asked == [(IP, MAC)]
    clock.advance(3)
    n.message(LAN, NUD_FAILED, IP, None, 3)  # the probe of the holder's MAC went unanswered
    assert state(gw) == "captive" and gw.table.clients[MAC].last_end_reason == "left"
    assert gw.table.clients[MAC].ip is None and gw.firewall.allowed() == set()
    assert n.departures == 1 and [s.reason for s in gw.store.ended_sessions()] == ["left"]


def test_a_release_of_an_address_the_station_does_not_hold_probes_nothing(
    gw: Gateway, clock: FakeClock
) -> None:
    n, probes = watcher(gw, clock)
    gw.confirm_departure = n.confirm
    assert release(gw, ip="198.19.0.9") == {"ok": True}  # stale: not its address
    assert release(gw, mac=EVIL) == {"ok": True}  # a MAC that holds nothing
    assert probes.asked == [] and state(gw) == "authorized"


STALE = "198.19.0.99"  # the address an older lease in the file names


def replayed(gw: Gateway, mac: str = MAC, ip: str = STALE) -> None:
    """A lease as the daemon reads it from the file at start (lease_watch's replay)."""
    gw.requests.lease("old", mac, ip, replayed=True)


def test_a_replayed_lease_does_not_end_a_restored_session_its_holder_answers_for(
    gw: Gateway, clock: FakeClock
) -> None:
    """After a power cut the lease file (not fsynced by dnsmasq) may be older than the
    database: its lease for another address starts a probe of the session's address, and
    the phone's answer keeps the session; nothing is ended, nothing counted twice."""
    n, probes = watcher(gw, clock)
    gw.confirm_departure = n.confirm
    replayed(gw)
    assert probes.asked == [(IP, MAC)]
    assert state(gw) == "authorized" and gw.table.clients[MAC].ip == IP
    assert gw.firewall.allowed() == {(IP, MAC)} and gw.store.ended_sessions() == []
    n.message(LAN, NUD_REACHABLE, IP, MAC, 1)  # the phone answers at its restored address
    clock.advance(20)
    assert state(gw) == "authorized" and n.departures == 0


def test_a_replayed_lease_counts_once_the_restored_address_is_silent(
    gw: Gateway, clock: FakeClock
) -> None:
    n, probes = watcher(gw, clock)
    gw.confirm_departure = n.confirm
    replayed(gw)
    assert probes.asked == [(IP, MAC)]
    clock.advance(3)
    n.message(LAN, NUD_FAILED, IP, None, 3)  # nobody at the restored address
    assert state(gw) == "captive" and gw.table.clients[MAC].last_end_reason == "left"
    n.message(LAN, NUD_REACHABLE, STALE, MAC, 1)  # the phone, where the file said
    assert gw.table.clients[MAC].ip == STALE and gw.firewall.allowed() == set()
    assert [s.reason for s in gw.store.ended_sessions()] == ["left"]


def test_a_replayed_lease_does_not_take_a_restored_sessions_address(
    gw: Gateway, clock: FakeClock
) -> None:
    n, probes = watcher(gw, clock)
    gw.confirm_departure = n.confirm
    replayed(gw, mac=EVIL, ip=IP)  # an older lease of the same address to another station
    assert probes.asked == [(IP, MAC)]
    assert state(gw) == "authorized" and gw.table.by_ip[IP] == MAC
    assert EVIL not in gw.table.clients


def test_a_replayed_lease_without_a_prober_waits_for_the_next_dhcp_exchange(
    gw: Gateway, clock: FakeClock
) -> None:
    replayed(gw)
    assert state(gw) == "authorized" and gw.table.clients[MAC].ip == IP
    gw.requests.lease("old", MAC, STALE)  # a renewal seen to change the file: authoritative
    assert state(gw) == "captive" and gw.table.clients[MAC].last_end_reason == "address-changed"


def test_a_replayed_lease_that_agrees_or_is_anyone_elses_applies_at_once(
    gw: Gateway, clock: FakeClock
) -> None:
    n, probes = watcher(gw, clock)
    gw.confirm_departure = n.confirm
    replayed(gw, ip=IP)  # the session's own lease
    replayed(gw, mac=EVIL, ip=STALE)  # a station with no session
    gw.handle({"op": "auth", "client": MAC})
    assert probes.asked == [] and state(gw) == "authorized"
    assert gw.table.clients[EVIL].ip == STALE and gw.table.by_ip[STALE] == EVIL


def test_failed_ipv6_address_is_dropped_not_the_station(gw: Gateway, clock: FakeClock) -> None:
    n, _ = watcher(gw, clock)
    n.message(LAN, NUD_STALE, V6, MAC, 0)
    n.message(LAN, NUD_FAILED, V6, None, 3)
    n.message(LAN, NUD_FAILED, V6, None, 3)
    assert state(gw) == "authorized"
    assert gw.table.clients[MAC].ip6 == ()
    assert gw.firewall.allowed() == {(IP, MAC)}


def ipv4_packet(src: bytes) -> bytes:
    return bytes([0x45, 0, 0, 40]) + bytes(8) + src + bytes([192, 0, 2, 80]) + bytes(20)


def ipv6_packet(src: bytes) -> bytes:
    return bytes([0x60, 0, 0, 0, 0, 0, 6, 64]) + src + bytes(16)


def test_first_packet_teaches_a_new_address_before_its_verdict(gw: Gateway) -> None:
    d = Detector(gw.neighbour)
    src = bytes.fromhex("20010db8001900000000000000010b00")
    d.packet(ipv6_packet(src), bytes.fromhex("02504c000001"))
    assert ("2001:db8:19::1:b00", MAC) in gw.firewall.allowed()
    d.packet(ipv4_packet(bytes([198, 19, 0, 77])), bytes.fromhex("02504c000002"))
    assert gw.table.find("198.19.0.77").mac == "02:50:4c:00:00:02"
    assert d.stats["learned"] == 2


@pytest.mark.parametrize(
    "payload, hw",
    [
        (b"", b"\x02\x00\x00\x00\x00\x01"),  # empty
        (b"\x45" + bytes(10), b"\x02\x00\x00\x00\x00\x01"),  # truncated IPv4
        (b"\x60" + bytes(20), b"\x02\x00\x00\x00\x00\x01"),  # truncated IPv6
        (b"\x99" * 1500, b"\x02\x00\x00\x00\x00\x01"),  # garbage, oversized
        (ipv4_packet(bytes([198, 19, 0, 5])), None),  # no MAC
        (ipv4_packet(bytes([198, 19, 0, 5])), b"\x01\x00\x5e\x00\x00\x01"),  # multicast MAC
        (ipv4_packet(bytes([0, 0, 0, 0])), b"\x02\x00\x00\x00\x00\x01"),  # unspecified
    ],
)
def test_malformed_packets_are_counted_not_fatal(gw: Gateway, payload: bytes, hw) -> None:
    d = Detector(gw.neighbour)
    before = len(gw.table.clients)
    d.packet(payload, hw)
    assert d.stats["learned"] + d.stats["malformed"] + d.stats["errors"] == 1
    assert d.stats["learned"] == 0 or len(gw.table.clients) == before


def test_a_mac_flood_is_rate_limited(gw: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(detect, "MAX_PER_SECOND", 50)
    t = [100.0]
    d = Detector(gw.neighbour, clock=lambda: t[0])
    for i in range(200):
        hw = bytes([2, 0x66, 0, 0, i >> 8, i & 255])
        d.packet(ipv4_packet(bytes([198, 19, 1, i & 255])), hw)
    assert d.stats["learned"] == 50 and d.stats["over_rate"] == 150
    t[0] += 1.5
    d.packet(ipv4_packet(bytes([198, 19, 2, 1])), b"\x02\x66\x00\x01\x00\x01")
    assert d.stats["learned"] == 51


def test_learned_and_over_rate_pairs_are_marked_seen(
    gw: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(detect, "MAX_PER_SECOND", 1)
    marked: list[tuple[str, str]] = []
    d = Detector(gw.neighbour, clock=lambda: 5.0, seen=lambda ip, mac: marked.append((ip, mac)))
    d.packet(ipv4_packet(bytes([198, 19, 0, 7])), b"\x02\x00\x00\x00\x00\x07")
    d.packet(ipv4_packet(bytes([198, 19, 0, 8])), b"\x02\x00\x00\x00\x00\x08")  # over rate
    assert marked == [("198.19.0.7", "02:00:00:00:00:07"), ("198.19.0.8", "02:00:00:00:00:08")]
    assert d.stats["learned"] == 1 and d.stats["over_rate"] == 1
