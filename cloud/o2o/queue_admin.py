"""The merchant's queue pages in the dashboard: the venue's queues (create, open, close, the
kiosk and display links) and the staff page that calls numbers at a window.

Who may call numbers: the merchant account of the venue, signed in to the dashboard
(docs/decisions.md). Calling, skipping and recalling decide who is served and who loses
their turn, so it sits behind the dashboard's whole guard: its sign-in (`load_merchant`,
`login_required`), its tenancy (`own_venue`: another merchant's venue is a 404, and a queue
is reached only through its venue, so calling on another merchant's queue is the same 404),
its CSRF and headers. Each call records the actor and the window. There are no staff
accounts yet; a capability link like the voucher counter's would let whoever holds it skip
every person in the line, and cannot be revoked without changing the app's secret.
"""

from __future__ import annotations

from flask import Blueprint, Flask, abort, g, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy import select

from cloud.api import now
from cloud.dashboard import auth, security
from cloud.dashboard.tenancy import own_venue, owned
from cloud.db import get_db
from cloud.models import Venue
from cloud.o2o import queue_push, queue_views, queues
from cloud.o2o.queue_models import QueueTicket, ServiceQueue
from cloud.o2o.queue_views import link_key
from cloud.o2o.queues import QueueError, QueueSpec

bp = auth.guard(Blueprint("queue_admin", __name__, url_prefix="/dashboard/queues",
                          template_folder="templates"))  # fmt: skip

ACTIONS = {"recall", "skip", "serve"}


@bp.context_processor
def _globals() -> dict[str, object]:
    return {"minutes": lambda seconds: max(1, round(seconds / 60))}


def _number(text: str, field: str, default: int) -> int:
    text = text.strip()
    if not text:
        return default
    if not text.isdigit() or len(text) > 6:
        raise QueueError("invalid_queue", f"{field}: a whole number")
    return int(text)


def spec_from_form(form: dict[str, str]) -> QueueSpec:
    return QueueSpec(
        name=form.get("name", "").strip(),
        prefix=form.get("prefix", "").strip().upper(),
        kind=form.get("kind", "service"),
        time_zone=form.get("time_zone", "").strip() or "UTC",
        service_seconds=_number(form.get("service_minutes", ""), "minutes per number", 3) * 60,
        recall_seconds=_number(form.get("recall_minutes", ""), "recall minutes", 10) * 60,
        max_calls=_number(form.get("max_calls", ""), "calls per number", 3),
    )


def _own_queue(venue: Venue, queue_id: str) -> ServiceQueue:
    return owned(get_db(), ServiceQueue, queue_id, "svq_", venue)


def _index(venue_id: str, error: str | None = None, status: int = 200) -> ResponseReturnValue:
    venue = own_venue(venue_id)
    db, at = get_db(), now()
    rows = db.scalars(select(ServiceQueue).where(ServiceQueue.venue_id == venue.id)
                      .order_by(ServiceQueue.created_at))  # fmt: skip
    lines = [(q, queues.waiting_count(db, q, at)) for q in rows]
    kiosk = url_for("queues.kiosk", venue_id=venue.id, key=link_key("queue-kiosk", venue.id),
                    _external=True)  # fmt: skip
    display = url_for("queues.display", venue_id=venue.id,
                      key=link_key("queue-display", venue.id), _external=True)  # fmt: skip
    return render_template("queues/admin.html", venue=venue, lines=lines, kiosk=kiosk,
                           display=display, error=error), status  # fmt: skip


@bp.get("/<venue_id>")
@auth.login_required
def index(venue_id: str) -> ResponseReturnValue:
    return _index(venue_id)


@bp.post("/<venue_id>/new")
@auth.login_required
def new(venue_id: str) -> ResponseReturnValue:
    security.require_csrf()
    venue = own_venue(venue_id)
    try:
        queues.create_queue(get_db(), venue.id, spec_from_form(dict(request.form)), now())
    except QueueError as exc:
        return _index(venue_id, str(exc), 400)
    return redirect(url_for("queue_admin.index", venue_id=venue.id), code=303)


