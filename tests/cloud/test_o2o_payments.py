"""Payments through the wallet (issue 16 item 2), end to end: the shop's pay form, the sandbox
wallet's cashier (real HTTPS on 127.0.0.1, its trade API in the Alipay dialect), the signed
asynchronous notify, reconciliation by query and refunds; and each bad input of the issue that
concerns payments, performed. After every test the ledger balances (the `books` fixture).
Every test runs on SQLite and PostgreSQL (tests/cloud/conftest.py).
"""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from cloud import db as cloud_db
from cloud.models import Venue
from cloud.o2o import ledger, settings, settlement
from cloud.o2o.payments import CLOSED, SUCCESS, WAIT, Payment, PaymentError, Refund
from cloud.o2o.shoppers import find_or_create
from tests.cloud.o2o_helpers import (
    CLOUD,
    SandboxWallet,
    approve_payment,
    deliver,
    get,
    sign_in,
    start_payment,
)
from tests.conftest import FakeClock


@pytest.fixture
def shopper(shop_app: Flask, client: FlaskClient, sandbox_wallet: SandboxWallet) -> FlaskClient:
    """A phone signed in to the shop as alice."""
    assert sign_in(client, sandbox_wallet).status_code == 303
    return client


def one(app: Flask, payment_id: str | None = None) -> Payment:
    with cloud_db.session(app) as db:
        query = select(Payment)
        if payment_id:
            query = query.where(Payment.id == payment_id)
        return db.scalars(query).one()


def postings(app: Flask) -> list[str]:
    with cloud_db.session(app) as db:
        return sorted(db.scalars(select(ledger.LedgerPosting.key)))


def balances(app: Flask) -> dict[str, int]:
    with cloud_db.session(app) as db:
        return ledger.balances(db)


def merchant(app: Flask, venue: Venue) -> str:
    return venue.merchant_id


def paid(client: FlaskClient, wallet: SandboxWallet, venue: Venue, amount: str = "10.00") -> str:
    """A payment made and approved in the wallet; its id. Its notify is left undelivered."""
    start = start_payment(client, venue.id, amount)
    assert start.status_code == 303, start.get_data(as_text=True)
    assert start.location.startswith(wallet.url + "/gateway.do?")
    back = approve_payment(wallet, start.location)
    assert back.status == 302 and back.location.startswith(f"{CLOUD}/plaza/payments/pay_")
    return back.location.rsplit("/", 1)[1].split("?")[0]


def test_a_shopper_pays_and_the_notify_books_it_once(
    shop_app: Flask, shopper: FlaskClient, sandbox_wallet: SandboxWallet, venue: Venue
):
    payment_id = paid(shopper, sandbox_wallet, venue, "12.34")
    assert one(shop_app, payment_id).state == WAIT  # the browser's return is no proof
    (notify,) = sandbox_wallet.take_notifies()
    assert notify["trade_status"] == SUCCESS and notify["out_trade_no"] == payment_id
    answer = deliver(shopper, notify)
    assert answer.status_code == 200 and answer.get_data(as_text=True) == "success"
    payment = one(shop_app, payment_id)
    assert (payment.state, payment.amount, payment.buyer_id) == (SUCCESS, 1234, "2088000000000001")
    assert balances(shop_app) == {
        ledger.WALLET_CLEARING: 1234,
        ledger.merchant_receivable(venue.merchant_id): -1234,
    }
    page = get(shopper, f"/plaza/payments/{payment_id}")
    assert 'data-state="TRADE_SUCCESS"' in page.get_data(as_text=True)
    # The same notify again (the wallet retries until it hears "success"): nothing twice.
    assert deliver(shopper, notify).get_data(as_text=True) == "success"
    assert postings(shop_app) == [f"payment:{payment_id}:captured"]


