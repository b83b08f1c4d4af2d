"""Voucher pages end to end in the app (both databases): the merchant creates and activates a
template in the dashboard, a shopper claims it and is shown the QR, the counter checks and
redeems the code once; and the bad inputs: another merchant's templates, double claims, over
budget, used, expired, forged and other venues' codes."""

from __future__ import annotations

import re
from html import unescape
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from cloud import db as cloud_db
from cloud.accounts import create_merchant, create_venue
from cloud.models import Venue
from cloud.o2o import voucher_codes
from cloud.o2o.voucher_models import Voucher, VoucherTemplate
from lab.pki import LabCA
from lab.wallet import app as wallet_app
from plaza import signing
from tests.cloud.dashboard_helpers import sign_in as merchant_sign_in
from tests.cloud.o2o_helpers import CLOUD, as_shopper, csrf
from tests.conftest import FakeClock
from tests.wallet_harness import Browser


def new_template(client: FlaskClient, venue_id: str, **fields: str) -> Any:
    page = client.get(f"/dashboard/vouchers/{venue_id}")
    form = {"csrf_token": csrf(page), "title": "10 off", "kind": "amount", "amount_off": "10",
            "min_spend": "30", "budget": "2", "per_user_limit": "1", "valid_days": "7"}  # fmt: skip
    form.update(fields)
    return client.post(f"/dashboard/vouchers/{venue_id}/new", data=form)


def act(client: FlaskClient, venue_id: str, template_id: str, action: str) -> Any:
    page = client.get(f"/dashboard/vouchers/{venue_id}")
    return client.post(f"/dashboard/vouchers/{venue_id}/{template_id}/{action}",
                       data={"csrf_token": csrf(page)})  # fmt: skip


def only_template(app: Flask) -> str:
    with cloud_db.session(app) as db:
        (template,) = db.query(VoucherTemplate).all()
        return template.id


@pytest.fixture
def offer(app: Flask, signed_in: FlaskClient, venue: Venue) -> str:
    """An ACTIVATED template (¥10 off, spend ¥30, budget 2), made through the dashboard."""
    assert new_template(signed_in, venue.id).status_code == 303
    template_id = only_template(app)
    assert act(signed_in, venue.id, template_id, "activate").status_code == 303
    page = signed_in.get(f"/dashboard/vouchers/{venue.id}")
    assert "ACTIVATED" in page.get_data(as_text=True)
    assert page.headers["Content-Security-Policy"].startswith("default-src 'none'")
    signed_in._cookies.clear()  # signed out: no cookie at all
    return template_id


def claim(client: FlaskClient, venue_id: str, template_id: str) -> Any:
    page = client.get(f"/plaza/vouchers/offers/{venue_id}")
    assert page.status_code == 200, page.status_code
    key = re.search(r'name="idempotency_key" value="([^"]+)"', page.get_data(as_text=True))
    assert key
    form = {"csrf_token": csrf(page), "idempotency_key": key.group(1)}
    return client.post(f"/plaza/vouchers/claim/{template_id}", data=form), form


def counter_url(app: Flask, venue_id: str) -> str:
    with app.test_request_context():
        from cloud.o2o.voucher_views import staff_key

        return f"/plaza/staff/{venue_id}/{staff_key(venue_id)}/vouchers"


def counter(client: FlaskClient, url: str, code: str, action: str, amount: str = "") -> Any:
    page = client.get(url)
    return client.post(url, data={"csrf_token": csrf(page), "code": code, "action": action,
                                  "amount": amount})  # fmt: skip


def test_claim_show_and_redeem_once(app: Flask, client: FlaskClient, clock: FakeClock,
                                    venue: Venue, offer: str):  # fmt: skip
    as_shopper(app, client, clock)
    answer, form = claim(client, venue.id, offer)
    assert answer.status_code == 303
    voucher_page = answer.headers["Location"]
    again = client.post(f"/plaza/vouchers/claim/{offer}", data=form)  # the same request, retried
    assert again.headers["Location"] == voucher_page
    twice, _ = claim(client, venue.id, offer)  # a second claim: the limit is 1
    assert twice.status_code == 409 and "at most 1 per shopper" in twice.get_data(as_text=True)

    page = client.get(voucher_page)
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and "<svg" in html and "script" not in html.lower()
    assert "2027-01-22 08:00 UTC" in html  # the fixture clock + 7 days
    code = re.search(r'<p class="code">([^<]+)</p>', html).group(1)  # type: ignore[union-attr]
    with cloud_db.session(app) as db:
        (voucher,) = db.query(Voucher).all()
    assert f"{voucher.short_code[:5]}-{voucher.short_code[5:]}" in html

    url = counter_url(app, venue.id)
    checked = counter(client, url, code, "check", "50")
    assert checked.status_code == 200 and "Valid: 10 off" in checked.get_data(as_text=True)
    low = counter(client, url, code, "redeem", "29.99")
    assert low.status_code == 422 and "at least 30.00" in low.get_data(as_text=True)
    used = counter(client, url, code, "redeem", "50")
    assert used.status_code == 200 and "discount 10.00" in used.get_data(as_text=True)
    for attempt in (code, voucher.short_code):
        refused = counter(client, url, attempt, "redeem")
        assert refused.status_code == 422
        assert "already used" in refused.get_data(as_text=True)
    mine = client.get("/plaza/vouchers").get_data(as_text=True)
    assert "Used" in mine or "已使用" in mine


