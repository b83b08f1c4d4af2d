"""The charge pass: new taps priced with the fare engine and posted to the ledger, in bulk.

What a tap is charged is unchanged from one-tap-at-a-time charging (cloud/transit/taps.py
says why): the engine's quote of the card's service day, counting the taps already charged
and this one, minus what the day was already charged. What changed is how many round trips
that takes. A pass works on CARDS_PER_TXN cards at once:

1. lock their card rows (`FOR UPDATE SKIP LOCKED` in the pass: a second charger running at
   the same time takes other cards instead of waiting; `charge_card` after an upload waits);
2. read the taps of the cards it holds from the day of their oldest new tap on, as rows (one
   SELECT by card and time, no ORM objects): the new ones and the charged ones of their days;
3. price every card-day in memory: when the new taps come after the charged ones (the usual
   case) one quote of the whole day gives every tap its share (the engine prices legs in
   order, so a prefix's total is the running total); a late backlog tap, or a tap the engine
   refuses, falls back to a quote per tap;
4. write: the postings and their entries in two statements (`ledger.post_many`, one key per
   tap, so a tap is never posted twice), the taps' state and fare in one UPDATE (PostgreSQL:
   `UPDATE ... FROM unnest(...)`), then commit.

Exactly once: a card's taps are read only while its row is locked, and their postings and
states are committed together; a crash before the commit leaves them new, a second charger
skips the locked card and finds its taps charged once it gets it.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal
from zoneinfo import ZoneInfo

from sqlalchemy import bindparam, func, select, text, update
from sqlalchemy.orm import Session

from cloud.models import ClaimCode, Venue
from cloud.o2o import ledger
from cloud.transit import cards
from cloud.transit.fares import FareEngine, FareError, Leg
from cloud.transit.models import CHARGED, NEW, REFUSED, TransitCard, TransitFeed, TransitTap

CARDS_PER_TXN = 500  # cards locked, priced and committed together by the pass
Result = dict[str, int]


@dataclass
class Tap:
    """A tap as the pass reads it (a row, not an ORM object: thousands a second)."""

    id: int
    card_id: str
    reader_id: str
    route_id: str
    stop_id: str
    tapped_at: float
    state: str
    fare: int | None
    note: str = ""

    def leg(self) -> Leg:
        when = dt.datetime.fromtimestamp(self.tapped_at, dt.UTC)
        return Leg(self.route_id, self.stop_id, None, when, when)


COLUMNS = (TransitTap.id, TransitTap.card_id, TransitTap.reader_id, TransitTap.route_id,
           TransitTap.stop_id, TransitTap.tapped_at, TransitTap.state, TransitTap.fare)  # fmt: skip


def empty() -> Result:
    return {"charged": 0, "refused": 0, "fen": 0}


def charge_pending(db: Session, at: float, limit: int = 10000) -> Result:
    """Price and charge the new taps of up to `limit` cards, oldest first; committed every
    CARDS_PER_TXN cards. Cards another charger holds are left to it."""
    result = empty()
    feed = cards.current_feed(db)
    if feed is None:
        return result
    pending = db.execute(
        select(TransitTap.card_id, func.min(TransitTap.tapped_at))
        .where(TransitTap.state == NEW)
        .group_by(TransitTap.card_id)
        .order_by(func.min(TransitTap.tapped_at))
        .limit(limit)
    ).all()
    merchants: dict[str, str] = {}
    for first in range(0, len(pending), CARDS_PER_TXN):
        chunk = pending[first : first + CARDS_PER_TXN]
        since = chunk[0][1]  # the chunk's oldest new tap: the cards come oldest first
        cards_ids = [card for card, _ in chunk]
        _add(result, charge_cards(db, cards_ids, at, feed, merchants, since, skip_locked=True))
        db.commit()
    return result


def charge_card(
    db: Session, card_id: str, at: float, merchants: dict[str, str] | None = None,
    commit: bool = True,
) -> Result:  # fmt: skip
    """Charge one card's new taps (its row locked until the commit: two passes never price
    it at once). `merchants` caches reader -> merchant across calls."""
    feed = cards.current_feed(db)
    since = db.scalar(select(func.min(TransitTap.tapped_at))
                      .where(TransitTap.card_id == card_id, TransitTap.state == NEW))  # fmt: skip
    if since is None:
        result = empty()
    elif feed is None:
        result = _refuse(db, [card_id], "no fare feed")
    else:
        result = charge_cards(
            db, [card_id], at, feed, {} if merchants is None else merchants, since
        )
    if commit:
        db.commit()
    return result


def charge_cards(
    db: Session, card_ids: list[str], at: float, feed: TransitFeed, merchants: dict[str, str],
    since: float, skip_locked: bool = False,
) -> Result:  # fmt: skip
    """Charge these cards' new taps from `since` on (the oldest new tap's time when the cards
    were picked: one stored later and older waits for the next pass) in the caller's
    transaction (which commits).

    The taps are read by card and time only, the state sorted out here: with `state` in the
    query PostgreSQL may walk the state index through every new or charged tap of every card
    (seen: 0.9 s a query once 100,000 taps were charged), not the card index."""
    known = set(db.scalars(select(TransitCard.id).where(TransitCard.id.in_(card_ids))))
    result = _refuse(db, [c for c in card_ids if c not in known], "unknown card")
    held = db.scalars(
        select(TransitCard.id).where(TransitCard.id.in_(sorted(known)))
        .order_by(TransitCard.id).with_for_update(skip_locked=skip_locked)
    ).all()  # fmt: skip
    if not held:
        return result
    engine = cards.engine_for(feed)
    low, _ = _bounds(engine.zone, _day(engine.zone, since))
    taps = [Tap(*row) for row in db.execute(
        select(*COLUMNS).where(TransitTap.card_id.in_(held), TransitTap.tapped_at >= low)
    )]  # fmt: skip
    new = [tap for tap in taps if tap.state == NEW]
    if not new:
        return result
    days: dict[tuple[str, dt.date], list[Tap]] = defaultdict(list)
    for tap in new:
        days[(tap.card_id, _day(engine.zone, tap.tapped_at))].append(tap)
    for tap in taps:
        found = days.get((tap.card_id, _day(engine.zone, tap.tapped_at)))
        if found is not None and tap.state == CHARGED:
            found.append(tap)
    for day in days.values():
        day.sort(key=lambda t: (t.tapped_at, t.id))
        price_day(engine, day)
    _write(db, new, at, feed, merchants)
    for tap in new:
        if tap.state == CHARGED:
            result["charged"] += 1
            result["fen"] += tap.fare or 0
        else:
            result["refused"] += 1
    return result


def price_day(engine: FareEngine, day: list[Tap]) -> None:
    """Set state and fare on the day's new taps (`day`: one card's charged and new taps of a
    service day, in time order)."""
    already = sum(t.fare or 0 for t in day if t.state == CHARGED)
    first_new = next(i for i, t in enumerate(day) if t.state == NEW)
    if all(t.state == NEW for t in day[first_new:]):
        try:
            quote = engine.quote([t.leg() for t in day])
        except FareError:
            pass  # one of them is refused: find which, a tap at a time
        else:
            running = sum(p.amount for p in quote.legs[:first_new])
            charged = already
            for tap, priced in zip(day[first_new:], quote.legs[first_new:], strict=True):
                running += priced.amount
                tap.state, tap.fare = CHARGED, _fen(running) - charged
                charged += tap.fare
            return
    for tap in [t for t in day if t.state == NEW]:
        counted = [t for t in day if t.state == CHARGED or t is tap]
        try:
            quote = engine.quote([t.leg() for t in counted])
        except FareError as exc:
            tap.state, tap.note = REFUSED, str(exc)[:120]
            continue
        tap.state, tap.fare = CHARGED, _fen(quote.total) - already
        already += tap.fare


def _write(
    db: Session, new: list[Tap], at: float, feed: TransitFeed, merchants: dict[str, str]
) -> None:
    _merchants(db, {t.reader_id for t in new} - merchants.keys(), feed.venue_id, merchants)
    ledger.post_many(
        db, "transit-fare",
        [(f"transit-fare:{t.id}",
          [(cards.card_account(t.card_id), t.fare),
           (ledger.merchant_receivable(merchants[t.reader_id]), -(t.fare or 0))],
          f"{t.route_id} {t.stop_id}")
         for t in new if t.state == CHARGED and t.fare],
        at,
    )  # fmt: skip
    _set_states(db, new)


UPDATE_TAPS = text(
    "UPDATE transit_taps SET state = u.state, fare = u.fare, note = u.note "
    "FROM unnest(CAST(:ids AS bigint[]), CAST(:states AS text[]), CAST(:fares AS integer[]), "
    "CAST(:notes AS text[])) AS u(id, state, fare, note) WHERE transit_taps.id = u.id"
)


def _set_states(db: Session, taps: list[Tap]) -> None:
    """Every tap's state, fare and note in one statement (PostgreSQL), or one executemany."""
    if db.get_bind().dialect.name == "postgresql":
        db.execute(UPDATE_TAPS, {"ids": [t.id for t in taps], "states": [t.state for t in taps],
                                 "fares": [t.fare for t in taps],
                                 "notes": [t.note for t in taps]})  # fmt: skip
        return
    statement = (
        update(TransitTap.__table__)
        .where(TransitTap.__table__.c.id == bindparam("tap_id"))
        .values(state=bindparam("new_state"), fare=bindparam("new_fare"),
                note=bindparam("new_note"))
    )  # fmt: skip
    db.execute(statement, [{"tap_id": t.id, "new_state": t.state, "new_fare": t.fare,
                            "new_note": t.note} for t in taps])  # fmt: skip


