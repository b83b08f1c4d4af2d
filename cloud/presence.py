"""Presence: station join/leave/login events from routers, and the shopper links push needs.

Events are stored once per (device, key) like usage. Only events new to the cloud have
effects, so a resent batch neither re-links nor re-pushes:
- `login` with `opt_in: true` links the MAC to the wallet user at the venue (upsert), with
  the shopper's one-tap reconnect link (`connect_url`), but only on the wallet's evidence: a
  consent proof (plaza/wallet/consent.py) signed by the wallet's key, for this wallet user,
  for the venue's registered portal host, for exactly this link, made at this login, and never
  used before. A router is the merchant's box; a rooted one could otherwise put any wallet
  user's name on a login and have the cloud message them with a link of its choosing. An
  opt-in without such a proof is refused (stored as a plain login without the user), and
  counted on the router (`devices.presence_refused`), for the dashboard;
  `login` with `opt_in: false` withdraws an existing link (consent can be taken back);
- `join` of a MAC with an opted-in link calls every hook in JOIN_HOOKS with (venue, link),
  after the events are committed, so a failing hook cannot lose events.
Push senders register themselves with `register_join_hook`; nothing here knows how to push.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Flask
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from cloud.db import dialect_insert
from cloud.models import ConsentProof, Device, PresenceEvent, ShopperLink, Venue
from cloud.usage import KEY_RE, MAC_RE
from plaza.records import CONNECT_URL_RE, MAX_CONNECT_URL, PRESENCE_KINDS
from plaza.validators import HOSTNAME_RE
from plaza.wallet import consent

log = logging.getLogger(__name__)
MAX_EVENTS = 1000
FIELDS = {"key", "kind", "mac", "at"}
OPTIONAL = {"wallet_user", "opt_in", "connect_url", "consent"}
LOGIN_SKEW = 900.0  # a consent proof is made within this long of the login it comes with
MAX_REASON = 200

JoinHook = Callable[[Venue, ShopperLink], None]
JOIN_HOOKS: list[JoinHook] = []


class PresenceError(ValueError):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def register_join_hook(hook: JoinHook) -> JoinHook:
    """Call `hook(venue, link)` when an opted-in shopper joins (usable as a decorator)."""
    JOIN_HOOKS.append(hook)
    return hook


def on_join(venue: Venue, link: ShopperLink) -> None:
    """An opted-in shopper is back at `venue`: where push is wired (see JOIN_HOOKS)."""
    for hook in list(JOIN_HOOKS):
        try:
            hook(venue, link)
        except Exception:
            log.exception("join hook %r failed for %s at %s", hook, link.mac, venue.id)


def _check(event: Any) -> str | None:
    if not isinstance(event, dict):
        return "not an object"
    if missing := FIELDS - set(event):
        return f"missing field {sorted(missing)[0]!r}"
    if unknown := set(event) - FIELDS - OPTIONAL:
        return f"unknown field {sorted(unknown)[0]!r}"
    if not isinstance(event["key"], str) or not KEY_RE.match(event["key"]):
        return "bad key"
    if event["kind"] not in PRESENCE_KINDS:
        return f"kind must be one of {', '.join(PRESENCE_KINDS)}"
    if not isinstance(event["mac"], str) or not MAC_RE.match(event["mac"].lower()):
        return "bad mac"
    at = event["at"]
    # A time as usage takes it; a range, not math.isfinite(), which raises for a huge int.
    if isinstance(at, bool) or not isinstance(at, int | float) or not 0 <= at < 1e11:
        return "bad at"
    user = event.get("wallet_user")
    if user is not None and (
        not isinstance(user, str) or not 1 <= len(user) <= 128 or not user.isprintable()
    ):
        return "wallet_user must be 1 to 128 printable characters"
    if "opt_in" in event and not isinstance(event["opt_in"], bool):
        return "opt_in must be true or false"
    if event["kind"] == "login" and event.get("opt_in") and user is None:
        return "a login with opt_in needs wallet_user"
    if "connect_url" in event:
        if event["kind"] != "login" or event.get("opt_in") is not True:
            return "connect_url only comes with a login with opt_in"
        if normal_connect_url(event["connect_url"]) is None:
            return "connect_url must be https://<portal host>/reconnect/<token>"
    if "consent" in event:
        proof = event["consent"]
        if "connect_url" not in event:
            return "consent only comes with a connect_url"
        if not isinstance(proof, str) or not 1 <= len(proof) <= consent.MAX_PROOF:
            return f"consent must be a string of at most {consent.MAX_PROOF} characters"
    return None


@dataclass(frozen=True)
class ConsentCheck:
    """What the cloud checks consent proofs with: the wallet's public key (PEM), or None when
    the cloud has no wallet configured, and then no opt-in is ever believed."""

    wallet_public_key: bytes | None

    @classmethod
    def from_app(cls, app: Flask) -> ConsentCheck:
        path = app.config.get("WALLET_PUBLIC_KEY_FILE") or os.environ.get(
            "PLAZA_CLOUD_WALLET_PUBLIC_KEY_FILE"
        )
        if not path:
            return cls(None)
        try:
            return cls(Path(path).read_bytes())
        except OSError as exc:
            raise ValueError(f"PLAZA_CLOUD_WALLET_PUBLIC_KEY_FILE: {exc}") from None

    def verify(self, event: dict[str, Any], venue: Venue, now: float) -> consent.Consent:
        """The consent behind an opt-in `event` at `venue`, or ConsentError saying why not."""
        if self.wallet_public_key is None:
            raise consent.ConsentError("the cloud has no wallet key to check consent with")
        if not venue.portal_host:
            raise consent.ConsentError("the venue has no registered portal host")
        if event.get("consent") is None:
            raise consent.ConsentError("opt-in without the wallet's consent proof")
        proof = consent.verify(event["consent"], self.wallet_public_key, None, now)
        if proof.wallet_user != event["wallet_user"]:
            raise consent.ConsentError("consent proof is for another wallet user")
        if proof.origin != f"https://{venue.portal_host}":
            raise consent.ConsentError("consent proof is for another venue's portal")
        link = normal_connect_url(event.get("connect_url"))
        if link is None or not link.startswith(f"https://{venue.portal_host}/"):
            raise consent.ConsentError("connect_url is not on the venue's portal host")
        if consent.link_digest(event["connect_url"]) != proof.link_digest:
            raise consent.ConsentError("consent proof is for another link")
        if abs(float(event["at"]) - proof.issued_at) > LOGIN_SKEW:
            raise consent.ConsentError("consent proof is not from this login")
        return proof


def normal_connect_url(url: Any) -> str | None:
    """A router's one-tap link in one canonical spelling (host lower-case, no `:443`), or None
    if it is not a portal reconnect link: https, a DNS name (the portal's certificate name,
    never an IP literal, as RFC 8910 wants), the path portal/reconnect.py serves."""
    if not isinstance(url, str) or len(url) > MAX_CONNECT_URL:
        return None
    match = CONNECT_URL_RE.fullmatch(url)
    if match is None:
        return None
    host, port = match["host"].lower().rstrip("."), match["port"]
    if not HOSTNAME_RE.match(host) or host.replace(".", "").isdigit():
        return None
    if port is not None and not 0 < int(port) < 65536:
        return None
    netloc = host if port in (None, "443") else f"{host}:{int(port)}"
    return f"https://{netloc}/reconnect/{match['token']}"


def consent_check(app: Flask) -> ConsentCheck:
    """The app's ConsentCheck, read from its settings once (create_app reads it, so a
    missing key file stops the start, naming the setting)."""
    found = app.extensions.get("plaza_consent")
    if found is None:
        found = app.extensions["plaza_consent"] = ConsentCheck.from_app(app)
    return found


def validate_events(body: Any) -> list[dict[str, Any]]:
    if not isinstance(body, dict) or set(body) != {"events"}:
        raise PresenceError('body must be {"events": [...]}')
    events = body["events"]
    if not isinstance(events, list):
        raise PresenceError("events must be a list")
    if len(events) > MAX_EVENTS:
        raise PresenceError(f"{len(events)} events: at most {MAX_EVENTS} per batch", 413)
    for i, event in enumerate(events):
        if problem := _check(event):
            raise PresenceError(f"event {i}: {problem}")
    return events


def store_events(
    db: Session,
    device: Device,
    events: list[dict[str, Any]],
    now: float,
    check: ConsentCheck | None = None,
) -> tuple[int, int, int]:
    """Store new events and apply their effects; returns (accepted, duplicates, refused): an
    opt-in whose consent does not hold is stored as a plain login without its wallet user,
    has no effect, and is counted on the device. Commits, then runs the join hooks."""
    if not events:
        return 0, 0, 0
    check = check or ConsentCheck(None)
    rows: dict[str, dict[str, Any]] = {}
    for event in events:
        rows.setdefault(event["key"], {
            "device_id": device.id, "venue_id": device.venue_id, "key": event["key"],
            "kind": event["kind"], "mac": event["mac"].lower(), "at": float(event["at"]),
            "wallet_user": event.get("wallet_user"), "opt_in": event.get("opt_in"),
            "connect_url": normal_connect_url(event.get("connect_url")), "event": event,
        })  # fmt: skip
    venue = db.get(Venue, device.venue_id)
    assert venue is not None
    refusals: dict[str, str] = {}
    for key, row in rows.items():
        if row["kind"] == "login" and row["opt_in"]:
            try:
                row["proof"] = check.verify(row["event"], venue, now)
            except consent.ConsentError as exc:
                refusals[key] = str(exc)
                row["wallet_user"] = row["opt_in"] = row["connect_url"] = None
    stmt = (
        dialect_insert(db, PresenceEvent)
        .on_conflict_do_nothing(index_elements=["device_id", "key"])
        .returning(PresenceEvent.key)
    )
    # connect_url lives on the link, not the event row (a bearer link, kept once, in one place).
    skip = {"connect_url", "event", "proof"}
    event_rows = [{k: v for k, v in r.items() if k not in skip} for r in rows.values()]
    new = {row[0] for row in db.execute(stmt, event_rows)}
    links: list[ShopperLink] = []
    for key, row in sorted(
        ((k, r) for k, r in rows.items() if k in new), key=lambda kr: kr[1]["at"]
    ):
        if row["kind"] == "login" and row["opt_in"]:
            if not _use_once(db, row["proof"], venue.id, now):
                refusals[key] = "consent proof already used"
                continue
            # Each login replaces the link, connect_url included, so one wallet user's
            # reconnect link is never pushed to the next user of this MAC.
            linked = {
                "wallet_user": row["wallet_user"],
                "opted_in": True,
                "updated_at": now,
                "connect_url": row["connect_url"],
                "consent_jti": row["proof"].jti,
            }
            upsert = dialect_insert(db, ShopperLink).values(
                venue_id=device.venue_id, mac=row["mac"], **linked
            )
            db.execute(
                upsert.on_conflict_do_update(index_elements=["venue_id", "mac"], set_=linked)
            )
        elif row["kind"] == "login" and row["opt_in"] is False:
            db.execute(
                update(ShopperLink)
                .where(ShopperLink.venue_id == device.venue_id, ShopperLink.mac == row["mac"])
                .values(opted_in=False, updated_at=now, connect_url=None)
            )
        elif row["kind"] == "join":
            # Looked up in event order: a join before this batch's own login is no return.
            link = db.scalar(
                select(ShopperLink)
                .where(
                    ShopperLink.venue_id == device.venue_id,
                    ShopperLink.mac == row["mac"],
                    ShopperLink.opted_in.is_(True),
                    ShopperLink.consent_jti.is_not(None),
                )
                .execution_options(populate_existing=True)
            )
            if link is not None and link not in links:
                links.append(link)
    refused = [reason for key, reason in refusals.items() if key in new]
    if refused:
        _count_refused(db, device, refused, now)
    db.commit()
    for link in links:
        on_join(venue, link)
    return len(new), len(events) - len(new), len(refused)


def _use_once(db: Session, proof: consent.Consent, venue_id: str, now: float) -> bool:
    """Record `proof` as used; False if it was used before (a replay)."""
    stmt = (
        dialect_insert(db, ConsentProof)
        .values(
            jti=proof.jti,
            venue_id=venue_id,
            wallet_user=proof.wallet_user,
            issued_at=proof.issued_at,
            expires_at=proof.expires_at,
            used_at=now,
        )
        .on_conflict_do_nothing(index_elements=["jti"])
        .returning(ConsentProof.jti)
    )
    return db.execute(stmt).first() is not None


def _count_refused(db: Session, device: Device, reasons: list[str], now: float) -> None:
    """Count refused opt-ins on the router, in one statement (routers post concurrently)."""
    log.warning(
        "router %s sent %d opt-in(s) without valid consent (%s)",
        device.id, len(reasons), reasons[-1],
    )  # fmt: skip
    db.execute(
        update(Device)
        .where(Device.id == device.id)
        .values(
            presence_refused=Device.presence_refused + len(reasons),
            presence_refused_reason=reasons[-1][:MAX_REASON],
            presence_refused_at=now,
        )
    )
