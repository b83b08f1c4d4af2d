"""The plaza figures of one venue over a window of whole UTC days: the funnel (Wi-Fi join ->
wallet login -> offer seen -> voucher claimed -> redeemed) by day and by offer, and the
redemptions, bookings and queue waits per day. Raw counts only: what may be shown of them is
cloud/dashboard/privacy.py's business, applied by the page.

Where each step is recorded (no step needed a new record):
- joined: a presence `join` (the venue's router, cloud/presence.py), by MAC;
- signed in: a presence `login`: the portal's wallet login on that router, by MAC;
- offer seen: an offer push delivered to the shopper (`push_jobs` sent, the presence push of
  cloud/push/presence_push.py; booking and queue pushes, keyed by `shp_` ids, are not offers),
  by wallet user. A push carries the venue's offers, not one template, so it has no offer;
- claimed: `vouchers.claimed_at`; redeemed: `voucher_redemptions.at`, not reversed; by the
  shopper's wallet subject, and by template.
A wallet user becomes the MAC the venue's router linked to them (`shopper_links`), so one
phone is one device through every step; a user with no link stays a device of their own.
"""

from __future__ import annotations

import secrets
import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Integer, cast, func, select
from sqlalchemy.orm import Session

from cloud.dashboard import privacy
from cloud.dashboard.privacy import DAY, SaltBook
from cloud.models import PresenceEvent, PushJob, ShopperLink
from cloud.o2o.booking_models import Booking
from cloud.o2o.queue_models import QueueTicket
from cloud.o2o.shoppers import Shopper
from cloud.o2o.voucher_models import Voucher, VoucherRedemption, VoucherTemplate

STEPS = ("joined", "signed_in", "offer_seen", "claimed", "redeemed")
STEP_NAMES = {
    "joined": "Joined the Wi-Fi",
    "signed_in": "Signed in with the wallet",
    "offer_seen": "Offer seen",
    "claimed": "Voucher claimed",
    "redeemed": "Voucher redeemed",
}
SALTS = SaltBook()  # the process's: one salt per UTC day, the current day's only