def _refuse(db: Session, card_ids: list[str], note: str) -> Result:
    result = empty()
    if card_ids:
        done = db.execute(
            update(TransitTap)
            .where(TransitTap.card_id.in_(card_ids), TransitTap.state == NEW)
            .values(state=REFUSED, note=note)
            .execution_options(synchronize_session=False)
        )
        result["refused"] = int(done.rowcount)  # type: ignore[attr-defined]
    return result


def _merchants(db: Session, readers: set[str], fallback_venue: str, into: dict[str, str]) -> None:
    """The merchant paid for a reader's taps: the agency whose venue enrolled the reader
    (the feed's agency for a reader the cloud has no claim for)."""
    if not readers:
        return
    rows = db.execute(
        select(ClaimCode.device_id, Venue.merchant_id)
        .join(Venue, Venue.id == ClaimCode.venue_id)
        .where(ClaimCode.device_id.in_(readers))
    ).all()
    into.update({reader: merchant for reader, merchant in rows})
    fallback = db.get(Venue, fallback_venue)
    assert fallback is not None
    into.update({reader: fallback.merchant_id for reader in readers - into.keys()})


def _add(total: Result, more: Result) -> None:
    for key, value in more.items():
        total[key] += value


def _day(zone: ZoneInfo, at: float) -> dt.date:
    return dt.datetime.fromtimestamp(at, zone).date()


def _bounds(zone: ZoneInfo, day: dt.date) -> tuple[float, float]:
    start = dt.datetime.combine(day, dt.time(), zone)
    return start.timestamp(), (start + dt.timedelta(days=1)).timestamp()


def _fen(amount: Decimal) -> int:
    return int((amount * 100).to_integral_value())
