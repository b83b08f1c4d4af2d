"""Presence push: when an opted-in shopper walks back in, put the venue's offers and the
shopper's one-tap connect link in the push outbox (`push_jobs`).

This runs as a presence join hook, inside the router's request but after its events are
committed: it only writes rows, so a slow or dead wallet never delays a router, and the
worker (`plaza-cloud push-worker`, cloud/push/worker.py) does the sending.

Only links made on the wallet's consent (cloud/presence.py) are pushed to, with a link on the
venue's registered portal host, and at most `PUSH_VENUE_HOURLY_BUDGET` shoppers per venue per
hour (default 500).

One push per shopper per venue per `PUSH_INTERVAL_HOURS` (default 4): a phone flapping on
and off the Wi-Fi, or walking past two routers, is not spammed. The shopper is the wallet
user, not the MAC, so a phone that re-randomizes its MAC does not reset the limit either.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from flask import Flask, current_app
from sqlalchemy import delete, distinct, func, select
from sqlalchemy.orm import Session

from cloud import db as cloud_db
from cloud import presence
from cloud.api import now
from cloud.models import PresenceEvent, PushJob, PushSubscription, ShopperLink, Venue
from cloud.push import subscribe
from cloud.push.settings import EXTENSION, PushSettings
from cloud.push.webpush import MAX_PAYLOAD
from plaza.texts import DEFAULT_LANGUAGE, ZH, canonical_tag, pick

log = logging.getLogger("plaza.cloud.push")

MAX_TITLE = 80  # what the wallet takes (lab/wallet/passes.MAX_TITLE)
MAX_BODY = 500  # lab/wallet/messages.MAX_BODY
CONNECT_LINE = "Tap to connect to the Wi-Fi."
# The cloud does not know a returning shopper's language (the wallet message has no browser
# behind it), so a push is written in the venue's default language: its own sentences from
# here (English for any language not listed), the merchant's texts by plaza/texts.py's
# fallback order from that language.
SENTENCES: dict[str, tuple[str, str]] = {  # language: (title with {name}, connect line)
    DEFAULT_LANGUAGE: ("Welcome back to {name}", CONNECT_LINE),
    ZH: ("欢迎再次光临{name}", "轻点即可连接 Wi-Fi。"),
}


def init_app(app: Flask) -> None:
    """Check the push settings (a bad one stops the app at start), serve the subscription
    endpoints and hook into presence. The hook is process-wide and idempotent: every app in
    the process shares it, and it finds its app's settings through `current_app`."""
    app.extensions[EXTENSION] = PushSettings.from_app(app)
    app.register_blueprint(subscribe.bp)
    if join_hook not in presence.JOIN_HOOKS:
        presence.register_join_hook(join_hook)


def join_hook(venue: Venue, link: ShopperLink) -> None:
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    with cloud_db.session(app) as db:
        jobs = enqueue_join(db, venue.id, link.id, now(), PushSettings.of(app))
        db.commit()
    if jobs:
        log.info("queued %d push(es) for a returning shopper at %s", len(jobs), venue.id)


