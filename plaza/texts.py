"""Shopper-visible venue texts in several languages, and which one a shopper reads.

The cloud's venue config (cloud/venue_config.py) writes each shopper-visible text either as a
plain string (the older form: the text for every language) or as a map of language tag to
text, `{"en": "Plaza Café", "zh-CN": "广场咖啡"}`. The cloud validates the map, the router's
portal (portal/venue.py) and the cloud's push messages (cloud/push/presence_push.py) pick from
it: both sides need the same tags and the same fallback order, so they live here, in the one
module both already import, rather than twice.

Fallback order, for a requested language: the exact tag, then a tag with the same primary
subtag (`zh-TW` -> `zh-CN`), then the venue's default language, then its primary subtag, then
any language present (the allowed set's order first). Blank texts count as absent, so a
venue that wrote a text in any language never shows an empty string.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

EN = "en"
ZH = "zh-CN"
# The tags a venue may write texts in; a new language is one more entry here (and a column in
# the dashboard's editor).
LANGUAGES: tuple[str, ...] = (EN, ZH)
DEFAULT_LANGUAGE = EN


def canonical_tag(tag: Any) -> str | None:
    """The allowed tag for `tag` in any letter case (`zh-cn` -> `zh-CN`), or None."""
    if not isinstance(tag, str):
        return None
    wanted = tag.strip().replace("_", "-").lower()
    return next((lang for lang in LANGUAGES if lang.lower() == wanted), None)


def _primary(tag: str) -> str:
    return tag.replace("_", "-").partition("-")[0].lower()


def pick(text: Any, lang: str, default: str = DEFAULT_LANGUAGE) -> str:
    """The text for a shopper reading `lang`, in the fallback order above; "" only when the
    venue wrote this text in no language at all (an optional text left empty).

    A plain string is every language's text. Tags the caller does not know (a later cloud's)
    are still candidates: they are texts the merchant wrote."""
    if isinstance(text, str):
        return text
    if not isinstance(text, Mapping):
        return ""
    present = {k: v for k, v in text.items() if isinstance(k, str) and isinstance(v, str)}
    present = {k: v for k, v in present.items() if v.strip()}
    if not present:
        return ""
    exact = {k.lower(): k for k in present}
    known = [t for t in LANGUAGES if t in present]
    ordered = known + sorted(k for k in present if k not in known)
    for wanted in (lang, default):
        if not isinstance(wanted, str):
            continue
        if wanted.lower() in exact:
            return present[exact[wanted.lower()]]
        same = [k for k in ordered if _primary(k) == _primary(wanted)]
        if same:
            return present[same[0]]
    return present[ordered[0]]
