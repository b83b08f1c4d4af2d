from dataclasses import replace

import pytest

from gateway.stations.policy import UNLIMITED, Access, Policy
from gateway.stations.sessions import TRANSITIONS, Event, SessionTable, transition
from gateway.stations.station import (
    Allow,
    EndSession,
    Presence,
    Reason,
    Revoke,
    Save,
    SessionError,
    State,
    normalize_mac,
)
from tests.conftest import FakeClock

MAC = "02:50:4c:00:00:01"
MAC2 = "02:50:4c:00:00:02"
IP = "198.19.0.100"


def kinds(ops: list) -> list[type]:
    return [type(op) for op in ops]


@pytest.fixture
def table(clock: FakeClock) -> SessionTable:
    t = SessionTable(default_minutes=60, max_minutes=120)
    t.seen(MAC, IP, clock())
    return t


def test_guard_refuses_transitions_not_in_the_table() -> None:
    assert (State.CAPTIVE, Event.DEAUTHORIZE) not in TRANSITIONS
    with pytest.raises(SessionError, match="cannot deauthorize"):
        transition(State.CAPTIVE, Event.DEAUTHORIZE)


def test_new_station_is_captive(table: SessionTable) -> None:
    assert table.find(MAC).state is State.CAPTIVE
    assert table.find(IP).mac == MAC
    assert table.elements() == []


def test_authorize_allows_address_and_mac(table: SessionTable, clock: FakeClock) -> None:
    ops = table.authorize(IP, clock(), minutes=10)
    assert Allow((IP, MAC)) in ops
    client = table.find(MAC)
    assert client.state is State.AUTHORIZED
    assert client.expires_at == clock() + 600
    assert client.view(clock())["seconds_remaining"] == 600


def test_reauthorize_extends_without_a_second_element(
    table: SessionTable, clock: FakeClock
) -> None:
    table.authorize(MAC, clock(), minutes=10)
    session = table.find(MAC).session_id
    clock.advance(300)
    ops = table.authorize(MAC, clock(), minutes=10)
    assert kinds(ops) == [Save]
    assert table.find(MAC).session_id == session
    assert table.find(MAC).expires_at == clock() + 600


def test_session_expires_on_time(table: SessionTable, clock: FakeClock) -> None:
    table.authorize(MAC, clock(), minutes=1)
    clock.advance(59)
    assert table.tick(clock()) == []
    clock.advance(1)
    ops = table.tick(clock())
    assert Revoke((IP, MAC)) in ops
    ended = [op for op in ops if isinstance(op, EndSession)]
    assert ended[0].reason is Reason.SESSION_TIMEOUT
    assert ended[0].ended_at - ended[0].started_at == 60
    assert table.find(MAC).state is State.CAPTIVE


def test_deauthorize_ends_with_reason(table: SessionTable, clock: FakeClock) -> None:
    table.authorize(MAC, clock())
    ops = table.deauthorize(IP, clock(), Reason.LOGOUT)
    assert Revoke((IP, MAC)) in ops
    assert [op.reason for op in ops if isinstance(op, EndSession)] == [Reason.LOGOUT]
    with pytest.raises(SessionError, match="not authorized"):
        table.deauthorize(IP, clock())


def test_unknown_clients_and_bad_input(table: SessionTable, clock: FakeClock) -> None:
    for who, message in [
        ("198.19.0.9", "not a client"),
        ("02:50:4c:00:00:09", "not a client"),
        ("not-an-address", "not an IP address"),
    ]:
        with pytest.raises(SessionError, match=message):
            table.authorize(who, clock())
    with pytest.raises(SessionError, match="minutes must be between 1 and 120"):
        table.authorize(MAC, clock(), minutes=500)
    with pytest.raises(SessionError, match="multicast"):
        normalize_mac("01:00:5e:00:00:01")
    assert normalize_mac("02-50-4C-00-00-01") == MAC