def enqueue_join(
    db: Session, venue_id: str, link_id: int, at: float, config: PushSettings
) -> list[PushJob]:
    """Queue the pushes a join of this link earns: a wallet message, and one Web Push per
    subscribed browser of the same wallet user here; none within the rate-limit interval.
    The caller commits."""
    # The link row is locked (PostgreSQL) so two routers reporting the same phone at once
    # cannot both pass the rate-limit check below.
    link = db.scalar(
        select(ShopperLink)
        .where(ShopperLink.id == link_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    venue = db.get(Venue, venue_id)
    if link is None or not link.opted_in or link.consent_jti is None or venue is None:
        return []  # only a link the wallet's consent proof made (cloud/presence.py)
    if link.connect_url and not link.connect_url.startswith(f"https://{venue.portal_host}/"):
        return []  # the merchant moved the portal since: the old link is not theirs to push
    # A join the router reports long after it happened (its outbox replayed after an
    # outage) is no welcome any more: only a join within the push TTL counts.
    fresh = db.scalar(
        select(PresenceEvent.id)
        .where(
            PresenceEvent.venue_id == venue_id,
            PresenceEvent.at > at - config.job_ttl,
            PresenceEvent.mac == link.mac,
            PresenceEvent.kind == "join",
        )
        .limit(1)
    )
    if fresh is None:
        return []
    recent = db.scalar(
        select(PushJob.id)
        .where(
            PushJob.venue_id == venue_id,
            PushJob.shopper == link.wallet_user,
            PushJob.created_at > at - config.interval_seconds,
        )
        .limit(1)
    )
    if recent is not None:
        return []
    pushed = db.scalar(
        select(func.count(distinct(PushJob.shopper))).where(
            PushJob.venue_id == venue_id, PushJob.created_at > at - 3600
        )
    )
    if (pushed or 0) >= config.venue_hourly_budget:
        log.warning(
            "venue %s reached its push budget (%d shoppers this hour): not pushing",
            venue_id, config.venue_hourly_budget,
        )  # fmt: skip
        return []
    jobs = []
    message = wallet_message(venue.config, link.connect_url)
    if message is not None:
        jobs.append(_job(venue_id, "wallet", link.wallet_user, link.wallet_user, message, at))
        data = webpush_payload(venue, message)
        subscriptions = db.scalars(
            select(PushSubscription.id).where(
                PushSubscription.venue_id == venue_id,
                PushSubscription.wallet_user == link.wallet_user,
            )
        ).all()
        for sid in subscriptions:
            jobs.append(_job(venue_id, "webpush", sid, link.wallet_user, data, at))
    db.add_all(jobs)
    db.flush()
    return jobs


def _job(venue_id: str, kind: str, target: str, shopper: str, payload: dict[str, Any],
         at: float) -> PushJob:  # fmt: skip
    return PushJob(
        venue_id=venue_id, kind=kind, target=target, shopper=shopper, payload=payload,
        created_at=at, attempts=0, next_attempt_at=at,
    )  # fmt: skip


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def venue_language(config: dict[str, Any]) -> str:
    """The venue's default language (a config from before languages: English)."""
    return canonical_tag(config.get("default_language")) or DEFAULT_LANGUAGE


def localized_offer(offer: dict[str, Any], lang: str) -> dict[str, Any]:
    """The offer with its title and body as plain text in `lang` (or its fallback)."""
    return {**offer, "title": pick(offer.get("title"), lang), "body": pick(offer.get("body"), lang)}


def wallet_message(config: dict[str, Any], connect_url: str | None) -> dict[str, Any] | None:
    """Title, body and link of the wallet message: the venue's current offers, one a line,
    and the one-tap link. Without a connect link, the first offer's own link; with neither
    a link nor an offer there is nothing worth a push (None)."""
    lang = venue_language(config)
    welcome, connect_line = SENTENCES.get(lang, SENTENCES[DEFAULT_LANGUAGE])
    name = pick(config.get("branding", {}).get("name"), lang) or "our venue"
    offers = [localized_offer(o, lang) for o in config.get("offers", []) if isinstance(o, dict)]
    link = connect_url or next((o["url"] for o in offers if o.get("url")), None)
    if link is None or not (offers or connect_url):
        return None
    footer = connect_line if connect_url else ""
    lines: list[str] = []
    room = MAX_BODY - len(footer) - 1
    for offer in offers:
        line = _cut(offer["title"] + (f" — {offer['body']}" if offer.get("body") else ""), 160)
        if len("\n".join([*lines, line])) > room:
            break
        lines.append(line)
    body = "\n".join([*lines, footer] if footer else lines) or footer
    return {
        "title": _cut(welcome.format(name=name), MAX_TITLE),
        "body": body,
        "link": link,
        "offers": [o["id"] for o in offers],
    }


def webpush_payload(venue: Venue, message: dict[str, Any]) -> dict[str, Any]:
    """What the browser's service worker gets: the message plus the offers themselves, as
    many as fit the encrypted 4 KiB a push service must accept."""
    lang = venue_language(venue.config)
    offers = [
        {k: o.get(k, "") for k in ("id", "title", "body", "url")}
        for o in (
            localized_offer(o, lang) for o in venue.config.get("offers", []) if isinstance(o, dict)
        )
    ]
    data = {
        "title": message["title"],
        "body": message["body"],
        "url": message["link"],
        "venue": venue.id,
        "offers": offers,
    }
    while offers and _size(data) > MAX_PAYLOAD:
        offers.pop()
    return data


def _size(data: dict[str, Any]) -> int:
    return len(json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode())


def forget_wallet_user(db: Session, wallet_user: str, why: str) -> int:
    """The wallet says this user does not exist: drop their opt-ins everywhere (the cloud
    pushes through one wallet app), their browsers' subscriptions and their pending pushes.
    Returns the number of links removed. The caller commits."""
    removed = db.execute(delete(ShopperLink).where(ShopperLink.wallet_user == wallet_user))
    db.execute(delete(PushSubscription).where(PushSubscription.wallet_user == wallet_user))
    _drop_pending(db, PushJob.shopper == wallet_user, why)
    return removed.rowcount or 0


def forget_subscription(db: Session, subscription_id: str, why: str) -> None:
    db.execute(delete(PushSubscription).where(PushSubscription.id == subscription_id))
    _drop_pending(db, (PushJob.kind == "webpush") & (PushJob.target == subscription_id), why)


def _drop_pending(db: Session, which: Any, why: str) -> None:
    pending = PushJob.sent_at.is_(None) & PushJob.next_attempt_at.is_not(None)
    for job in db.scalars(select(PushJob).where(which, pending)):
        job.next_attempt_at, job.error = None, why
