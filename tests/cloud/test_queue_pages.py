"""Queue pages end to end in the app (both databases): the merchant opens a queue in the
dashboard, a shopper takes a number on the phone, a kiosk prints one with its status link,
the staff page calls, skips, recalls and serves, the screen shows the calls, and the pushes
that go out (only when something changed); and the bad inputs: a second number, a closed
queue, another merchant's queue, a number or queue from another venue, wrong links."""

from __future__ import annotations

import re
from html import unescape
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from cloud import db as cloud_db
from cloud.accounts import create_merchant, create_venue
from cloud.models import PushJob, PushSubscription, Venue
from cloud.o2o.queue_models import QueueTicket, ServiceQueue
from tests.cloud.dashboard_helpers import sign_in as merchant_sign_in
from tests.cloud.o2o_helpers import as_shopper, csrf
from tests.conftest import FakeClock

LINK = re.compile(r'<code id="(kiosk|display)-link">([^<]+)</code>')


def text(page: Any) -> str:
    return unescape(page.get_data(as_text=True))


def new_queue(client: FlaskClient, venue_id: str, **fields: str) -> Any:
    page = client.get(f"/dashboard/queues/{venue_id}")
    form = {"csrf_token": csrf(page), "name": "Customer service", "prefix": "a",
            "kind": "service", "time_zone": "Asia/Shanghai", "service_minutes": "2",
            "recall_minutes": "10", "max_calls": "3"}  # fmt: skip
    form.update(fields)
    return client.post(f"/dashboard/queues/{venue_id}/new", data=form)


def queue_ids(app: Flask, venue_id: str) -> list[str]:
    with cloud_db.session(app) as db:
        return list(db.scalars(sa.select(ServiceQueue.id).where(ServiceQueue.venue_id == venue_id)
                               .order_by(ServiceQueue.created_at)))  # fmt: skip


def take(client: FlaskClient, venue_id: str, queue_id: str, notify: bool = True) -> Any:
    page = client.get(f"/plaza/queues/{venue_id}")
    data = {"csrf_token": csrf(page), **({"notify": "on"} if notify else {})}
    return client.post(f"/plaza/queues/{venue_id}/take/{queue_id}", data=data)


def staff(client: FlaskClient, venue_id: str, queue_id: str, path: str, counter: str) -> Any:
    base = f"/dashboard/queues/{venue_id}/{queue_id}"
    page = client.get(f"{base}?counter={counter}")
    return client.post(f"{base}/{path}", data={"csrf_token": csrf(page), "counter": counter})


def ticket_of(app: Flask, label: str) -> QueueTicket:
    with cloud_db.session(app) as db:
        return db.scalars(sa.select(QueueTicket).where(QueueTicket.label == label)).one()


def pushes(app: Flask, kind: str = "wallet") -> list[tuple[str, str]]:
    with cloud_db.session(app) as db:
        jobs = db.scalars(sa.select(PushJob).where(PushJob.kind == kind).order_by(PushJob.id))
        return [(job.target, job.payload["body"]) for job in jobs]


@pytest.fixture
def queue(app: Flask, signed_in: FlaskClient, venue: Venue) -> str:
    assert new_queue(signed_in, venue.id).status_code == 303
    (queue_id,) = queue_ids(app, venue.id)
    return queue_id


