"""The sandbox wallet's trade API (lab/wallet/trade.py) in the Alipay dialect, through its
Flask app: signed requests and answers, the states, the refusals in Alipay's words, the
cashier page, and notifies signed as Alipay signs them (captured, not sent)."""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit

import pytest
from flask.testing import FlaskClient

from lab.wallet.keys import provision
from lab.wallet.server import create_app
from lab.wallet.trade import post_in_background, seller_id
from plaza.wallet import LoginError, rsa2
from plaza.wallet.alipay import AlipayProvider, parse_response
from plaza.wallet.config import WalletConfig

NOTIFY_URL = "https://cloud.plaza.test/plaza/notify/alipay"
RETURN_URL = "https://cloud.plaza.test/plaza/payments/pay_1"
CSRF_RE = re.compile(r'name="csrf_token"\s+value="([^"]+)"')


class Trading:
    """The wallet app, the merchant app's signer, and the notifies the wallet made."""

    def __init__(self, root: Path) -> None:
        material = provision(root, issuer="https://wallet.test")
        self.app = create_app(json.loads(Path(material["settings"]).read_text()))
        self.notifies: list[dict[str, str]] = []
        self.app.extensions["wallet_trade"].notifier = lambda _url, p: self.notifies.append(p)
        self.merchant = AlipayProvider(WalletConfig(**{**material["alipay"], "ca_file": ""}))
        self.wallet_key = rsa2.load_public_key(material["alipay"]["wallet_public_key_file"])
        self.client: FlaskClient = self.app.test_client()
        self.seller = material["trade"]["seller_id"]

    def call(self, method: str, biz: dict[str, Any], **params: str) -> dict[str, Any]:
        body = self.merchant.request_params(method, params, biz)
        answer = self.client.post("/gateway.do", data=body, base_url="https://wallet.test")
        return parse_response(answer.get_data(as_text=True), method, self.wallet_key)

    def refused(self, method: str, biz: dict[str, Any], **params: str) -> str:
        with pytest.raises(LoginError) as refusal:
            self.call(method, biz, **params)
        return refusal.value.code

    def pay_url(self, out_no: str, amount: str) -> str:
        biz = {"out_trade_no": out_no, "total_amount": amount, "subject": "Lunch"}
        params = self.merchant.request_params(
            "alipay.trade.wap.pay", {"notify_url": NOTIFY_URL, "return_url": RETURN_URL}, biz
        )
        return "/gateway.do?" + urlencode(params)

    def pay(self, out_no: str, amount: str, pin: str = "1234") -> Any:
        """Through the cashier as alice; the wallet's last answer."""
        to_cashier = self.client.get(self.pay_url(out_no, amount), base_url="https://wallet.test")
        assert to_cashier.status_code == 302, to_cashier.get_data(as_text=True)
        cashier = urlsplit(to_cashier.location).path
        page = self.client.get(cashier, base_url="https://wallet.test")
        assert page.status_code == 200 and "Pay ¥" in page.get_data(as_text=True)
        token = CSRF_RE.search(page.get_data(as_text=True))
        assert token
        form = {"csrf_token": token.group(1), "decision": "approve", "login": "alice", "pin": pin}
        return self.client.post(cashier, data=form, base_url="https://wallet.test")


@pytest.fixture
def trading(tmp_path: Path) -> Trading:
    return Trading(tmp_path)


def order(out_no: str, amount: str = "10.00", **more: str) -> dict[str, str]:
    return {"out_trade_no": out_no, "total_amount": amount, "subject": "Lunch", **more}


def test_a_trade_is_created_once_paid_at_the_cashier_and_notified_signed(trading: Trading):
    created = trading.call("alipay.trade.create", order("o1"), notify_url=NOTIFY_URL)
    again = trading.call("alipay.trade.create", order("o1"), notify_url=NOTIFY_URL)
    assert created["trade_no"] == again["trade_no"]
    assert trading.call("alipay.trade.query", {"out_trade_no": "o1"})["trade_status"] == (
        "WAIT_BUYER_PAY"
    )
    back = trading.pay("o1", "10.00")
    assert back.status_code == 302 and back.location.startswith(RETURN_URL + "?")
    sync = dict(parse_qsl(urlsplit(back.location).query))
    assert rsa2.verify_notify(sync, trading.wallet_key) and sync["total_amount"] == "10.00"
    (notify,) = trading.notifies
    assert notify["trade_status"] == "TRADE_SUCCESS" and notify["seller_id"] == trading.seller
    assert rsa2.verify_notify(notify, trading.wallet_key)
    assert not rsa2.verify_notify({**notify, "total_amount": "0.01"}, trading.wallet_key)
    # The notify rule leaves sign_type out of the signed text; a request's keeps it.
    assert not rsa2.verify(notify, notify["sign"], trading.wallet_key)
    query = trading.call("alipay.trade.query", {"out_trade_no": "o1"})
    assert (query["trade_status"], query["buyer_user_id"]) == ("TRADE_SUCCESS", "2088000000000001")
    # Paid once: the cashier will not take it again.
    again_page = trading.client.get(
        urlsplit(trading.client.get(trading.pay_url("o1", "10.00")).location).path
    )
    assert again_page.status_code == 409


