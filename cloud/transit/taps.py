"""Taps: stored once per (reader, sequence), then priced with the fare engine and charged.

Ingest and charging are two steps. A reader's batch is only stored (one multi-row INSERT ...
ON CONFLICT (reader_id, seq) DO NOTHING), so a bus coming back after a day offline uploads
its backlog at insert speed, and a batch sent again after a lost answer adds nothing. The
charging pass (`plaza-cloud transit charge`, or `charge_card` after an upload) prices
each new tap against the card's whole service day: the day's fare is the engine's quote of
all that day's taps in time order, and each tap is charged the difference between that and
what the day was already charged. A tap that arrives late (a backlog from yesterday's bus,
after today's taps) still lands the day on exactly the quote of its taps, transfers included;
the posting's key is the tap's id, so charging twice books once. The pass itself, in bulk
and a few statements per few hundred cards, is cloud/transit/charging.py.

Tap-on only: the reader knows where the rider boarded, not where they left. City buses here
charge a flat fare per boarding, and tap-off brings the missing-tap-off problem (a rider who
forgets is charged the maximum); a leg with no `to_stop_id` matches only rules with no
to-area, which a feed uses to say what boarding alone costs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from cloud.db import dialect_insert
from cloud.transit.charging import charge_card, charge_pending
from cloud.transit.models import NEW, TransitTap

log = logging.getLogger("plaza.cloud.transit")

__all__ = ["charge_card", "charge_pending"]  # the charge pass, where callers found it
MAX_BATCH = 5000
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


def history(db: Session, card_ids: Iterable[str], limit: int = 50) -> list[TransitTap]:
    return list(
        db.scalars(
            select(TransitTap).where(TransitTap.card_id.in_(list(card_ids)))
            .order_by(TransitTap.tapped_at.desc()).limit(limit)
        )
    )  # fmt: skip