@dataclass(frozen=True)
class Days:
    """`count` whole UTC days starting at `start` (a midnight)."""

    start: float
    count: int = 7

    @property
    def end(self) -> float:
        return self.start + self.count * DAY

    @classmethod
    def ending_today(cls, now: float, count: int = 7) -> Days:
        return cls(start=(int(now) // DAY + 1 - count) * DAY, count=count)

    def index(self, at: float) -> int:
        return int((at - self.start) // DAY)


@dataclass
class Funnel:
    """Distinct devices per step per day (`by_day[step][i]`), and per offer the device-days
    that claimed and redeemed it (`by_offer[template id] = (title, claimed, redeemed)`)."""

    days: Days
    by_day: dict[str, list[int]]
    by_offer: dict[str, tuple[str, int, int]] = field(default_factory=dict)

    def total(self, step: str) -> int:
        """Device-days: a device counted once a day (its pseudonym changes every day)."""
        return sum(self.by_day[step])


def _day(db: Session, column: Any, start: float) -> Any:
    """The 0-based day of `column` after `start` (floor on both databases: see
    stats._hour_of; inputs are never before `start`)."""
    offset = (column - start) / float(DAY)
    if db.get_bind().dialect.name == "sqlite":
        return cast(offset, Integer)
    return cast(func.floor(offset), Integer)


def funnel(db: Session, venue_id: str, days: Days, today: int, salts: SaltBook = SALTS) -> Funnel:
    """The funnel; `today` is the current day number (unix day): its salt is the book's, a
    past day's is made for this call and dropped with it (the book forgets earlier days)."""
    salts.forget_before(today)
    once: dict[int, bytes] = {}  # past days' salts, for this call only

    def pseudonym(i: int, device: str) -> str:
        day = int(days.start // DAY) + i
        if day == today:
            return salts.pseudonym(day, device)
        return privacy.pseudonym(once.setdefault(day, secrets.token_bytes(32)), device)

    links: dict[str, str] = {}
    for user, mac in db.execute(
        select(ShopperLink.wallet_user, func.min(ShopperLink.mac))
        .where(ShopperLink.venue_id == venue_id)
        .group_by(ShopperLink.wallet_user)
    ):
        links[user] = mac

    def device(user: str) -> str:
        return links.get(user) or f"wallet:{user}"

    seen: dict[str, list[set[str]]] = {s: [set() for _ in range(days.count)] for s in STEPS}

    def add(step: str, rows: Iterable[Any], as_user: bool) -> None:
        for i, who in rows:
            if i is not None and 0 <= int(i) < days.count:
                seen[step][int(i)].add(pseudonym(int(i), device(who) if as_user else who))

    in_window = (days.start, days.end)
    for step, kind in (("joined", "join"), ("signed_in", "login")):
        day = _day(db, PresenceEvent.at, days.start)
        add(step, db.execute(select(day, PresenceEvent.mac).distinct().where(
            PresenceEvent.venue_id == venue_id, PresenceEvent.kind == kind,
            PresenceEvent.at >= in_window[0], PresenceEvent.at < in_window[1],
        )), as_user=False)  # fmt: skip
    day = _day(db, PushJob.sent_at, days.start)
    add("offer_seen", db.execute(select(day, PushJob.shopper).distinct().where(
        PushJob.venue_id == venue_id, PushJob.sent_at >= in_window[0],
        PushJob.sent_at < in_window[1], ~PushJob.shopper.startswith("shp_"),
    )), as_user=True)  # fmt: skip

    per_offer: dict[str, list[set[tuple[int, str]]]] = defaultdict(lambda: [set(), set()])
    claimed_day = _day(db, Voucher.claimed_at, days.start)
    claims = db.execute(select(claimed_day, Shopper.subject, Voucher.template_id).distinct()
                        .join(Shopper, Shopper.id == Voucher.shopper)
                        .where(Voucher.venue_id == venue_id, Voucher.claimed_at >= in_window[0],
                               Voucher.claimed_at < in_window[1])).all()  # fmt: skip
    used_day = _day(db, VoucherRedemption.at, days.start)
    uses = db.execute(select(used_day, Shopper.subject, Voucher.template_id).distinct()
                      .join(Voucher, Voucher.id == VoucherRedemption.voucher_id)
                      .join(Shopper, Shopper.id == Voucher.shopper)
                      .where(VoucherRedemption.venue_id == venue_id,
                             VoucherRedemption.reversed_at.is_(None),
                             VoucherRedemption.at >= in_window[0],
                             VoucherRedemption.at < in_window[1])).all()  # fmt: skip
    for step, rows, slot in (("claimed", claims, 0), ("redeemed", uses, 1)):
        add(step, ((i, who) for i, who, _ in rows), as_user=True)
        for i, who, template in rows:
            if i is not None and 0 <= int(i) < days.count:
                per_offer[template][slot].add((int(i), pseudonym(int(i), device(who))))
    titles = dict(db.execute(select(VoucherTemplate.id, VoucherTemplate.title).where(
        VoucherTemplate.venue_id == venue_id)).all())  # fmt: skip
    by_offer = {
        t: (titles.get(t, t), len(claimed), len(redeemed))
        for t, (claimed, redeemed) in sorted(
            per_offer.items(), key=lambda kv: titles.get(kv[0], "")
        )
    }
    by_day = {s: [len(d) for d in seen[s]] for s in STEPS}
    return Funnel(days, by_day, by_offer)


def _per_day(days: Days, rows: Iterable[Any]) -> list[int]:
    values = [0] * days.count
    for i, n in rows:
        if i is not None and 0 <= int(i) < days.count:
            values[int(i)] = int(n or 0)
    return values


def redemptions_per_day(db: Session, venue_id: str, days: Days) -> list[int]:
    """Redemptions at the counter that stand (a reversed one, refunded, is not counted)."""
    day = _day(db, VoucherRedemption.at, days.start)
    return _per_day(days, db.execute(select(day, func.count()).where(
        VoucherRedemption.venue_id == venue_id, VoucherRedemption.reversed_at.is_(None),
        VoucherRedemption.at >= days.start, VoucherRedemption.at < days.end,
    ).group_by(day)))  # fmt: skip


def bookings_per_day(db: Session, venue_id: str, days: Days) -> list[int]:
    """Bookings confirmed each day (by the day they were confirmed, deposit or not)."""
    day = _day(db, Booking.confirmed_at, days.start)
    return _per_day(days, db.execute(select(day, func.count()).where(
        Booking.venue_id == venue_id, Booking.confirmed_at >= days.start,
        Booking.confirmed_at < days.end,
    ).group_by(day)))  # fmt: skip


def queue_waits(db: Session, venue_id: str, days: Days) -> tuple[list[int], list[float]]:
    """(numbers called, median wait in seconds from taking the number to its first call) per
    day of the call. Bounded rows: a venue calls hundreds of numbers a day, not millions."""
    waits: list[list[float]] = [[] for _ in range(days.count)]
    for taken, called in db.execute(select(QueueTicket.taken_at, QueueTicket.called_at).where(
        QueueTicket.venue_id == venue_id, QueueTicket.called_at >= days.start,
        QueueTicket.called_at < days.end,
    )):  # fmt: skip
        waits[days.index(called)].append(max(0.0, called - taken))
    return [len(w) for w in waits], [statistics.median(w) if w else 0.0 for w in waits]
