"""The shop's two languages (English, Simplified Chinese) and which one a shopper reads.

As on the portal (portal/i18n.py, which the cloud may not import): the phone's
`Accept-Language` decides, a `?lang=` link overrides it for the browser session, and a key
missing in one language falls back to English, so a page never shows a bare key.
"""

from __future__ import annotations

from flask import g, request, session

from plaza.texts import EN, LANGUAGES, ZH, canonical_tag

SESSION_KEY = "lang"

MESSAGES: dict[str, dict[str, str]] = {
    EN: {
        "lang.switch": "中文",
        "title": "Plaza",
        "home.hello": "Hello, {name}",
        "home.signed_out": "Sign in with your wallet to pay, keep vouchers and book.",
        "home.payments": "Your payments",
        "home.none": "No payments yet.",
        "home.bookings": "Your bookings",
        "signin.title": "Sign in",
        "signin.button": "Sign in with wallet",
        "signin.unavailable": "Sign-in is not available right now. Please try again later.",
        "signin.failed": "The sign-in did not complete. Please try again.",
        "signout": "Sign out",
        "pay.title": "Pay at {venue}",
        "pay.amount": "Amount (¥)",
        "pay.subject": "What for",
        "pay.button": "Pay with wallet",
        "pay.bad_amount": "Enter an amount between 0.01 and 50000.00.",
        "pay.bad_subject": "Say what the payment is for.",
        "pay.key_reused": "This form was already used for another payment. Please start again.",
        "pay.unavailable": "Payments are not available right now. Please try again later.",
        "payment.title": "Payment",
        "state.WAIT_BUYER_PAY": "Waiting for payment",
        "state.TRADE_SUCCESS": "Paid",
        "state.TRADE_FINISHED": "Paid",
        "state.TRADE_CLOSED": "Closed",
        "payment.refunded": "Refunded: ¥{amount}",
        "payment.pay_again": "Go to the wallet to pay",
        "back": "Back",
    },
    ZH: {
        "lang.switch": "English",
        "title": "广场",
        "home.hello": "{name}，您好",
        "home.signed_out": "用钱包登录，即可付款、领取优惠券和预订。",
        "home.payments": "您的付款",
        "home.none": "暂无付款。",
        "home.bookings": "您的预订",
        "signin.title": "登录",
        "signin.button": "用钱包登录",
        "signin.unavailable": "暂时无法登录，请稍后再试。",
        "signin.failed": "登录未完成，请重试。",
        "signout": "退出",
        "pay.title": "在{venue}付款",
        "pay.amount": "金额（元）",
        "pay.subject": "付款内容",
        "pay.button": "用钱包付款",
        "pay.bad_amount": "请输入 0.01 至 50000.00 之间的金额。",
        "pay.bad_subject": "请填写付款内容。",
        "pay.key_reused": "此表单已用于另一笔付款，请重新开始。",
        "pay.unavailable": "暂时无法付款，请稍后再试。",
        "payment.title": "付款",
        "state.WAIT_BUYER_PAY": "等待付款",
        "state.TRADE_SUCCESS": "已付款",
        "state.TRADE_FINISHED": "已付款",
        "state.TRADE_CLOSED": "已关闭",
        "payment.refunded": "已退款：¥{amount}",
        "payment.pay_again": "去钱包付款",
        "back": "返回",
    },
}


def language() -> str:
    """This request's language: a `?lang=` choice (kept), the session's, Accept-Language."""
    if "shop_lang" in g:
        return g.shop_lang
    chosen = canonical_tag(request.args.get("lang"))
    if chosen:
        session[SESSION_KEY] = chosen
    else:
        chosen = canonical_tag(session.get(SESSION_KEY)) or (
            request.accept_languages.best_match(LANGUAGES, default=EN)
        )
        if chosen == "zh":
            chosen = ZH
    g.shop_lang = chosen or EN
    return g.shop_lang


def t(key: str, **values: object) -> str:
    """The sentence `key` in this request's language, with `values` filled in."""
    text = MESSAGES.get(language(), {}).get(key) or MESSAGES[EN].get(key, key)
    return text.format(**values) if values else text
