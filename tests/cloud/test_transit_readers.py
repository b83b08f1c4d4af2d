"""Bus readers (issue 17 item 6): enrolled and signing like routers, uploading taps in signed
batches stored once per (reader, seq), a day's offline backlog with nothing lost or doubled,
the deny-list they pull; and taps turned into legs and charges by the fare engine (item 7).
On SQLite and PostgreSQL; the ledger balances after every test (`books`)."""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from cloud import db as cloud_db
from cloud.models import Venue
from cloud.o2o import ledger
from cloud.transit import cards
from cloud.transit.models import CHARGED, REFUSED, TransitTap
from plaza import signing
from tests.cloud.conftest import Router
from tests.cloud.transit_helpers import balance, load_city, new_card, reader, tap
from tests.conftest import FakeClock

TAPS = "/api/v1/transit/taps"
DENY = "/api/v1/transit/denylist"


@pytest.fixture
def city(books: Flask, venue: Venue, clock: FakeClock) -> Flask:
    load_city(books, venue, clock())
    return books


@pytest.fixture
def bus1(city: Flask, client: FlaskClient, clock: FakeClock, venue: Venue) -> Router:
    return reader(city, client, clock, venue, "b1")


@pytest.fixture
def bus2(city: Flask, client: FlaskClient, clock: FakeClock, venue: Venue) -> Router:
    return reader(city, client, clock, venue, "b2")


def taps_of(app: Flask, card: str) -> list[tuple[int, str, int | None]]:
    with cloud_db.session(app) as db:
        rows = db.scalars(select(TransitTap).where(TransitTap.card_id == card)
                          .order_by(TransitTap.tapped_at)).all()  # fmt: skip
        return [(t.seq, t.state, t.fare) for t in rows]


def test_two_buses_within_the_transfer_window_are_charged_once(
    city: Flask, bus1: Router, bus2: Router, clock: FakeClock, venue: Venue
):
    card = new_card(city, "alice", clock(), 5000, venue)
    t = clock()
    answer = bus1.post(TAPS, {"taps": [tap(1, card, t - 3600)]})
    assert answer.status_code == 200, answer.get_json()
    got = answer.get_json()
    assert (got["stored"], got["duplicates"], got["charged"], got["fen"]) == (1, 0, 1, 200)
    answer = bus2.post(TAPS, {"taps": [tap(1, card, t - 1800, "s_harbour")]})
    assert answer.get_json()["fen"] == 0  # the bus-to-bus transfer rule: free within 90 min
    assert balance(city, card) == 4800
    answer = bus1.post(TAPS, {"taps": [tap(2, card, t)]})  # 60 min after the first: a
    assert answer.get_json()["fen"] == 200  # second transfer, past transfer_count 1
    assert balance(city, card) == 4600
    with cloud_db.session(city) as db:
        assert ledger.balance(db, ledger.merchant_receivable(venue.merchant_id)) == -400 + 5000


def test_a_batch_sent_twice_and_a_day_offline_lose_and_double_nothing(
    city: Flask, bus1: Router, clock: FakeClock, venue: Venue
):
    card = new_card(city, "bob", clock(), 5000, venue)
    yesterday = clock() - 86400
    backlog = [tap(seq, card, yesterday + minutes * 60) for seq, minutes in
               ((1, 0), (2, 30), (3, 200), (4, 210), (5, 400))]  # fmt: skip
    first = bus1.post(TAPS, {"taps": backlog[:3]}).get_json()
    assert (first["stored"], first["duplicates"]) == (3, 0)
    # The answer was lost: the reader sends an overlapping batch again.
    again = bus1.post(TAPS, {"taps": backlog[1:]}).get_json()
    assert (again["stored"], again["duplicates"], again["last_seq"]) == (2, 2, 5)
    assert [seq for seq, _, _ in taps_of(city, card)] == [1, 2, 3, 4, 5]
    # 2 + 0 (transfer), 2 + 0 (transfer), then 22:40 local: the evening fare, 1.00; what
    # the engine quotes for the day's legs
    assert sum(fare or 0 for _, _, fare in taps_of(city, card)) == 500
    assert [fare for _, _, fare in taps_of(city, card)] == [200, 0, 200, 0, 100]
    assert balance(city, card) == 4500


def test_a_late_backlog_lands_the_day_on_its_quote(
    city: Flask, bus1: Router, bus2: Router, clock: FakeClock, venue: Venue
):
    """Bus 2 was offline: its earlier tap arrives after bus 1's later one was charged in
    full; the day is still charged what the engine quotes for both legs (one fare)."""
    card = new_card(city, "carol", clock(), 5000, venue)
    t = clock()
    bus1.post(TAPS, {"taps": [tap(1, card, t - 600)]})
    assert balance(city, card) == 4800
    late = bus2.post(TAPS, {"taps": [tap(1, card, t - 1800, "s_harbour")]}).get_json()
    assert late["fen"] == 0  # the day's two legs cost one fare, already charged
    assert balance(city, card) == 4800


