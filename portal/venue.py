"""The venue's cloud-managed look: branding and offers from `<state_dir>/cloud-config.json`
laid over the TOML config's.

The uplink (gateway/uplink/sync.py) writes that file atomically whenever the merchant changes
the venue in the dashboard; the portal picks the change up on the next page without a restart. A
page costs at most one stat() a second: the file is re-read only when its identity (inode,
size, mtime) changes. A file that is not what the protocol says is logged once and ignored as a
whole, so the TOML's branding and offers stay on screen rather than half of each.

What the cloud sets replaces the TOML's value; what it leaves empty (or out) keeps it. A cloud
text is a map of language to text (plaza/texts.py) or, from an older cloud, one plain string.
The portal's two languages each get the cloud's text by the fallback order there (the exact
language, its primary subtag, the venue's `default_language`, any the venue wrote), so a zh-CN
phone reads the merchant's Chinese and a language the merchant left out still shows text,
never "". A plain string is every language's text: it replaces the TOML's `_zh` variant too
(a stale translation of an old name is worse than the new name in English). An `offers`
list, even an empty one, is the cloud's list: a merchant who removed every offer sees none.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from flask import Flask, current_app

from gateway.config import Config, OfferConfig
from gateway.uplink.cloud_config import FILE, CloudConfigFile
from plaza.texts import DEFAULT_LANGUAGE, EN, ZH, canonical_tag, pick

log = logging.getLogger("plaza.portal")

EXTENSION = "plaza_venue"
CHECK_SECONDS = 1.0
MAX_TEXT = 4000
MAX_OFFERS = 50
MAX_LANGUAGES = 16  # a later cloud may write more languages than the portal shows
HEX_COLOR = re.compile(r"#[0-9a-fA-F]{6}")
URL = re.compile(r"(https://|/static/)[^\s\"'<>\\]+")


class Malformed(ValueError):
    pass


def _text(value: Any, where: str, limit: int = MAX_TEXT) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > limit:
        raise Malformed(f"{where}: expected a string of at most {limit} characters")
    return value.strip()


def _texts(value: Any, where: str, default: str, limit: int = MAX_TEXT) -> tuple[str, str]:
    """A cloud text as (English, Chinese) for the portal's two languages. A plain string is
    the English one with no Chinese variant (`localized` then shows it in both); a map is
    picked from by the fallback order. Tags the portal does not show are allowed (a later
    cloud may write more languages) but must hold strings within limits."""
    if value is None or isinstance(value, str):
        return _text(value, where, limit), ""  # "" : `localized` shows the one text
    if not isinstance(value, dict) or len(value) > MAX_LANGUAGES:
        raise Malformed(f"{where}: expected a string or an object of language to string")
    texts = {}
    for tag, text in value.items():
        if not isinstance(tag, str) or len(tag) > 35:
            raise Malformed(f"{where}: expected language tags as keys")
        texts[tag] = _text(text, f"{where}.{tag}", limit)
    return pick(texts, EN, default).strip(), pick(texts, ZH, default).strip()


def overlay(base: Config, document: Any) -> Config:
    """`base` with the cloud document's branding and offers; Malformed if the document is not
    {"version": n, "config": {"branding": {...}, "offers": [...], ...}}."""
    if not isinstance(document, dict) or not isinstance(document.get("config"), dict):
        raise Malformed('expected {"version": n, "config": {...}}')
    cloud = document["config"]
    branding = cloud.get("branding") or {}
    if not isinstance(branding, dict):
        raise Malformed("branding: expected an object")
    default = cloud.get("default_language", DEFAULT_LANGUAGE)
    if not isinstance(default, str) or len(default) > 35:
        raise Malformed("default_language: expected a language tag")
    default = canonical_tag(default) or DEFAULT_LANGUAGE
    portal = base.portal
    name, name_zh = _texts(branding.get("name"), "branding.name", default, 100)
    terms, terms_zh = _texts(branding.get("terms"), "branding.terms", default)
    logo = _text(branding.get("logo_url"), "branding.logo_url", 2000)
    colour = _text(branding.get("colour"), "branding.colour", 7)
    if logo and not URL.fullmatch(logo):
        raise Malformed("branding.logo_url: expected an https:// URL or a /static/ path")
    if colour and not HEX_COLOR.fullmatch(colour):
        raise Malformed("branding.colour: expected #rrggbb")
    if name:
        portal = replace(portal, merchant_name=name, merchant_name_zh=name_zh)
    if terms:
        portal = replace(portal, terms=terms, terms_zh=terms_zh)
    if logo:
        portal = replace(portal, logo_url=logo)
    if colour:
        portal = replace(portal, brand_color=colour)
    offers = base.offers
    if "offers" in cloud:
        items = cloud["offers"]
        if not isinstance(items, list) or len(items) > MAX_OFFERS:
            raise Malformed(f"offers: expected a list of at most {MAX_OFFERS}")
        built = []
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise Malformed(f"offers[{i}]: expected an object")
            title, title_zh = _texts(item.get("title"), f"offers[{i}].title", default, 200)
            text, text_zh = _texts(item.get("body"), f"offers[{i}].body", default)
            url = _text(item.get("url"), f"offers[{i}].url", 2000)
            if not title:
                raise Malformed(f"offers[{i}].title: must not be empty")
            if url and not (url.startswith("https://") and URL.fullmatch(url)):
                raise Malformed(f"offers[{i}].url: expected an https:// URL")
            built.append(
                OfferConfig(title=title, text=text, url=url, title_zh=title_zh, text_zh=text_zh)
            )
        offers = tuple(built)
    return replace(base, portal=portal, offers=offers)


class VenueOverlay:
    """The effective config for pages: the base Config with the cloud's file laid over it,
    re-read when the file changes (checked at most every `interval` seconds). Thread-safe:
    the portal's server threads share one."""

    def __init__(
        self,
        path: Path,
        interval: float = CHECK_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path, self.interval, self.clock = path, interval, clock
        self.file = CloudConfigFile(path)
        self._lock = threading.Lock()
        self._checked = float("-inf")
        self._document: Any = None  # the last good document, or None
        self._cache: tuple[Config, Config] | None = None  # (base, effective)

    def config(self, base: Config) -> Config:
        with self._lock:
            now = self.clock()
            if now - self._checked >= self.interval:
                self._checked = now
                self._refresh()
            document = self._document
            cached = self._cache
            if cached is not None and cached[0] is base:
                return cached[1]
            effective = base
            if document is not None:
                try:
                    effective = overlay(base, document)
                except Malformed:  # checked on read; only a different base can get here
                    effective = base
            self._cache = (base, effective)
            return effective

    def _refresh(self) -> None:
        had = self._document is not None
        if not self.file.changed():
            return
        self._cache = None
        self._document = self.file.document
        if self.file.error:
            self._complain(self.file.error)
            return
        if self._document is None:
            if had:
                log.info("%s removed: the TOML branding and offers apply", self.path)
            return
        try:
            overlay(Config(), self._document)  # validate once, against any base
        except Malformed as exc:
            self._document = None
            self._complain(str(exc))
            return
        log.info("venue look from %s (version %s)", self.path, self.file.version)

    def _complain(self, why: str) -> None:
        """Once per bad version of the file (the watcher reports each version once), not
        per page."""
        log.warning("%s ignored, TOML branding and offers kept: %s", self.path, why)


def init_app(app: Flask, base: Config) -> None:
    path = app.config.get("CLOUD_CONFIG_FILE") or Path(base.gateway.state_dir) / FILE
    app.extensions[EXTENSION] = VenueOverlay(Path(path))


def effective_config() -> Config:
    """The gateway Config as pages should show it: branding and offers from the cloud when the
    router has them, else from the TOML."""
    base: Config = current_app.config["PLAZA_CONFIG"]
    venue: VenueOverlay | None = current_app.extensions.get(EXTENSION)
    return venue.config(base) if venue is not None else base
