"""The welcome page (after login: offers) and the venue page; plus what every portal page
shares: language, branding and the merchant's offers in the shopper's language.

Registering this blueprint installs the shared template context app-wide, so any blueprint's
template can `{% extends "base.html" %}` and use `t()`, `lang`, `brand` and `offers()`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, current_app, render_template, request, url_for
from werkzeug.routing import BuildError

from gateway.config import Config, PortalConfig
from gateway.control_client import ControlError
from portal import i18n, push, shopper
from portal.control import control, control_error_page, is_authorized, lookup, unreachable
from portal.status import data_left, minutes_left
from portal.venue import effective_config

bp = Blueprint("pages", __name__)

MAX_NAME = 64  # a display name longer than this is cut, so a wallet cannot break the layout

HEX_COLOR = re.compile(r"#[0-9a-fA-F]{6}")
LOGO_URL = re.compile(r"(https://|/static/)[^\s\"'<>\\]+")
DEFAULT_COLOR = PortalConfig.brand_color
PAGE_BG = "#f4f5f8"
DARK_INK = "#16181d"
WHITE = "#ffffff"

# Query parameters the language switch carries over to the same page in the other language,
# with the values it may carry: nothing else from the URL is put into the link.
CARRIED_PARAMS: dict[str, frozenset[str]] = {
    "logged_out": frozenset({"1"}),
    "welcome": frozenset({"1"}),
    "forgotten": frozenset({"1"}),
    "error": i18n.ERROR_CODES,
}


# -- colour --------------------------------------------------------------------------------


def _rgb(color: str) -> tuple[int, int, int]:
    return int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16)


def _hex(rgb: Iterable[float]) -> str:
    return "#" + "".join(f"{round(min(255, max(0, c))):02x}" for c in rgb)


def luminance(color: str) -> float:
    """WCAG 2 relative luminance of a #rrggbb colour."""

    def channel(c: int) -> float:
        s = c / 255
        return s / 12.92 if s <= 0.04045 else ((s + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(c) for c in _rgb(color))
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: str, b: str) -> float:
    la, lb = sorted((luminance(a), luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def mix(color: str, other: str, amount: float) -> str:
    """`amount` of `other` blended into `color` (0: color, 1: other)."""
    return _hex(c + (o - c) * amount for c, o in zip(_rgb(color), _rgb(other), strict=True))


def readable_on(background: str, color: str, ratio: float = 4.5) -> str:
    """`color`, darkened just enough to reach `ratio` against `background` (WCAG AA text)."""
    for step in range(21):
        shade = mix(color, "#000000", step / 20)
        if contrast(shade, background) >= ratio:
            return shade
    return DARK_INK


@dataclass(frozen=True)
class Brand:
    """The merchant's look, ready for a template: validated, localized, with legible colours.

    Config is validated on load, but an app built from a Config object skips that, so anything
    that lands in CSS or an attribute is checked again here rather than trusted.
    """

    name: str
    terms: str
    logo_url: str
    color: str  # buttons and the header band
    on_color: str  # text on `color`
    text_color: str  # `color` dark enough for links and headings on the page background
    tint: str  # a pale wash of `color` for badges and highlights

    @classmethod
    def of(cls, portal: PortalConfig, lang: str) -> Brand:
        color = portal.brand_color if HEX_COLOR.fullmatch(portal.brand_color) else DEFAULT_COLOR
        color = color.lower()
        on_color = WHITE if contrast(color, WHITE) >= contrast(color, DARK_INK) else DARK_INK
        logo = portal.logo_url if LOGO_URL.fullmatch(portal.logo_url) else ""
        return cls(
            name=i18n.localized(portal.merchant_name, portal.merchant_name_zh, lang),
            terms=i18n.localized(portal.terms, portal.terms_zh, lang),
            logo_url=logo,
            color=color,
            on_color=on_color,
            text_color=readable_on(PAGE_BG, color),
            tint=mix(color, WHITE, 0.88),
        )


@dataclass(frozen=True)
class Offer:
    title: str
    text: str
    url: str  # https only, or empty: shown as a link, never redirected to


def offers(lang: str | None = None) -> list[Offer]:
    """The merchant's offers in the shopper's language (the cloud's, when it manages them)."""
    config = effective_config()
    lang = lang or i18n.current_lang()
    return [
        Offer(
            title=i18n.localized(o.title, o.title_zh, lang),
            text=i18n.localized(o.text, o.text_zh, lang),
            url=o.url if LOGO_URL.fullmatch(o.url) and o.url.startswith("https://") else "",
        )
        for o in config.offers
    ]


def venue_paragraphs(text: str) -> list[str]:
    """Blank lines separate paragraphs; single line breaks stay inside one (CSS pre-line)."""
    blocks = re.split(r"\n[ \t]*\n", text.replace("\r\n", "\n").strip())
    return [block.strip() for block in blocks if block.strip()]


def lang_switch_url() -> str:
    """This page in the other language, keeping only known-safe parameters."""
    other = i18n.ZH if i18n.current_lang() == i18n.EN else i18n.EN
    params: dict[str, Any] = {
        name: request.args[name]
        for name, allowed in CARRIED_PARAMS.items()
        if request.args.get(name) in allowed
    }
    if request.method == "GET" and request.endpoint and request.endpoint != "static":
        try:
            return url_for(request.endpoint, **(request.view_args or {}), **params, lang=other)
        except BuildError:
            pass
    return url_for("splash.index", lang=other)


@bp.before_app_request
def _remember_language() -> None:
    i18n.remember_choice()


@bp.app_context_processor
def _shared_context() -> dict[str, Any]:
    config = effective_config()
    lang = i18n.current_lang()
    return {"lang": lang, "brand": Brand.of(config.portal, lang), "plaza": config}


@bp.record_once
def _install_globals(state: Any) -> None:
    state.app.jinja_env.globals.update(
        t=i18n.t,
        duration=i18n.duration,
        data_size=i18n.data_size,
        offers=offers,
        lang_switch_url=lang_switch_url,
    )


# -- pages ---------------------------------------------------------------------------------


@bp.get("/welcome")
def welcome() -> str | tuple[str, int]:
    """Where a shopper lands after logging in: a full navigation, so iOS shows "Done"."""
    config: Config = current_app.config["PLAZA_CONFIG"]
    try:
        client = control().client(request.remote_addr or "")
    except ControlError as exc:
        if unreachable(exc):
            return control_error_page(exc)
        client = None  # unknown to the gateway: not online, which the page says without fuss
    authorized = is_authorized(client)
    # An ended session (client known, not authorized) takes its wallet user with it.
    user = shopper.current(client) if client is not None else None
    return render_template(
        "welcome.html",
        authorized=authorized,
        user=user,
        minutes=minutes_left(client.get("seconds_remaining")) if client and authorized else None,
        data=data_left(client) if client and authorized else None,
        show_reconnect=bool(config.reconnect.enabled and shopper.recent_login(user, time.time())),
        show_forget=bool(config.reconnect.enabled and user),
        push=push.offer(bool(user)),
        forgotten=request.args.get("forgotten") == "1",
    )


@bp.get("/venue")
def venue() -> str:
    """The RFC 8908 venue-info-url: about the venue, open to captive and online phones alike."""
    config: Config = current_app.config["PLAZA_CONFIG"]
    return render_template(
        "venue.html",
        authorized=is_authorized(lookup(request.remote_addr or "")),
        paragraphs=venue_paragraphs(config.portal.venue_info),
    )
