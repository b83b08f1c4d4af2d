"""The sandbox wallet's trade API, in the Alipay open-platform dialect.

Gateway methods (signed requests, signed answers, refusals in Alipay's words, all through
lab.wallet.alipay): `alipay.trade.create`, `alipay.trade.query`, `alipay.trade.refund`,
`alipay.trade.close`; and the two the merchant sends the shopper's browser to with a signed
URL, `alipay.trade.wap.pay` / `alipay.trade.page.pay`, which lead to the cashier page where
the shopper approves the payment (signing in to the wallet if needed).

States: WAIT_BUYER_PAY -> TRADE_SUCCESS (paid) -> TRADE_CLOSED (fully refunded), or
WAIT_BUYER_PAY -> TRADE_CLOSED (closed unpaid). Every change is told to the merchant's
`notify_url` by an asynchronous notify: a form POST signed RSA2 with the wallet's key over the
sorted parameters without `sign` and `sign_type`, retried until the merchant answers `success`
(a few times here; Alipay keeps trying for a day). The `notifier` is injectable, so tests can
deliver notifies late, twice or out of order, as the real platform may.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlencode, urlsplit

import requests
from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    redirect,
    render_template_string,
    request,
)

from lab.wallet import alipay, consent
from lab.wallet.alipay import AlipayState, Refusal, biz_content, invalid, missing
from lab.wallet.settings import WalletAccount
from plaza.wallet import rsa2
from plaza.wallet.alipay import SHANGHAI, SUCCESS, TIMESTAMP_FORMAT

log = logging.getLogger("lab.wallet.trade")

WAIT, PAID, CLOSED = "WAIT_BUYER_PAY", "TRADE_SUCCESS", "TRADE_CLOSED"
AMOUNT = re.compile(r"(0|[1-9][0-9]{0,9})(\.[0-9]{1,2})?")
OUT_NO = re.compile(r"[A-Za-z0-9_]{1,64}")
MAX_FEN = 100_000_000 * 100  # Alipay's ceiling: 100,000,000.00 yuan
CASHIER = "/cashier/"
NOTIFY_ATTEMPTS = (0.0, 1.0, 4.0)  # delays before each delivery attempt

bp = Blueprint("trade", __name__)

Notifier = Callable[[str, dict[str, str]], None]


def business(sub: str, sub_msg: str) -> Refusal:
    return Refusal("40004", "Business Failed", sub, sub_msg)


def fen(text: object, name: str) -> int:
    """An amount in yuan ("12.34") as fen; refused unless plain, positive and in range."""
    if not isinstance(text, str | int | float) or isinstance(text, bool):
        raise invalid("isv.invalid-parameter", f"{name} is not an amount")
    value = str(text)
    if not AMOUNT.fullmatch(value):
        raise invalid("isv.invalid-parameter", f"{name} is not an amount in yuan")
    whole, _, cents = value.partition(".")
    amount = int(whole) * 100 + int((cents + "00")[:2])
    if not 0 < amount <= MAX_FEN:
        raise invalid("isv.invalid-parameter", f"{name} is out of range")
    return amount


def yuan(amount: int) -> str:
    return f"{amount // 100}.{amount % 100:02d}"


def seller_id(app_id: str) -> str:
    """The merchant account (PID) behind an app: fixed per app_id, 2088 + 12 digits."""
    digits = int(hashlib.sha256(f"plaza-sandbox-seller|{app_id}".encode()).hexdigest(), 16)
    return f"2088{digits % 10**12:012d}"


def stamp(at: float | None) -> str:
    if at is None:
        return ""
    return dt.datetime.fromtimestamp(at, SHANGHAI).strftime(TIMESTAMP_FORMAT)


@dataclass
class Trade:
    app_id: str
    out_trade_no: str
    trade_no: str
    amount: int
    subject: str
    notify_url: str
    created_at: float
    status: str = WAIT
    return_url: str = ""
    buyer_id: str = ""
    paid_at: float | None = None
    closed_at: float | None = None
    refunds: dict[str, int] = field(default_factory=dict)  # out_request_no -> fen
    refunded_at: float | None = None

    @property
    def refunded(self) -> int:
        return sum(self.refunds.values())


@dataclass
class TradeState:
    notifier: Notifier
    trades: dict[tuple[str, str], Trade] = field(default_factory=dict)
    by_trade_no: dict[str, Trade] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


def trades() -> TradeState:
    return current_app.extensions["wallet_trade"]


def init(app: Flask, notifier: Notifier | None = None) -> None:
    """Serve the trade API on the Alipay gateway (lab.wallet.alipay.init first)."""
    app.extensions["wallet_trade"] = TradeState(notifier or post_in_background)
    for name, handler in (
        ("alipay.trade.create", create),
        ("alipay.trade.query", query),
        ("alipay.trade.refund", refund),
        ("alipay.trade.close", close),
    ):
        alipay.add_method(app, name, handler)
    alipay.add_page(app, "alipay.trade.wap.pay", pay_page)
    alipay.add_page(app, "alipay.trade.page.pay", pay_page)
    app.register_blueprint(bp)


# -- notifies ----------------------------------------------------------------------------------


def post_in_background(url: str, params: dict[str, str]) -> None:
    """Deliver a notify as Alipay does: a form POST, again until the answer is `success`."""

    def deliver() -> None:
        for delay in NOTIFY_ATTEMPTS:
            time.sleep(delay)
            try:
                answer = requests.post(url, data=params, timeout=5, allow_redirects=False)
                if answer.status_code == 200 and answer.text.strip() == "success":
                    return
            except requests.RequestException as exc:
                log.info("notify to %s failed: %s", urlsplit(url).netloc, exc)
        log.warning("notify %s given up", params.get("notify_id"))

    threading.Thread(target=deliver, daemon=True).start()


def notify(st: AlipayState, trade: Trade, out_biz_no: str = "") -> None:
    """Tell the merchant's notify_url what just happened to `trade`, signed by the wallet."""
    if not trade.notify_url:
        return
    params = {
        "notify_time": stamp(st.clock()),
        "notify_type": "trade_status_sync",
        "notify_id": secrets.token_hex(16),
        "app_id": trade.app_id,
        "charset": "utf-8",
        "version": "1.0",
        "sign_type": "RSA2",
        "trade_no": trade.trade_no,
        "out_trade_no": trade.out_trade_no,
        "out_biz_no": out_biz_no,
        "buyer_id": trade.buyer_id,
        "seller_id": seller_id(trade.app_id),
        "trade_status": trade.status,
        "total_amount": yuan(trade.amount),
        "receipt_amount": yuan(trade.amount) if trade.paid_at else "",
        "refund_fee": yuan(trade.refunded) if trade.refunds else "",
        "subject": trade.subject,
        "gmt_create": stamp(trade.created_at),
        "gmt_payment": stamp(trade.paid_at),
        "gmt_refund": stamp(trade.refunded_at),
        "gmt_close": stamp(trade.closed_at),
    }
    params = {k: v for k, v in params.items() if v}
    params["sign"] = rsa2.sign_notify(params, st.wallet_key)
    trades().notifier(trade.notify_url, params)