def test_address_change_ends_the_session(table: SessionTable, clock: FakeClock) -> None:
    table.authorize(MAC, clock())
    ops = table.seen(MAC, "198.19.0.101", clock())
    assert Revoke((IP, MAC)) in ops and not any(isinstance(op, Allow) for op in ops)
    assert [op.reason for op in ops if isinstance(op, EndSession)] == [Reason.ADDRESS_CHANGED]
    assert table.elements() == []
    assert table.find("198.19.0.101").state is State.CAPTIVE
    with pytest.raises(SessionError):
        table.find(IP)


def test_neighbour_claims_never_move_or_take_addresses(
    table: SessionTable, clock: FakeClock
) -> None:
    """ARP/ND is forgeable: a neighbour entry only introduces stations."""
    table.authorize(MAC, clock())
    assert table.seen(MAC2, IP, clock(), authoritative=False) == []  # a clone claims IP
    assert table.seen(MAC, "198.19.0.77", clock(), authoritative=False) == []  # a forged move
    assert table.find(IP).mac == MAC and table.find(MAC).state is State.AUTHORIZED
    ops = table.seen(MAC2, "198.19.0.78", clock(), authoritative=False)
    assert [type(op) for op in ops] == [Presence, Save] and table.find("198.19.0.78").mac == MAC2


def test_address_taken_by_another_device_drops_the_old_state(
    table: SessionTable, clock: FakeClock
) -> None:
    table.authorize(MAC, clock())
    ops = table.seen(MAC2, IP, clock())
    assert Revoke((IP, MAC)) in ops
    assert [op.reason for op in ops if isinstance(op, EndSession)] == [Reason.ADDRESS_TAKEN]
    assert table.find(IP).mac == MAC2
    assert table.find(IP).state is State.CAPTIVE
    assert table.elements() == []


def test_leave_ends_session_and_forgets_address(table: SessionTable, clock: FakeClock) -> None:
    table.authorize(MAC, clock())
    ops = table.leave(MAC, clock())
    assert Revoke((IP, MAC)) in ops
    assert table.find(MAC).ip is None
    assert table.leave("02:50:4c:00:00:77", clock()) == []


def test_repeat_sighting_is_quiet(table: SessionTable, clock: FakeClock) -> None:
    clock.advance(5)
    assert table.seen(MAC, IP, clock()) == []
    assert table.find(MAC).last_seen == clock()


def test_stale_release_after_a_move_is_ignored(table: SessionTable, clock: FakeClock) -> None:
    table.seen(MAC, "198.19.0.60", clock())  # netlink saw the new address first
    assert table.leave(MAC, clock(), ip=IP) == []  # then dnsmasq reports the old lease gone
    assert table.find("198.19.0.60").mac == MAC


def test_address_change_is_saved(table: SessionTable, clock: FakeClock) -> None:
    ops = table.seen(MAC, "198.19.0.60", clock())
    assert [op.client.ip for op in ops if isinstance(op, Save)] == ["198.19.0.60"]


def test_mac_trust_is_off_by_default(table: SessionTable, clock: FakeClock) -> None:
    table.authorize(MAC, clock(), minutes=1)
    clock.advance(120)
    table.tick(clock())
    table.leave(MAC, clock())
    assert kinds(table.seen(MAC, IP, clock())) == [Presence, Save]  # back: a new visit
    assert table.find(MAC).state is State.CAPTIVE


def test_mac_trust_readmits_a_timed_out_station_but_not_after_logout(clock: FakeClock) -> None:
    table = SessionTable(trust_mac_days=30)
    table.seen(MAC, IP, clock())
    table.authorize(MAC, clock(), minutes=1)
    clock.advance(120)
    table.tick(clock())  # session-timeout
    table.leave(MAC, clock())
    ops = table.seen(MAC, "198.19.0.101", clock())
    assert Allow(("198.19.0.101", MAC)) in ops
    table.deauthorize(MAC, clock(), Reason.LOGOUT)
    table.leave(MAC, clock())
    assert not any(isinstance(op, Allow) for op in table.seen(MAC, IP, clock()))
    assert table.find(MAC).state is State.CAPTIVE  # a shopper who logged out stays out
    clock.advance(31 * 86400)
    table2 = SessionTable(trust_mac_days=30)
    table2.seen(MAC2, IP, 0.0)
    table2.authorize(MAC2, 0.0, minutes=1)
    table2.tick(120.0)
    table2.leave(MAC2, 120.0)
    table2.seen(MAC2, IP, 31 * 86400.0)
    assert table2.find(MAC2).state is State.CAPTIVE  # trust expires


