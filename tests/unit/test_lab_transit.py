"""The lab's transit agency (issue 17 item 8): its GTFS feed (lab/transit_feed/) prices the
demo's journey, `plaza-lab up`'s cloud bootstrap puts it in force for the lab venue, and the
lab's bus reader (lab/transit_reader.py) enrols, pulls the deny-list, checks QRs offline and
uploads signed tap batches to a real cloud on loopback; a replayed batch adds nothing."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from cloud import cli
from cloud.o2o import ledger
from cloud.o2o.shoppers import find_or_create
from cloud.transit import cards
from lab import cloud as labcloud
from lab.transit_reader import TIMEZONE, BusReader, ReaderError, boarding_times
from tests.loopback_cloud import Cloud

FEED = labcloud.TRANSIT_FEED
ZONE = ZoneInfo(TIMEZONE)


def quote(capsys: pytest.CaptureFixture[str], tmp_path: Path, *boardings: tuple[str, str, str]):
    """`plaza-cloud transit quote` of tap-on legs (route, stop, local time 'HH:MM')."""
    legs = [{"route_id": route, "from_stop_id": stop, "to_stop_id": None,
             "departure": f"2026-12-07T{at}:00+08:00", "arrival": f"2026-12-07T{at}:00+08:00"}
            for route, stop, at in boardings]  # fmt: skip
    path = tmp_path / "legs.json"
    path.write_text(json.dumps({"legs": legs}))
    code = cli.main(["transit", "quote", str(FEED), "--legs", str(path)])
    out, err = capsys.readouterr()
    assert (code, err) == (0, ""), err
    return json.loads(out)


def test_the_lab_feed_charges_a_second_bus_in_the_hour_the_transfer_fee(capsys, tmp_path):
    two = quote(capsys, tmp_path, ("b1", "s_plaza", "08:00"), ("b2", "s_station", "08:18"))
    assert two["total"] == {"amount": "2.50", "currency": "CNY"}
    assert [(leg["fare_product_id"], leg["amount"]) for leg in two["legs"]] == [
        ("bus_ride", "2.00"), ("bus_ride", "0.50")
    ]  # fmt: skip
    assert two["legs"][1]["transfer"]["fare_product_id"] == "bus_transfer"
    late = quote(capsys, tmp_path, ("b1", "s_plaza", "08:00"), ("b2", "s_station", "09:01"))
    assert late["total"]["amount"] == "4.00"  # past the 60 minutes: a full fare again
    three = quote(capsys, tmp_path, *[("b1", "s_plaza", f"08:{m:02d}") for m in (0, 10, 20)])
    assert three["total"]["amount"] == "4.50"  # one transfer per fare (transfer_count 1)


def test_the_lab_cloud_bootstrap_puts_the_feed_in_force_for_the_venue(tmp_path):
    from sqlalchemy.orm import Session

    from cloud.db import make_engine

    account = labcloud.bootstrap(tmp_path, "Lab Café", "portal.plaza.test")
    engine = make_engine(f"sqlite:///{labcloud.instance_dir(tmp_path) / 'cloud.db'}")
    try:
        with Session(engine) as db:
            feed = cards.current_feed(db)
            assert feed is not None and feed.venue_id == account.venue_id
            assert sorted(cards.engine_for(feed).feed.route_network) == ["b1", "b2"]
    finally:
        engine.dispose()


def test_two_databases_with_feed_row_1_each_price_with_their_own_feed(tmp_path):
    """The engine cache is by the feed's files, not its row id: the lab feed in one database
    and the city fixture in another, both row 1, in one process (as the test suite has them)."""
    from sqlalchemy.orm import Session

    from cloud.accounts import create_merchant, create_venue
    from cloud.db import make_engine
    from cloud.migrations import upgrade

    city = Path(__file__).resolve().parents[1] / "fixtures" / "gtfs_city"
    routes = []
    for name, feed_dir in (("lab", FEED), ("city", city)):
        url = f"sqlite:///{tmp_path / name}.db"
        upgrade(url)
        engine = make_engine(url)
        with Session(engine) as db:
            merchant = create_merchant(db, name, f"{name}@bus.test", "password-123", 1.0)
            venue = create_venue(db, merchant.id, name, 1.0, f"{name}.bus.test")
            feed = cards.store_feed(db, venue.id, feed_dir, 1.0)
            assert feed.id == 1
            routes.append(sorted(cards.engine_for(feed).feed.route_network))
        engine.dispose()
    assert routes == [["b1", "b2"], ["b1", "b2", "m1"]]


def test_boarding_times_stay_in_one_service_day():
    noon = dt.datetime(2026, 12, 7, 12, 0, tzinfo=ZONE).timestamp()
    assert boarding_times(noon) == (noon - 60 - 18 * 60, noon - 60)
    early = dt.datetime(2026, 12, 7, 0, 5, tzinfo=ZONE).timestamp()
    first, second = boarding_times(early)
    midnight = dt.datetime(2026, 12, 7, tzinfo=ZONE).timestamp()
    assert (first, second) == (midnight - 60 - 18 * 60, midnight - 60)  # yesterday evening


@pytest.fixture
def agency(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A cloud on loopback with the lab feed in force, a rider's card with ¥20 on it, and a
    claim code for a reader on bus 1."""
    from cloud import accounts
    from cloud import create_app as create_cloud
    from cloud.migrations import upgrade

    url = f"sqlite:///{tmp_path / 'cloud.db'}"
    upgrade(url)
    app = create_cloud({"INSTANCE_PATH": str(tmp_path / "instance"), "DATABASE_URL": url,
                        "SECRET_KEY": "test", "TESTING": True})  # fmt: skip
    server = Cloud(app, 0)
    server.start()
    now = time.time()
    with server.db() as db:
        merchant = accounts.create_merchant(db, "Lab buses", "ops@bus.test", "password-123", now)
        venue = accounts.create_venue(db, merchant.id, "Lab buses", now, "portal.bus.test")
        cards.store_feed(db, venue.id, FEED, now)
        card = cards.open_card(db, find_or_create(db, "oidc", "rider", "rider", now).id, now)
        ledger.post(db, f"test-topup:{card.id}", "transit-topup",
                    [(ledger.merchant_receivable(merchant.id), 2000),
                     (cards.card_account(card.id), -2000)], now)  # fmt: skip
        claim = cards.reader_claim(db, venue.id, "b1", "bus 1", now)
        db.commit()
        card_id = card.id
    try:
        yield {"cloud": server, "card": card_id, "claim": claim,
               "qr": cards.qr_text(app.config["CLOUD_KEY"], card_id, now)}  # fmt: skip
    finally:
        with server.db() as db:
            assert ledger.check_balanced(db), ledger.balances(db)
        server.stop()