def test_the_return_page_settles_by_query_when_the_notify_is_late(
    shop_app: Flask, shopper: FlaskClient, sandbox_wallet: SandboxWallet, venue: Venue
):
    payment_id = paid(shopper, sandbox_wallet, venue)
    page = get(shopper, f"/plaza/payments/{payment_id}")
    assert 'data-state="TRADE_SUCCESS"' in page.get_data(as_text=True)
    (late,) = sandbox_wallet.take_notifies()
    assert deliver(shopper, late).get_data(as_text=True) == "success"
    assert postings(shop_app) == [f"payment:{payment_id}:captured"]


def test_the_same_checkout_twice_is_one_payment(
    shop_app: Flask, shopper: FlaskClient, sandbox_wallet: SandboxWallet, venue: Venue
):
    """A double tap, a reload, a retried POST: one idempotency key, one payment, one trade."""
    first = start_payment(shopper, venue.id, "8.00", key="checkout-key-0001")
    again = start_payment(shopper, venue.id, "8.00", key="checkout-key-0001")
    assert first.status_code == again.status_code == 303
    with cloud_db.session(shop_app) as db:
        assert db.scalar(select(func.count()).select_from(Payment)) == 1
    approve_payment(sandbox_wallet, first.location)
    # The second cashier URL is the same trade, already paid: the wallet will not take it again.
    assert approve_payment(sandbox_wallet, again.location).status == 409
    assert len(sandbox_wallet.take_notifies()) == 1
    # The same key for another amount is refused, not a second payment.
    other = start_payment(shopper, venue.id, "9.00", key="checkout-key-0001")
    assert other.status_code == 400 and "already used" in other.get_data(as_text=True)


def test_a_notify_with_a_bad_signature_is_refused(
    shop_app: Flask, shopper: FlaskClient, sandbox_wallet: SandboxWallet, venue: Venue
):
    payment_id = paid(shopper, sandbox_wallet, venue, "10.00")
    (notify,) = sandbox_wallet.take_notifies()
    forged = {**notify, "total_amount": "0.01"}  # the signature was over 10.00
    assert deliver(shopper, forged).status_code == 403
    unsigned = {k: v for k, v in notify.items() if k != "sign"}
    assert deliver(shopper, unsigned).status_code == 403
    wrong_type = {**notify, "sign_type": "RSA"}
    assert deliver(shopper, wrong_type).status_code == 403
    assert one(shop_app, payment_id).state == WAIT
    assert postings(shop_app) == []


def test_a_well_signed_notify_that_does_not_match_the_payment_is_refused(
    shop_app: Flask, shopper: FlaskClient, sandbox_wallet: SandboxWallet, venue: Venue
):
    """Signed by the wallet, but naming another amount, app, seller or trade: refused."""
    payment_id = paid(shopper, sandbox_wallet, venue, "10.00")
    (notify,) = sandbox_wallet.take_notifies()
    for change in (
        {"total_amount": "0.01"},
        {"app_id": "2021000000000999"},
        {"seller_id": "2088999999999999"},
        {"trade_no": "20261206ffffffffffffffffffff"},
        {"out_trade_no": "pay_0000000000000000"},
        {"trade_status": "TRADE_PAID_TWICE"},
    ):
        answer = deliver(shopper, sandbox_wallet.sign({**notify, **change}))
        assert answer.status_code in (400, 404), change
    assert one(shop_app, payment_id).state == WAIT and postings(shop_app) == []
    assert deliver(shopper, notify).get_data(as_text=True) == "success"