def test_bad_codes_at_the_counter(app: Flask, client: FlaskClient, clock: FakeClock,
                                  venue: Venue, offer: str):  # fmt: skip
    as_shopper(app, client, clock)
    claim(client, venue.id, offer)
    with cloud_db.session(app) as db:
        (voucher,) = db.query(Voucher).all()
        other_merchant = create_merchant(db, "Other", "o@example.com", "hunter2hunter2", clock())
        other = create_venue(db, other_merchant.id, "Other venue", clock(), "other.example")
        db.commit()
    key = voucher_codes.venue_key(app.config["CLOUD_KEY"], venue.id)
    good = voucher_codes.issue(key, voucher.id, venue.id, 1, voucher.expires_at)
    forged = voucher_codes.issue(signing.new_key(), voucher.id, venue.id, 1, voucher.expires_at)
    url = counter_url(app, venue.id)
    for code, message in [(forged, "not signed by this venue"), ("PV1.x.y", "not a Plaza"),
                          ("ZZZZZZZZZZ", "no voucher has this code")]:  # fmt: skip
        answer = counter(client, url, code, "redeem")
        assert answer.status_code == 422 and message in answer.get_data(as_text=True), code
    at_other = counter(client, counter_url(app, other.id), good, "redeem")
    assert "not signed by this venue" in at_other.get_data(as_text=True)
    typed_at_other = counter(client, counter_url(app, other.id), voucher.short_code, "redeem")
    assert "for another venue" in typed_at_other.get_data(as_text=True)
    assert client.get(f"/plaza/staff/{venue.id}/{'0' * 32}/vouchers").status_code == 404
    public = client.get(url.replace("/vouchers", "/voucher-key")).get_json()["public_key"]
    assert voucher_codes.verify(good, public, venue.id, clock()).voucher_id == voucher.id
    clock.advance(8 * 86400)
    expired = counter(client, url, good, "redeem")
    assert expired.status_code == 422 and "expired" in expired.get_data(as_text=True)


def test_budget_and_other_shoppers(app: Flask, client: FlaskClient, clock: FakeClock,
                                   venue: Venue, offer: str):  # fmt: skip
    pages = []
    for user in ("alice", "bob", "carol"):
        client._cookies.clear()  # signed out: no cookie at all
        as_shopper(app, client, clock, user)
        answer, _ = claim(client, venue.id, offer)
        pages.append(answer)
    assert [p.status_code for p in pages] == [303, 303, 409]
    assert "run out" in pages[2].get_data(as_text=True)
    assert client.get(pages[0].headers["Location"]).status_code == 404  # alice's, seen by carol


def test_merchants_cannot_touch_each_others_templates(
    app: Flask, client: FlaskClient, clock: FakeClock, venue: Venue, offer: str
):
    with cloud_db.session(app) as db:
        other = create_merchant(db, "Other", "other@shop.example", "hunter2hunter2", clock())
        theirs = create_venue(db, other.id, "Other shop", clock(), "other.example")
        db.commit()
    answer = merchant_sign_in(client, "other@shop.example", "hunter2hunter2")
    assert answer.status_code == 303
    assert client.get(f"/dashboard/vouchers/{venue.id}").status_code == 404
    page = client.get(f"/dashboard/vouchers/{theirs.id}")
    assert page.status_code == 200
    form = {"csrf_token": csrf(page)}
    for path in (f"/dashboard/vouchers/{venue.id}/{offer}/pause",  # not their venue
                 f"/dashboard/vouchers/{theirs.id}/{offer}/pause",  # not their template
                 f"/dashboard/vouchers/{venue.id}/new"):  # fmt: skip
        assert client.post(path, data=form).status_code == 404, path
    with cloud_db.session(app) as db:
        assert db.get(VoucherTemplate, offer).state == "ACTIVATED"
    bad = new_template(client, theirs.id, budget="0")
    assert bad.status_code == 400 and "budget" in bad.get_data(as_text=True)
    client._cookies.clear()  # signed out: no cookie at all
    assert client.get(f"/dashboard/vouchers/{theirs.id}").status_code == 302  # signed out


def test_pkpass_download(app: Flask, client: FlaskClient, clock: FakeClock, venue: Venue,
                         offer: str, tmp_path):  # fmt: skip
    as_shopper(app, client, clock)
    voucher_page = claim(client, venue.id, offer)[0].headers["Location"]
    assert client.get(voucher_page + ".pkpass").status_code == 404  # no certificate yet
    ca = LabCA(tmp_path / "ca")
    cert, key = ca.issue("pass", ["pass.example"])
    app.config.update(PASS_CERT_FILE=str(cert), PASS_KEY_FILE=str(key))
    assert "Apple" in client.get(voucher_page).get_data(as_text=True)
    answer = client.get(voucher_page + ".pkpass")
    assert answer.status_code == 200 and answer.mimetype == "application/vnd.apple.pkpass"
    assert answer.data[:2] == b"PK"


def test_save_to_the_sandbox_wallet(shop_app: Flask, sandbox_wallet, clock: FakeClock,
                                    venue: Venue, offer: str):  # fmt: skip
    """The voucher page's wallet link adds a pass in the sandbox wallet that opens the
    voucher page on the cloud's own origin."""
    client = shop_app.test_client()
    as_shopper(shop_app, client, clock)
    voucher_page = claim(client, venue.id, offer)[0].headers["Location"]
    html = client.get(voucher_page).get_data(as_text=True)  # links on PUBLIC_URL (CLOUD)
    link = re.search(r'<a class="button" href="([^"]+/passes/add\?[^"]+)"', html)
    assert link, html
    phone = Browser(sandbox_wallet.ca_file)
    pins = {u["login"]: u["pin"] for u in sandbox_wallet.material["users"]}
    saved = wallet_app.save_pass(phone, unescape(link.group(1)), "alice", pins["alice"])
    assert saved.status == 200, saved.body
    assert (f"{venue.name}: 10 off", CLOUD + voucher_page) in wallet_app.passes(
        phone, sandbox_wallet.url
    )