def test_refunds_partial_once_per_request_and_never_more_than_paid(trading: Trading):
    trading.call("alipay.trade.create", order("o2"), notify_url=NOTIFY_URL)
    code = trading.refused("alipay.trade.refund", {"out_trade_no": "o2", "refund_amount": "1"})
    assert code == "ACQ.TRADE_STATUS_ERROR"  # not paid yet
    trading.pay("o2", "10.00")
    refund = {"out_trade_no": "o2", "refund_amount": "3.00", "out_request_no": "r1"}
    first = trading.call("alipay.trade.refund", refund)
    assert (first["fund_change"], first["refund_fee"]) == ("Y", "3.00")
    same = trading.call("alipay.trade.refund", refund)
    assert (same["fund_change"], same["refund_fee"]) == ("N", "3.00")
    too_much = {**refund, "refund_amount": "7.01", "out_request_no": "r2"}
    assert trading.refused("alipay.trade.refund", too_much) == "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL"
    reused = {**refund, "refund_amount": "1.00"}
    assert trading.refused("alipay.trade.refund", reused) == "ACQ.CONTEXT_INCONSISTENT"
    rest = trading.call("alipay.trade.refund", {**refund, "refund_amount": "7.00",
                                                "out_request_no": "r3"})  # fmt: skip
    assert rest["refund_fee"] == "10.00"
    assert trading.call("alipay.trade.query", {"out_trade_no": "o2"})["trade_status"] == (
        "TRADE_CLOSED"
    )
    statuses = [(n["trade_status"], n.get("refund_fee")) for n in trading.notifies]
    assert statuses == [("TRADE_SUCCESS", None), ("TRADE_SUCCESS", "3.00"),
                        ("TRADE_CLOSED", "10.00")]  # fmt: skip


def test_close_and_the_other_refusals(trading: Trading):
    trading.call("alipay.trade.create", order("o3"), notify_url=NOTIFY_URL)
    trading.call("alipay.trade.close", {"out_trade_no": "o3"})
    assert trading.notifies[-1]["trade_status"] == "TRADE_CLOSED"
    assert trading.refused("alipay.trade.close", {"out_trade_no": "o3"}) == (
        "ACQ.TRADE_STATUS_ERROR"
    )
    assert trading.refused("alipay.trade.create", order("o3")) == "ACQ.TRADE_HAS_CLOSE"
    trading.call("alipay.trade.create", order("o4"))
    assert trading.refused("alipay.trade.create", order("o4", "11.00")) == (
        "ACQ.CONTEXT_INCONSISTENT"
    )
    assert trading.refused("alipay.trade.query", {"out_trade_no": "nope"}) == (
        "ACQ.TRADE_NOT_EXIST"
    )
    seller = order("o5", seller_id="2088999999999999")
    assert trading.refused("alipay.trade.create", seller) == "ACQ.SELLER_NOT_EXIST"
    assert trading.call("alipay.trade.create", order("o6", seller_id=seller_id(
        trading.merchant.app_id)))["out_trade_no"] == "o6"  # fmt: skip
    for amount in ("0", "0.00", "-1", "1.234", "1e3", "", "100000000.01"):
        assert trading.refused("alipay.trade.create", order("o7", amount)) == (
            "isv.invalid-parameter"
        ), amount


def test_the_cashier_refuses_a_wrong_pin_and_an_unsigned_pay_url(trading: Trading):
    assert trading.pay("o8", "2.00", pin="0000").status_code == 403
    assert trading.call("alipay.trade.query", {"out_trade_no": "o8"})["trade_status"] == (
        "WAIT_BUYER_PAY"
    )
    params = dict(parse_qsl(urlsplit(trading.pay_url("o9", "2.00")).query))
    params["biz_content"] = params["biz_content"].replace("2.00", "0.01")
    forged = trading.client.get("/gateway.do?" + urlencode(params))
    assert "isv.invalid-signature" in forged.get_data(as_text=True)
    assert trading.refused("alipay.trade.query", {"out_trade_no": "o9"}) == "ACQ.TRADE_NOT_EXIST"


def test_the_wallet_posts_a_notify_again_until_the_merchant_says_success():
    """The default notifier: a form POST, in the background, repeated after a refusal."""
    bodies: list[dict[str, list[str]]] = []

    class Merchant(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers["Content-Length"])
            bodies.append(parse_qs(self.rfile.read(length).decode()))
            answer = b"fail" if len(bodies) == 1 else b"success"
            self.send_response(200)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Merchant)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/plaza/notify/alipay"
        post_in_background(url, {"notify_id": "n1", "trade_status": "TRADE_SUCCESS"})
        deadline = time.monotonic() + 10
        while len(bodies) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # no third attempt after `success`
    finally:
        server.shutdown()
        server.server_close()
    assert [b["notify_id"] for b in bodies] == [["n1"], ["n1"]]
