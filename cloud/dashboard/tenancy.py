"""The one place a venue id from a URL becomes a venue: scoped by the signed-in merchant.

Another merchant's venue and a venue that does not exist give the same 404, so a merchant
cannot even learn which ids exist. Every venue route calls `own_venue` first; the tests walk
every route with a foreign id.
"""

from __future__ import annotations

from flask import abort, g
from sqlalchemy import select

from cloud.db import get_db
from cloud.models import Venue


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
