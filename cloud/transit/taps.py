"""Taps: stored once per (reader, sequence), then priced with the fare engine and charged.

Ingest and charging are two steps. A reader's batch is only stored (one multi-row INSERT ...
ON CONFLICT (reader_id, seq) DO NOTHING), so a bus coming back after a day offline uploads
its backlog at insert speed, and a batch sent again after a lost answer adds nothing. The
charging pass (`plaza-cloud transit charge`, or `charge_pending` after an upload) prices
each new tap against the card's whole service day: the day's fare is the engine's quote of
all that day's taps in time order, and each tap is charged the difference between that and
what the day was already charged. A tap that arrives late (a backlog from yesterday's bus,
after today's taps) still lands the day on exactly the quote of its taps, transfers included;
the posting's key is the tap's id, so charging twice books once.

Tap-on only: the reader knows where the rider boarded, not where they left. City buses here
charge a flat fare per boarding, and tap-off brings the missing-tap-off problem (a rider who
forgets is charged the maximum); a leg with no `to_stop_id` matches only rules with no
to-area, which a feed uses to say what boarding alone costs.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from cloud.db import dialect_insert
from cloud.models import ClaimCode, Venue
from cloud.o2o import ledger
from cloud.transit import cards
from cloud.transit.fares import FareError, Leg
from cloud.transit.models import CHARGED, NEW, REFUSED, TransitCard, TransitTap

log = logging.getLogger("plaza.cloud.transit")

MAX_BATCH = 5000
COMMIT_EVERY = 200  # cards charged per transaction by the charge pass
MAX_SEQ = 2**62
ID_LEN = 64


class TapError(ValueError):
    """A batch refused as a whole (nothing of it stored); str() names the tap and field."""


def parse_batch(body: Any, default_route: str, now: float) -> list[dict[str, Any]]:
    """The batch's taps, checked: a bad tap refuses the batch (the reader's bug, not a rider's
    to pay for), so the reader keeps it and a fixed reader sends it again."""
    taps = body.get("taps") if isinstance(body, dict) else None
    if not isinstance(taps, list) or not 1 <= len(taps) <= MAX_BATCH:
        raise TapError(f"taps: a list of 1 to {MAX_BATCH} taps")
    out = []
    for i, tap in enumerate(taps):
        if not isinstance(tap, dict):
            raise TapError(f"taps[{i}]: not an object")
        seq, at = tap.get("seq"), tap.get("at")
        if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq < MAX_SEQ:
            raise TapError(f"taps[{i}].seq: a whole number from 0")
        if isinstance(at, bool) or not isinstance(at, int | float) or not 0 < at <= now + 300:
            raise TapError(f"taps[{i}].at: unix seconds, not in the future")
        fields = {}
        for name, default in (("card", None), ("stop_id", None), ("route_id", default_route)):
            value = tap.get(name, default)
            if (
                not isinstance(value, str)
                or not 0 < len(value) <= ID_LEN
                or not value.isprintable()
            ):
                raise TapError(f"taps[{i}].{name}: 1 to {ID_LEN} printable characters")
            fields[name] = value
        out.append(
            {"seq": seq, "card_id": fields["card"][:24], "route_id": fields["route_id"],
             "stop_id": fields["stop_id"], "tapped_at": float(at)}
        )  # fmt: skip
    return out


# PostgreSQL: the batch as five arrays (unnest) instead of 5,000 rows of bound values, which
# is what made the driver and SQLAlchemy, not the database, the bottleneck of an upload.
PG_STORE = text(
    "INSERT INTO transit_taps (reader_id, seq, card_id, route_id, stop_id, tapped_at, "
    "received_at, state, note) SELECT :reader, u.seq, u.card, u.route, u.stop, u.at, :now, "
    ":state, '' FROM unnest(CAST(:seqs AS bigint[]), CAST(:cards AS text[]), "
    "CAST(:routes AS text[]), CAST(:stops AS text[]), CAST(:ats AS double precision[])) "
    "AS u(seq, card, route, stop, at) ON CONFLICT (reader_id, seq) DO NOTHING"
)


def store(db: Session, reader_id: str, taps: list[dict[str, Any]], now: float) -> int:
    """Insert the taps not stored yet, in one statement; how many were new. Committed."""
    if db.get_bind().dialect.name == "postgresql":
        columns = {"seqs": "seq", "cards": "card_id", "routes": "route_id", "stops": "stop_id",
                   "ats": "tapped_at"}  # fmt: skip
        params = {name: [tap[key] for tap in taps] for name, key in columns.items()}
        result = db.execute(PG_STORE, {**params, "reader": reader_id, "now": now, "state": NEW})
        db.commit()
        return int(result.rowcount)  # type: ignore[attr-defined]
    rows = [{**tap, "reader_id": reader_id, "received_at": now, "state": NEW, "note": ""}
            for tap in taps]  # fmt: skip
    table = TransitTap.__table__
    insert = dialect_insert(db, table).on_conflict_do_nothing(index_elements=["reader_id", "seq"])
    new = len(db.execute(insert.returning(table.c.id), rows).all())
    db.commit()
    return new


def _day_bounds(zone: ZoneInfo, at: float) -> tuple[float, float]:
    day = dt.datetime.fromtimestamp(at, zone).date()
    start = dt.datetime.combine(day, dt.time(), zone)
    return start.timestamp(), (start + dt.timedelta(days=1)).timestamp()


def _fen(amount: Decimal) -> int:
    return int((amount * 100).to_integral_value())


def charge_pending(db: Session, at: float, limit: int = 10000) -> dict[str, int]:
    """Price and charge new taps, oldest first. Committed per card."""
    result = {"charged": 0, "refused": 0, "fen": 0}
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
    for n, (card_id, _) in enumerate(pending, 1):
        for key, value in charge_card(db, card_id, at, merchants, commit=False).items():
            result[key] += value
        if n % COMMIT_EVERY == 0:
            db.commit()  # a commit per card would be an fsync per card
    db.commit()
    return result


def charge_card(
    db: Session, card_id: str, at: float, merchants: dict[str, str] | None = None,
    commit: bool = True,
) -> dict[str, int]:  # fmt: skip
    """Charge one card's new taps (its row locked until the commit: two passes never price
    it at once). `merchants` caches reader -> merchant across cards."""
    merchants = {} if merchants is None else merchants
    result = {"charged": 0, "refused": 0, "fen": 0}
    card = (
        db.get(TransitCard, card_id, with_for_update=True) if card_id.startswith("tcd_") else None
    )
    new = db.scalars(
        select(TransitTap).where(TransitTap.card_id == card_id, TransitTap.state == NEW)
        .order_by(TransitTap.tapped_at, TransitTap.id)
    ).all()  # fmt: skip
    feed = cards.current_feed(db)
    if card is None or feed is None:
        for tap in new:
            tap.state, tap.note = REFUSED, "unknown card"
        result["refused"] = len(new)
        if commit:
            db.commit()
        return result
    engine = cards.engine_for(feed)
    for tap in new:
        start, end = _day_bounds(engine.zone, tap.tapped_at)
        day = db.scalars(
            select(TransitTap).where(
                TransitTap.card_id == card_id, TransitTap.state.in_((CHARGED, NEW)),
                TransitTap.tapped_at >= start, TransitTap.tapped_at < end,
            ).order_by(TransitTap.tapped_at, TransitTap.id)
        ).all()  # fmt: skip
        counted = [t for t in day if t.state == CHARGED or t.id == tap.id]
        try:
            quote = engine.quote([_leg(t) for t in counted])
        except FareError as exc:
            tap.state, tap.note = REFUSED, str(exc)[:120]
            result["refused"] += 1
            continue
        already = sum(t.fare or 0 for t in counted if t.state == CHARGED)
        fare = _fen(quote.total) - already
        if tap.reader_id not in merchants:
            merchants[tap.reader_id] = _merchant_of(db, tap.reader_id, feed.venue_id)
        agency = ledger.merchant_receivable(merchants[tap.reader_id])
        if fare:
            ledger.post(
                db, f"transit-fare:{tap.id}", "transit-fare",
                [(cards.card_account(card_id), fare), (agency, -fare)],
                at, memo=f"{tap.route_id} {tap.stop_id}",
            )  # fmt: skip
        tap.state, tap.fare = CHARGED, fare
        db.flush()
        result["charged"] += 1
        result["fen"] += fare
    if commit:
        db.commit()
    return result


def _leg(tap: TransitTap) -> Leg:
    when = dt.datetime.fromtimestamp(tap.tapped_at, dt.UTC)
    return Leg(tap.route_id, tap.stop_id, None, when, when)


def _merchant_of(db: Session, reader_id: str, fallback_venue: str) -> str:
    """The merchant paid for a tap: the agency whose venue enrolled the reader."""
    venue_id = db.scalar(select(ClaimCode.venue_id).where(ClaimCode.device_id == reader_id))
    venue = db.get(Venue, venue_id or fallback_venue)
    assert venue is not None
    return venue.merchant_id


def history(db: Session, card_ids: Iterable[str], limit: int = 50) -> list[TransitTap]:
    return list(
        db.scalars(
            select(TransitTap).where(TransitTap.card_id.in_(list(card_ids)))
            .order_by(TransitTap.tapped_at.desc()).limit(limit)
        )
    )  # fmt: skip
