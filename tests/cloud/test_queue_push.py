"""A queue push all the way into the wallet (both databases): a shopper signed in with the
sandbox wallet takes a number, the window calls it, the push worker sends the outbox, and the
message is in the shopper's wallet inbox, linking back to the number's page."""

from __future__ import annotations

import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from cloud import db as cloud_db
from cloud.models import Venue
from cloud.o2o.queue_models import QueueTicket, ServiceQueue
from cloud.push import presence_push, worker
from cloud.push.settings import PushSettings
from lab.wallet import app as wallet_app
from tests.cloud.o2o_helpers import CLOUD, SandboxWallet, csrf, get, post, sign_in
from tests.wallet_harness import Browser


def test_a_called_number_reaches_the_wallet_inbox(
    shop_app: Flask, sandbox_wallet: SandboxWallet, signed_in: FlaskClient, venue: Venue
):
    shop_app.extensions[presence_push.EXTENSION] = PushSettings.from_app(shop_app)
    name = f"Parcels {venue.id[-6:]}"  # the wallet outlives the test: a title of its own
    page = signed_in.get(f"/dashboard/queues/{venue.id}")
    made = signed_in.post(f"/dashboard/queues/{venue.id}/new",
                          data={"csrf_token": csrf(page), "name": name,
                                "prefix": "P", "time_zone": "UTC"})  # fmt: skip
    assert made.status_code == 303
    with cloud_db.session(shop_app) as db:
        queue = db.scalars(sa.select(ServiceQueue.id)).one()
    phone = shop_app.test_client()
    assert sign_in(phone, sandbox_wallet, "alice").status_code == 303
    page = get(phone, f"/plaza/queues/{venue.id}")
    taken = post(phone, f"/plaza/queues/{venue.id}/take/{queue}",
                 {"csrf_token": csrf(page), "notify": "on"})  # fmt: skip
    assert taken.status_code == 303
    page = signed_in.get(f"/dashboard/queues/{venue.id}/{queue}?counter=4")
    called = signed_in.post(f"/dashboard/queues/{venue.id}/{queue}/next",
                            data={"csrf_token": csrf(page), "counter": "4"})  # fmt: skip
    assert called.status_code == 303
    assert worker.run_once(shop_app) == 1
    assert worker.run_once(shop_app) == 0  # sent is sent

    reader = Browser(sandbox_wallet.ca_file)
    pins = {u["login"]: u["pin"] for u in sandbox_wallet.material["users"]}
    wallet_app.sign_in(reader, sandbox_wallet.url, "alice", pins["alice"])
    inbox = [m for m in wallet_app.messages(reader, sandbox_wallet.url)
             if m.title == f"{name}: number P001"]  # fmt: skip
    assert len(inbox) == 1 and "called at window 4" in inbox[0].body
    with cloud_db.session(shop_app) as db:
        ticket = db.scalars(sa.select(QueueTicket)).one()
    assert wallet_app.tap(reader, inbox[0]) == f"{CLOUD}/plaza/queues/tickets/{ticket.id}"
