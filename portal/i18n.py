"""The portal's two languages: which one a shopper gets, and every sentence in both.

Shoppers here read English or Simplified Chinese. The phone's `Accept-Language` decides, a
`?lang=` link overrides it for the rest of the browser session. A plain dict per language keeps
the strings reviewable side by side without a gettext toolchain; a key missing from one language
falls back to English, so a page never shows a bare key to a shopper.
"""

# Shopper-facing English uses typographic apostrophes (U+2019) on purpose.
# ruff: noqa: RUF001

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from flask import g, has_request_context, request, session

EN = "en"
ZH = "zh-CN"
LANGUAGES = (EN, ZH)
DEFAULT = EN
SESSION_KEY = "lang"  # set by a ?lang= link; wins over Accept-Language
MAX_RANGES = 32  # a header longer than this is not from a phone; ignore the rest

# The `?error=` codes another page may send a shopper back to the splash with. Anything else
# shows `error.unknown`: nothing from the URL is ever put on the page.
ERROR_CODES = frozenset(
    {
        "login_failed",
        "login_cancelled",
        "login_expired",
        "wallet_unreachable",
        "gateway_unreachable",
        "gateway_refused",
        "session_expired",
        "reconnect_failed",
    }
)

MESSAGES: dict[str, dict[str, str]] = {
    EN: {
        "lang.name": "English",
        "lang.switch": "中文",
        "free_wifi": "Free Wi-Fi",
        "nav.venue": "About {merchant}",
        "nav.status": "Your connection",
        "nav.offers": "Offers",
        "nav.home": "Back to the start",
        "splash.title": "Welcome",
        "splash.heading": "Get online free",
        "splash.lead": "Log in with your wallet and browse for {duration}.",
        "splash.lead_unlimited": "Log in with your wallet to get online.",
        "login.wallet": "Log in with wallet",
        "login.fine_print": "By logging in you accept the terms of use.",
        "click.or": "or",
        "click.accept": "I accept the terms of use",
        "click.continue": "Accept and continue",
        "terms.title": "Terms of use",
        "splash.online_heading": "You’re online",
        "splash.online_lead": "This device is already connected.",
        "splash.see_offers": "See today’s offers",
        "logged_out": "You are logged out. Thanks for visiting!",
        "error.login_failed": "We couldn’t log you in. Please try again.",
        "error.login_cancelled": "Login was cancelled. You can try again whenever you like.",
        "error.login_expired": "The login took too long. Please start again.",
        "error.wallet_unreachable": "The wallet can’t be reached right now. "
        "Please try again in a moment.",
        "error.gateway_unreachable": "The Wi-Fi isn’t ready yet. Please try again in a moment.",
        "error.gateway_refused": "The Wi-Fi couldn’t connect this device. Please try again.",
        "error.session_expired": "Your session expired. Please log in again.",
        "error.reconnect_failed": "One-tap reconnect didn’t work this time. Please log in.",
        "error.unknown": "Something went wrong. Please try again.",
        "welcome.title": "You’re online",
        "welcome.heading": "You’re online",
        "welcome.hello": "Signed in as {name}",
        "welcome.hello_anonymous": "Signed in with your wallet",
        "welcome.enjoy": "Enjoy the free Wi-Fi at {merchant}.",
        "welcome.offers": "Today’s offers",
        "welcome.no_offers": "No offers right now. Check back on your next visit.",
        "welcome.offline_heading": "You’re not online yet",
        "welcome.offline_lead": "Log in to use the free Wi-Fi and see today’s offers.",
        "offer.open": "See offer",
        "reconnect.heading": "Next time, connect in one tap",
        "reconnect.label": "Remember me in my wallet for one-tap reconnect",
        "reconnect.hint": "You can turn this off in your wallet at any time.",
        "reconnect.save": "Save",
        "reconnect.title": "One-tap reconnect",
        "reconnect.on_heading": "One-tap reconnect is on",
        "reconnect.saved": "We saved a reconnect link in your wallet. Next time you’re here, open "
        "it from the wallet and you’re online with one tap, even if your phone changes its "
        "Wi-Fi address.",
        "reconnect.not_saved": "Your wallet couldn’t be reached just now. "
        "Keep this link to reconnect with one tap:",
        "reconnect.link": "Reconnect link",
        "reconnect.forget": "Forget me",
        "reconnect.forget_hint": "Turns off one-tap reconnect and cancels every saved link.",
        "reconnect.forgotten": "One-tap reconnect is off. Your saved links no longer work.",
        "reconnect.back": "Back to your offers",
        "push.heading": "Offers on this phone",
        "push.hint": "Get a notification with {merchant}’s offers when you come back. "
        "Nothing else, and you can turn it off in your browser.",
        "push.button": "Notify me on this phone",
        "push.done": "Done: this phone will get the offers when you are back.",
        "push.denied": "Notifications are blocked for this page in your browser settings.",
        "push.failed": "That did not work just now. Please try again later.",
        "status.title": "Your connection",
        "status.heading": "Your connection",
        "status.welcome": "Welcome! You are now online.",
        "status.state": "Status",
        "status.authorized": "Authorized",
        "status.not_authorized": "Not authorized",
        "status.time_left": "Time left",
        "status.data_left": "Data left",
        "status.no_limit": "No time limit",
        "status.device": "Your device",
        "status.logout": "Log out",
        "status.get_online": "Get online",
        "venue.title": "About us",
        "venue.offers": "Offers",
        "duration.minutes_one": "{count} minute",
        "duration.minutes_other": "{count} minutes",
        "duration.hours_one": "{count} hour",
        "duration.hours_other": "{count} hours",
        "duration.hours_minutes": "{hours} {minutes}",
        "error_page.back": "Back to the start",
    },
    ZH: {
        "lang.name": "中文",
        "lang.switch": "English",
        "free_wifi": "免费 Wi-Fi",
        "nav.venue": "关于{merchant}",
        "nav.status": "我的连接",
        "nav.offers": "优惠",
        "nav.home": "返回首页",
        "splash.title": "欢迎",
        "splash.heading": "免费上网",
        "splash.lead": "使用钱包登录，即可免费上网 {duration}。",
        "splash.lead_unlimited": "使用钱包登录，即可免费上网。",
        "login.wallet": "使用钱包登录",
        "login.fine_print": "登录即表示您同意使用条款。",
        "click.or": "或",
        "click.accept": "我已阅读并同意使用条款",
        "click.continue": "同意并继续",
        "terms.title": "使用条款",
        "splash.online_heading": "您已连接网络",
        "splash.online_lead": "本设备已连接，可以上网了。",
        "splash.see_offers": "查看今日优惠",
        "logged_out": "您已退出登录，感谢光临！",
        "error.login_failed": "登录未成功，请重试。",
        "error.login_cancelled": "您已取消登录，可以随时重新登录。",
        "error.login_expired": "登录超时，请重新开始。",
        "error.wallet_unreachable": "暂时无法连接钱包，请稍后重试。",
        "error.gateway_unreachable": "Wi-Fi 尚未就绪，请稍后重试。",
        "error.gateway_refused": "Wi-Fi 无法连接此设备，请重试。",
        "error.session_expired": "会话已过期，请重新登录。",
        "error.reconnect_failed": "本次一键连接未成功，请重新登录。",
        "error.unknown": "出了点问题，请重试。",
        "welcome.title": "已连接网络",
        "welcome.heading": "您已连接网络",
        "welcome.hello": "已登录：{name}",
        "welcome.hello_anonymous": "已通过钱包登录",
        "welcome.enjoy": "欢迎在{merchant}免费上网。",
        "welcome.offers": "今日优惠",
        "welcome.no_offers": "暂无优惠，欢迎下次光临时再来看看。",
        "welcome.offline_heading": "您尚未连接网络",
        "welcome.offline_lead": "登录后即可免费上网并查看今日优惠。",
        "offer.open": "查看优惠",
        "reconnect.heading": "下次一键连接",
        "reconnect.label": "在钱包中记住我，下次一键连接",
        "reconnect.hint": "您可以随时在钱包中关闭此功能。",
        "reconnect.save": "保存",
        "reconnect.title": "一键连接",
        "reconnect.on_heading": "一键连接已开启",
        "reconnect.saved": "我们已在您的钱包中保存了连接链接。"
        "下次光临时，从钱包中打开它即可一键上网，即使手机更换了 Wi-Fi 地址也没关系。",
        "reconnect.not_saved": "暂时无法连接您的钱包。请保存此链接，下次可一键连接：",
        "reconnect.link": "一键连接链接",
        "reconnect.forget": "不再记住我",
        "reconnect.forget_hint": "关闭一键连接，并使所有已保存的链接失效。",
        "reconnect.forgotten": "一键连接已关闭，已保存的链接不再有效。",
        "reconnect.back": "返回优惠页面",
        "push.heading": "在这部手机上接收优惠",
        "push.hint": "下次光临时，{merchant}的优惠会以通知推送给您。"
        "不会推送其他内容，您可随时在浏览器中关闭。",
        "push.button": "在这部手机上通知我",
        "push.done": "已开启：下次光临时，这部手机会收到优惠通知。",
        "push.denied": "浏览器设置已阻止此页面发送通知。",
        "push.failed": "暂时无法开启，请稍后再试。",
        "status.title": "我的连接",
        "status.heading": "我的连接",
        "status.welcome": "欢迎！您已连接网络。",
        "status.state": "状态",
        "status.authorized": "已连接",
        "status.not_authorized": "未连接",
        "status.time_left": "剩余时间",
        "status.data_left": "剩余流量",
        "status.no_limit": "不限时",
        "status.device": "本设备",
        "status.logout": "退出登录",
        "status.get_online": "立即上网",
        "venue.title": "关于我们",
        "venue.offers": "优惠",
        "duration.minutes_one": "{count} 分钟",
        "duration.minutes_other": "{count} 分钟",
        "duration.hours_one": "{count} 小时",
        "duration.hours_other": "{count} 小时",
        "duration.hours_minutes": "{hours} {minutes}",
        "error_page.back": "返回首页",
    },
}


