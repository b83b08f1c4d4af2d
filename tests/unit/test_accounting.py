"""Accounting as pure bookkeeping: deltas, counter resets, crash-safe records, decisions."""

from gateway.stations.accounting import Meter, Quota, Reading, Usage

T0 = 1_800_000_000.0


def reading(sent: int, received: int, **quotas: Quota) -> Reading:
    """Counters of `sent`/`received` bytes in 100-byte packets, and quotas by kind."""
    return Reading(Usage(sent, sent // 100, received, received // 100), dict(quotas))


def meter(**kw) -> Meter:
    return Meter("s1", "02:00:00:00:00:01", "198.19.0.5", T0, **kw)


def test_usage_arithmetic() -> None:
    a, b = Usage(10, 1, 20, 2), Usage(3, 1, 5, 1)
    assert a + b == Usage(13, 2, 25, 3)
    assert a - b == Usage(7, 0, 15, 1)
    assert a.view() == {"bytes_up": 10, "packets_up": 1, "bytes_down": 20, "packets_down": 2}


def test_records_carry_deltas_and_unique_keys() -> None:
    m = meter()
    m.observe(reading(1000, 5000), T0 + 10)
    first = m.record(T0 + 10)
    m.observe(reading(1500, 9000), T0 + 20)
    second = m.record(T0 + 20)
    final = m.record(T0 + 25, final=True, reason="logout")
    assert [r.key for r in (first, second, final)] == ["s1-1", "s1-2", "s1-3"]
    assert first.delta == Usage(1000, 10, 5000, 50)
    assert second.delta == Usage(500, 5, 4000, 40)
    assert final.delta == Usage() and final.final and final.reason == "logout"
    assert (second.period_start, second.period_end) == (T0 + 10, T0 + 20)
    assert first.delta + second.delta + final.delta == final.total == Usage(1500, 15, 9000, 90)


def test_a_counter_that_goes_back_was_recreated_and_totals_stay_continuous() -> None:
    m = meter()
    m.observe(reading(1000, 2000), T0 + 1)
    m.observe(reading(300, 2500), T0 + 2)  # the up counter restarted from zero
    assert m.total.bytes_up == 1300 and m.total.bytes_down == 2500
    m.observe(reading(400, 2600), T0 + 3)
    assert m.total.bytes_up == 1400


def test_totals_never_fall_below_what_was_reported() -> None:
    """After a restart the outbox may hold more than a reset counter shows: no negative delta,
    and what the counter counts from then on is added."""
    m = meter(reported=Usage(5000, 50, 9000, 90), seq=3)
    m.observe(reading(100, 100), T0 + 1)
    assert m.total == Usage(5000, 50, 9000, 90)
    m.observe(reading(600, 100), T0 + 2)
    assert m.total.bytes_up == 5500
    rec = m.record(T0 + 2)
    assert rec.delta == Usage(500, 5, 0, 0) and rec.key == "s1-4"


def test_initial_values_let_recreated_objects_continue() -> None:
    m = meter()
    m.observe(reading(1000, 2000), T0 + 1)
    m.observe(reading(10, 20), T0 + 2)  # reset: totals 1010 / 2020
    start = m.initial()  # the gateway recreates the counters with these
    assert start + m.offset == m.total
    m.observe(Reading(start + Usage(5, 0, 5, 0)), T0 + 3)
    assert m.total.bytes_up == 1015 and m.total.bytes_down == 2025


def test_unrecord_rolls_back_a_record_that_was_not_written() -> None:
    m = meter()
    m.observe(reading(1000, 0), T0 + 5)
    rec = m.record(T0 + 5)
    m.unrecord(rec)
    assert (m.seq, m.reported, m.last_record_at) == (0, Usage(), T0)
    again = m.record(T0 + 6)
    assert again.key == rec.key and again.delta == rec.delta  # same record, once


def test_idle_is_measured_from_the_last_movement_in_either_direction() -> None:
    m = meter()
    assert not m.idle(0, T0 + 10**6)  # 0: no idle timeout
    m.observe(reading(100, 0), T0 + 10)
    m.observe(reading(100, 0), T0 + 40)
    assert m.idle_for(T0 + 40) == 30 and m.idle(30, T0 + 40) and not m.idle(31, T0 + 40)
    m.observe(reading(100, 700), T0 + 50)  # download only still counts
    assert m.idle_for(T0 + 50) == 0
    m.observe(None, T0 + 90)  # objects missing right now: no news, not activity
    assert m.idle_for(T0 + 90) == 40


def test_quota_state_from_the_kernel() -> None:
    m = meter()
    assert m.bytes_remaining() is None and not m.exhausted()
    m.observe(reading(10, 10, total=Quota(1000, 400), down=Quota(500, 100)), T0 + 1)
    assert m.bytes_remaining() == 400 and not m.exhausted()
    m.observe(reading(10, 10, total=Quota(1000, 1200), down=Quota(500, 100)), T0 + 2)
    assert m.exhausted() and m.bytes_remaining() == 0


def test_interim_records_are_due_by_interval() -> None:
    m = meter()
    assert not m.interim_due(0, T0 + 10**6)  # 0: final records only
    assert not m.interim_due(60, T0 + 59) and m.interim_due(60, T0 + 60)
    m.record(T0 + 60)
    assert not m.interim_due(60, T0 + 100) and m.interim_due(60, T0 + 120)