def test_what_is_refused(
    city: Flask, client: FlaskClient, bus1: Router, router: Router, clock: FakeClock,
    venue: Venue,
):  # fmt: skip
    card = new_card(city, "dave", clock(), 1000, venue)
    good = {"taps": [tap(1, card, clock())]}
    unenrolled = Router(client, clock, "dev_0123456789abcdef", signing.new_key())
    assert unenrolled.post(TAPS, good).status_code == 401
    forged = bus1.post(TAPS, good, key=signing.new_key())  # bus 1's id, another key
    assert forged.status_code == 401
    assert router.post(TAPS, good).status_code == 403  # a router is no reader
    assert router.get(DENY).status_code == 403
    headers = bus1.headers("POST", TAPS, b'{"taps": []}', nonce="n" * 22)
    client.post(TAPS, data=b'{"taps": []}', headers=headers)
    replay = client.post(TAPS, data=b'{"taps": []}', headers=headers)
    assert replay.status_code == 409
    bad = bus1.post(TAPS, {"taps": [tap(2, card, clock()), {"seq": -1, "card": card}]})
    assert bad.status_code == 400 and "taps[1].seq" in bad.get_json()["error"]
    assert taps_of(city, card) == []  # nothing of a refused batch is kept
    unknown = bus1.post(TAPS, {"taps": [tap(3, "tcd_ffffffffffffffff", clock())]}).get_json()
    assert (unknown["stored"], unknown["refused"]) == (1, 1)
    with cloud_db.session(city) as db:
        states = db.scalars(select(TransitTap.state)).all()
    assert states == [REFUSED]


def test_the_deny_list_holds_lost_cards_and_those_below_zero(
    city: Flask, bus1: Router, clock: FakeClock, venue: Venue
):
    low = new_card(city, "erin", clock(), 100, venue)  # 1.00 on it, a ride costs 2.00
    fine = new_card(city, "frank", clock(), 1000, venue)
    pulled = bus1.get(DENY).get_json()
    assert pulled["cards"] == []
    assert pulled["qr_public_key"] == bus1.cloud_public_key
    bus1.post(TAPS, {"taps": [tap(1, low, clock())]})  # one trip may go below zero
    assert balance(city, low) == -100
    with cloud_db.session(city) as db:
        owner = db.get(cards.TransitCard, fine)
        cards.report_lost(db, owner, clock())
        db.commit()
        replacement = cards.card_of(db, owner.shopper_id)
    assert sorted(bus1.get(DENY).get_json()["cards"]) == sorted([low, fine])
    assert replacement is not None and balance(city, replacement.id) == 1000  # moved over
    assert balance(city, fine) == 0


def test_the_card_qr_is_checked_offline_with_the_cloud_key(city: Flask, clock: FakeClock):
    key = city.config["CLOUD_KEY"]
    public = signing.load_public(signing.public_b64(key))
    text = cards.qr_text(key, "tcd_0123456789abcdef", clock())
    assert cards.check_qr(public, text, clock()) == "tcd_0123456789abcdef"
    with pytest.raises(cards.TransitError, match="expired"):
        cards.check_qr(public, text, clock() + cards.QR_SECONDS + 1)
    other = cards.qr_text(signing.new_key(), "tcd_0123456789abcdef", clock())
    with pytest.raises(cards.TransitError, match="signature"):
        cards.check_qr(public, other, clock())
    swapped = text.replace("tcd_0123456789abcdef", "tcd_aaaaaaaaaaaaaaaa")
    with pytest.raises(cards.TransitError, match="signature"):
        cards.check_qr(public, swapped, clock())


def test_the_charge_pass_prices_what_uploads_left(
    city: Flask, bus1: Router, clock: FakeClock, venue: Venue
):
    city.config["TRANSIT_CHARGE_ON_UPLOAD"] = False
    card = new_card(city, "gina", clock(), 1000, venue)
    bus1.post(TAPS, {"taps": [tap(1, card, clock() - 60), tap(2, card, clock())]})
    assert [state for _, state, _ in taps_of(city, card)] == ["new", "new"]
    with city.app_context(), cloud_db.session(city) as db:
        from cloud.transit import taps

        assert taps.charge_pending(db, clock()) == {"charged": 2, "refused": 0, "fen": 200}
        assert taps.charge_pending(db, clock()) == {"charged": 0, "refused": 0, "fen": 0}
        assert db.scalar(select(func.count()).where(TransitTap.state == CHARGED)) == 2
    assert balance(city, card) == 800