def test_notifies_out_of_order_change_nothing_twice(
    shop_app: Flask,
    shopper: FlaskClient,
    sandbox_wallet: SandboxWallet,
    venue: Venue,
    clock: FakeClock,
):
    """Paid, then fully refunded: the wallet's TRADE_CLOSED arrives before its TRADE_SUCCESS,
    and both again. The payment ends closed, captured once and refunded once."""
    payment_id = paid(shopper, sandbox_wallet, venue, "10.00")
    (success,) = sandbox_wallet.take_notifies()
    client = settings.trade_client(shop_app)
    with shop_app.app_context(), cloud_db.session(shop_app) as db:
        # The refund needs the payment captured: the query settles it (no notify yet).
        assert settlement.reconcile_one(db, client, payment_id, clock()) == "paid"
        settlement.refund(db, client, payment_id, 1000, "refund-all-0001", "cold soup", clock())
    (closed,) = sandbox_wallet.take_notifies()
    assert closed["trade_status"] == CLOSED and closed["refund_fee"] == "10.00"
    for notify in (closed, success, closed, success):
        assert deliver(shopper, notify).get_data(as_text=True) == "success"
    payment = one(shop_app, payment_id)
    assert (payment.state, payment.refunded) == (CLOSED, 1000)
    assert len(postings(shop_app)) == 2
    m = venue.merchant_id
    assert balances(shop_app) == {
        ledger.WALLET_CLEARING: 0,
        ledger.merchant_receivable(m): -1000,
        ledger.refunds(m): 1000,
    }


def test_a_closed_notify_that_comes_first_for_a_paid_trade_still_books_the_payment(
    shop_app: Flask, shopper: FlaskClient, sandbox_wallet: SandboxWallet, venue: Venue
):
    """The cloud has not heard of the payment yet when the wallet's TRADE_CLOSED (after a full
    refund made elsewhere) arrives: money was taken, so the capture is booked, once."""
    payment_id = paid(shopper, sandbox_wallet, venue, "5.00")
    (success,) = sandbox_wallet.take_notifies()
    closed = sandbox_wallet.sign(
        {**success, "trade_status": CLOSED, "refund_fee": "5.00", "notify_id": "n-closed"}
    )
    assert deliver(shopper, closed).get_data(as_text=True) == "success"
    assert deliver(shopper, success).get_data(as_text=True) == "success"
    assert postings(shop_app) == [f"payment:{payment_id}:captured"]
    assert one(shop_app, payment_id).paid_at is not None


def test_a_payment_that_never_gets_a_notify_is_reconciled_by_query(
    shop_app: Flask,
    shopper: FlaskClient,
    sandbox_wallet: SandboxWallet,
    venue: Venue,
    clock: FakeClock,
):
    payment_id = paid(shopper, sandbox_wallet, venue, "3.50")
    sandbox_wallet.take_notifies()  # lost on the way
    waiting = start_payment(shopper, venue.id, "1.00")  # created, never paid
    assert waiting.status_code == 303
    client = settings.trade_client(shop_app)
    with cloud_db.session(shop_app) as db:
        early = settlement.reconcile(db, client, clock())
        assert early.checked == 0  # within the grace period: the notify may still come
        clock.advance(settlement.RECONCILE_AFTER + 1)
        result = settlement.reconcile(db, client, clock())
        assert (result.checked, result.paid, result.waiting, result.failed) == (2, 1, 1, 0)
        again = settlement.reconcile(db, client, clock())
        assert (again.checked, again.paid, again.waiting) == (1, 0, 1)  # only the unpaid one
    assert one(shop_app, payment_id).state == SUCCESS
    assert postings(shop_app) == [f"payment:{payment_id}:captured"]


def test_a_payment_the_wallet_never_saw_is_closed_after_a_while(
    shop_app: Flask, shopper: FlaskClient, venue: Venue, clock: FakeClock
):
    from cloud.o2o.payments import create_payment

    with cloud_db.session(shop_app) as db:
        shop = find_or_create(db, "oidc", "2088000000000002", "Bob", clock())
        payment, made = create_payment(
            db, shopper_id=shop.id, venue_id=venue.id, amount=500, subject="Tea",
            purpose="order", idempotency_key="never-sent-0001", app_id="2021000000000001",
            seller_id="", at=clock(),
        )  # fmt: skip
        assert made
        client = settings.trade_client(shop_app)
        clock.advance(settlement.RECONCILE_AFTER + 1)
        assert settlement.reconcile(db, client, clock()).waiting == 1
        clock.advance(settlement.ABANDON_AFTER)
        assert settlement.reconcile(db, client, clock()).closed == 1
    assert one(shop_app, payment.id).state == CLOSED
    assert postings(shop_app) == []


