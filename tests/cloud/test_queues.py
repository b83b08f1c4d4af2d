"""Virtual queues, the core (cloud/o2o/queues.py): numbers without gaps or duplicates under
concurrency (threads on real connections, both databases), calls in order from several
windows, recall within its limits, the estimator, and the refusals."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import pytest
import sqlalchemy as sa
from flask import Flask

from cloud import db as cloud_db
from cloud.accounts import create_merchant, create_venue
from cloud.models import Venue
from cloud.o2o import queue_push, queues
from cloud.o2o.queue_models import QueueTicket, ServiceQueue
from cloud.o2o.queues import QueueError, QueueSpec
from cloud.o2o.shoppers import find_or_create
from tests.cloud.o2o_helpers import race
from tests.conftest import FakeClock


def new_queue(app: Flask, venue_id: str, now: float, **override: object) -> str:
    values: dict[str, object] = {"name": "Customer service", "prefix": "A"}
    values.update(override)
    with cloud_db.session(app) as db:
        return queues.create_queue(db, venue_id, QueueSpec(**values), now).id  # type: ignore[arg-type]


def people(app: Flask, count: int, now: float) -> list[str]:
    with cloud_db.session(app) as db:
        return [find_or_create(db, "oidc", f"q-user{i}", None, now).id for i in range(count)]


def take(app: Flask, queue_id: str, now: float, shopper: str | None = None) -> QueueTicket:
    with cloud_db.session(app) as db:
        source = "phone" if shopper else "kiosk"
        return queues.take(db, queue_id, now, source=source, shopper_id=shopper)[0]


def act(app: Flask, fn: Callable[..., QueueTicket], *args: object) -> QueueTicket:
    with cloud_db.session(app) as db:
        return fn(db, *args)


def refused(code: str, action: Callable[[], object]) -> str:
    with pytest.raises(QueueError) as info:
        action()
    assert info.value.code == code, str(info.value)
    return str(info.value)


def _threads(app: Flask, count: int, connections: int, work: Callable[..., str]) -> Counter:
    return race(app, count, connections, work, QueueError)


def numbers(app: Flask, queue_id: str) -> list[int]:
    with cloud_db.session(app) as db:
        return sorted(db.scalars(sa.select(QueueTicket.number)
                                 .where(QueueTicket.queue_id == queue_id)))  # fmt: skip


def test_concurrent_takes_give_every_number_once(app: Flask, venue: Venue, clock: FakeClock):
    """The brief's figure: 100 concurrent takes on PostgreSQL (30 connections) give exactly
    the numbers 1..100; SQLite, whose writer is single, 30 on 8."""
    postgres = cloud_db.engine(app).dialect.name == "postgresql"
    count = 100 if postgres else 30
    queue = new_queue(app, venue.id, clock())
    shoppers = people(app, count // 2, clock())

    def work(db, i: int) -> str:  # half from phones, half from the kiosk
        shopper = shoppers[i // 2] if i % 2 else None
        queues.take(db, queue, clock(), source="phone" if shopper else "kiosk", shopper_id=shopper)
        return "ok"

    assert _threads(app, count, 30 if postgres else 8, work) == {"ok": count}
    assert numbers(app, queue) == list(range(1, count + 1))
    with cloud_db.session(app) as db:
        assert db.get(ServiceQueue, queue).last_number == count


def test_one_shopper_racing_themselves_holds_one_number(app: Flask, venue: Venue, clock: FakeClock):
    """Ten taps at once from one shopper: one number, nine refusals naming it, and the next
    kiosk number follows without a gap (the refused takes' counts rolled back)."""
    queue = new_queue(app, venue.id, clock())
    (alice,) = people(app, 1, clock())

    def work(db, _i: int) -> str:
        queues.take(db, queue, clock(), source="phone", shopper_id=alice)
        return "ok"

    assert _threads(app, 10, 10, work) == {"ok": 1, "already_waiting": 9}
    assert take(app, queue, clock()).number == 2
    assert numbers(app, queue) == [1, 2]


def test_numbers_start_again_each_day_in_the_queues_time_zone(
    app: Flask, venue: Venue, clock: FakeClock
):
    clock.now = 1_800_000_000.0  # 2027-01-15 08:00 UTC = 16:00 in Shanghai
    queue = new_queue(app, venue.id, clock(), time_zone="Asia/Shanghai")
    assert [take(app, queue, clock()).label for _ in range(3)] == ["A001", "A002", "A003"]
    clock.advance(9 * 3600)  # 01:00 the next day in Shanghai, 17:00 the same day in UTC
    first = take(app, queue, clock())
    assert (first.number, first.day) == (1, "2027-01-16")


def test_second_number_refused_while_one_is_live(app: Flask, venue: Venue, clock: FakeClock):
    queue = new_queue(app, venue.id, clock())
    (alice,) = people(app, 1, clock())
    first = take(app, queue, clock(), alice)
    message = refused("already_waiting", lambda: take(app, queue, clock(), alice))
    assert "A001" in message
    other = new_queue(app, venue.id, clock(), name="Parcel pickup", prefix="P")
    assert take(app, other, clock(), alice).label == "P001"  # another queue is another line
    act(app, queues.leave, first.id, clock())
    assert take(app, queue, clock(), alice).label == "A002"  # gave it up: may take again


def test_yesterdays_number_does_not_block_today(app: Flask, venue: Venue, clock: FakeClock):
    queue = new_queue(app, venue.id, clock())
    (alice,) = people(app, 1, clock())
    old = take(app, queue, clock(), alice)
    clock.advance(86400)
    assert take(app, queue, clock(), alice).number == 1
    with cloud_db.session(app) as db:
        assert db.get(QueueTicket, old.id).state == "EXPIRED"


def test_closed_queue_refuses_takes_but_serves_the_line(app: Flask, venue: Venue, clock: FakeClock):
    queue = new_queue(app, venue.id, clock())
    waiting = take(app, queue, clock())
    with cloud_db.session(app) as db:
        queues.set_state(db, db.get(ServiceQueue, queue), "CLOSED", clock())
    assert "closed" in refused("closed", lambda: take(app, queue, clock()))
    assert act(app, queues.call_next, queue, "1", "mer_x", clock()).id == waiting.id
    assert numbers(app, queue) == [1]


def test_calls_in_order_skip_recall_and_expiry(app: Flask, venue: Venue, clock: FakeClock):
    queue = new_queue(app, venue.id, clock(), recall_seconds=600, max_calls=2)
    a1, a2, a3 = (take(app, queue, clock()) for _ in range(3))
    called = act(app, queues.call_next, queue, "2", "mer_x", clock())
    assert (called.id, called.state, called.counter, called.calls) == (a1.id, "CALLED", "2", 1)
    act(app, queues.skip, queue, a1.id, "mer_x", clock())
    assert act(app, queues.call_next, queue, "2", "mer_x", clock()).id == a2.id
    again = act(app, queues.recall, queue, a1.id, "3", "mer_x", clock())
    assert (again.state, again.calls, again.counter) == ("CALLED", 2, "3")
    assert "limit" in refused(
        "recall_limit", lambda: act(app, queues.recall, queue, a1.id, "3", "m", clock())
    )
    act(app, queues.serve, queue, a1.id, "mer_x", clock())
    refused("bad_state", lambda: act(app, queues.serve, queue, a1.id, "mer_x", clock()))
    # Next at window 2 serves a2 (its current number) and calls a3; a3 skipped and left too long
    assert act(app, queues.call_next, queue, "2", "mer_x", clock()).id == a3.id
    with cloud_db.session(app) as db:
        assert db.get(QueueTicket, a2.id).state == "SERVED"
    act(app, queues.skip, queue, a3.id, "mer_x", clock())
    clock.advance(601)
    refused("expired", lambda: act(app, queues.recall, queue, a3.id, "2", "mer_x", clock()))
    refused("empty", lambda: act(app, queues.call_next, queue, "2", "mer_x", clock()))


def test_two_windows_at_once_call_different_numbers(app: Flask, venue: Venue, clock: FakeClock):
    postgres = cloud_db.engine(app).dialect.name == "postgresql"
    queue = new_queue(app, venue.id, clock())
    for _ in range(12):
        take(app, queue, clock())

    def work(db, i: int) -> str:
        return str(queues.call_next(db, queue, f"w{i}", "mer_x", clock()).number)

    outcomes = _threads(app, 8, 8 if postgres else 4, work)
    assert outcomes == {str(n): 1 for n in range(1, 9)}, outcomes


def test_a_number_from_another_venue_or_queue_is_refused(
    app: Flask, venue: Venue, clock: FakeClock
):
    queue = new_queue(app, venue.id, clock())
    other_queue = new_queue(app, venue.id, clock(), name="Parcel pickup", prefix="P")
    with cloud_db.session(app) as db:
        merchant = create_merchant(db, "Tea Two", "two@tea.example", "hunter2hunter2", clock())
        elsewhere = create_venue(db, merchant.id, "Tea Two", clock(), "portal.two.test").id
        db.commit()
    foreign = take(app, new_queue(app, elsewhere, clock()), clock())
    sibling = take(app, other_queue, clock())
    for ticket, code, words in [(foreign, "other_venue", "another venue"),
                                (sibling, "other_queue", "another queue")]:  # fmt: skip
        for fn, args in [(queues.serve, ("m",)), (queues.skip, ("m",)),
                         (queues.recall, ("1", "m"))]:  # fmt: skip
            message = refused(code, lambda fn=fn, args=args, ticket=ticket: act(
                app, fn, queue, ticket.id, *args, clock()))  # fmt: skip
            assert words in message
    refused("not_found", lambda: act(app, queues.serve, queue, "qtk_0000", "m", clock()))


def test_the_estimator(app: Flask, venue: Venue, clock: FakeClock):
    """With fewer than 3 gaps measured, the queue's own time per number; then the median gap
    between first calls (a long break does not swing it), times the people ahead plus one."""
    queue = new_queue(app, venue.id, clock(), service_seconds=240)
    tickets = [take(app, queue, clock()) for _ in range(10)]
    with cloud_db.session(app) as db:
        me = db.get(QueueTicket, tickets[-1].id)
        stand = queues.standing(db, me, clock())
        assert (stand.ahead, stand.wait, stand.measured) == (9, 10 * 240, False)
    for gap in (60, 60, 900, 60, 60):  # one long break among five gaps
        act(app, queues.call_next, queue, "1", "m", clock())
        clock.advance(gap)
    act(app, queues.call_next, queue, "1", "m", clock())
    with cloud_db.session(app) as db:
        stand = queues.standing(db, db.get(QueueTicket, tickets[-1].id), clock())
        assert (stand.ahead, stand.gap, stand.measured) == (3, 60, True)
        assert stand.wait == 4 * 60


@pytest.mark.parametrize(
    ("override", "words"),
    [({"name": ""}, "name"), ({"prefix": "a1"}, "prefix"), ({"time_zone": "Mars/Base"}, "zone"),
     ({"service_seconds": 1}, "time per number"), ({"max_calls": 0}, "called"),
     ({"kind": "bank"}, "kind")],
)  # fmt: skip
def test_nonsense_queues_are_refused(override: dict[str, object], words: str):
    values: dict[str, object] = {"name": "Desk", **override}
    with pytest.raises(QueueError) as info:
        QueueSpec(**values).check()  # type: ignore[arg-type]
    assert info.value.code == "invalid_queue" and words in str(info.value)


@pytest.mark.parametrize(
    ("ahead", "told", "push"),
    [(12, None, None), (10, None, 10), (9, 10, None), (5, 10, 5), (2, 5, 3), (0, 5, 0),
     (0, 0, None), (3, 3, None), (4, None, 5)],
)  # fmt: skip
def test_pushes_only_at_milestones_not_told_yet(ahead: int, told: int | None, push: int | None):
    """A jump over several milestones (two windows calling at once) is one push, of the
    lowest reached; nothing twice; nothing beyond 10 ahead."""
    assert queue_push.milestone(ahead, told) == push
