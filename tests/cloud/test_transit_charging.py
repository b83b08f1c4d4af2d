"""The bulk charge pass (cloud/transit/charging.py): every tap charged exactly once with two
chargers at once and after a crash mid-pass, a day's backlog arriving out of order landing
the day on the engine's quote, a tap the engine refuses leaving its neighbours charged. On
SQLite and PostgreSQL; the ledger balances after every test (`books`)."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
import sqlalchemy as sa
from flask import Flask
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from cloud import db as cloud_db
from cloud.models import Venue
from cloud.o2o import ledger
from cloud.transit import cards, charging, taps
from cloud.transit.fares import Leg
from cloud.transit.models import CHARGED, REFUSED, TransitTap
from tests.cloud.transit_helpers import balance, load_city, new_card
from tests.conftest import FakeClock

READER = "dev_00000000000000aa"  # no claim: its taps pay the feed's agency
MINUTES = (0, 30, 200, 210)  # two fares, each with a free transfer: 4.00 a card


@pytest.fixture
def city(books: Flask, venue: Venue, clock: FakeClock) -> Flask:
    load_city(books, venue, clock())
    return books


def upload(app: Flask, rows: list[tuple[int, str, float, str]], at: float) -> None:
    """Store taps as a reader's batch would, (seq, card, time, route), uncharged."""
    batch = [{"seq": seq, "card_id": card, "route_id": route, "stop_id": "s_square",
              "tapped_at": when} for seq, card, when, route in rows]  # fmt: skip
    with cloud_db.session(app) as db:
        taps.store(db, READER, batch, at)


def fares_of(app: Flask, card: str) -> list[tuple[str, int | None]]:
    with cloud_db.session(app) as db:
        return [tuple(row) for row in db.execute(
            select(TransitTap.state, TransitTap.fare).where(TransitTap.card_id == card)
            .order_by(TransitTap.tapped_at))]  # fmt: skip


def quote_fen(app: Flask, times: list[float]) -> int:
    """What the engine charges a day of boardings at the square on route b1."""
    with cloud_db.session(app) as db:
        engine = cards.engine_for(cards.current_feed(db))
    legs = [Leg("b1", "s_square", None, *[dt.datetime.fromtimestamp(t, dt.UTC)] * 2)
            for t in sorted(times)]  # fmt: skip
    return int(engine.quote(legs).total * 100)


def a_fleet(app: Flask, venue: Venue, at: float, riders: int) -> tuple[list[str], float]:
    """`riders` cards with 50.00 each, each with the four taps of MINUTES uploaded."""
    ids = [new_card(app, f"rider{i}", at, 5000, venue) for i in range(riders)]
    day = at - 86400
    upload(app, [(n * 10 + k, card, day + m * 60, "b1") for n, card in enumerate(ids)
                 for k, m in enumerate(MINUTES)], at)  # fmt: skip
    return ids, day


def check_charged_once(app: Flask, ids: list[str], day: float) -> None:
    per_card = quote_fen(app, [day + m * 60 for m in MINUTES])
    assert per_card == 400
    with cloud_db.session(app) as db:
        states = db.execute(select(TransitTap.state, func.count()).group_by(TransitTap.state))
        assert dict(states.all()) == {CHARGED: len(ids) * len(MINUTES)}
        postings = db.scalar(select(func.count()).select_from(ledger.LedgerPosting)
                             .where(ledger.LedgerPosting.kind == "transit-fare"))  # fmt: skip
        assert postings == 2 * len(ids)  # one per tap with a fare, never two
    for card in ids:
        assert sum(fare or 0 for _, fare in fares_of(app, card)) == per_card
        assert balance(app, card) == 5000 - per_card


def test_two_chargers_at_once_charge_each_tap_once(
    city: Flask, venue: Venue, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
):
    """Two passes and the upload path's per-card charging, together, over 60 cards: the
    passes skip the cards the other holds, the per-card charger waits for them. SQLite has
    one writer, so there the three run one after the other."""
    monkeypatch.setattr(charging, "CARDS_PER_TXN", 7)  # many transactions, so they interleave
    ids, day = a_fleet(city, venue, clock(), 60)
    engine = sa.create_engine(cloud_db.engine(city).url, pool_size=3, max_overflow=0)
    together = engine.dialect.name == "postgresql"
    if not together:
        sa.event.listen(engine, "connect", cloud_db._sqlite_pragmas)
    factory = sessionmaker(engine, expire_on_commit=False)
    totals: list[dict[str, int]] = []
    start = threading.Barrier(3 if together else 1)

    def run(work: str) -> None:
        start.wait()
        with factory() as db:
            if work == "pass":
                totals.append(charging.charge_pending(db, clock()))
            else:
                for card in reversed(ids):  # as uploads would, one card at a time
                    totals.append(taps.charge_card(db, card, clock()))

    threads = [threading.Thread(target=run, args=(w,)) for w in ("pass", "pass", "card")]
    for thread in threads:
        thread.start()
        if not together:
            thread.join()
    for thread in threads:
        thread.join()
    engine.dispose()
    assert sum(t["charged"] for t in totals) == len(ids) * len(MINUTES)
    assert sum(t["fen"] for t in totals) == len(ids) * 400
    assert sum(t["refused"] for t in totals) == 0
    check_charged_once(city, ids, day)


def test_a_crash_mid_pass_loses_and_doubles_nothing(
    city: Flask, venue: Venue, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(charging, "CARDS_PER_TXN", 4)
    ids, day = a_fleet(city, venue, clock(), 10)
    real, calls = charging._set_states, []

    def crash_on_the_second(db: Session, rows: list[charging.Tap]) -> None:
        calls.append(len(rows))
        if len(calls) == 2:
            raise RuntimeError("the charger died")  # after its postings, before the commit
        real(db, rows)

    monkeypatch.setattr(charging, "_set_states", crash_on_the_second)
    with cloud_db.session(city) as db, pytest.raises(RuntimeError):
        charging.charge_pending(db, clock())
    with cloud_db.session(city) as db:
        assert db.scalar(select(func.count()).where(TransitTap.state == CHARGED)) == 16
    monkeypatch.setattr(charging, "_set_states", real)
    with cloud_db.session(city) as db:
        assert charging.charge_pending(db, clock()) == {"charged": 24, "refused": 0, "fen": 2400}
        assert charging.charge_pending(db, clock()) == {"charged": 0, "refused": 0, "fen": 0}
    check_charged_once(city, ids, day)


def test_a_backlog_out_of_order_lands_the_day_on_its_quote(
    city: Flask, venue: Venue, clock: FakeClock
):
    """Later taps charged first, the morning's backlog after them (priced a tap at a time),
    then the evening's (priced in one quote); a tap on an unknown route is refused alone."""
    card = new_card(city, "hana", clock(), 5000, venue)
    day = clock() - 86400
    times = [day + m * 60 for m in (0, 30, 200, 210, 400)]
    arrivals = [[(3, times[2], "b1"), (4, times[3], "b1")],
                [(1, times[0], "b1"), (2, times[1], "b1")],
                [(5, times[4], "b1"), (6, times[4] + 60, "no-such-route")]]  # fmt: skip
    for batch in arrivals:
        upload(city, [(seq, card, when, route) for seq, when, route in batch], clock())
        with cloud_db.session(city) as db:
            charging.charge_pending(db, clock())
    got = fares_of(city, card)
    assert [state for state, _ in got] == [CHARGED] * 5 + [REFUSED]
    assert sum(fare or 0 for _, fare in got) == quote_fen(city, times) == 500
    assert balance(city, card) == 4500