def refund(app: Flask, payment_id: str, amount: int, key: str, clock: FakeClock) -> Refund:
    with cloud_db.session(app) as db:
        return settlement.refund(
            db, settings.trade_client(app), payment_id, amount, key, "test", clock()
        )


def test_refunds_partial_then_the_rest_and_never_more_than_paid(
    shop_app: Flask,
    shopper: FlaskClient,
    sandbox_wallet: SandboxWallet,
    venue: Venue,
    clock: FakeClock,
):
    payment_id = paid(shopper, sandbox_wallet, venue, "10.00")
    (notify,) = sandbox_wallet.take_notifies()
    deliver(shopper, notify)
    first = refund(shop_app, payment_id, 300, "refund-key-0001", clock)
    assert first.state == "SUCCESS"
    with pytest.raises(PaymentError) as too_large:
        refund(shop_app, payment_id, 800, "refund-key-0002", clock)
    assert too_large.value.code == "refund_too_large" and "7.00" in str(too_large.value)
    # The same refund key again: the same refund, not a second one (nor a second posting).
    assert refund(shop_app, payment_id, 300, "refund-key-0001", clock).id == first.id
    with pytest.raises(PaymentError, match="another amount"):
        refund(shop_app, payment_id, 200, "refund-key-0001", clock)
    rest = refund(shop_app, payment_id, 700, "refund-key-0003", clock)
    assert rest.state == "SUCCESS"
    payment = one(shop_app, payment_id)
    assert (payment.state, payment.refunded) == (CLOSED, 1000)
    with pytest.raises(PaymentError) as nothing_left:
        refund(shop_app, payment_id, 1, "refund-key-0004", clock)
    assert nothing_left.value.code == "refund_too_large"
    assert balances(shop_app)[ledger.WALLET_CLEARING] == 0
    assert balances(shop_app)[ledger.refunds(venue.merchant_id)] == 1000
    assert len(postings(shop_app)) == 3  # one capture, two refunds
    # The wallet agrees: nothing left to refund there either.
    notifies = sandbox_wallet.take_notifies()
    assert [n["trade_status"] for n in notifies] == [SUCCESS, CLOSED]


def test_an_unpaid_payment_cannot_be_refunded(
    shop_app: Flask, shopper: FlaskClient, venue: Venue, clock: FakeClock
):
    start = start_payment(shopper, venue.id, "4.00")
    assert start.status_code == 303
    payment = one(shop_app)
    with pytest.raises(PaymentError) as refused:
        refund(shop_app, payment.id, 400, "refund-unpaid-01", clock)
    assert refused.value.code == "not_paid"


@pytest.mark.parametrize(
    ("amount", "subject", "message"),
    [
        ("0", "Lunch", "0.01"),
        ("-5", "Lunch", "0.01"),
        ("1.234", "Lunch", "0.01"),
        ("abc", "Lunch", "0.01"),
        ("99999999", "Lunch", "0.01"),
        ("5.00", "   ", "what the payment is for"),
    ],
)
def test_a_bad_pay_form_is_refused_and_stores_nothing(
    shop_app: Flask, shopper: FlaskClient, venue: Venue, amount: str, subject: str, message: str
):
    answer = start_payment(shopper, venue.id, amount, subject)
    assert answer.status_code == 400 and message in answer.get_data(as_text=True)
    with cloud_db.session(shop_app) as db:
        assert db.scalar(select(func.count()).select_from(Payment)) == 0