def add_messages(catalogue: Mapping[str, Mapping[str, str]]) -> None:
    """Let another blueprint bring its own strings, e.g. `{"en": {"login.x": ...}, "zh-CN": ...}`.

    Existing keys are not overwritten, so two blueprints cannot silently change each other's
    wording; pick keys under your own prefix.
    """
    for lang, messages in catalogue.items():
        if lang not in MESSAGES:
            raise ValueError(f"unknown language {lang!r}; expected one of {LANGUAGES}")
        for key, text in messages.items():
            MESSAGES[lang].setdefault(key, text)


def canonical(tag: str) -> str | None:
    """The supported language for one language tag, or None.

    Every Chinese tag gets Simplified Chinese for now (zh-TW and zh-HK readers can read it, and
    it beats English for them); `*` means "anything", so the default.
    """
    tag = tag.strip().lower().replace("_", "-")
    primary = tag.partition("-")[0]
    if primary == "zh":
        return ZH
    if primary == "en" or tag == "*":
        return EN
    return None


def negotiate(header: str | None) -> str:
    """The best supported language for an `Accept-Language` header (RFC 9110 §12.5.4).

    Highest q first, header order between equals; q=0 means "not this one". Ranges with a bad
    q-value are ignored rather than trusted.
    """
    ranked: list[tuple[float, int, str]] = []
    for index, item in enumerate((header or "").split(",")[:MAX_RANGES]):
        tag, *params = (part.strip() for part in item.split(";"))
        if not tag:
            continue
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = -1.0
        if 0.0 < quality <= 1.0:
            ranked.append((-quality, index, tag))
    for _, _, tag in sorted(ranked):
        lang = canonical(tag)
        if lang:
            return lang
    return DEFAULT