def test_a_number_from_take_to_served(app: Flask, signed_in: FlaskClient, venue: Venue,
                                      queue: str, clock: FakeClock):  # fmt: skip
    admin = text(signed_in.get(f"/dashboard/queues/{venue.id}"))
    assert "Customer service" in admin and "OPEN" in admin
    links = dict(LINK.findall(admin))
    alice, bob, kiosk = app.test_client(), app.test_client(), app.test_client()
    as_shopper(app, alice, clock, "alice")
    as_shopper(app, bob, clock, "bob")
    taken = take(alice, venue.id, queue)
    assert taken.status_code == 303
    mine = alice.get(taken.location)
    assert mine.status_code == 200
    assert "default-src 'none'" in mine.headers["Content-Security-Policy"]
    page = text(mine)
    assert "A001" in page and "You are next" in page and 'http-equiv="refresh"' in page
    assert "<script" not in page

    # The kiosk: its number printed with the status page's link and QR; that page needs no one
    kiosk_path = links["kiosk"].split("localhost", 1)[1]
    printed = kiosk.post(f"{kiosk_path}/take/{queue}",
                         data={"csrf_token": csrf(kiosk.get(kiosk_path))})  # fmt: skip
    assert printed.status_code == 200 and "A002" in text(printed) and "<svg" in text(printed)
    status_link = re.search(r'<span id="status-link">[^<]*(/plaza/q/[^<]+)</span>', text(printed))
    assert status_link
    stranger = app.test_client()
    assert "1 ahead of you" in text(stranger.get(status_link.group(1)))
    take(bob, venue.id, queue)
    assert pushes(app) == []  # taking a number pushes nothing

    # Window 2 calls: alice is called (pushed), bob moves to 1 ahead (pushed), the screen shows
    assert staff(signed_in, venue.id, queue, "next", "2").status_code == 303
    assert "Please come to window 2" in text(alice.get(taken.location))
    screen = text(kiosk.get(links["display"].split("localhost", 1)[1]))
    assert "A001" in screen and "Window 2" in screen and 'http-equiv="refresh"' in screen
    a1 = ticket_of(app, "A001")
    assert pushes(app) == [("alice", "Your number A001 is called at window 2."),
                           ("bob", "1 ahead of you, about 4 min.")]  # fmt: skip
    # Nothing changed for anyone: no push. Skip, recall, serve.
    alice.get(taken.location)
    assert len(pushes(app)) == 2
    base = f"/dashboard/queues/{venue.id}/{queue}/tickets/{a1.id}"
    for action in ("skip", "recall", "serve"):
        page = signed_in.get(f"/dashboard/queues/{venue.id}/{queue}?counter=2")
        done = signed_in.post(f"{base}/{action}", data={"csrf_token": csrf(page), "counter": "2"})
        assert done.status_code == 303, (action, text(done))
    assert [body for user, body in pushes(app) if user == "alice"][1:] == [
        "You missed your call. Come to the desk within 10 min to be recalled.",
        "Your number A001 is called at window 2.",
    ]
    assert "Served" in text(alice.get(taken.location))
    # Next at window 2 calls the kiosk's A002: bob is next now
    staff(signed_in, venue.id, queue, "next", "2")
    assert pushes(app)[-1] == ("bob", "You are next. Please come to Customer service.")
    assert "Please come to window 2" in text(stranger.get(status_link.group(1)))


def test_web_push_goes_to_the_shoppers_browsers_at_the_venue(
    app: Flask, signed_in: FlaskClient, venue: Venue, queue: str, clock: FakeClock
):
    with cloud_db.session(app) as db:
        db.add(PushSubscription(id="wps_1", venue_id=venue.id, endpoint="https://push.test/1",
                                wallet_user="alice", p256dh="k", auth="a",
                                created_at=clock()))  # fmt: skip
        db.commit()
    alice = app.test_client()
    as_shopper(app, alice, clock, "alice")
    take(alice, venue.id, queue)
    staff(signed_in, venue.id, queue, "next", "3")
    with cloud_db.session(app) as db:
        job = db.scalars(sa.select(PushJob).where(PushJob.kind == "webpush")).one()
        assert job.target == "wps_1" and job.payload["body"].endswith("window 3.")
        assert job.payload["url"].endswith(f"/plaza/queues/tickets/{ticket_of(app, 'A001').id}")
    # A number taken without "tell me" is never pushed
    bob = app.test_client()
    as_shopper(app, bob, clock, "bob")
    take(bob, venue.id, queue, notify=False)
    staff(signed_in, venue.id, queue, "next", "3")
    assert [user for user, _ in pushes(app)] == ["alice"]