def test_another_shoppers_payment_is_not_shown(
    shop_app: Flask,
    shopper: FlaskClient,
    sandbox_wallet: SandboxWallet,
    venue: Venue,
    app: Flask,
):
    start = start_payment(shopper, venue.id, "2.00")
    assert start.status_code == 303
    payment = one(shop_app)
    other = app.test_client()
    assert sign_in(other, sandbox_wallet, "bob").status_code == 303
    assert get(other, f"/plaza/payments/{payment.id}").status_code == 404
    assert get(shopper, f"/plaza/payments/{payment.id}").status_code == 200


def test_paying_needs_a_signed_in_shopper_and_the_forms_token(
    shop_app: Flask, client: FlaskClient, venue: Venue, sandbox_wallet: SandboxWallet
):
    answer = get(client, f"/plaza/v/{venue.id}/pay")
    assert answer.status_code == 303 and "/plaza/signin?next=" in answer.location
    assert sign_in(client, sandbox_wallet).status_code == 303
    forged = client.post(
        f"/plaza/v/{venue.id}/pay",
        data={"amount": "5.00", "subject": "x", "key": "forged-key-0001"},
        base_url=CLOUD,
    )
    assert forged.status_code == 400
    assert get(client, "/plaza/v/ven_0000000000000000/pay").status_code == 404


def test_the_cli_reconciles(
    shop_app: Flask,
    shopper: FlaskClient,
    sandbox_wallet: SandboxWallet,
    venue: Venue,
    clock: FakeClock,
    capsys: Any,
    monkeypatch: pytest.MonkeyPatch,
):
    from cloud import cli

    payment_id = paid(shopper, sandbox_wallet, venue, "6.00")
    sandbox_wallet.take_notifies()
    monkeypatch.setattr(cli, "_app", lambda _args: shop_app)
    clock.advance(settlement.RECONCILE_AFTER + 1)
    assert cli.main(["reconcile-payments"]) == 0
    assert '"paid": 1' in capsys.readouterr().out
    assert one(shop_app, payment_id).state == SUCCESS