def requested(value: str | None) -> str | None:
    """A `?lang=` value as a supported language, or None ("en", "zh-CN", any case)."""
    if not value:
        return None
    for lang in LANGUAGES:
        if value.strip().lower() == lang.lower():
            return lang
    return None


def current_lang() -> str:
    """This request's language: ?lang=, then the one remembered in the session, then the header."""
    if not has_request_context():
        return DEFAULT
    lang = g.get("lang")
    if lang is None:
        lang = (
            requested(request.args.get("lang"))
            or requested(session.get(SESSION_KEY))
            or negotiate(request.headers.get("Accept-Language"))
        )
        g.lang = lang
    return lang


def remember_choice() -> None:
    """Before each request: a `?lang=` link sticks for the rest of this browser's session."""
    lang = requested(request.args.get("lang"))
    if lang and session.get(SESSION_KEY) != lang:
        session[SESSION_KEY] = lang


def t(key: str, /, lang: str | None = None, **kw: Any) -> str:
    """The sentence for `key` in the current language, with `{name}` fields filled from `kw`.

    With `count`, `key_one` or `key_other` is used when the catalogue has them. The result is a
    plain str: Jinja escapes it, and whatever was passed in, on the way out.
    """
    lang = lang or current_lang()
    if "count" in kw:
        plural = f"{key}_one" if kw["count"] == 1 else f"{key}_other"
        if plural in MESSAGES[EN]:
            key = plural
    text = MESSAGES.get(lang, {}).get(key) or MESSAGES[EN].get(key, key)
    return text.format(**kw) if kw else text


def localized(english: str, chinese: str, lang: str | None = None) -> str:
    """A config text for the shopper's language: the `_zh` variant when set, else the English."""
    if (lang or current_lang()) == ZH and chinese.strip():
        return chinese
    return english


def duration(minutes: int, lang: str | None = None) -> str:
    """ "45 minutes", "2 hours", "3 hours 5 minutes": minutes up to two hours, then hours."""
    if minutes < 120:
        return t("duration.minutes", lang, count=minutes)
    hours, rest = divmod(minutes, 60)
    text = t("duration.hours", lang, count=hours)
    if rest:
        text = t(
            "duration.hours_minutes",
            lang,
            hours=text,
            minutes=t("duration.minutes", lang, count=rest),
        )
    return text


def data_size(size: int) -> str:
    """Bytes as a shopper reads them: decimal MB below 1 GB, else GB with one decimal.

    Rounded down, so the page never promises more than is left.
    """
    size = max(0, size)
    if size >= 1_000_000_000:
        return f"{math.floor(size / 100_000_000) / 10:.1f} GB"
    if size >= 10_000_000:
        return f"{size // 1_000_000} MB"
    if size == 0:
        return "0 MB"
    if size < 100_000:
        return "< 0.1 MB"
    return f"{math.floor(size / 100_000) / 10:.1f} MB"
