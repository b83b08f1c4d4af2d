"""The virtual queue tables (migration 0010): queues and their tickets.

Generic on purpose: a plaza's service windows ("customer service", "parcel pickup") and a
hospital's clinics (issue 17: arrival -> a number per clinic, the clinician calls the next)
are the same queue; `kind` tells them apart and `ref` lets the hospital tie a ticket to its
own record (an Appointment). Nothing here knows about shoppers' pages or pushes.

The invariants live in the schema where a schema can hold them:

- numbers: the queue row holds the day's counter (`day`, `last_number`), moved only by one
  conditional UPDATE in the transaction that inserts the ticket, so a number is handed out
  exactly when its ticket is stored (no gaps: a failed insert rolls the counter back; no
  duplicates: the row lock orders the takes), and (queue, day, number) is unique besides;
- one live ticket per shopper per queue: `holder` is the shopper's id while the ticket is live
  (waiting, called, skipped) and NULL once it ends, and (queue, holder) is unique (NULLs never
  collide, so ended tickets and kiosk tickets are not limited);
- a ticket changes state only by `UPDATE ... WHERE state = <the state it was seen in>`.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from cloud.models import Base, new_id

QUEUE_STATES = ("OPEN", "CLOSED")
# WAITING -> CALLED -> SERVED; CALLED -> SKIPPED -> CALLED (recall) | EXPIRED;
# WAITING | SKIPPED -> CANCELLED (the holder leaves); anything live from an earlier day -> EXPIRED
LIVE = ("WAITING", "CALLED", "SKIPPED")
ENDED = ("SERVED", "EXPIRED", "CANCELLED")


class ServiceQueue(Base):
    """One queue at one venue: a service window, or a clinic."""

    __tablename__ = "service_queues"
    __table_args__ = (
        CheckConstraint("last_number >= 0", name="number_positive"),
        Index("ix_service_queues_venue", "venue_id", "state"),
    )

    id: Mapped[str] = mapped_column(String(24), primary_key=True, default=lambda: new_id("svq"))
    venue_id: Mapped[str] = mapped_column(ForeignKey("venues.id"))
    kind: Mapped[str] = mapped_column(String(16), default="service")  # service | clinic
    name: Mapped[str] = mapped_column(String(80))
    prefix: Mapped[str] = mapped_column(String(4), default="")  # "A": numbers read A001
    state: Mapped[str] = mapped_column(String(8), default="OPEN")
    time_zone: Mapped[str] = mapped_column(String(64), default="UTC")  # whose day numbers count
    service_seconds: Mapped[int] = mapped_column(Integer, default=180)  # the estimate's prior
    recall_seconds: Mapped[int] = mapped_column(Integer, default=600)  # a skip stays recallable
    max_calls: Mapped[int] = mapped_column(Integer, default=3)  # first call + recalls
    day: Mapped[str | None] = mapped_column(String(10))  # the day last_number counts
    last_number: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)


class QueueTicket(Base):
    """One number taken in a queue: from a phone (`shopper_id`), a kiosk (nobody: the token's
    status page), or a desk (the hospital's arrival)."""

    __tablename__ = "queue_tickets"
    __table_args__ = (
        UniqueConstraint("queue_id", "day", "number", name="uq_queue_tickets_number"),
        UniqueConstraint("queue_id", "holder", name="uq_queue_tickets_holder"),
        Index("ix_queue_tickets_line", "queue_id", "day", "state", "number"),
        Index("ix_queue_tickets_shopper", "shopper_id", "taken_at"),
    )

    id: Mapped[str] = mapped_column(String(24), primary_key=True, default=lambda: new_id("qtk"))
    queue_id: Mapped[str] = mapped_column(ForeignKey("service_queues.id"))
    venue_id: Mapped[str] = mapped_column(ForeignKey("venues.id"))
    day: Mapped[str] = mapped_column(String(10))  # YYYY-MM-DD in the queue's time zone
    number: Mapped[int] = mapped_column(Integer)
    label: Mapped[str] = mapped_column(String(12))  # what is shown and called: A007
    source: Mapped[str] = mapped_column(String(8))  # phone | kiosk | desk
    shopper_id: Mapped[str | None] = mapped_column(ForeignKey("shoppers.id"))
    holder: Mapped[str | None] = mapped_column(String(24))  # shopper_id while live
    ref: Mapped[str | None] = mapped_column(String(64))  # the caller's own record
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)  # SHA-256 of the token
    notify: Mapped[bool] = mapped_column(Boolean, default=True)
    state: Mapped[str] = mapped_column(String(10), default="WAITING")
    counter: Mapped[str | None] = mapped_column(String(32))  # the window that called it
    calls: Mapped[int] = mapped_column(Integer, default=0)
    actor: Mapped[str | None] = mapped_column(String(64))  # who last called or ended it
    taken_at: Mapped[float] = mapped_column(Float)
    called_at: Mapped[float | None] = mapped_column(Float)  # first call: the wait ends
    last_called_at: Mapped[float | None] = mapped_column(Float)
    skipped_at: Mapped[float | None] = mapped_column(Float)
    ended_at: Mapped[float | None] = mapped_column(Float)
    notified_ahead: Mapped[int | None] = mapped_column(Integer)  # last milestone pushed
    notified_calls: Mapped[int] = mapped_column(Integer, default=0)  # calls pushed
    notified_skip: Mapped[bool] = mapped_column(Boolean, default=False)