def test_the_same_notify_delivered_eight_times_at_once_books_once(
    shop_app: Flask,
    shopper: FlaskClient,
    sandbox_wallet: SandboxWallet,
    venue: Venue,
    db_url: str,
):
    """Two instances behind a load balancer may get the wallet's retries at the same moment.
    On PostgreSQL every one answers `success` (the row lock serializes them); SQLite may ask
    the wallet to come back (its one writer refuses a stale snapshot), and books once too."""
    import threading

    payment_id = paid(shopper, sandbox_wallet, venue, "7.00")
    (notify,) = sandbox_wallet.take_notifies()
    answers: list[str] = []
    barrier = threading.Barrier(8)

    def deliver_once() -> None:
        client = shop_app.test_client()
        barrier.wait()
        try:
            answers.append(deliver(client, notify).get_data(as_text=True))
        except Exception as exc:  # SQLite: "database is locked", the wallet would retry
            answers.append(type(exc).__name__)

    threads = [threading.Thread(target=deliver_once) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if db_url.startswith("postgresql"):
        assert answers == ["success"] * 8
    else:
        assert "success" in answers
    assert postings(shop_app) == [f"payment:{payment_id}:captured"]
    assert one(shop_app, payment_id).state == SUCCESS


def test_two_refunds_at_once_never_exceed_the_payment(
    shop_app: Flask,
    shopper: FlaskClient,
    sandbox_wallet: SandboxWallet,
    venue: Venue,
    clock: FakeClock,
):
    """Two staff members refund 6.00 of a 10.00 payment at the same moment: one refund goes
    through, the other is refused (PostgreSQL: the payment row is locked while a refund is
    reserved; SQLite: its one writer refuses the second, stale, transaction)."""
    import threading

    payment_id = paid(shopper, sandbox_wallet, venue, "10.00")
    (notify,) = sandbox_wallet.take_notifies()
    deliver(shopper, notify)
    outcomes: list[str] = []
    barrier = threading.Barrier(2)

    def refund_six(key: str) -> None:
        barrier.wait()
        try:
            outcomes.append(refund(shop_app, payment_id, 600, key, clock).state)
        except PaymentError as exc:
            outcomes.append(exc.code)
        except Exception as exc:  # SQLite: "database is locked"
            outcomes.append(type(exc).__name__)

    threads = [threading.Thread(target=refund_six, args=(f"race-key-000{n}",)) for n in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(outcomes) == 2 and outcomes.count("SUCCESS") == 1, outcomes
    payment = one(shop_app, payment_id)
    assert (payment.refunded, payment.state) == (600, SUCCESS)
    assert balances(shop_app)[ledger.WALLET_CLEARING] == 400


def test_a_refund_whose_answer_was_lost_is_settled_by_reconcile_once(
    shop_app: Flask,
    shopper: FlaskClient,
    sandbox_wallet: SandboxWallet,
    venue: Venue,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
):
    """The refund reached the wallet but its answer never came back: the refund stays pending
    (holding its amount), and reconcile sends it again under the same request number, which
    the wallet answers without refunding twice. Booked once."""
    from cloud.o2o.trade_client import TradeClient, TradeError

    payment_id = paid(shopper, sandbox_wallet, venue, "10.00")
    (notify,) = sandbox_wallet.take_notifies()
    deliver(shopper, notify)
    real_refund = TradeClient.refund

    def lost_answer(self: TradeClient, *args: Any) -> dict:
        real_refund(self, *args)  # the wallet does it...
        raise TradeError("the wallet is unreachable", unreachable=True)  # ...we never hear

    monkeypatch.setattr(TradeClient, "refund", lost_answer)
    with pytest.raises(PaymentError) as unreachable:
        refund(shop_app, payment_id, 400, "refund-lost-0001", clock)
    assert unreachable.value.code == "wallet_unreachable"
    with pytest.raises(PaymentError) as held:  # the pending one still counts
        refund(shop_app, payment_id, 700, "refund-lost-0002", clock)
    assert held.value.code == "refund_too_large"
    monkeypatch.undo()
    assert [n["refund_fee"] for n in sandbox_wallet.take_notifies()] == ["4.00"]
    with cloud_db.session(shop_app) as db:
        clock.advance(settlement.RECONCILE_AFTER + 1)
        assert settlement.reconcile(db, settings.trade_client(shop_app), clock()).refunds == 1
        assert settlement.reconcile(db, settings.trade_client(shop_app), clock()).refunds == 0
        (row,) = db.scalars(select(Refund)).all()
    assert row.state == "SUCCESS"
    assert one(shop_app, payment_id).refunded == 400
    assert sandbox_wallet.take_notifies() == []  # the wallet refunded nothing more
    assert len(postings(shop_app)) == 2


def test_a_refund_hook_runs_once_per_refund_in_its_transaction(
    shop_app: Flask,
    shopper: FlaskClient,
    sandbox_wallet: SandboxWallet,
    venue: Venue,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
):
    """What a refund undoes elsewhere (a voucher used on the payment) hangs on REFUND_HOOKS:
    called once per refund, however often the refund is asked for."""
    from cloud.o2o import payments

    calls: list[tuple[str, int, int]] = []
    monkeypatch.setattr(
        payments,
        "REFUND_HOOKS",
        [lambda _db, payment, rfd, _at: calls.append((payment.id, rfd.amount, payment.refunded))],
    )
    payment_id = paid(shopper, sandbox_wallet, venue, "9.00")
    (notify,) = sandbox_wallet.take_notifies()
    deliver(shopper, notify)
    refund(shop_app, payment_id, 250, "refund-hook-0001", clock)
    refund(shop_app, payment_id, 250, "refund-hook-0001", clock)
    assert calls == [(payment_id, 250, 250)]