# -- the methods -------------------------------------------------------------------------------


def _open_trade(st: AlipayState, params: dict[str, str]) -> Trade:
    """The trade `biz_content` describes: created, or the same one again (same out_trade_no,
    amount and subject: a retried create is not a second trade)."""
    biz = biz_content(params)
    out_no = biz.get("out_trade_no")
    if not isinstance(out_no, str) or not OUT_NO.fullmatch(out_no):
        raise missing("out_trade_no", "isv.missing-out-trade-no")
    amount = fen(biz.get("total_amount"), "total_amount")
    subject = biz.get("subject")
    if not isinstance(subject, str) or not subject.strip() or len(subject) > 256:
        raise missing("subject", "isv.missing-subject")
    seller = biz.get("seller_id")
    if seller not in (None, "", seller_id(params["app_id"])):
        raise business("ACQ.SELLER_NOT_EXIST", "seller_id is not this app's merchant")
    notify_url = params.get("notify_url", "")
    if notify_url and urlsplit(notify_url).scheme not in ("https", "http"):
        raise invalid("isv.invalid-notify-url", "notify_url must be http(s)")
    state = trades()
    with state.lock:
        trade = state.trades.get((params["app_id"], out_no))
        if trade is not None:
            if (trade.amount, trade.subject) != (amount, subject):
                raise business("ACQ.CONTEXT_INCONSISTENT", "out_trade_no reused for another trade")
            if trade.status == CLOSED:
                raise business("ACQ.TRADE_HAS_CLOSE", "the trade is closed")
            return trade
        trade_no = dt.datetime.fromtimestamp(st.clock(), SHANGHAI).strftime("%Y%m%d")
        trade_no += secrets.token_hex(10)
        trade = Trade(params["app_id"], out_no, trade_no, amount, subject, notify_url, st.clock())
        state.trades[params["app_id"], out_no] = trade
        state.by_trade_no[trade_no] = trade
        return trade


