"""Arrival: an appointment checked in (the phone joined the hospital's Wi-Fi on the day, or
the patient tapped "I have arrived") gets a number in its clinic's queue.

The check-in is the booking core's (`booking.check_in`, the same window as a restaurant's:
from 30 minutes before the slot to its end); the number is the queue core's (`queues.take`,
source `desk`, `ref` the booking's id), so the queue's pages serve the hospital unchanged:
the clinician's window calls the next number, the screen shows the called ones, the
patient's pushes ("3 ahead of you") are queue_push's. The clinic queue of a schedule is the
venue's queue of kind `clinic` named as the schedule's clinic (resources.clinic_name).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from flask import current_app
from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud import db as cloud_db
from cloud import presence
from cloud.api import now as clock_now
from cloud.models import ShopperLink, Venue
from cloud.o2o import booking, queues
from cloud.o2o.booking_models import CHECKED_IN, CONFIRMED, Booking, BookingResource
from cloud.o2o.queue_models import QueueTicket, ServiceQueue
from cloud.o2o.shoppers import Shopper

log = logging.getLogger("plaza.cloud.hospital")


class ArrivalError(Exception):
    """An arrival refused: `code` is `not_booked`, `not_today` or `no_clinic`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def clinic_queue(db: Session, resource: BookingResource) -> ServiceQueue | None:
    return clinic_queues(db, [resource])[resource.id]


def clinic_queues(
    db: Session, schedules: Iterable[BookingResource]
) -> dict[str, ServiceQueue | None]:
    """Each schedule's clinic queue (by schedule id; None: its clinic has none) in one query:
    the oldest of its venue's clinic queues named as its clinic (FHIR: its Location)."""
    from cloud.hospital.resources import clinic_name

    wanted = {one.id: (one.venue_id, clinic_name(one)) for one in schedules}
    found: dict[tuple[str, str], ServiceQueue] = {}
    if wanted:
        rows = db.scalars(
            select(ServiceQueue).where(
                ServiceQueue.venue_id.in_({venue for venue, _ in wanted.values()}),
                ServiceQueue.kind == "clinic",
                ServiceQueue.name.in_({name for _, name in wanted.values()}))
            .order_by(ServiceQueue.created_at.desc(), ServiceQueue.id.desc())
        )  # fmt: skip
        found = {(row.venue_id, row.name): row for row in rows}  # the oldest wins: last
    return {key: found.get(where) for key, where in wanted.items()}


def ticket_of(db: Session, booking_id: str) -> QueueTicket | None:
    """The appointment's queue ticket (its Encounter), if it arrived."""
    return db.scalar(
        select(QueueTicket).where(QueueTicket.ref == booking_id)
        .order_by(QueueTicket.taken_at.desc()).limit(1)
    )  # fmt: skip


def arrive(db: Session, found: Booking, now: float, by: str) -> QueueTicket:
    """CONFIRMED -> CHECKED_IN (or already so) and the clinic's number; the same number on
    every call (a second tap, presence after the tap)."""
    if found.state == CONFIRMED and not booking.check_in(db, found, now, by):
        raise ArrivalError("not_today", "arrival is taken from 30 minutes before the "
                           "appointment to its end")  # fmt: skip
    db.refresh(found)
    if found.state != CHECKED_IN:
        raise ArrivalError("not_booked", f"a {found.state.lower()} appointment cannot arrive")
    held = ticket_of(db, found.id)
    if held is not None:
        return held
    resource = db.get(BookingResource, found.resource_id)
    queue = clinic_queue(db, resource) if resource is not None else None
    if queue is None:
        raise ArrivalError("no_clinic", "this clinic has no queue: please see the desk")
    try:
        ticket, _token = queues.take(db, queue.id, now, source="desk",
                                     shopper_id=found.shopper_id, ref=found.id)  # fmt: skip
    except queues.QueueError as exc:
        if exc.code == "already_waiting" and exc.ticket is not None:
            return exc.ticket  # the patient's number for another visit today: one line place
        raise ArrivalError("no_clinic", str(exc)) from exc
    return ticket


def arrive_by_presence(db: Session, venue_id: str, wallet_user: str, now: float) -> list[str]:
    """Appointments of this wallet user at `venue_id` that the booking core checked in (its
    own join hook runs first) or can check in now, given their numbers; the tickets' ids."""
    found = db.scalars(
        select(Booking).join(Shopper, Shopper.id == Booking.shopper_id)
        .join(BookingResource, BookingResource.id == Booking.resource_id)
        .where(Booking.venue_id == venue_id, Shopper.subject == wallet_user,
               BookingResource.kind == "appointment",
               Booking.state.in_((CONFIRMED, CHECKED_IN)))
    ).all()  # fmt: skip
    numbers = []
    for one in found:
        if one.state == CHECKED_IN and ticket_of(db, one.id) is not None:
            continue
        try:
            numbers.append(arrive(db, one, now, "presence").id)
        except (ArrivalError, queues.QueueError) as exc:
            log.info("no arrival for %s by presence: %s", one.id, exc)
    return numbers


def join_hook(venue: Venue, link: ShopperLink) -> None:
    """presence.JOIN_HOOKS: an opted-in phone joined the hospital's Wi-Fi."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    with cloud_db.session(app) as db:
        arrive_by_presence(db, venue.id, link.wallet_user, clock_now())


def init_app() -> None:
    if join_hook not in presence.JOIN_HOOKS:
        presence.register_join_hook(join_hook)
