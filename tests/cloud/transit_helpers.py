"""Transit test helpers: the city feed in force, cards with money on them, enrolled readers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from cloud import db as cloud_db
from cloud.models import Venue
from cloud.o2o import ledger
from cloud.o2o.shoppers import find_or_create
from cloud.transit import cards
from tests.cloud.conftest import Router, enrol
from tests.conftest import FakeClock

CITY = Path(__file__).resolve().parents[1] / "fixtures" / "gtfs_city"


def load_city(app: Flask, venue: Venue, at: float) -> None:
    with cloud_db.session(app) as db:
        cards.store_feed(db, venue.id, CITY, at)
        db.commit()


def new_card(app: Flask, user: str, at: float, fen: int = 0, venue: Venue | None = None) -> str:
    """A rider's card; `fen` put on it as a confirmed top-up would (from the agency's
    receivable), so the books still balance."""
    with cloud_db.session(app) as db:
        shopper = find_or_create(db, "oidc", user, user, at)
        card = cards.open_card(db, shopper.id, at)
        if fen:
            assert venue is not None
            ledger.post(
                db, f"test-topup:{card.id}", "transit-topup",
                [(ledger.merchant_receivable(venue.merchant_id), fen),
                 (cards.card_account(card.id), -fen)], at,
            )  # fmt: skip
        db.commit()
        return card.id


def balance(app: Flask, card_id: str) -> int:
    with cloud_db.session(app) as db:
        return cards.balance(db, card_id)


def reader(app: Flask, client: FlaskClient, clock: FakeClock, venue: Venue, route: str) -> Router:
    with cloud_db.session(app) as db:
        code = cards.reader_claim(db, venue.id, route, f"bus on {route}", clock())
        db.commit()
    return enrol(client, clock, code, hostname=f"reader-{route}")


def tap(seq: int, card: str, at: float, stop: str = "s_square", **over: Any) -> dict[str, Any]:
    return {"seq": seq, "card": card, "at": at, "stop_id": stop, **over}
