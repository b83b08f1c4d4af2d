"""The dashboard's tenancy helpers on their own: `own_venue` (a venue id from a URL becomes the
signed-in merchant's venue) and `owned` (a row id becomes a row of that venue). Each wrong
case is the same 404 as a made-up id; the page tests walk the routes that use them."""

from __future__ import annotations

import pytest
from flask import Flask, g
from werkzeug.exceptions import NotFound

from cloud import db as cloud_db
from cloud.accounts import create_merchant, create_venue
from cloud.dashboard.tenancy import own_venue, owned
from cloud.models import Merchant, Venue
from cloud.o2o.queue_models import ServiceQueue
from cloud.o2o.queues import QueueSpec, create_queue
from tests.conftest import FakeClock


@pytest.fixture
def other_venue(app: Flask, clock: FakeClock) -> Venue:
    """Another merchant's venue, with a queue of its own."""
    with cloud_db.session(app) as db:
        merchant = create_merchant(
            db, "Bistro Due", "boss@bistro.example", "correct horse", clock()
        )
        venue = create_venue(db, merchant.id, "Bistro Due Harbour", clock())
        db.commit()
        return venue


def _queue(app: Flask, venue: Venue, clock: FakeClock, name: str = "Tables") -> str:
    with cloud_db.session(app) as db:
        queue = create_queue(db, venue.id, QueueSpec(name=name, prefix="A"), clock())
        db.commit()
        return queue.id


def test_owned_gives_the_venues_own_row(app: Flask, venue: Venue, clock: FakeClock):
    queue_id = _queue(app, venue, clock)
    with cloud_db.session(app) as db:
        row = owned(db, ServiceQueue, queue_id, "svq_", venue)
        assert (row.id, row.venue_id, row.name) == (queue_id, venue.id, "Tables")


def test_owned_refuses_another_merchants_row(
    app: Flask, venue: Venue, other_venue: Venue, clock: FakeClock
):
    theirs = _queue(app, other_venue, clock)
    with cloud_db.session(app) as db:
        with pytest.raises(NotFound):
            owned(db, ServiceQueue, theirs, "svq_", venue)
        assert owned(db, ServiceQueue, theirs, "svq_", other_venue).id == theirs


def test_owned_refuses_another_venue_of_the_same_merchant(
    app: Flask, venue: Venue, clock: FakeClock
):
    with cloud_db.session(app) as db:
        second = create_venue(db, venue.merchant_id, "Cafe Uno Harbour", clock())
        db.commit()
    queue_id = _queue(app, second, clock)
    with cloud_db.session(app) as db, pytest.raises(NotFound):
        owned(db, ServiceQueue, queue_id, "svq_", venue)


def test_owned_refuses_a_missing_id_and_a_wrong_prefix(app: Flask, venue: Venue, clock: FakeClock):
    queue_id = _queue(app, venue, clock)
    with cloud_db.session(app) as db:
        for row_id in ("svq_0000000000000000", "", queue_id.replace("svq_", "vtp_", 1)):
            with pytest.raises(NotFound):
                owned(db, ServiceQueue, row_id, "svq_", venue)
        with pytest.raises(NotFound):  # a real id, but not of the kind the route expects
            owned(db, ServiceQueue, queue_id, "vtp_", venue)


def test_own_venue_is_the_signed_in_merchants_only(app: Flask, venue: Venue, other_venue: Venue):
    with app.test_request_context("/dashboard/"), cloud_db.session(app) as db:
        with pytest.raises(NotFound):  # nobody signed in
            own_venue(venue.id)
        g.merchant = db.get(Merchant, venue.merchant_id)
        assert own_venue(venue.id).id == venue.id
        for venue_id in (other_venue.id, "ven_0000000000000000", ""):
            with pytest.raises(NotFound):
                own_venue(venue_id)