def _find(params: dict[str, str]) -> Trade:
    biz = biz_content(params)
    state = trades()
    trade = None
    if biz.get("trade_no"):
        trade = state.by_trade_no.get(str(biz["trade_no"]))
    elif biz.get("out_trade_no"):
        trade = state.trades.get((params["app_id"], str(biz["out_trade_no"])))
    else:
        raise missing("out_trade_no", "isv.missing-out-trade-no")
    if trade is None or trade.app_id != params["app_id"]:
        raise business("ACQ.TRADE_NOT_EXIST", "no such trade")
    return trade


def _answer(trade: Trade, **extra: str) -> dict:
    return {
        "code": SUCCESS,
        "msg": "Success",
        "trade_no": trade.trade_no,
        "out_trade_no": trade.out_trade_no,
        **extra,
    }


def create(st: AlipayState, params: dict[str, str]) -> dict:
    """alipay.trade.create: a trade waiting for the buyer."""
    return _answer(_open_trade(st, params))


def query(st: AlipayState, params: dict[str, str]) -> dict:
    """alipay.trade.query: the trade's status as the wallet knows it."""
    trade = _find(params)
    extra = {"trade_status": trade.status, "total_amount": yuan(trade.amount)}
    if trade.buyer_id:
        extra["buyer_user_id"] = trade.buyer_id
    if trade.paid_at is not None:
        extra["send_pay_date"] = stamp(trade.paid_at)
        extra["receipt_amount"] = yuan(trade.amount)
    return _answer(trade, **extra)


def close(st: AlipayState, params: dict[str, str]) -> dict:
    """alipay.trade.close: an unpaid trade is closed (a paid one is refunded instead)."""
    trade = _find(params)
    with trades().lock:
        if trade.status != WAIT:
            raise business("ACQ.TRADE_STATUS_ERROR", f"the trade is {trade.status}")
        trade.status, trade.closed_at = CLOSED, st.clock()
    notify(st, trade)
    return _answer(trade)


def refund(st: AlipayState, params: dict[str, str]) -> dict:
    """alipay.trade.refund: part or all of a paid trade back to the buyer, once per
    out_request_no (the same request again answers the same, with fund_change N)."""
    trade = _find(params)
    biz = biz_content(params)
    amount = fen(biz.get("refund_amount"), "refund_amount")
    request_no = str(biz.get("out_request_no") or trade.out_trade_no)
    if not OUT_NO.fullmatch(request_no):
        raise invalid("isv.invalid-parameter", "out_request_no is malformed")
    with trades().lock:
        done = trade.refunds.get(request_no)
        if done is not None:
            if done != amount:
                raise business("ACQ.CONTEXT_INCONSISTENT", "out_request_no reused")
            change = "N"
        elif trade.status != PAID:
            raise business("ACQ.TRADE_STATUS_ERROR", f"the trade is {trade.status}")
        elif trade.refunded + amount > trade.amount:
            raise business("ACQ.REFUND_AMT_NOT_EQUAL_TOTAL", "more than is left to refund")
        else:
            trade.refunds[request_no] = amount
            trade.refunded_at = st.clock()
            if trade.refunded == trade.amount:
                trade.status, trade.closed_at = CLOSED, st.clock()
            change = "Y"
    if change == "Y":
        notify(st, trade, out_biz_no=request_no)
    return _answer(
        trade,
        buyer_user_id=trade.buyer_id,
        fund_change=change,
        refund_fee=yuan(trade.refunded),
        gmt_refund_pay=stamp(trade.refunded_at),
    )


