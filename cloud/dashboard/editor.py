"""The venue editor, "push to routers now", and claim codes for new routers.

The form edits the whole venue config: branding, offers, the default session policy and the
walled garden. Saving goes through `set_venue_config`, the same verify-then-store path as
everything else (unknown keys, https-only links, lengths, ranges, host names), and bumps the
version routers see in their next heartbeat. The form's own parsing (numbers, the garden's
lines) refuses what it cannot read with a `ConfigError` naming the field, like validation,
so every refusal reaches the merchant the same way: at the field, with their input kept. A
save based on an older version than the stored one is refused with the merchant's input kept,
rather than silently overwriting a colleague's change.

Every shopper-visible text (name, terms, each offer's title and text) has an English and a
Chinese field, saved as a map of language to text (plaza/texts.py); either may be left
empty, the portal then falls back to the other. A text stored in the older plain form shows
in the English field and is saved in the new form.
"""

from __future__ import annotations

import copy
import re
import secrets
from dataclasses import dataclass, field
from typing import Any

from flask import current_app, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy import select
from werkzeug.datastructures import MultiDict

from cloud.accounts import AccountError, set_portal_host
from cloud.api import now
from cloud.commands import CommandError, issue
from cloud.dashboard import stats
from cloud.dashboard.auth import login_required
from cloud.dashboard.blueprint import bp
from cloud.dashboard.security import require_csrf
from cloud.dashboard.tenancy import own_venue
from cloud.db import get_db
from cloud.enrol import create_claim
from cloud.models import Device, Venue
from cloud.venue_config import (
    MAX_GARDEN_DOMAINS,
    MAX_OFFERS,
    POLICY_RANGES,
    ConfigError,
    set_venue_config,
)
from plaza.texts import DEFAULT_LANGUAGE, EN, LANGUAGES, ZH
from plaza.validators import garden_name

OFFER_FIELDS = ("title", "body", "url", "title_zh", "body_zh")
# The editor's language columns: the form field suffix and the label's addition for each.
LANGUAGE_FIELDS = {EN: ("", ""), ZH: ("_zh", " (Chinese)")}
LANGUAGE_NAMES = {EN: "English", ZH: "中文 (Chinese)"}  # the main-language choices
BRANDING_LABELS = {
    "default_language": "Main language",
    "branding.name": "Venue name",
    "branding.colour": "Colour",
    "branding.logo_url": "Logo URL",
    "branding.terms": "Terms of use",
}
WHERE_RE = re.compile(r"^offers\[(\d+)\]\.?(\w*)$")
CLAIM_DAYS = 7
NUMBER_RE = re.compile(r"[0-9]{1,15}")  # ASCII digits only: int() would take "1_000", "٣"
# A garden of MAX_GARDEN_DOMAINS names of the longest kind, with line breaks; anything longer
# is refused before it is split (the app's MAX_CONTENT_LENGTH, 1 MiB, bounds the request).
GARDEN_MAX_CHARS = MAX_GARDEN_DOMAINS * 256
SHOWN_CHARS = 60  # of a refused garden line, in the error message


@dataclass(frozen=True)
class PolicyField:
    name: str  # the config key under `policy`, and the form field
    label: str
    unit: str  # shown next to the label
    low: int
    high: int


_UNITS = {
    "session_minutes": ("Session length", "minutes"),
    "idle_minutes": ("Idle timeout", "minutes, 0 = none"),
    "quota_total_mb": ("Data per session", "MB, 0 = unlimited"),
    "rate_down_kbit": ("Download speed", "kbit/s, 0 = unlimited"),
    "rate_up_kbit": ("Upload speed", "kbit/s, 0 = unlimited"),
}
POLICY_FIELDS = tuple(
    PolicyField(name, *_UNITS[name], *POLICY_RANGES[name]) for name in POLICY_RANGES
)
POLICY_LABELS = {f"policy.{f.name}": f.label for f in POLICY_FIELDS}
GARDEN_LABEL = "Walled garden"


@dataclass
class OfferRow:
    row: str  # the form's name prefix: "offer-3", or "new" for the empty row
    id: str = ""
    title: str = ""
    body: str = ""
    url: str = ""
    title_zh: str = ""
    body_zh: str = ""
    remove: bool = False