# -- policy and access in the pure table ---------------------------------------------------
def test_session_carries_its_effective_policy(clock: FakeClock) -> None:
    table = SessionTable(defaults=Policy(session_minutes=60, quota_total_mb=100))
    table.seen(MAC, IP, clock())
    table.authorize(MAC, clock(), overrides={"rate_down_kbit": 2000})
    policy = table.find(MAC).policy
    assert policy == Policy(session_minutes=60, quota_total_mb=100, rate_down_kbit=2000)
    table.authorize(MAC, clock(), minutes=30)  # extending keeps the session's policy
    assert table.find(MAC).policy == replace(policy, session_minutes=30)
    ops = table.end(MAC, clock(), Reason.QUOTA)
    assert [op.reason for op in ops if isinstance(op, EndSession)] == [Reason.QUOTA]
    assert table.find(MAC).policy is None and Revoke((IP, MAC)) in ops


def test_conflicting_override_is_a_session_error(clock: FakeClock) -> None:
    table = SessionTable(defaults=Policy(quota_total_mb=10))
    table.seen(MAC, IP, clock())
    with pytest.raises(SessionError, match="larger than quota_total_mb"):
        table.authorize(MAC, clock(), overrides={"quota_up_mb": 20})
    assert table.find(MAC).state is State.CAPTIVE


def test_trusted_station_is_let_in_when_seen(clock: FakeClock) -> None:
    table = SessionTable(access=Access(trusted=frozenset({MAC})))
    ops = table.seen(MAC, IP, clock())
    assert Allow((IP, MAC)) in ops
    client = table.find(MAC)
    assert client.trusted and client.policy == UNLIMITED and client.expires_at is None
    with pytest.raises(SessionError, match="trusted MAC"):
        table.deauthorize(MAC, clock())
    ops = table.leave(MAC, clock())  # leaving still ends it
    assert [op.reason for op in ops if isinstance(op, EndSession)] == [Reason.LEFT]


def test_tick_holds_the_access_lists(clock: FakeClock) -> None:
    table = SessionTable()
    table.seen(MAC, IP, clock())
    table.seen(MAC2, "198.19.0.101", clock())
    table.authorize(MAC, clock())
    table.access = Access(blocked=frozenset({MAC}), trusted=frozenset({MAC2}))  # new config
    ops = table.tick(clock())
    assert [op.reason for op in ops if isinstance(op, EndSession)] == [Reason.BLOCKED]
    assert Allow(("198.19.0.101", MAC2)) in ops
    with pytest.raises(SessionError, match="blocked by the venue"):
        table.authorize(MAC, clock())


def test_limit_on_clients_online(clock: FakeClock) -> None:
    table = SessionTable(access=Access(max_clients=1, trusted=frozenset({MAC2})))
    table.seen(MAC, IP, clock())
    table.seen(MAC2, "198.19.0.101", clock())  # trusted: online, not counted
    table.seen("02:50:4c:00:00:03", "198.19.0.102", clock())
    table.authorize(MAC, clock())
    assert table.online() == 1
    with pytest.raises(SessionError, match="limit of 1 clients online"):
        table.authorize("198.19.0.102", clock())


def test_mac_trust_never_readmits_a_station_that_changed_address(clock: FakeClock) -> None:
    """A MAC clone doing DHCP ends the victim's session; MAC trust must not hand it back."""
    table = SessionTable(trust_mac_days=30)
    table.seen(MAC, IP, clock())
    table.authorize(MAC, clock())
    ops = table.seen(MAC, "198.19.0.101", clock())
    assert not any(isinstance(op, Allow) for op in ops)
    assert table.find(MAC).state is State.CAPTIVE and table.elements() == []
