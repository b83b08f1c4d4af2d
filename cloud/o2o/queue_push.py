"""Queue pushes: "3 ahead of you", "you are next", "your number is called at window 2", to the
phone that took the number, through the wallet's message channel and the shopper's Web Push
subscriptions at the venue (cloud/push: the outbox `push_jobs` and its worker).

No spam: a push only when something the shopper would act on changed.
- Position: when the people ahead drop to a milestone (10, 5, 3, 1, 0 = "you are next") the
  ticket was not told yet; a jump over several milestones (two windows calling at once) is
  one push, of the lowest. The last milestone told is kept on the ticket (`notified_ahead`).
- A call, and each recall (`notified_calls` counts what was told), and a skip (once).
- Nothing for taking a number (the page shows it), serving or leaving.
Kiosk tickets have no one to push to: their status page refreshes itself.

The check runs as a `queues.CHANGE_HOOKS` hook, in the transaction of the change, and only
writes outbox rows: a slow wallet never holds up the staff's Next button, and a change that
rolls back pushes nothing. Only the first MILESTONES[0] + 1 waiting tickets can reach a
milestone, so one change reads at most 11 tickets whatever the queue's length.

`PushJob.shopper` is the shopper's plaza id (`shp_...`), not the wallet user: the presence
push's per-shopper interval and venue budget (cloud/push/presence_push.py) count wallet users,
and a number being called must neither wait for nor use up the venue's offer pushes.
"""

from __future__ import annotations

from typing import Any

from flask import current_app, has_app_context, has_request_context, request
from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud.models import PushJob, PushSubscription, Venue
from cloud.o2o import queues, settings
from cloud.o2o.queue_models import QueueTicket, ServiceQueue
from cloud.o2o.shoppers import Shopper
from cloud.push.presence_push import venue_language
from plaza.texts import DEFAULT_LANGUAGE, ZH

MILESTONES = (10, 5, 3, 1, 0)
SENTENCES: dict[str, dict[str, str]] = {
    DEFAULT_LANGUAGE: {
        "title": "{queue}: number {label}",
        "ahead": "{ahead} ahead of you, about {minutes} min.",
        "next": "You are next. Please come to {queue}.",
        "called": "Your number {label} is called at window {counter}.",
        "skipped": "You missed your call. Come to the desk within {minutes} min to be recalled.",
    },
    ZH: {
        "title": "{queue}：{label} 号",
        "ahead": "您前面还有 {ahead} 位，约 {minutes} 分钟。",
        "next": "下一位就是您，请到{queue}。",
        "called": "请 {label} 号到 {counter} 号窗口。",
        "skipped": "您已过号。请在 {minutes} 分钟内到柜台，可重新叫号。",
    },
}


def install() -> None:
    """Hook the pushes into the queue core (idempotent: one hook per process)."""
    if on_change not in queues.CHANGE_HOOKS:
        queues.CHANGE_HOOKS.append(on_change)


def milestone(ahead: int, told: int | None) -> int | None:
    """The milestone to tell a ticket with `ahead` people before it that was last told `told`
    (None: never), or None when nothing worth a push changed."""
    reached = [m for m in MILESTONES if ahead <= m]
    if not reached:
        return None
    lowest = min(reached)
    return lowest if told is None or lowest < told else None


def minutes(seconds: float) -> int:
    return max(1, round(seconds / 60))


def on_change(db: Session, queue: ServiceQueue, ticket: QueueTicket | None, now: float) -> None:
    """Queue the pushes this change earns (the caller's transaction commits them)."""
    if not has_app_context():
        return  # a script driving the core without an app: nobody to push through
    venue = db.get(Venue, queue.venue_id)
    if venue is None:
        return
    texts = SENTENCES.get(venue_language(venue.config), SENTENCES[DEFAULT_LANGUAGE])
    if ticket is not None and ticket.shopper_id and ticket.notify:
        if ticket.state == "CALLED" and ticket.calls > ticket.notified_calls:
            ticket.notified_calls = ticket.calls
            _push(db, venue, queue, ticket, texts["called"].format(
                label=ticket.label, counter=ticket.counter or "1"), now)  # fmt: skip
        elif ticket.state == "SKIPPED" and not ticket.notified_skip:
            ticket.notified_skip = True
            body = texts["skipped"].format(minutes=minutes(queue.recall_seconds))
            _push(db, venue, queue, ticket, body, now)
    gap, _ = queues.call_gap(db, queue, now)
    for ahead, waiting in enumerate(queues.waiting(db, queue, now, MILESTONES[0] + 1)):
        if not (waiting.shopper_id and waiting.notify):
            continue
        reached = milestone(ahead, waiting.notified_ahead)
        if reached is None:
            continue
        waiting.notified_ahead = reached
        if ahead == 0:
            body = texts["next"].format(queue=queue.name)
        else:
            wait = queues.estimate(ahead, gap)
            body = texts["ahead"].format(ahead=ahead, minutes=minutes(wait))
        _push(db, venue, queue, waiting, body, now)
    db.flush()


def link_of(ticket: QueueTicket) -> str:
    base = settings.setting(current_app, "PUBLIC_URL").rstrip("/")
    if not base and has_request_context():
        base = request.host_url.rstrip("/")
    return f"{base}/plaza/queues/tickets/{ticket.id}"


def _push(db: Session, venue: Venue, queue: ServiceQueue, ticket: QueueTicket, body: str,
          now: float) -> None:  # fmt: skip
    """One wallet message and one Web Push per browser the shopper subscribed at the venue."""
    shopper = db.get(Shopper, ticket.shopper_id)
    if shopper is None:
        return
    texts = SENTENCES.get(venue_language(venue.config), SENTENCES[DEFAULT_LANGUAGE])
    title = texts["title"].format(queue=queue.name, label=ticket.label)[:80]
    link = link_of(ticket)
    message = {"title": title, "body": body, "link": link, "queue_ticket": ticket.id}
    jobs = [_job(venue.id, "wallet", shopper.subject, shopper.id, message, now)]
    subscriptions = db.scalars(
        select(PushSubscription.id).where(PushSubscription.venue_id == venue.id,
                                          PushSubscription.wallet_user == shopper.subject)
    ).all()  # fmt: skip
    data = {"title": title, "body": body, "url": link, "venue": venue.id,
            "queue_ticket": ticket.id, "state": ticket.state}  # fmt: skip
    jobs += [_job(venue.id, "webpush", sid, shopper.id, data, now) for sid in subscriptions]
    db.add_all(jobs)


def _job(venue_id: str, kind: str, target: str, shopper: str, payload: dict[str, Any],
         at: float) -> PushJob:  # fmt: skip
    return PushJob(venue_id=venue_id, kind=kind, target=target, shopper=shopper,
                   payload=payload, created_at=at, attempts=0, next_attempt_at=at)  # fmt: skip
