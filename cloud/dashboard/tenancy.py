"""The one place a venue id from a URL becomes a venue: scoped by the signed-in merchant.

Another merchant's venue and a venue that does not exist give the same 404, so a merchant
cannot even learn which ids exist. Every venue route calls `own_venue` first; the tests walk
every route with a foreign id. A row under a venue (a voucher template, a queue, a bookable
resource, a booking, a report) is reached only through its venue with `owned`, so another
merchant's row, another venue's row and a made-up id are all the same 404 too.
"""

from __future__ import annotations

from typing import Protocol, TypeVar

from flask import abort, g
from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud.db import get_db
from cloud.models import Venue


class _AtVenue(Protocol):
    @property
    def venue_id(self) -> str: ...


RowT = TypeVar("RowT", bound=_AtVenue)


def own_venue(venue_id: str) -> Venue:
    merchant = g.get("merchant")
    if merchant is None:  # login_required runs first; this is a second lock, not the first
        abort(404)
    venue = get_db().scalar(
        select(Venue).where(Venue.id == venue_id, Venue.merchant_id == merchant.id)
    )
    if venue is None:
        abort(404)
    return venue


def owned(db: Session, model: type[RowT], row_id: str, prefix: str, venue: Venue) -> RowT:
    """The `model` row `row_id` if it belongs to `venue` (already checked as the merchant's,
    by `own_venue`), else 404. An id without the model's `prefix` (`vtp_`, `bkg_`, ...) is
    not looked up at all."""
    row = db.get(model, row_id) if row_id.startswith(prefix) else None
    if row is None or row.venue_id != venue.id:
        abort(404)  # another merchant's row, another venue's, or none: the same answer
    return row