@bp.post("/<venue_id>/<queue_id>/state")
@auth.login_required
def state(venue_id: str, queue_id: str) -> ResponseReturnValue:
    security.require_csrf()
    queue = _own_queue(own_venue(venue_id), queue_id)
    try:
        queues.set_state(get_db(), queue, request.form.get("state", ""), now())
    except QueueError as exc:
        return _index(venue_id, str(exc), 400)
    return redirect(url_for("queue_admin.index", venue_id=venue_id), code=303)


def _counter() -> str:
    return (request.values.get("counter") or "1").strip()[:32] or "1"


def _staff(venue: Venue, queue: ServiceQueue, error: str | None = None,
           status: int = 200) -> ResponseReturnValue:  # fmt: skip
    db, at, counter = get_db(), now(), _counter()
    queues.expire_stale(db, queue, at)
    db.commit()
    day = queues.local_day(queue, at)
    live = list(db.scalars(
        select(QueueTicket).where(QueueTicket.queue_id == queue.id, QueueTicket.day == day,
                                  QueueTicket.state.in_(("CALLED", "SKIPPED")))
        .order_by(QueueTicket.last_called_at.desc())
    ))  # fmt: skip
    gap, measured = queues.call_gap(db, queue, at)
    return render_template(
        "queues/staff.html", venue=venue, queue=queue, counter=counter, error=error,
        here=[t for t in live if t.state == "CALLED" and t.counter == counter],
        elsewhere=[t for t in live if t.state == "CALLED" and t.counter != counter],
        skipped=[t for t in live if t.state == "SKIPPED"],
        waiting=queues.waiting(db, queue, at, 10), count=queues.waiting_count(db, queue, at),
        gap=gap, measured=measured,
    ), status  # fmt: skip


@bp.get("/<venue_id>/<queue_id>")
@auth.login_required
def staff(venue_id: str, queue_id: str) -> ResponseReturnValue:
    venue = own_venue(venue_id)
    return _staff(venue, _own_queue(venue, queue_id))


def _back(venue: Venue, queue: ServiceQueue) -> ResponseReturnValue:
    return redirect(url_for("queue_admin.staff", venue_id=venue.id, queue_id=queue.id,
                            counter=_counter()), code=303)  # fmt: skip


@bp.post("/<venue_id>/<queue_id>/next")
@auth.login_required
def call_next(venue_id: str, queue_id: str) -> ResponseReturnValue:
    security.require_csrf()
    venue = own_venue(venue_id)
    queue = _own_queue(venue, queue_id)
    try:
        queues.call_next(get_db(), queue.id, _counter(), g.merchant.id, now())
    except QueueError as exc:
        return _staff(venue, queue, str(exc), 409)
    return _back(venue, queue)


@bp.post("/<venue_id>/<queue_id>/tickets/<ticket_id>/<action>")
@auth.login_required
def ticket_action(venue_id: str, queue_id: str, ticket_id: str, action: str) -> ResponseReturnValue:
    security.require_csrf()
    venue = own_venue(venue_id)
    queue = _own_queue(venue, queue_id)
    if action not in ACTIONS:
        abort(404)
    db, actor, at = get_db(), g.merchant.id, now()
    try:
        if action == "recall":
            queues.recall(db, queue.id, ticket_id, _counter(), actor, at)
        elif action == "skip":
            queues.skip(db, queue.id, ticket_id, actor, at)
        else:
            queues.serve(db, queue.id, ticket_id, actor, at)
    except QueueError as exc:
        return _staff(venue, queue, str(exc), 409)
    return _back(venue, queue)


def register(app: Flask) -> None:
    """The queue pages: the shopper's, kiosk's and screen's (/plaza), and these (/dashboard);
    and the pushes, hooked into the queue core."""
    app.register_blueprint(queue_views.bp)
    app.register_blueprint(bp)
    queue_push.install()
