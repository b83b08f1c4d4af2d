"""Virtual queues, the core: take a number, call the next, recall, skip, serve, leave; where a
ticket stands and how long it will wait. No pages and no pushes here (queue_views.py,
queue_admin.py, queue_push.py), so a hospital's clinic queue (issue 17) uses the same calls
with `kind="clinic"`, `source="desk"` and its appointment in `ref`.

Numbers are unique per queue per day and handed out without gaps or duplicates on any number
of instances: a take is one conditional UPDATE of the queue's counter (`last_number + 1`, or 1
on a new day, only while the queue is OPEN) and the ticket's INSERT, in one transaction. The
UPDATE takes the queue row's lock until the commit, which orders concurrent takes; a take that
fails after counting (a shopper's second live ticket, caught by the unique holder) rolls the
count back with it, so no number is skipped (bench/queue_take.py measures the rate).

Calling the next number picks the lowest WAITING number of the day and moves it by `UPDATE ...
WHERE state = 'WAITING'`: of two windows pressing at once, one wins, the other's UPDATE finds
the row moved (PostgreSQL re-checks it after the winner commits), and it picks again, the next
number. Not `SKIP LOCKED`: that would call a later number while an earlier one is only being
looked at, and the line must be called in order. Every change
that moves people in the line runs `CHANGE_HOOKS` in its own transaction (the pushes are
written with the change, or not at all).

Every function takes the session and commits (or rolls back) itself, as vouchers.py does.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import secrets
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import and_, case, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cloud.o2o.queue_models import LIVE, QueueTicket, ServiceQueue

KINDS = ("service", "clinic")
SOURCES = ("phone", "kiosk", "desk")
ATTEMPTS = 5  # lost races before a take or a call gives up ("busy")
GAP_SAMPLES = 10  # the estimator: median of the last 10 gaps between first calls...
GAP_WINDOW = 3600.0  # ...within the last hour
MIN_GAPS = 3  # fewer measured gaps: the queue's own service_seconds
PREFIX_RE = re.compile(r"[A-Z]{0,4}")

ChangeHook = Callable[[Session, ServiceQueue, "QueueTicket | None", float], None]
# hook(db, queue, ticket, now): called in the transaction of every change that moves the line
# (a call, recall, skip, serve, leave); `ticket` is the one changed. cloud/o2o/queue_push.py
# registers the shopper's pushes here.
CHANGE_HOOKS: list[ChangeHook] = []


class QueueError(Exception):
    """Any refusal in the queue domain. `code` is stable for programs and tests; the message
    is what a shopper or the staff is shown. `ticket` is the shopper's live ticket when the
    refusal is about it (`already_waiting`)."""

    def __init__(self, code: str, message: str, ticket: QueueTicket | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.ticket = ticket


@dataclass(frozen=True)
class QueueSpec:
    """What a merchant fills in for a queue; `check()` refuses nonsense."""

    name: str
    prefix: str = ""
    kind: str = "service"
    time_zone: str = "UTC"
    service_seconds: int = 180
    recall_seconds: int = 600
    max_calls: int = 3

    def check(self) -> None:
        def bad(message: str) -> QueueError:
            return QueueError("invalid_queue", message)

        if not self.name.strip() or len(self.name) > 80:
            raise bad("the name must be 1 to 80 characters")
        if not PREFIX_RE.fullmatch(self.prefix):
            raise bad("the prefix is up to 4 capital letters (A to Z)")
        if self.kind not in KINDS:
            raise bad("the kind must be a service window or a clinic")
        zone(self.time_zone)
        if not 10 <= self.service_seconds <= 7200:
            raise bad("the time per number must be between 10 seconds and 2 hours")
        if not 0 <= self.recall_seconds <= 7200:
            raise bad("a skipped number stays recallable for 0 to 120 minutes")
        if not 1 <= self.max_calls <= 10:
            raise bad("a number may be called 1 to 10 times")

    def columns(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


@dataclass(frozen=True)
class Standing:
    """Where a ticket stands: people ahead (None once it is not waiting), the estimated wait
    in seconds, and the gap between calls it was estimated from (`measured` False: the
    queue's own service_seconds, too few calls yet)."""

    ahead: int | None
    wait: float | None
    gap: float
    measured: bool


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise QueueError("invalid_queue", f"unknown time zone: {name[:64]}") from None


def local_day(queue: ServiceQueue, at: float) -> str:
    """The queue's day at `at`: numbers start again at 1 at midnight where the queue is."""
    return datetime.fromtimestamp(at, zone(queue.time_zone)).strftime("%Y-%m-%d")


def label(queue: ServiceQueue, number: int) -> str:
    return f"{queue.prefix}{number:03d}"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_queue(db: Session, venue_id: str, spec: QueueSpec, now: float) -> ServiceQueue:
    """An OPEN queue at `venue_id` (the caller has checked the venue is the actor's)."""
    spec.check()
    queue = ServiceQueue(venue_id=venue_id, state="OPEN", last_number=0, created_at=now,
                         updated_at=now, **spec.columns())  # fmt: skip
    db.add(queue)
    db.commit()
    return queue


def set_state(db: Session, queue: ServiceQueue, state: str, now: float) -> ServiceQueue:
    """OPEN (numbers are given out) or CLOSED (none; those already waiting are still served)."""
    if state not in ("OPEN", "CLOSED"):
        raise QueueError("bad_action", f"unknown state: {state[:16]}")
    db.execute(update(ServiceQueue).where(ServiceQueue.id == queue.id)
               .values(state=state, updated_at=now))  # fmt: skip
    db.commit()
    db.refresh(queue)
    return queue


def get_queue(db: Session, queue_id: str) -> ServiceQueue:
    queue = db.get(ServiceQueue, queue_id) if queue_id.startswith("svq_") else None
    if queue is None:
        raise QueueError("not_found", "no such queue")
    return queue


def _stale(queue: ServiceQueue, now: float) -> Any:
    """Live tickets that are over: from an earlier day, or skipped past the recall window."""
    return and_(
        QueueTicket.queue_id == queue.id,
        QueueTicket.state.in_(LIVE),
        or_(
            QueueTicket.day < local_day(queue, now),
            and_(QueueTicket.state == "SKIPPED",
                 QueueTicket.skipped_at <= now - queue.recall_seconds),
        ),
    )  # fmt: skip


def expire_stale(db: Session, queue: ServiceQueue, now: float, holder: str | None = None) -> None:
    """End what `_stale` finds (of one holder, or the whole queue); in the caller's
    transaction. Expiry is lazy: done by the next take, call or page that looks."""
    where = _stale(queue, now)
    if holder is not None:
        where = and_(where, QueueTicket.holder == holder)
    db.execute(
        update(QueueTicket).where(where)
        .values(state="EXPIRED", holder=None, ended_at=now)
        .execution_options(synchronize_session=False)
    )  # fmt: skip


def live_ticket(db: Session, queue_id: str, shopper_id: str) -> QueueTicket | None:
    return db.scalar(select(QueueTicket).where(QueueTicket.queue_id == queue_id,
                                               QueueTicket.holder == shopper_id))  # fmt: skip


def take(
    db: Session,
    queue_id: str,
    now: float,
    *,
    source: str,
    shopper_id: str | None = None,
    notify: bool = True,
    ref: str | None = None,
) -> tuple[QueueTicket, str]:
    """A new number in the queue, and the ticket's status token (shown once: only its hash
    is stored). A shopper holds one live ticket per queue: a second take is refused with
    `already_waiting` naming the first (the page links to it) rather than silently given
    a place twice in the line."""
    if source not in SOURCES:
        raise QueueError("bad_source", f"unknown source: {source[:16]}")
    queue = get_queue(db, queue_id)
    day = local_day(queue, now)
    for _ in range(ATTEMPTS):
        if shopper_id is not None:
            expire_stale(db, queue, now, holder=shopper_id)
            held = live_ticket(db, queue.id, shopper_id)
            if held is not None:
                db.commit()
                raise QueueError("already_waiting", f"you already have number {held.label} in "
                                 "this queue", held)  # fmt: skip
        number = db.scalar(
            update(ServiceQueue)
            .where(ServiceQueue.id == queue.id, ServiceQueue.state == "OPEN")
            .where(or_(ServiceQueue.day.is_(None), ServiceQueue.day <= day))
            .values(
                last_number=case((ServiceQueue.day == day, ServiceQueue.last_number + 1), else_=1),
                day=day,
            )
            .returning(ServiceQueue.last_number)
            .execution_options(synchronize_session=False)
        )
        if number is None:
            db.rollback()
            db.refresh(queue)
            if queue.state != "OPEN":
                raise QueueError("closed", f"{queue.name} is closed: no numbers are given out "
                                 "now")  # fmt: skip
            raise QueueError("busy", "the queue's day has not started here yet: try again")
        token = secrets.token_urlsafe(16)
        ticket = QueueTicket(
            queue_id=queue.id, venue_id=queue.venue_id, day=day, number=number,
            label=label(queue, number), source=source, shopper_id=shopper_id, holder=shopper_id,
            ref=ref, token_hash=token_hash(token), notify=notify, state="WAITING", calls=0,
            taken_at=now, notified_calls=0, notified_skip=False,
        )  # fmt: skip
        db.add(ticket)
        try:
            db.commit()
            return ticket, token
        except IntegrityError:
            db.rollback()  # the count goes back with the ticket: no gap
    raise QueueError("busy", "too many people at once: please try again")


def _run_hooks(db: Session, queue: ServiceQueue, ticket: QueueTicket | None, now: float) -> None:
    for hook in CHANGE_HOOKS:
        hook(db, queue, ticket, now)


def ticket_in(db: Session, queue: ServiceQueue, ticket_id: str) -> QueueTicket:
    """The ticket, if it belongs to this queue; a number from another venue or queue is
    refused by name."""
    ticket = db.get(QueueTicket, ticket_id) if ticket_id.startswith("qtk_") else None
    if ticket is None:
        raise QueueError("not_found", "no such number")
    if ticket.venue_id != queue.venue_id:
        raise QueueError("other_venue", f"number {ticket.label} was taken at another venue")
    if ticket.queue_id != queue.id:
        raise QueueError("other_queue", f"number {ticket.label} is for another queue")
    return ticket


def _move(db: Session, ticket: QueueTicket, seen: str, **values: Any) -> bool:
    """The conditional UPDATE every state change is: from the state it was seen in."""
    done = db.execute(
        update(QueueTicket)
        .where(QueueTicket.id == ticket.id, QueueTicket.state == seen,
               QueueTicket.calls == ticket.calls)
        .values(**values)
        .execution_options(synchronize_session=False)
    )  # fmt: skip
    return done.rowcount == 1


def _finish(db: Session, queue: ServiceQueue, ticket: QueueTicket, now: float) -> QueueTicket:
    _run_hooks(db, queue, db.get(QueueTicket, ticket.id, populate_existing=True), now)
    db.commit()
    return db.get(QueueTicket, ticket.id, populate_existing=True) or ticket


def call_next(db: Session, queue_id: str, counter: str, actor: str, now: float) -> QueueTicket:
    """Call the lowest waiting number of the day to `counter` (a window, a room). The number
    this counter was serving, if still called, is served: pressing Next means done with it
    (mark it skipped first if they never came)."""
    counter = counter.strip()[:32] or "1"
    queue = get_queue(db, queue_id)
    expire_stale(db, queue, now)
    db.commit()  # apart: two windows' expiries must not hold each other's locks
    for _ in range(ATTEMPTS):
        # Windows of one queue call one at a time (PostgreSQL: the queue row's lock until the
        # commit; SQLite ignores it and has one writer anyway). Without it eight windows
        # pressing Next together lost their races past ATTEMPTS on a loaded machine ("busy");
        # staff press Next seconds apart, so the wait is nothing. Takes touch the same row
        # only for the counter's conditional UPDATE.
        db.execute(select(ServiceQueue.id).where(ServiceQueue.id == queue.id).with_for_update())
        db.execute(
            update(QueueTicket)
            .where(QueueTicket.queue_id == queue.id, QueueTicket.state == "CALLED",
                   QueueTicket.counter == counter)
            .values(state="SERVED", holder=None, ended_at=now, actor=actor)
            .execution_options(synchronize_session=False)
        )  # fmt: skip
        pick = (
            select(QueueTicket)
            .where(QueueTicket.queue_id == queue.id, QueueTicket.day == local_day(queue, now),
                   QueueTicket.state == "WAITING")
            .order_by(QueueTicket.number).limit(1)
        )  # fmt: skip
        ticket = db.scalar(pick.execution_options(populate_existing=True))
        if ticket is None:
            db.commit()
            raise QueueError("empty", "nobody is waiting")
        if _move(db, ticket, "WAITING", state="CALLED", counter=counter, calls=1, called_at=now,
                 last_called_at=now, actor=actor):  # fmt: skip
            return _finish(db, queue, ticket, now)
        db.rollback()
    raise QueueError("busy", "another window called at the same moment: press again")


def recall(
    db: Session, queue_id: str, ticket_id: str, counter: str, actor: str, now: float
) -> QueueTicket:
    """Call a called or skipped number again, up to the queue's `max_calls`; a skipped one
    only within `recall_seconds` of its skip (after that it has expired)."""
    queue = get_queue(db, queue_id)
    expire_stale(db, queue, now)
    ticket = ticket_in(db, queue, ticket_id)
    db.refresh(ticket)
    if ticket.state == "EXPIRED" and ticket.skipped_at is not None:
        db.commit()
        raise QueueError("expired", f"number {ticket.label} was skipped too long ago and has "
                         "expired")  # fmt: skip
    if ticket.state not in ("CALLED", "SKIPPED"):
        db.commit()
        raise QueueError("bad_state", f"number {ticket.label} is {ticket.state.lower()}: only "
                         "a called or skipped number can be recalled")  # fmt: skip
    if ticket.calls >= queue.max_calls:
        db.commit()
        raise QueueError("recall_limit", f"number {ticket.label} was called {ticket.calls} "
                         "times already: the limit")  # fmt: skip
    counter = counter.strip()[:32] or ticket.counter or "1"
    again = {"state": "CALLED", "counter": counter, "calls": ticket.calls + 1,
             "last_called_at": now, "skipped_at": None, "actor": actor}  # fmt: skip
    if not _move(db, ticket, ticket.state, **again):
        db.rollback()
        raise QueueError("busy", "the number changed meanwhile: look again")
    return _finish(db, queue, ticket, now)


def skip(db: Session, queue_id: str, ticket_id: str, actor: str, now: float) -> QueueTicket:
    """The called person did not come: skipped, recallable for `recall_seconds`."""
    return _end_or_skip(db, queue_id, ticket_id, actor, now, "SKIPPED")


def serve(db: Session, queue_id: str, ticket_id: str, actor: str, now: float) -> QueueTicket:
    """Done with a called number."""
    return _end_or_skip(db, queue_id, ticket_id, actor, now, "SERVED")


def _end_or_skip(
    db: Session, queue_id: str, ticket_id: str, actor: str, now: float, target: str
) -> QueueTicket:
    queue = get_queue(db, queue_id)
    ticket = ticket_in(db, queue, ticket_id)
    db.refresh(ticket)
    if ticket.state != "CALLED":
        db.commit()
        raise QueueError("bad_state", f"number {ticket.label} is {ticket.state.lower()}: "
                         "only a called number can be marked")  # fmt: skip
    values: dict[str, Any] = {"state": target, "actor": actor}
    if target == "SKIPPED":
        values["skipped_at"] = now
    else:
        values.update(holder=None, ended_at=now)
    if not _move(db, ticket, "CALLED", **values):
        db.rollback()
        raise QueueError("busy", "the number changed meanwhile: look again")
    return _finish(db, queue, ticket, now)


def leave(db: Session, ticket_id: str, now: float) -> QueueTicket:
    """The holder gives their number up (from the phone, or the kiosk ticket's page); the
    caller has checked it is theirs."""
    ticket = db.get(QueueTicket, ticket_id, populate_existing=True)
    if ticket is None:
        raise QueueError("not_found", "no such number")
    queue = get_queue(db, ticket.queue_id)
    if ticket.state not in LIVE:
        db.commit()
        raise QueueError("bad_state", f"number {ticket.label} is already {ticket.state.lower()}")
    if not _move(db, ticket, ticket.state, state="CANCELLED", holder=None, ended_at=now):
        db.rollback()
        raise QueueError("busy", "the number changed meanwhile: look again")
    return _finish(db, queue, ticket, now)


def by_token(db: Session, token: str) -> QueueTicket | None:
    if not 10 <= len(token) <= 64:
        return None
    return db.scalar(select(QueueTicket).where(QueueTicket.token_hash == token_hash(token)))


# -- where a ticket stands ---------------------------------------------------------------------


def call_gap(db: Session, queue: ServiceQueue, now: float) -> tuple[float, bool]:
    """Seconds between two first calls at this queue, all windows together (so two windows
    halve it): the median of the last GAP_SAMPLES gaps of the day within GAP_WINDOW (a
    median, so one long break or two quick no-shows do not swing it); with fewer than
    MIN_GAPS of them, the queue's own service_seconds. Returns (gap, measured)."""
    times = db.scalars(
        select(QueueTicket.called_at)
        .where(QueueTicket.queue_id == queue.id, QueueTicket.day == local_day(queue, now),
               QueueTicket.called_at.is_not(None), QueueTicket.called_at > now - GAP_WINDOW)
        .order_by(QueueTicket.called_at.desc()).limit(GAP_SAMPLES + 1)
    ).all()  # fmt: skip
    gaps = [a - b for a, b in itertools.pairwise(times) if a is not None and b is not None]
    if len(gaps) < MIN_GAPS:
        return float(queue.service_seconds), False
    return max(1.0, float(statistics.median(gaps))), True


def ahead_of(db: Session, ticket: QueueTicket) -> int:
    return db.scalar(
        select(func.count()).select_from(QueueTicket)
        .where(QueueTicket.queue_id == ticket.queue_id, QueueTicket.day == ticket.day,
               QueueTicket.state == "WAITING", QueueTicket.number < ticket.number)
    ) or 0  # fmt: skip


def estimate(ahead: int, gap: float) -> float:
    """The estimator: everyone ahead is called one gap after the other, then this ticket."""
    return (ahead + 1) * gap


def standing(db: Session, ticket: QueueTicket, now: float) -> Standing:
    queue = db.get(ServiceQueue, ticket.queue_id)
    assert queue is not None
    gap, measured = call_gap(db, queue, now)
    if ticket.state != "WAITING":
        return Standing(None, None, gap, measured)
    ahead = ahead_of(db, ticket)
    return Standing(ahead, estimate(ahead, gap), gap, measured)


def waiting(db: Session, queue: ServiceQueue, now: float, limit: int | None = None) -> list[Any]:
    """The day's waiting tickets in order (the first `limit`)."""
    query = (
        select(QueueTicket)
        .where(QueueTicket.queue_id == queue.id, QueueTicket.day == local_day(queue, now),
               QueueTicket.state == "WAITING")
        .order_by(QueueTicket.number)
    )  # fmt: skip
    return list(db.scalars(query.limit(limit) if limit else query))


def waiting_count(db: Session, queue: ServiceQueue, now: float) -> int:
    return db.scalar(
        select(func.count()).select_from(QueueTicket)
        .where(QueueTicket.queue_id == queue.id, QueueTicket.day == local_day(queue, now),
               QueueTicket.state == "WAITING")
    ) or 0  # fmt: skip
