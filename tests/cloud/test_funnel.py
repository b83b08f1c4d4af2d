"""The merchant's funnel and plaza charts (cloud/dashboard/funnel.py, plaza_views.py,
privacy.py), on both databases: each step counted from where it is recorded, a group under 5
never shown (nor recoverable from the other figures), device identifiers under a salt that
lives one day, and another merchant's venue out of reach."""

from __future__ import annotations

import itertools

from flask import Flask
from flask.testing import FlaskClient

from cloud import db as cloud_db
from cloud.accounts import create_merchant, create_venue
from cloud.dashboard import funnel
from cloud.dashboard.privacy import DAY, SaltBook, floor_count, shown
from cloud.models import Venue
from tests.cloud.dashboard_helpers import sign_in, text
from tests.cloud.funnel_helpers import seed
from tests.conftest import FakeClock

OTHER = ("other@shop.example", "hunter2hunter2")


def test_small_groups_read_under_5_and_the_rest_is_rounded_down():
    assert [shown(n) for n in (0, 1, 4, 5, 9, 10, 1234)] == [
        "0", "<5", "<5", "≥5", "≥5", "≥10", "≥1,230",
    ]  # fmt: skip
    assert [floor_count(n) for n in (0, 3, 5, 7, 12)] == [0, 0, 5, 5, 10]


def test_a_hidden_cell_cannot_be_worked_out_from_a_total():
    """Whatever a shown part and a shown total are, every hidden value 1-4 stays possible
    (beside another hidden cell, at least three of them): rounding hides the difference,
    where an exact total would give it away."""
    for a, b in itertools.product(range(40), range(1, 5)):
        possible = {
            b2
            for a2, b2 in itertools.product(range(45), range(1, 5))
            if shown(a2) == shown(a) and shown(a2 + b2) == shown(a + b)
        }
        if shown(a) != "<5":
            assert possible == {1, 2, 3, 4}, (a, b)
        else:  # two hidden cells: their sum is under 5 or not, never one value
            assert len(possible) >= 3, (a, b)


def test_a_days_salt_is_forgotten_when_the_day_is_over():
    book = SaltBook()
    first = book.pseudonym(100, "aa:bb:cc:dd:ee:01")
    assert book.pseudonym(100, "aa:bb:cc:dd:ee:01") == first  # one phone, one day: one device
    assert "aa:bb" not in first and len(first) == 32
    assert book.pseudonym(101, "aa:bb:cc:dd:ee:01") != first  # another day: unlinkable
    book.forget_before(101)
    assert book.held() == [101]


def other_venue(app: Flask, clock: FakeClock) -> Venue:
    with cloud_db.session(app) as db:
        merchant = create_merchant(db, "Other", OTHER[0], OTHER[1], clock())
        theirs = create_venue(db, merchant.id, "Other shop", clock(), "other.example")
        db.commit()
        return theirs


def test_each_step_is_counted_where_it_is_recorded(app: Flask, venue: Venue, clock: FakeClock):
    theirs = other_venue(app, clock)
    seed(app, venue, clock(), joins=12, logins=9, pushes=7, coffee=6, redeemed=3, cake=2)
    seed(app, theirs, clock(), joins=30, logins=30, pushes=30, coffee=30, redeemed=30, cake=30)
    days = funnel.Days.ending_today(clock())
    with cloud_db.session(app) as db:
        found = funnel.funnel(db, venue.id, days, int(clock() // DAY), SaltBook())
        redemptions = funnel.redemptions_per_day(db, venue.id, days)
    today = days.index(clock())
    assert [found.by_day[s][today] for s in funnel.STEPS] == [12, 9, 7, 6, 3]
    assert [found.total(s) for s in funnel.STEPS] == [12, 9, 7, 6, 3]  # nothing on other days
    titles = {title.split()[0]: (c, r) for title, c, r in found.by_offer.values()}
    assert titles == {"Coffee": (6, 3), "Cake": (2, 0)}
    assert redemptions[today] == 3 and sum(redemptions) == 3


def test_the_page_shows_no_group_under_5(
    app: Flask, client: FlaskClient, venue: Venue, clock: FakeClock
):
    seed(app, venue, clock(), joins=12, logins=9, pushes=7, coffee=6, redeemed=3, cake=2)
    assert sign_in(client).status_code == 303
    page = client.get(f"/dashboard/plaza/{venue.id}")
    assert page.status_code == 200
    html = text(page)
    by_day = html.split('id="funnel-by-day"')[1].split("</table>")[0]
    rows = [r for r in by_day.split("<tr>")[2:]]
    cells = [[c.split("</td>")[0] for c in r.split("<td>")[1:]] for r in rows]
    assert [row[-1] for row in cells] == ["≥10", "≥5", "≥5", "≥5", "&lt;5"]  # all days
    assert all(c in ("0", "&lt;5") or c.startswith("≥") for row in cells for c in row)
    by_offer = html.split('id="funnel-by-offer"')[1].split("</table>")[0]
    assert "<td>≥5</td><td>&lt;5</td>" in by_offer  # coffee: 6 claimed, 3 redeemed
    assert "<td>&lt;5</td><td>0</td>" in by_offer  # cake: 2 claimed
    for exact in ("<td>12</td>", "<td>9</td>", "<td>7</td>", "<td>6</td>", "<td>3</td>"):
        assert exact not in html
    assert 'id="chart-funnel"' in html and 'id="chart-waits"' in html
    assert 'data-value="3"' not in html  # the 3 redemptions draw no bar
    assert "<script" not in html


def test_another_merchants_venue_is_out_of_reach(
    app: Flask, client: FlaskClient, venue: Venue, clock: FakeClock
):
    theirs = other_venue(app, clock)
    seed(app, theirs, clock(), joins=30, logins=30, pushes=30, coffee=30, redeemed=30, cake=30)
    assert client.get(f"/dashboard/plaza/{venue.id}").status_code == 302  # signed out
    assert sign_in(client).status_code == 303
    assert client.get(f"/dashboard/plaza/{theirs.id}").status_code == 404
    mine = text(client.get(f"/dashboard/plaza/{venue.id}"))
    assert "≥30" not in mine and "Coffee" not in mine  # none of theirs counted here
    client.get("/dashboard/logout")
    client._cookies.clear()
    assert sign_in(client, *OTHER).status_code == 303
    assert client.get(f"/dashboard/plaza/{venue.id}").status_code == 404
    assert "≥30" in text(client.get(f"/dashboard/plaza/{theirs.id}"))