def test_bad_inputs_are_refused_with_a_clear_message(
    app: Flask, signed_in: FlaskClient, venue: Venue, queue: str, clock: FakeClock
):
    alice = app.test_client()
    as_shopper(app, alice, clock, "alice")
    take(alice, venue.id, queue)
    again = take(alice, venue.id, queue)
    assert again.status_code == 409 and "you already have number A001" in text(again)
    # Another merchant, another venue, a queue and a number there
    with cloud_db.session(app) as db:
        other = create_merchant(db, "Tea Two", "two@tea.example", "hunter2hunter2", clock())
        elsewhere = create_venue(db, other.id, "Tea Two", clock(), "portal.two.test").id
        db.commit()
    rival = app.test_client()
    assert merchant_sign_in(rival, "two@tea.example", "hunter2hunter2").status_code == 303
    assert new_queue(rival, elsewhere, name="Pickup", prefix="P").status_code == 303
    (foreign_queue,) = queue_ids(app, elsewhere)
    bob = app.test_client()
    as_shopper(app, bob, clock, "bob")
    assert take(bob, elsewhere, foreign_queue).status_code == 303
    foreign = ticket_of(app, "P001")
    # Calling on another merchant's queue: as if it did not exist
    page = rival.get(f"/dashboard/queues/{elsewhere}")
    for path in (f"/dashboard/queues/{venue.id}/{queue}/next",
                 f"/dashboard/queues/{elsewhere}/{queue}/next",
                 f"/dashboard/queues/{venue.id}/{queue}/state"):  # fmt: skip
        assert rival.post(path, data={"csrf_token": csrf(page)}).status_code == 404
    assert rival.get(f"/dashboard/queues/{venue.id}/{queue}").status_code == 404
    assert rival.get(f"/dashboard/queues/{venue.id}").status_code == 404
    a1 = ticket_of(app, "A001")
    for path in (f"/dashboard/queues/{venue.id}/new",
                 f"/dashboard/queues/{venue.id}/{queue}/tickets/{a1.id}/serve",
                 f"/dashboard/queues/{elsewhere}/{queue}/tickets/{a1.id}/serve"):  # fmt: skip
        assert rival.post(path, data={"csrf_token": csrf(page), "name": "X"}).status_code == 404
    assert ticket_of(app, "A001").state == "WAITING" and len(queue_ids(app, venue.id)) == 1
    # A number from another venue on this venue's staff page
    page = signed_in.get(f"/dashboard/queues/{venue.id}/{queue}")
    wrong = signed_in.post(f"/dashboard/queues/{venue.id}/{queue}/tickets/{foreign.id}/serve",
                           data={"csrf_token": csrf(page), "counter": "1"})  # fmt: skip
    assert wrong.status_code == 409 and "P001 was taken at another venue" in text(wrong)
    # A queue of another venue through this venue's phone page and kiosk
    cross = take(alice, venue.id, foreign_queue)
    assert cross.status_code == 409 and "this queue is at another venue" in text(cross)
    kiosk_path = dict(LINK.findall(text(signed_in.get(f"/dashboard/queues/{venue.id}"))))[
        "kiosk"].split("localhost", 1)[1]  # fmt: skip
    kiosk = app.test_client()
    form = {"csrf_token": csrf(kiosk.get(kiosk_path))}
    refused = kiosk.post(f"{kiosk_path}/take/{foreign_queue}", data=form)
    assert refused.status_code == 409 and "another venue" in text(refused)
    assert kiosk.get(kiosk_path[:-4] + "0000").status_code == 404  # a made-up kiosk key
    assert kiosk.get(kiosk_path.replace("/kiosk/", "/display/")).status_code == 404
    assert kiosk.get("/plaza/q/" + "x" * 22).status_code == 404
    # Someone else's ticket page, and a closed queue
    assert bob.get(f"/plaza/queues/tickets/{ticket_of(app, 'A001').id}").status_code == 404
    page = signed_in.get(f"/dashboard/queues/{venue.id}")
    closed = signed_in.post(f"/dashboard/queues/{venue.id}/{queue}/state",
                            data={"csrf_token": csrf(page), "state": "CLOSED"})  # fmt: skip
    assert closed.status_code == 303
    late = take(bob, venue.id, queue)
    assert late.status_code == 409 and "Customer service is closed" in text(late)
    refused = kiosk.post(f"{kiosk_path}/take/{queue}", data=form)
    assert refused.status_code == 409 and "closed" in text(refused)
    empty = staff(signed_in, venue.id, queue, "next", "1")  # closed: the line is still served
    assert empty.status_code == 303
    assert "nobody is waiting" in text(staff(signed_in, venue.id, queue, "next", "1"))


def test_leave_from_the_phone_and_from_the_token_page(
    app: Flask, signed_in: FlaskClient, venue: Venue, queue: str, clock: FakeClock
):
    alice = app.test_client()
    as_shopper(app, alice, clock, "alice")
    taken = take(alice, venue.id, queue)
    a1 = ticket_of(app, "A001")
    page = alice.get(taken.location)
    left = alice.post(f"/plaza/queues/tickets/{a1.id}/leave", data={"csrf_token": csrf(page)})
    assert left.status_code == 303 and "You left the queue" in text(alice.get(left.location))
    assert take(alice, venue.id, queue).status_code == 303  # gave it up: may take again
    assert ticket_of(app, "A002").state == "WAITING"


def test_pages_in_chinese(app: Flask, signed_in: FlaskClient, venue: Venue, queue: str,
                          clock: FakeClock):  # fmt: skip
    zh = {"Accept-Language": "zh-CN"}
    first, second = app.test_client(), app.test_client()
    as_shopper(app, first, clock, "alice")
    as_shopper(app, second, clock, "bob")
    take(first, venue.id, queue)
    taken = take(second, venue.id, queue)
    assert "您前面还有 1 位" in text(second.get(taken.location, headers=zh))
    page = second.get(f"/plaza/queues/{venue.id}", headers=zh)
    again = second.post(f"/plaza/queues/{venue.id}/take/{queue}",
                        data={"csrf_token": csrf(page)}, headers=zh)  # fmt: skip
    assert again.status_code == 409 and "您在这个队列中已经有号码了：A002" in text(again)