# -- the cashier -------------------------------------------------------------------------------


def pay_page(st: AlipayState, params: dict[str, str]) -> Response:
    """alipay.trade.wap.pay / page.pay: the browser arrives with the merchant's signed URL; the
    trade is opened (or found again) and the shopper is sent to its cashier page."""
    try:
        trade = _open_trade(st, params)
    except Refusal as refusal:
        return consent.error_page(f"This payment cannot be made: {refusal.body['sub_msg']}.")
    return_url = params.get("return_url", "")
    if return_url and urlsplit(return_url).scheme != "https":
        return consent.error_page("This payment request is invalid: return_url must be https.")
    with trades().lock:
        trade.return_url = return_url or trade.return_url
    return consent.secure(redirect(CASHIER + trade.trade_no, code=302))


CASHIER_PAGE = (
    consent.HEAD
    + consent.ERROR
    + """<p><strong>{{ app_name }}</strong> asks you to pay</p>
<p class="amount"><strong>¥{{ amount }}</strong></p><p>for {{ subject }}</p>
"""
    + consent.FORM
    + consent.ACCOUNT
    + """<button class="approve" name="decision" value="approve">Pay ¥{{ amount }}</button>
<button class="deny" name="decision" value="deny">Cancel</button>
"""
    + consent.SWITCH
    + """</form></div></main></body></html>
"""
)


def _cashier(trade: Trade, app_name: str) -> consent.Render:
    """The cashier page for `trade`, posting back to itself."""

    def show(
        account: WalletAccount | None, error: str | None = None, status: int = 200
    ) -> Response:
        body = render_template_string(
            CASHIER_PAGE,
            app_name=app_name,
            amount=yuan(trade.amount),
            subject=trade.subject,
            account=account,
            error=error,
            action=request.path,
            csrf=consent.csrf_token(),
            csrf_field=consent.CSRF_FIELD,
        )
        return consent.secure(
            Response(body, status=status, content_type="text/html; charset=utf-8")
        )

    return show


@bp.route(CASHIER + "<trade_no>", methods=["GET", "POST"])
def cashier(trade_no: str) -> Response:
    st = alipay.state()
    trade = trades().by_trade_no.get(trade_no)
    if trade is None:
        return consent.error_page("No such payment.", 404)
    app = st.settings.alipay_app(trade.app_id)
    app_name = app.name if app else trade.app_id
    if trade.status != WAIT:
        return consent.error_page("This payment is already paid or closed.", 409)
    show = _cashier(trade, app_name)
    if request.method == "GET":
        return show(consent.current_account(st.settings))
    decision = consent.decide(st.settings, app_name, render=show)
    if isinstance(decision, Response):
        return decision
    if not decision.approved or decision.account is None:
        return _back(st, trade, paid=False)
    with trades().lock:
        if trade.status != WAIT:
            return consent.error_page("This payment is already paid or closed.", 409)
        trade.status, trade.paid_at = PAID, st.clock()
        trade.buyer_id = decision.account.user_id
    notify(st, trade)
    return _back(st, trade, paid=True)


def _back(st: AlipayState, trade: Trade, paid: bool) -> Response:
    """To the merchant's return_url: after paying, with the signed synchronous return (which a
    merchant may show but must not book on: the notify or a query is the word that counts)."""
    if not trade.return_url:
        message = "Paid. You can go back to the merchant." if paid else "Cancelled."
        return consent.error_page(message, 200)
    query = {"out_trade_no": trade.out_trade_no}
    if paid:
        query.update(
            method="alipay.trade.wap.pay.return",
            app_id=trade.app_id,
            trade_no=trade.trade_no,
            total_amount=yuan(trade.amount),
            seller_id=seller_id(trade.app_id),
            timestamp=stamp(st.clock()),
            charset="utf-8",
            sign_type="RSA2",
        )
        query["sign"] = rsa2.sign_notify(query, st.wallet_key)
    sep = "&" if "?" in trade.return_url else "?"
    return consent.secure(redirect(f"{trade.return_url}{sep}{urlencode(query)}", code=302))