def test_the_lab_reader_enrols_checks_offline_uploads_and_a_replay_adds_nothing(agency, tmp_path):
    cloud = agency["cloud"]
    reader = BusReader(tmp_path / "bus1")
    with pytest.raises(ReaderError, match="no QR key yet"):
        reader.read(agency["qr"], "s_plaza")
    device = reader.enrol(agency["claim"], "bus-1", cloud.url)
    assert device.startswith("dev_") and (tmp_path / "bus1" / "device.key").exists()
    deny = reader.pull_denylist()
    assert deny["cards"] == [] and deny["qr_public_key"]
    first, second = boarding_times(time.time())
    taps = [
        reader.read(agency["qr"], "s_plaza", first),
        reader.read(agency["qr"], "s_plaza", second),
    ]
    assert [(t["seq"], t["card"]) for t in taps] == [(1, agency["card"]), (2, agency["card"])]
    with pytest.raises(ReaderError, match="signature does not verify"):
        reader.read(agency["qr"][:-4] + "AAAA", "s_plaza", second)
    answer = reader.upload()
    assert (
        answer["stored"] == 2 and answer["charged"] == 2 and answer["fen"] == 250
    )  # ¥2.00 + the ¥0.50 transfer
    assert reader.upload()["received"] == 0  # the backlog went with the batch
    again = reader.resend()
    assert (again["stored"], again["duplicates"], again["fen"]) == (0, 2, 0)
    with cloud.db() as db:
        assert cards.balance(db, agency["card"]) == 2000 - 250
        cards.report_lost(db, db.get(cards.TransitCard, agency["card"]), time.time())
        db.commit()
    assert agency["card"] in reader.pull_denylist()["cards"]
    with pytest.raises(ReaderError, match="on the deny-list"):
        reader.read(agency["qr"], "s_plaza", time.time())


def test_a_router_is_not_a_reader(agency, tmp_path):
    code, _ = agency["cloud"].claim()
    router = BusReader(tmp_path / "router")
    router.enrol(code, "a-router", agency["cloud"].url)
    with pytest.raises(ReaderError, match="403"):
        router.pull_denylist()


def test_the_reader_command_line_as_the_demo_runs_it(agency, tmp_path, capsys, monkeypatch):
    """`python -m lab.transit_reader ...` (what the demo runs in the internet namespace):
    each command prints its JSON answer; a refusal exits 2 with one line on stderr."""
    import io

    from lab.transit_reader import main

    state = ["--state", str(tmp_path / "bus2")]

    def run(*args: str) -> tuple[int, Any]:
        code = main([*state, *args])
        out, err = capsys.readouterr()
        return code, json.loads(out) if code == 0 else err.strip()

    monkeypatch.setattr("sys.stdin", io.StringIO(agency["claim"] + "\n"))
    code, enrolled = run("enrol", "--hostname", "bus-2", "--cloud", agency["cloud"].url)
    assert code == 0 and enrolled["device_id"].startswith("dev_")
    assert run("denylist")[1]["cards"] == []
    code, tap = run("tap", agency["qr"], "--stop", "s_station", "--at", str(time.time() - 60))
    assert (code, tap["seq"], tap["card"]) == (0, 1, agency["card"])
    assert run("upload")[1]["stored"] == 1
    assert run("resend")[1]["duplicates"] == 1
    assert run("tap", "PT1.forged", "--stop", "s_station") == (
        2, "transit reader: card refused: not a transit card code"
    )  # fmt: skip
