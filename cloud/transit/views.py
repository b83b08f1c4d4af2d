"""The rider's pages under /plaza/transit: the card (balance, QR, trips), top-up through the
wallet, report lost; and the wallet's notify for top-ups.

In the shop's cookie, CSP and languages (cloud/o2o/shop.py): no script, forms with the CSRF
token. A top-up is a wallet payment (cloud/o2o/payments.py, purpose `transit-topup`) to the
agency's venue (the feed in force names it); the card is credited once the wallet confirms
it, by its notify here or by a query when the rider comes back to the card page, under a
ledger key naming the payment, so a notify repeated or forged adds nothing.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
from zoneinfo import ZoneInfo

import segno
from flask import Blueprint, Response, abort, current_app, redirect, render_template, request
from flask.typing import ResponseReturnValue
from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud.api import now
from cloud.db import get_db
from cloud.o2o import settings, settlement, shop
from cloud.o2o.payments import WAIT, Payment, PaymentError, attach_trade, create_payment
from cloud.o2o.shop_texts import language
from cloud.o2o.shoppers import current_shopper, shopper_required
from cloud.o2o.trade_client import TradeError
from cloud.transit import cards, taps
from cloud.transit.feed import DEFAULT_TIMEZONE
from cloud.transit.models import TransitCard, TransitFeed, TransitTap, TransitTopUp
from cloud.transit.names import names_for
from plaza.csrf import require_csrf

log = logging.getLogger("plaza.cloud.transit")

PREFIX = "/plaza/transit"
NOTIFY = PREFIX + "/notify/alipay"
AMOUNTS = (1000, 2000, 5000, 10000)  # fen offered on the top-up form

bp = Blueprint("transit", __name__, url_prefix=PREFIX, template_folder="templates")
bp.after_request(shop._headers)
bp.context_processor(shop._globals)

TEXTS = {
    "en": {
        "title": "Transit card", "open": "Get a transit card",
        "intro": "A card in your account: show its code to the reader when you board.",
        "balance": "Balance", "owing": "Please top up: the card is refused until it is above zero.",
        "qr": "Show this to the reader", "qr_until": "Valid until {time}. Reload for a new one.",
        "topup": "Top up", "topup_button": "Top up with wallet", "trips": "Trips",
        "no_trips": "No trips yet.", "lost": "Report lost", "lost_done": "The old card is blocked; "
        "this is your new card, with the balance moved to it.",
        "no_feed": "Transit top-ups are not available yet.", "unavailable":
        "Top-ups are not available right now. Please try again later.",
        "bad_amount": "Choose one of the amounts.", "key_reused": "Please start again.",
        "state.charged": "Charged", "state.new": "Being priced", "state.refused": "Not charged",
    },
    "zh-CN": {
        "title": "交通卡", "open": "开通交通卡",
        "intro": "交通卡绑定在您的账户中：上车时向读卡器出示乘车码。",
        "balance": "余额", "owing": "请充值：余额为负时无法乘车。", "qr": "向读卡器出示此码",
        "qr_until": "有效期至 {time}，刷新页面可获取新码。", "topup": "充值",
        "topup_button": "用钱包充值", "trips": "乘车记录", "no_trips": "暂无乘车记录。",
        "lost": "挂失", "lost_done": "旧卡已停用；这是您的新卡，余额已转入。",
        "no_feed": "暂不支持交通卡充值。", "unavailable": "暂时无法充值，请稍后再试。",
        "bad_amount": "请选择充值金额。", "key_reused": "请重新开始。",
        "state.charged": "已扣费", "state.new": "计费中", "state.refused": "未扣费",
    },
}  # fmt: skip


def tt(key: str, **values: object) -> str:
    text = TEXTS.get(language(), {}).get(key) or TEXTS["en"].get(key, key)
    return text.format(**values) if values else text


@bp.context_processor
def _texts() -> dict[str, object]:
    return {"tt": tt, "AMOUNTS": AMOUNTS}


def _card(db: Session) -> TransitCard | None:
    shopper = current_shopper()
    assert shopper is not None
    return cards.card_of(get_db(), shopper.id)


def _settle_waiting(card: TransitCard) -> None:
    """Ask the wallet about this card's top-ups still waiting (the rider is back from the
    cashier, the notify may not have come), then credit whatever is paid."""
    db, t = get_db(), now()
    waiting = db.scalars(
        select(Payment.id)
        .join(TransitTopUp, TransitTopUp.payment_id == Payment.id)
        .where(TransitTopUp.card_id == card.id, Payment.state == WAIT)
        .where(Payment.created_at >= t - 3600)
    ).all()
    for payment_id in waiting:
        try:
            settlement.reconcile_one(db, settings.trade_client(current_app), payment_id, t)
        except (settings.NotConfigured, TradeError) as exc:
            log.info("top-up %s not queried: %s", payment_id, exc)
    cards.credit_paid_topups(db, card.id, t)


def _page(card: TransitCard | None, error: str | None = None, status: int = 200,
          notice: str | None = None) -> ResponseReturnValue:  # fmt: skip
    db, t = get_db(), now()
    context: dict[str, object] = {"card": card, "error": error, "notice": notice}
    if card is not None:
        feed, trips = cards.current_feed(db), taps.history(db, [card.id])
        key, zone = current_app.config["CLOUD_KEY"], _zone(feed)
        code = cards.qr_text(key, card.id, t)
        context.update(
            balance=cards.balance(db, card.id),
            qr=segno.make(code, error="m").svg_inline(scale=4, omitsize=False),
            qr_text=code,
            qr_until=_clock(t + cards.QR_SECONDS, zone, "%Y-%m-%d %H:%M"),
            trips=trips,
            when={trip.id: _clock(trip.tapped_at, zone) for trip in trips},  # the agency's zone
            places=_places(feed, trips),
            form_key=secrets.token_urlsafe(18),
        )
    return render_template("transit/card.html", **context), status


def _clock(at: float, zone: ZoneInfo, form: str = "%H:%M") -> str:
    return dt.datetime.fromtimestamp(at, zone).strftime(form)


def _zone(feed: TransitFeed | None) -> ZoneInfo:
    """The agency's time zone (the feed in force's), in which riders read times."""
    return ZoneInfo(cards.engine_for(feed).feed.timezone if feed else DEFAULT_TIMEZONE)


def _places(feed: TransitFeed | None, trips: list[TransitTap]) -> dict[int, tuple[str, str]]:
    """Each trip's route and stop as the feed in force names them in the page's language;
    the ids where there is no feed or it does not know them."""
    if feed is None:
        return {trip.id: (trip.route_id, trip.stop_id) for trip in trips}
    names, lang = names_for(feed), language()
    return {trip.id: (names.route(trip.route_id, lang), names.stop(trip.stop_id, lang))
            for trip in trips}  # fmt: skip


@bp.get("/")
@shopper_required
def card_page() -> ResponseReturnValue:
    card = _card(get_db())
    if card is not None:
        _settle_waiting(card)
    return _page(card, notice=request.args.get("notice") if request.args.get("notice") else None)


@bp.post("/open")
@shopper_required
def open_card() -> ResponseReturnValue:
    require_csrf()
    shopper = current_shopper()
    assert shopper is not None
    cards.open_card(get_db(), shopper.id, now())
    get_db().commit()
    return redirect(PREFIX + "/", code=303)


@bp.post("/lost")
@shopper_required
def lost() -> ResponseReturnValue:
    require_csrf()
    db = get_db()
    card = _card(db)
    if card is None:
        abort(404)
    cards.report_lost(db, card, now())
    db.commit()
    return redirect(PREFIX + "/?notice=lost_done", code=303)


@bp.post("/topup")
@shopper_required
def topup() -> ResponseReturnValue:
    require_csrf()
    db, t = get_db(), now()
    card = _card(db)
    if card is None:
        abort(404)
    feed = cards.current_feed(db)
    if feed is None:
        return _page(card, "no_feed", 503)
    amount = request.form.get("amount", "")
    if not amount.isdigit() or int(amount) not in AMOUNTS:
        return _page(card, "bad_amount", 400)
    key = request.form.get("key", "")[:64]
    try:
        client = settings.trade_client(current_app)
        payment, made = create_payment(
            db, shopper_id=card.shopper_id, venue_id=feed.venue_id, amount=int(amount),
            subject="Transit card top-up", purpose="transit-topup", idempotency_key=key,
            app_id=client.app_id, seller_id=client.seller_id, at=t,
        )  # fmt: skip
        if made:
            db.add(TransitTopUp(payment_id=payment.id, card_id=card.id, amount=payment.amount))
            db.commit()
        if payment.state != WAIT:
            return redirect(PREFIX + "/", code=303)
        base = settings.public_url(current_app)
        notify_url, return_url = base + NOTIFY, base + PREFIX + "/"
        trade_no = client.create(payment.id, payment.amount, payment.subject, notify_url)
        attach_trade(db, payment, trade_no)
        url = client.pay_url(payment.id, payment.amount, payment.subject, notify_url, return_url)
    except PaymentError as exc:
        return _page(card, exc.code if exc.code in TEXTS["en"] else "bad_amount", 400)
    except (settings.NotConfigured, TradeError) as exc:
        log.warning("top-up could not start: %s", exc)
        return _page(card, "unavailable", 503)
    return redirect(url, code=303)


@bp.post("/notify/alipay")
def notify() -> ResponseReturnValue:
    """The wallet's notify for a top-up: the payment moves forward (settlement checks the
    signature and that it matches), then the card is credited, once."""
    params = {k: v for k, v in request.form.items()}
    db = get_db()
    try:
        payment = settlement.handle_notify(db, settings.trade_client(current_app), params, now())
    except settlement.NotifyError as exc:
        log.warning("transit notify refused: %s", exc)
        return Response("fail", status=exc.status, content_type="text/plain")
    except settings.NotConfigured:
        return Response("fail", status=503, content_type="text/plain")
    cards.credit_topup(db, payment, now())
    db.commit()
    return Response("success", content_type="text/plain")
