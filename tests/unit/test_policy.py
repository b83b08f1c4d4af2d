"""Policy values and decisions: overrides from the control API, conflicts, access lists."""

import pytest

from gateway.stations.policy import (
    MIN_BURST_BYTES,
    UNLIMITED,
    Access,
    Policy,
    PolicyError,
    burst_bytes,
    effective,
    overrides_from,
    verify,
)


def test_units_are_the_ones_data_plans_use() -> None:
    p = Policy(quota_up_mb=2, quota_down_mb=3, quota_total_mb=4, rate_up_kbit=8, rate_down_kbit=16)
    assert (p.quota_up_bytes, p.quota_down_bytes, p.quota_total_bytes) == (2e6, 3e6, 4e6)
    assert (p.rate_up_bytes, p.rate_down_bytes) == (1000, 2000)  # bytes per second
    assert p.has_quota and not Policy().has_quota
    assert UNLIMITED.session_minutes == 0 and not UNLIMITED.has_quota


def test_overrides_are_picked_checked_and_scaled() -> None:
    request = {"op": "auth", "client": "x", "minutes": 30, "idle_minutes": 5, "quota_down_mb": 0,
               "rate_up_kbit": 512}  # fmt: skip
    assert overrides_from(request, max_minutes=60) == {
        "session_minutes": 30,
        "idle_seconds": 300,
        "quota_down_mb": 0,
        "rate_up_kbit": 512,
    }
    assert overrides_from({"idle_seconds": 7}, 60) == {"idle_seconds": 7}
    assert overrides_from({}, 60) == {}


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        ({"quota_up_mb": "5"}, "'quota_up_mb' must be an integer"),
        ({"quota_up_mb": True}, "'quota_up_mb' must be an integer"),
        ({"rate_down_kbit": -1}, "'rate_down_kbit' must be between 0 (no limit) and"),
        ({"quota_total_mb": 10**12}, "'quota_total_mb' must be between"),
        ({"minutes": 0}, "minutes must be between 1 and 60"),
        ({"minutes": 61}, "minutes must be between 1 and 60"),
        ({"idle_minutes": 1, "idle_seconds": 5}, "either 'idle_minutes' or 'idle_seconds'"),
    ],
)
def test_bad_overrides_are_refused(request_: dict, message: str) -> None:
    with pytest.raises(PolicyError) as err:
        overrides_from(request_, max_minutes=60)
    assert message in str(err.value)


def test_effective_policy_refuses_an_unreachable_quota() -> None:
    venue = Policy(quota_total_mb=100)
    assert effective(venue, {"quota_down_mb": 50}).quota_down_mb == 50
    with pytest.raises(PolicyError, match=r"quota_down_mb \(200\) is larger than quota_total_mb"):
        effective(venue, {"quota_down_mb": 200})
    # a short session with a longer idle time is harmless per client, not in the venue's config
    assert effective(Policy(idle_seconds=3600), {"session_minutes": 5}).session_minutes == 5
    with pytest.raises(PolicyError, match="could never fire"):
        verify(Policy(session_minutes=5, idle_seconds=3600), "[policy]")


def test_policy_round_trips_through_json_and_ignores_unknown_keys() -> None:
    p = Policy(session_minutes=5, quota_total_mb=7)
    assert Policy.from_json(p.to_json()) == p
    assert Policy.from_json('{"session_minutes": 9, "from_the_future": 1}') == Policy(9)
    assert Policy.from_json(None) is None


def test_policer_bucket_is_a_tenth_of_a_second_or_ten_frames() -> None:
    assert burst_bytes(1_000_000) == 100_000
    assert burst_bytes(1000) == MIN_BURST_BYTES


def test_access_rules() -> None:
    a = Access(trusted=frozenset({"02:00:00:00:00:01"}), blocked=frozenset({"02:00:00:00:00:02"}),
               max_clients=2)  # fmt: skip
    assert "blocked by the venue" in (a.refuse("02:00:00:00:00:02", 0, False) or "")
    assert "blocked" in (a.refuse("02:00:00:00:00:02", 0, True) or "")  # even to extend
    assert a.refuse("02:00:00:00:00:03", 1, False) is None
    assert "limit of 2 clients" in (a.refuse("02:00:00:00:00:03", 2, False) or "")
    assert a.refuse("02:00:00:00:00:03", 2, True) is None  # extending is not joining
    assert a.refuse("02:00:00:00:00:01", 99, False) is None  # trusted: never counted out
    assert Access().refuse("02:00:00:00:00:03", 10**6, False) is None  # 0: no limit


def test_ctl_auth_options_become_overrides() -> None:
    import argparse

    from gateway.ops.ctl import _overrides

    names = ("minutes", "idle", "quota_mb", "quota_up_mb", "quota_down_mb", "rate_kbit",
             "rate_up_kbit", "rate_down_kbit")  # fmt: skip
    args = argparse.Namespace(**dict.fromkeys(names))
    args.idle, args.quota_mb, args.rate_kbit, args.rate_up_kbit = 15, 500, 2000, 512
    assert _overrides(args) == {
        "idle_minutes": 15,
        "quota_total_mb": 500,
        "rate_up_kbit": 512,  # the direction's own option wins
        "rate_down_kbit": 2000,
    }
    assert overrides_from(_overrides(args), 60)["idle_seconds"] == 900
