"""IPv6 in the session table: several addresses per station, none taken from another, bounded."""

import pytest

from gateway.stations import sessions
from gateway.stations.sessions import SessionTable
from gateway.stations.station import Allow, EndSession, Presence, Reason, Revoke, State
from tests.conftest import FakeClock

MAC = "02:50:4c:00:00:01"
MAC2 = "02:50:4c:00:00:02"
IP = "198.19.0.100"
V6 = "2001:db8:19::1:a"
V6B = "2001:db8:19::1:b"


@pytest.fixture
def table(clock: FakeClock) -> SessionTable:
    t = SessionTable(default_minutes=60, max_minutes=120)
    t.seen(MAC, IP, clock())
    t.seen(MAC, V6, clock(), authoritative=False)
    return t


def test_ipv6_addresses_join_the_station_and_find_it(table: SessionTable) -> None:
    client = table.find(V6)
    assert client.mac == MAC and client.ip == IP and client.ip6 == (V6,)
    assert table.find(IP) is client


def test_login_lets_every_address_through(table: SessionTable, clock: FakeClock) -> None:
    ops = table.authorize(IP, clock())
    assert Allow((IP, MAC)) in ops and Allow((V6, MAC)) in ops
    assert sorted(table.elements()) == sorted([(IP, MAC), (V6, MAC)])


def test_new_address_of_an_authorized_station_is_let_through(
    table: SessionTable, clock: FakeClock
) -> None:
    table.authorize(IP, clock())
    ops = table.seen(MAC, V6B, clock(), authoritative=False)
    assert Allow((V6B, MAC)) in ops
    assert table.find(V6B).state is State.AUTHORIZED
    assert not any(isinstance(op, EndSession) for op in ops)  # a new v6 address is no move


def test_another_station_cannot_claim_an_address(table: SessionTable, clock: FakeClock) -> None:
    table.authorize(IP, clock())
    assert table.seen(MAC2, V6, clock(), authoritative=False) == []
    assert table.find(V6).mac == MAC
    assert (V6, MAC2) not in table.elements()


def test_addresses_per_station_are_bounded(table: SessionTable, clock: FakeClock) -> None:
    table.authorize(IP, clock())
    revoked = []
    for i in range(sessions.MAX_IPV6 + 3):
        ops = table.seen(MAC, f"2001:db8:19::2:{i:x}", clock(), authoritative=False)
        revoked += [op.element[0] for op in ops if isinstance(op, Revoke)]
    client = table.find(MAC)
    assert len(client.ip6) == sessions.MAX_IPV6
    assert revoked[:4] == [V6, "2001:db8:19::2:0", "2001:db8:19::2:1", "2001:db8:19::2:2"]
    assert V6 not in table.by_ip
    assert len(table.elements()) == sessions.MAX_IPV6 + 1


def test_link_local_is_not_tracked(table: SessionTable, clock: FakeClock) -> None:
    assert table.seen(MAC, "fe80::1", clock(), authoritative=False) == []
    assert table.find(MAC).ip6 == (V6,)


def test_failed_ipv6_neighbour_drops_the_address_only(
    table: SessionTable, clock: FakeClock
) -> None:
    table.authorize(IP, clock())
    ops = table.lost(V6, clock(), MAC)
    assert Revoke((V6, MAC)) in ops
    client = table.find(MAC)
    assert client.state is State.AUTHORIZED and client.ip6 == ()


def test_failed_ipv4_neighbour_is_a_leave(table: SessionTable, clock: FakeClock) -> None:
    table.authorize(IP, clock())
    ops = table.lost(IP, clock())
    ended = [op for op in ops if isinstance(op, EndSession)]
    assert ended and ended[0].reason is Reason.LEFT
    assert Revoke((V6, MAC)) in ops and Revoke((IP, MAC)) in ops
    assert table.clients[MAC].addresses() == ()


def test_ipv6_only_station_can_log_in(clock: FakeClock) -> None:
    t = SessionTable()
    t.seen(MAC2, V6B, clock(), authoritative=False)
    assert t.authorize(V6B, clock())[-1] == Allow((V6B, MAC2))


def test_mac_flood_is_bounded_and_spares_authorized(
    monkeypatch: pytest.MonkeyPatch, table: SessionTable, clock: FakeClock
) -> None:
    monkeypatch.setattr(sessions, "MAX_STATIONS", 100)
    table.authorize(IP, clock())
    for i in range(1000):
        clock.advance(1)
        table.seen(f"02:66:00:00:{i >> 8:02x}:{i & 255:02x}", None, clock())
    assert len(table.clients) <= 100
    assert table.find(MAC).state is State.AUTHORIZED
    assert table.evicted >= 900
    assert len(table.by_ip) == len({a for c in table.clients.values() for a in c.addresses()})


def test_presence_join_and_leave_once_per_visit(clock: FakeClock) -> None:
    t = SessionTable()
    ops = t.seen(MAC, IP, clock())
    assert [op for op in ops if isinstance(op, Presence)] == [Presence("join", MAC, clock())]
    assert not any(isinstance(op, Presence) for op in t.seen(MAC, V6, clock(), False))
    assert not any(isinstance(op, Presence) for op in t.seen(MAC, IP, clock()))  # renewal
    clock.advance(60)
    ops = t.leave(MAC, clock())
    assert Presence("leave", MAC, clock()) in ops
    assert not any(isinstance(op, Presence) for op in t.leave(MAC, clock()))
    v6_only = t.seen(MAC2, V6B, clock(), authoritative=False)
    assert Presence("join", MAC2, clock()) in v6_only


def test_leaving_and_lost_addresses_are_forgotten_by_the_detector(
    table: SessionTable, clock: FakeClock
) -> None:
    from gateway.stations.station import Forget

    [lost] = [op for op in table.lost(V6, clock(), MAC) if isinstance(op, Forget)]
    assert lost.elements == ((V6, MAC),)
    table.seen(MAC, V6B, clock(), authoritative=False)
    [gone] = [op for op in table.leave(MAC, clock()) if isinstance(op, Forget)]
    assert set(gone.elements) == {(IP, MAC), (V6B, MAC)}
