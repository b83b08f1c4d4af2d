"""The cloud-managed part of a venue's config: branding, offers, session policy, walled garden.

Verified whole before anything is stored (get_config -> verify -> apply): unknown keys are
refused rather than ignored, because a misspelt key the router silently drops is a policy that
does not apply. Every accepted change bumps `config_version`, which heartbeats report so
routers pull the new config.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from cloud.models import Venue
from plaza.texts import DEFAULT_LANGUAGE, LANGUAGES, canonical_tag
from plaza.validators import (
    MAX_GARDEN_DOMAINS,
    MAX_KBIT,
    MAX_MB,
    garden_name,
    public_suffix_wildcards,
)

MAX_OFFERS = 20
OFFER_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,32}\Z")
COLOUR_RE = re.compile(r"^#[0-9a-fA-F]{6}\Z")
URL_RE = re.compile(r"^https://[^\s\"'<>]{1,2040}\Z")

DEFAULT_CONFIG: dict[str, Any] = {
    "default_language": DEFAULT_LANGUAGE,
    "branding": {"name": "Free Wi-Fi", "logo_url": "", "colour": "#0a7d5a", "terms": ""},
    "offers": [],
    "policy": {
        "session_minutes": 60,
        "idle_minutes": 15,
        "quota_total_mb": 0,
        "rate_down_kbit": 0,
        "rate_up_kbit": 0,
    },
    "garden": {"domains": []},
}

# (minimum, maximum) for each policy field; 0 means "no limit" as on the router
# (gateway/stations/policy.py), except for the session time, which a venue must bound.
POLICY_RANGES: dict[str, tuple[int, int]] = {
    "session_minutes": (1, 7 * 1440),
    "idle_minutes": (0, 7 * 1440),
    "quota_total_mb": (0, MAX_MB),
    "rate_down_kbit": (0, MAX_KBIT),
    "rate_up_kbit": (0, MAX_KBIT),
}


class ConfigError(ValueError):
    """A venue config that cannot be applied; str() names the field."""


def _keys(
    where: str, value: Any, required: set[str], optional: frozenset[str] = frozenset()
) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: must be an object")
    unknown = set(value) - required - optional
    if unknown:
        raise ConfigError(f"{where}: unknown key {sorted(unknown)[0]!r}")
    missing = required - set(value)
    if missing:
        raise ConfigError(f"{where}: missing key {sorted(missing)[0]!r}")
    return value


def _text(where: str, value: Any, max_len: int, min_len: int = 0) -> str:
    if not isinstance(value, str) or not min_len <= len(value.strip()) <= max_len:
        raise ConfigError(f"{where}: must be text of {min_len} to {max_len} characters")
    if "\x00" in value:
        raise ConfigError(f"{where}: must not contain NUL")
    return value.strip()


def _texts(where: str, value: Any, max_len: int, min_len: int = 0) -> str | dict[str, str]:
    """A shopper-visible text: a plain string (the older form, every language's text) or a
    map of allowed language tag to text (plaza/texts.py). Each language has the plain
    form's limits; blank languages are dropped; a required text (min_len > 0) needs at least
    one language. Errors name the language (`offers[0].title.zh-CN: ...`)."""
    if isinstance(value, str):
        return _text(where, value, max_len, min_len)
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: must be text, or an object of language to text")
    texts: dict[str, str] = {}
    for tag, text in value.items():
        lang = canonical_tag(tag)
        if lang is None:
            shown = tag if isinstance(tag, str) and len(tag) <= 20 else "?"
            raise ConfigError(
                f"{where}: unknown language {shown!r}; expected one of {', '.join(LANGUAGES)}"
            )
        if lang in texts:
            raise ConfigError(f"{where}: language {lang} given twice")
        texts[lang] = _text(f"{where}.{lang}", text, max_len)
    kept = {lang: texts[lang] for lang in LANGUAGES if texts.get(lang)}
    if min_len and not kept:
        raise ConfigError(
            f"{where}: must be text of 1 to {max_len} characters in at least one language"
        )
    return kept or ""


def _url(where: str, value: Any, allow_empty: bool = True) -> str:
    if allow_empty and value in ("", None):
        return ""
    if not isinstance(value, str) or not URL_RE.match(value):
        raise ConfigError(f"{where}: must be an https:// URL")
    return value


def validate_config(config: Any) -> dict[str, Any]:
    """The config, checked and normalised (text stripped, domains lower-cased)."""
    top = _keys(
        "config",
        config,
        {"branding", "offers", "policy", "garden"},
        frozenset({"default_language"}),
    )
    default_language = canonical_tag(top.get("default_language", DEFAULT_LANGUAGE))
    if default_language is None:
        raise ConfigError(f"default_language: must be one of {', '.join(LANGUAGES)}")
    b = _keys("branding", top["branding"], {"name"}, frozenset({"logo_url", "colour", "terms"}))
    colour = b.get("colour", DEFAULT_CONFIG["branding"]["colour"])
    if not isinstance(colour, str) or not COLOUR_RE.match(colour):
        raise ConfigError("branding.colour: must be #rrggbb")
    branding = {
        "name": _texts("branding.name", b["name"], 80, 1),
        "logo_url": _url("branding.logo_url", b.get("logo_url", "")),
        "colour": colour.lower(),
        "terms": _texts("branding.terms", b.get("terms", ""), 10_000),
    }
    if not isinstance(top["offers"], list) or len(top["offers"]) > MAX_OFFERS:
        raise ConfigError(f"offers: must be a list of at most {MAX_OFFERS}")
    offers, seen = [], set()
    for i, raw in enumerate(top["offers"]):
        where = f"offers[{i}]"
        o = _keys(where, raw, {"id", "title"}, frozenset({"body", "url"}))
        if not isinstance(o["id"], str) or not OFFER_ID_RE.match(o["id"]):
            raise ConfigError(f"{where}.id: must be 1 to 32 of A-Z a-z 0-9 _ -")
        if o["id"] in seen:
            raise ConfigError(f"{where}.id: duplicate {o['id']!r}")
        seen.add(o["id"])
        offers.append(
            {
                "id": o["id"],
                "title": _texts(f"{where}.title", o["title"], 120, 1),
                "body": _texts(f"{where}.body", o.get("body", ""), 2000),
                "url": _url(f"{where}.url", o.get("url", "")),
            }
        )
    p = _keys("policy", top["policy"], set(POLICY_RANGES))
    policy = {}
    for name, (low, high) in POLICY_RANGES.items():
        value = p[name]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ConfigError(f"policy.{name}: must be an integer from {low} to {high}")
        policy[name] = value
    # The router refuses a policy whose idle timeout could never fire (gateway/stations/policy.py
    # `verify`) and falls back to its own defaults: refuse it here, where the merchant sees why.
    if policy["idle_minutes"] and policy["idle_minutes"] >= policy["session_minutes"]:
        raise ConfigError(
            f"policy.idle_minutes: must be shorter than the session "
            f"({policy['session_minutes']} minutes), or 0 for no idle timeout"
        )
    g = _keys("garden", top["garden"], {"domains"})
    if not isinstance(g["domains"], list) or len(g["domains"]) > MAX_GARDEN_DOMAINS:
        raise ConfigError(f"garden.domains: must be a list of at most {MAX_GARDEN_DOMAINS}")
    domains = []
    for domain in g["domains"]:
        name = garden_name(domain.strip() if isinstance(domain, str) else domain)
        if name is None:
            raise ConfigError(f"garden.domains: not a host name: {domain!r}")
        if name not in domains:
            domains.append(name)
    opened = public_suffix_wildcards(domains)  # the router checks this again
    if opened:
        raise ConfigError(
            f"garden.domains: {opened[0]} would open every site under the public suffix "
            f"{opened[0][2:]}; list the venue's own domain instead"
        )
    return {
        "default_language": default_language,
        "branding": branding,
        "offers": offers,
        "policy": policy,
        "garden": {"domains": domains},
    }


def default_config() -> dict[str, Any]:
    return copy.deepcopy(DEFAULT_CONFIG)


def set_venue_config(db: Session, venue_id: str, config: Any) -> int:
    """Verify and store a venue's config; returns the new version. The bump is one UPDATE
    (`version = version + 1`), so two editors saving at once get two distinct versions. The
    caller commits."""
    checked = validate_config(config)
    result = db.execute(
        update(Venue)
        .where(Venue.id == venue_id)
        .values(config=checked, config_version=Venue.config_version + 1)
        .execution_options(synchronize_session=False)
    )
    if not result.rowcount:
        raise ConfigError(f"no venue {venue_id}")
    version = db.scalar(select(Venue.config_version).where(Venue.id == venue_id))
    assert version is not None
    venue = db.get(Venue, venue_id)
    if venue is not None:
        db.refresh(venue)
    return version