@dataclass
class EditorForm:
    """What the editor shows: the stored config, or what the merchant just sent."""

    name: str
    colour: str
    logo_url: str
    terms: str
    offers: list[OfferRow]
    new: OfferRow = field(default_factory=lambda: OfferRow("new"))
    base_version: int = 0
    name_zh: str = ""
    terms_zh: str = ""
    default_language: str | None = DEFAULT_LANGUAGE  # None: not in the form, keep the stored
    # As typed (None: not in the form): shown again as they were if the save is refused.
    policy: dict[str, str | None] = field(default_factory=dict)
    garden: str | None = ""

    @classmethod
    def from_config(cls, config: dict[str, Any], version: int) -> EditorForm:
        b = config["branding"]
        name, terms = split_text(b["name"]), split_text(b.get("terms", ""))
        offers = []
        for i, o in enumerate(config["offers"]):
            title, body = split_text(o["title"]), split_text(o.get("body", ""))
            offers.append(OfferRow(f"offer-{i}", o["id"], title[EN], body[EN], o.get("url", ""),
                                   title[ZH], body[ZH]))  # fmt: skip
        return cls(name[EN], b["colour"], b.get("logo_url", ""), terms[EN], offers,
                   base_version=version,
                   policy={f.name: str(config["policy"][f.name]) for f in POLICY_FIELDS},
                   garden="\n".join(config["garden"]["domains"]),
                   name_zh=name[ZH], terms_zh=terms[ZH],
                   default_language=config.get("default_language", DEFAULT_LANGUAGE))  # fmt: skip

    @classmethod
    def from_form(cls, form: MultiDict[str, str]) -> EditorForm:
        offers = []
        for i in range(MAX_OFFERS):
            row = f"offer-{i}"
            if f"{row}-id" not in form:
                continue
            offers.append(
                OfferRow(
                    row,
                    form.get(f"{row}-id", ""),
                    *(form.get(f"{row}-{name}", "") for name in OFFER_FIELDS),
                    remove=form.get(f"{row}-remove") == "1",
                )
            )
        new = OfferRow("new", "", *(form.get(f"new-{name}", "") for name in OFFER_FIELDS))
        try:
            base = int(form.get("base_version", "0"))
        except ValueError:
            base = 0
        return cls(
            form.get("name", ""), form.get("colour", ""), form.get("logo_url", ""),
            form.get("terms", ""), offers, new, base,
            policy={f.name: form.get(f.name) for f in POLICY_FIELDS},
            garden=form.get("garden"),
            name_zh=form.get("name_zh", ""), terms_zh=form.get("terms_zh", ""),
            default_language=form.get("default_language"),
        )  # fmt: skip

    def to_config(self, current: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """The config to validate, and for each of its offers the form row it came from (to
        point an error at the right row). The empty row becomes an offer only if any of its
        fields was filled in; a half-filled one is then refused by validation, visibly."""
        config = copy.deepcopy(current)
        if self.default_language is not None:
            config["default_language"] = self.default_language
        config["branding"] = {
            "name": both(self.name, self.name_zh),
            "colour": self.colour.strip().lower(),
            "logo_url": self.logo_url.strip(),
            "terms": both(self.terms, self.terms_zh),
        }
        offers, rows = [], []
        for o in self.offers:
            if o.remove:
                continue
            offers.append({"id": o.id, "title": both(o.title, o.title_zh),
                           "body": both(o.body, o.body_zh), "url": o.url.strip()})  # fmt: skip
            rows.append(o.row)
        if any(getattr(self.new, name).strip() for name in OFFER_FIELDS):
            offers.append(
                {
                    "id": new_offer_id({o["id"] for o in offers}),
                    "title": both(self.new.title, self.new.title_zh),
                    "body": both(self.new.body, self.new.body_zh),
                    "url": self.new.url.strip(),
                }
            )
            rows.append("new")
        config["offers"] = offers
        config["policy"] = {f.name: parse_number(f, self.policy.get(f.name)) for f in POLICY_FIELDS}
        config["garden"] = {"domains": parse_garden(self.garden)}
        return config, rows


def split_text(text: Any) -> dict[str, str]:
    """A stored text as the editor's fields, one per language: a map's own entries (no
    fallback filled in: an empty field is one the merchant did not write), a plain string
    from before languages in the English field."""
    if isinstance(text, dict):
        return {lang: str(text.get(lang) or "") for lang in LANGUAGES}
    return {lang: (str(text or "") if lang == EN else "") for lang in LANGUAGES}


def both(english: str, chinese: str) -> dict[str, str]:
    """The form's two fields as the config's language map (validation drops empty ones)."""
    return {EN: english.replace("\r\n", "\n"), ZH: chinese.replace("\r\n", "\n")}


def parse_number(spec: PolicyField, raw: str | None) -> int:
    """A policy number as typed: ASCII digits within the field's range, else a ConfigError
    naming the field (the range is checked here too, to say it in the merchant's words)."""
    where = f"policy.{spec.name}"
    if raw is None:
        raise ConfigError(f"{where}: missing from the form; reload the editor and try again")
    text = raw.strip()
    if not NUMBER_RE.fullmatch(text) or not spec.low <= int(text) <= spec.high:
        raise ConfigError(f"{where}: must be a whole number from {spec.low:,} to {spec.high:,}")
    return int(text)


def parse_garden(raw: str | None) -> list[str]:
    """The garden's names, one a line: blank lines dropped, whitespace around a name stripped,
    lower-cased, duplicates dropped. Lines are split at line feeds only, so a carriage return
    or any other control character inside a line stays in the name and is refused with it;
    validation checks every name again."""
    where = "garden.domains"
    if raw is None:
        raise ConfigError(f"{where}: missing from the form; reload the editor and try again")
    if len(raw) > GARDEN_MAX_CHARS:
        raise ConfigError(f"{where}: too long; at most {MAX_GARDEN_DOMAINS} names, one a line")
    names: list[str] = []
    for number, line in enumerate(raw.replace("\r\n", "\n").split("\n"), 1):
        typed = line.strip()
        if not typed:
            continue
        name = garden_name(typed)
        if name is None:
            shown = typed if len(typed) <= SHOWN_CHARS else typed[: SHOWN_CHARS - 1] + "…"
            raise ConfigError(
                f"{where}: line {number}, {shown!r}, is not a host name "
                "(write one name a line, like example.com or *.example.com)"
            )
        if name not in names:
            names.append(name)
    if len(names) > MAX_GARDEN_DOMAINS:
        raise ConfigError(
            f"{where}: at most {MAX_GARDEN_DOMAINS} names; this list has {len(names)}"
        )
    return names


def new_offer_id(taken: set[str]) -> str:
    while True:
        candidate = f"offer-{secrets.token_hex(4)}"
        if candidate not in taken:
            return candidate


@dataclass(frozen=True)
class FieldError:
    field: str  # the form field to mark: "name", "offer-2-url", "new-title", or "" (whole form)
    message: str  # what the merchant reads


def explain(error: ConfigError, rows: list[str]) -> FieldError:
    """A validation message in the merchant's words, and the field it is about."""
    where, _, what = str(error).partition(": ")
    suffix, label_more = "", ""
    for lang, (field_suffix, label) in LANGUAGE_FIELDS.items():
        if where.endswith(f".{lang}"):
            where, suffix, label_more = where[: -len(lang) - 1], field_suffix, label
    if where in BRANDING_LABELS:
        name = where.split(".")[-1]
        return FieldError(name + suffix, f"{BRANDING_LABELS[where]}{label_more}: {what}")
    if where in POLICY_LABELS:
        return FieldError(where.split(".")[1], f"{POLICY_LABELS[where]}: {what}")
    if where == "garden.domains":
        return FieldError("garden", f"{GARDEN_LABEL}: {what}")
    match = WHERE_RE.match(where)
    if match and int(match.group(1)) < len(rows):
        row, name = rows[int(match.group(1))], match.group(2) or "title"
        label = "New offer" if row == "new" else f"Offer {int(row.split('-')[1]) + 1}"
        shown = {"url": "link", "id": "id"}.get(name, name)
        return FieldError(f"{row}-{name}{suffix}", f"{label} {shown}{label_more}: {what}")
    return FieldError("", str(error))


def _editor_page(venue: Venue, form: EditorForm, error: FieldError | None = None,
                 status: int = 200) -> ResponseReturnValue:  # fmt: skip
    db = get_db()
    routers = stats.devices(db, venue.id, now())
    return (
        render_template(
            "dashboard/editor.html",
            venue=venue,
            form=form,
            error=error,
            routers=routers,
            on_colour=on_colour(form.colour),
            policy_fields=POLICY_FIELDS,
            max_garden=MAX_GARDEN_DOMAINS,
            language_names=LANGUAGE_NAMES,
        ),
        status,
    )


def on_colour(colour: str) -> str:
    """Black or white text, whichever reads better on the preview's band."""
    if not re.fullmatch(r"#[0-9a-fA-F]{6}", colour or ""):
        return "#ffffff"

    def channel(c: int) -> float:
        s = c / 255
        return s / 12.92 if s <= 0.04045 else ((s + 0.055) / 1.055) ** 2.4

    r, gr, b = (channel(int(colour[i : i + 2], 16)) for i in (1, 3, 5))
    lum = 0.2126 * r + 0.7152 * gr + 0.0722 * b
    return "#ffffff" if (1.05 / (lum + 0.05)) >= ((lum + 0.05) / 0.05) else "#16181d"


@bp.get("/venues/<venue_id>/editor")
@login_required
def editor(venue_id: str) -> ResponseReturnValue:
    venue = own_venue(venue_id)
    return _editor_page(venue, EditorForm.from_config(venue.config, venue.config_version))


@bp.post("/venues/<venue_id>/editor")
@login_required
def save(venue_id: str) -> ResponseReturnValue:
    venue = own_venue(venue_id)
    require_csrf()
    form = EditorForm.from_form(request.form)
    db = get_db()
    if form.base_version != venue.config_version:
        message = (
            f"This venue was changed elsewhere since you opened the editor (now version "
            f"{venue.config_version}). Your edits are below: check them and save again."
        )
        form.base_version = venue.config_version
        return _editor_page(venue, form, FieldError("", message), 409)
    rows: list[str] = []
    try:
        config, rows = form.to_config(venue.config)
        version = set_venue_config(db, venue.id, config)
    except ConfigError as exc:
        db.rollback()
        return _editor_page(venue, form, explain(exc, rows), 400)
    db.commit()
    flash(f"Saved as version {version}. Routers pick it up with their next heartbeat.")
    return redirect(url_for("dashboard.editor", venue_id=venue.id), 303)


@bp.post("/venues/<venue_id>/push")
@login_required
def push(venue_id: str) -> ResponseReturnValue:
    """A `refresh-config` command to each of the venue's routers: they pull the config now
    instead of at the next heartbeat."""
    venue = own_venue(venue_id)
    require_csrf()
    db, t, key = get_db(), now(), current_app.config["CLOUD_KEY"]
    device_ids = db.scalars(
        select(Device.id).where(Device.venue_id == venue.id, Device.revoked.is_(False))
    ).all()
    sent = 0
    for device_id in device_ids:
        try:
            issue(db, key, device_id, "refresh-config", {}, t)
            sent += 1
        except CommandError:  # revoked between the query and the insert: skip it
            continue
    db.commit()
    flash(
        f"Asked {sent} router{'s' if sent != 1 else ''} to fetch the config now."
        if sent
        else "This venue has no routers yet: enrol one with a claim code."
    )
    return redirect(url_for("dashboard.editor", venue_id=venue.id), 303)


@bp.post("/venues/<venue_id>/portal-host")
@login_required
def portal_host(venue_id: str) -> ResponseReturnValue:
    """Register the host name of the venue's portal: shoppers' consent proofs must name it,
    and only links on it are pushed (cloud/presence.py). The merchant's word, never a
    router's: a rooted router cannot move it."""
    venue = own_venue(venue_id)
    require_csrf()
    db = get_db()
    value = request.form.get("portal_host", "").strip()
    try:
        set_portal_host(db, venue.id, value or None)
    except AccountError as exc:
        db.rollback()
        form = EditorForm.from_config(venue.config, venue.config_version)
        return _editor_page(venue, form, FieldError("portal_host", f"Portal address: {exc}"), 400)
    db.commit()
    flash(f"Portal address saved: {venue.portal_host}." if value else "Portal address cleared.")
    return redirect(url_for("dashboard.editor", venue_id=venue.id) + "#portal", 303)


@bp.post("/venues/<venue_id>/claims")
@login_required
def claim(venue_id: str) -> ResponseReturnValue:
    """A new claim code, shown on this one answer and never again (only its hash is kept)."""
    venue = own_venue(venue_id)
    require_csrf()
    db = get_db()
    code = create_claim(db, venue.id, now(), CLAIM_DAYS)
    db.commit()
    return render_template("dashboard/claim.html", venue=venue, code=code, days=CLAIM_DAYS)
