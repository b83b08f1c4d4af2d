"""Bookings, the domain (cloud/o2o/booking*.py) on both databases: slots from opening hours,
hold -> confirm -> checked in by presence -> completed, the sweep (expiry, reminders,
no-shows), and the bad inputs: a slot just taken, another shopper's booking, a hold that ran
out, a cancellation after the cut-off, a paused resource. The books balance after each."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
from flask import Flask
from sqlalchemy import select

from cloud import db as cloud_db
from cloud.models import PushJob, Venue
from cloud.o2o import booking, booking_jobs, booking_slots
from cloud.o2o.booking import BookingError, ResourceSpec
from cloud.o2o.booking_models import Booking, BookingResource, BookingSlot
from cloud.o2o.shoppers import find_or_create
from tests.cloud.conftest import Router, opt_in_event
from tests.cloud.o2o_helpers import check_books
from tests.conftest import FakeClock

HOUR = 3600.0
PRESENCE = "/api/v1/device/presence"


def refused(code: str, action: Callable[[], object]) -> str:
    with pytest.raises(BookingError) as info:
        action()
    assert info.value.code == code, str(info.value)
    return str(info.value)


def resource(app: Flask, venue: Venue, now: float, **override: object) -> str:
    values: dict[str, object] = {"name": "Window table", "hours": (("11:00", "14:00"),)}
    values.update(override)
    with cloud_db.session(app) as db:
        return booking.create_resource(db, venue, ResourceSpec(**values), now).id  # type: ignore[arg-type]


def slot_at(app: Flask, resource_id: str, starts_at: float, minutes: int = 60) -> str:
    with cloud_db.session(app) as db:
        found = db.get(BookingResource, resource_id)
        assert found is not None
        assert booking_slots.add_slots(db, found, [(starts_at, starts_at + minutes * 60)]) == 1
        return db.scalars(select(BookingSlot.id).where(BookingSlot.starts_at == starts_at)).one()


def shopper(app: Flask, user: str, now: float) -> str:
    with cloud_db.session(app) as db:
        return find_or_create(db, "oidc", user, user.title(), now).id


def run(app: Flask, work: Callable[..., object], *args: object, **kwargs: object):
    with cloud_db.session(app) as db:
        return work(db, *args, **kwargs)


def state(app: Flask, booking_id: str) -> str:
    with cloud_db.session(app) as db:
        found = db.get(Booking, booking_id)
        assert found is not None
        return found.state


def taken(app: Flask, slot_id: str) -> int:
    with cloud_db.session(app) as db:
        found = db.get(BookingSlot, slot_id)
        assert found is not None
        return found.taken


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"name": ""}, "name"),
        ({"capacity": 0}, "capacity"),
        ({"hours": (("11:00", "11:30"),)}, "shorter than one slot"),
        ({"hours": (("25:00", "26:00"),)}, "time of day"),
        ({"tz": "Mars/Olympus"}, "time zone"),
        ({"deposit": -1}, "deposit"),
        ({"weekdays": "89"}, "weekdays"),
    ],
)
def test_nonsense_resources_are_refused(override: dict[str, object], message: str):
    values: dict[str, object] = {"name": "Table"}
    values.update(override)
    assert message in refused("invalid_resource", ResourceSpec(**values).check)  # type: ignore[arg-type]


def test_slots_from_opening_hours_on_the_venue_clock(app: Flask, venue: Venue, clock: FakeClock):
    rid = resource(app, venue, clock(), hours=(("11:00", "14:00"), ("17:00", "19:00")),
                   slot_minutes=90, weekdays="12345")  # fmt: skip
    with cloud_db.session(app) as db:
        found = db.get(BookingResource, rid)
        assert found is not None
        monday = dt.date(2027, 1, 4)
        assert booking_slots.generate(db, found, monday, 7) == 5 * 3  # 11:00, 12:30, 17:00
        assert booking_slots.generate(db, found, monday, 7) == 0  # again: nothing twice
        starts = sorted(db.scalars(select(BookingSlot.starts_at)))
    shanghai = dt.timezone(dt.timedelta(hours=8))
    first = dt.datetime.fromtimestamp(starts[0], shanghai)
    assert (first.date(), first.hour, first.minute) == (monday, 11, 0)
    last = dt.datetime.fromtimestamp(starts[-1], shanghai)
    assert (last.date(), last.hour) == (dt.date(2027, 1, 8), 17)  # Friday: no weekend


def test_hold_confirm_check_in_by_presence_and_complete(
    app: Flask, venue: Venue, clock: FakeClock, router: Router
):
    rid = resource(app, venue, clock())
    starts = clock() + 3 * HOUR
    slot = slot_at(app, rid, starts)
    alice = shopper(app, "alice", clock())
    held = run(app, booking.hold, slot, alice, clock(), "double-tap-key-1")
    again = run(app, booking.hold, slot, alice, clock(), "double-tap-key-1")
    assert again.id == held.id and taken(app, slot) == 1  # a double tap is one hold
    assert run(app, booking.confirm, held.id, alice, clock()).state == "CONFIRMED"

    # The reminder goes out once, two hours before, through the push outbox.
    clock.advance(HOUR + 60)
    assert run(app, booking_jobs.sweep, clock(), None, "https://cloud.test").reminded == 1
    assert run(app, booking_jobs.sweep, clock()).reminded == 0
    with cloud_db.session(app) as db:
        (job,) = db.scalars(select(PushJob)).all()
        assert (job.kind, job.target, job.shopper) == ("wallet", "alice", alice)
        assert job.payload["link"] == f"https://cloud.test/plaza/bookings/{held.id}"

    # Alice's phone logged in once with the wallet (opted in); her joining now checks her in.
    login = router.post(PRESENCE, {"events": [opt_in_event("l1", clock(), "alice")]})
    assert login.status_code == 200, login.get_json()
    clock.now = starts - 40 * 60  # too early: still confirmed
    early = {"key": "j0", "kind": "join", "mac": "02:00:00:00:00:0b", "at": clock()}
    assert router.post(PRESENCE, {"events": [early]}).status_code == 200
    assert state(app, held.id) == "CONFIRMED"
    clock.now = starts - 10 * 60  # ten minutes before the slot
    join = {"key": "j1", "kind": "join", "mac": "02:00:00:00:00:0b", "at": clock()}
    answer = router.post(PRESENCE, {"events": [join]})
    assert answer.status_code == 200, answer.get_json()
    assert state(app, held.id) == "CHECKED_IN"
    clock.advance(2 * HOUR)
    assert run(app, booking_jobs.sweep, clock()).completed == 1
    assert state(app, held.id) == "COMPLETED" and taken(app, slot) == 1
    check_books(app)


def test_a_slot_just_taken_is_refused(app: Flask, venue: Venue, clock: FakeClock):
    slot = slot_at(app, resource(app, venue, clock()), clock() + 5 * HOUR)
    bob, alice = shopper(app, "bob", clock()), shopper(app, "alice", clock())
    run(app, booking.hold, slot, bob, clock())
    message = refused("taken", lambda: run(app, booking.hold, slot, alice, clock()))
    assert message == "this time was just taken; please pick another"
    assert taken(app, slot) == 1
    check_books(app)


def test_another_shoppers_booking_is_refused(app: Flask, venue: Venue, clock: FakeClock):
    slot = slot_at(app, resource(app, venue, clock()), clock() + 5 * HOUR)
    bob, alice = shopper(app, "bob", clock()), shopper(app, "alice", clock())
    held = run(app, booking.hold, slot, bob, clock())
    for act in (booking.confirm, booking.cancel):
        assert refused("not_yours", lambda a=act: run(app, a, held.id, alice, clock())) == (
            "no such booking of yours"
        )
    assert state(app, held.id) == "HELD"


def test_an_expired_hold_is_refused_and_its_seat_freed(app: Flask, venue: Venue, clock: FakeClock):
    slot = slot_at(app, resource(app, venue, clock(), hold_minutes=10), clock() + 5 * HOUR)
    bob, alice = shopper(app, "bob", clock()), shopper(app, "alice", clock())
    held = run(app, booking.hold, slot, bob, clock())
    clock.advance(10 * 60 + 1)
    # Lazy expiry: alice's hold releases bob's stale one and takes the seat.
    mine = run(app, booking.hold, slot, alice, clock())
    assert (state(app, held.id), taken(app, slot)) == ("EXPIRED", 1)
    assert "hold ran out" in refused("expired", lambda: run(app, booking.confirm, held.id, bob,
                                                             clock()))  # fmt: skip
    # The sweep releases holds nobody came back for.
    clock.advance(10 * 60 + 1)
    assert run(app, booking_jobs.sweep, clock()).expired == 1
    assert (state(app, mine.id), taken(app, slot)) == ("EXPIRED", 0)
    check_books(app)


def test_cancellation_is_free_before_the_cut_off_and_final_after(
    app: Flask, venue: Venue, clock: FakeClock
):
    rid = resource(app, venue, clock(), cancel_cutoff_minutes=120)
    early, late = slot_at(app, rid, clock() + 5 * HOUR), slot_at(app, rid, clock() + HOUR)
    alice = shopper(app, "alice", clock())
    first = run(app, booking.hold, early, alice, clock())
    run(app, booking.confirm, first.id, alice, clock())
    assert run(app, booking.cancel, first.id, alice, clock()).reason == "cancelled_free"
    assert taken(app, early) == 0
    second = run(app, booking.hold, late, alice, clock())
    run(app, booking.confirm, second.id, alice, clock())
    message = refused("after_cutoff", lambda: run(app, booking.cancel, second.id, alice, clock()))
    assert "cut-off" in message and state(app, second.id) == "CONFIRMED"
    done = run(app, booking.cancel, second.id, alice, clock(), keep_deposit=True)
    assert (done.state, done.reason, taken(app, late)) == ("CANCELLED", "cancelled_late", 0)
    check_books(app)


def test_a_paused_resource_takes_no_holds_and_no_shows_are_swept(
    app: Flask, venue: Venue, clock: FakeClock
):
    rid = resource(app, venue, clock())
    slot = slot_at(app, rid, clock() + HOUR)
    alice = shopper(app, "alice", clock())
    held = run(app, booking.hold, slot, alice, clock())
    run(app, booking.confirm, held.id, alice, clock())
    with cloud_db.session(app) as db:
        found = db.get(BookingResource, rid)
        booking.set_state(db, found, "pause", clock())
    bob = shopper(app, "bob", clock())
    assert "not taking bookings" in refused("paused", lambda: run(app, booking.hold, slot, bob,
                                                                  clock()))  # fmt: skip
    with cloud_db.session(app) as db:
        booking.set_state(db, db.get(BookingResource, rid), "resume", clock())
    refused("past", lambda: run(app, booking.hold, slot, bob, clock() + 2 * HOUR))
    clock.advance(HOUR + booking.NO_SHOW_GRACE + 1)
    assert run(app, booking_jobs.sweep, clock()).no_shows == 1
    assert state(app, held.id) == "NO_SHOW"
    check_books(app)


def test_the_cli_sweeps(
    app: Flask, venue: Venue, clock: FakeClock, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
):  # fmt: skip
    import json

    from cloud import cli

    slot = slot_at(app, resource(app, venue, clock(), hold_minutes=5), clock() + 5 * HOUR)
    held = run(app, booking.hold, slot, shopper(app, "alice", clock()), clock())
    clock.advance(5 * 60)
    monkeypatch.setattr(cli, "_app", lambda _args: app)
    assert cli.main(["bookings-sweep"]) == 0
    assert json.loads(capsys.readouterr().out)["expired"] == 1
    assert (state(app, held.id), taken(app, slot)) == ("EXPIRED", 0)
