"""The push worker: sends what the outbox (`push_jobs`) holds, and keeps what it cannot send.

`run_once(app)` claims due jobs, sends each, and records the outcome; `serve(app)` repeats it
until told to stop (`plaza-cloud push-worker`). Any number of workers may run against one
PostgreSQL: a claim is `SELECT ... FOR UPDATE SKIP LOCKED` (a worker passes over rows another
is claiming instead of queueing behind them) followed by moving each claimed job's
`next_attempt_at` a lease ahead, committed before anything is sent, so no other worker sees
it as due while it is being sent, and no transaction stays open across a network call. The
UPDATE re-checks that the job is still due, so on SQLite (no row locks: a plain SELECT) two
workers still cannot both claim a job. A worker that dies mid-send leaves its jobs to come
due again when the lease runs out: a push is sent at least once, and twice only then.

Outcomes, from cloud/push's errors: sent; `PushError.retry` -> again after a backoff
(doubling from 30 s, at least what Retry-After asked, at most 30 min) until the job is older
than its TTL (default 1 h: an offer for a shopper who walked in is stale by then) or has been
tried MAX_ATTEMPTS times; `RecipientGone` -> the wallet user's opt-ins or the browser's
subscription are deleted; any other refusal -> given up, with the reason kept in `error`.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from typing import Any

import requests
from flask import Flask
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from cloud import db as cloud_db
from cloud.models import PushJob, PushSubscription
from cloud.push import PushError, RecipientGone, presence_push
from cloud.push.endpoints import guarded_session
from cloud.push.settings import PushSettings
from cloud.push.wallet import WalletMessenger
from cloud.push.webpush import send_webpush

log = logging.getLogger("plaza.cloud.push")

BATCH = 10  # jobs per claim: a lease must outlast sending them all (10 s timeout each)
LEASE_SECONDS = 300.0
BACKOFF_BASE = 30.0
BACKOFF_MAX = 1800.0
MAX_ATTEMPTS = 10


def backoff(attempts: int, retry_after: float | None = None) -> float:
    """Seconds until attempt `attempts + 1`."""
    wait = min(BACKOFF_MAX, BACKOFF_BASE * 2 ** max(0, attempts - 1))
    return max(wait, min(retry_after or 0.0, BACKOFF_MAX))


class Channels:
    """What sending needs, made on first use and kept for one run: the wallet client, the
    VAPID key and a connection pool for push services."""

    def __init__(self, config: PushSettings) -> None:
        self.config = config
        self._messenger: WalletMessenger | None = None
        self._vapid: Any = None
        self._session: requests.Session | None = None

    def messenger(self) -> WalletMessenger:
        if self._messenger is None:
            messenger = self.config.messenger()
            if messenger is None:
                raise PushError("no wallet is configured (PLAZA_CLOUD_WALLET_URL)", retry=True)
            self._messenger = messenger
        return self._messenger

    def vapid(self) -> Any:
        if self._vapid is None:
            self._vapid = self.config.vapid_key()
        return self._vapid

    def session(self) -> requests.Session:
        if self._session is None:
            # Every connection checked and pinned (cloud/push/endpoints.py): DNS may have
            # changed since the browser subscribed.
            self._session = guarded_session(
                self.config.webpush_ca_bundle, self.config.endpoint_guard()
            )
        return self._session

    def close(self) -> None:
        for thing in (self._messenger, self._session):
            if thing is not None:
                thing.close()


def claim(db: Session, at: float, limit: int = BATCH) -> list[int]:
    """Take up to `limit` due jobs for this worker; the caller commits at once."""
    due = (
        select(PushJob.id)
        .where(PushJob.next_attempt_at <= at)
        .order_by(PushJob.next_attempt_at, PushJob.id)
        .limit(limit)
    )
    if db.get_bind().dialect.name == "postgresql":
        due = due.with_for_update(skip_locked=True)
    ids = list(db.scalars(due))
    if not ids:
        return []
    taken = db.execute(
        update(PushJob)
        .where(PushJob.id.in_(ids), PushJob.next_attempt_at <= at)
        .values(next_attempt_at=at + LEASE_SECONDS, attempts=PushJob.attempts + 1)
        .returning(PushJob.id)
        .execution_options(synchronize_session=False)
    )
    return sorted(row[0] for row in taken)


def deliver(db: Session, job: PushJob, channels: Channels, at: float) -> None:
    """Send one job; raises the channel's PushError when it did not arrive."""
    payload = job.payload
    if job.kind == "wallet":
        channels.messenger().send(job.target, payload["title"], payload["body"], payload["link"])
        return
    if job.kind == "webpush":
        sub = db.get(PushSubscription, job.target)
        if sub is None:
            raise RecipientGone("the browser's subscription was removed")
        subscription = {"endpoint": sub.endpoint, "keys": {"p256dh": sub.p256dh, "auth": sub.auth}}
        ttl = max(0, int(job.created_at + channels.config.job_ttl - at))
        send_webpush(
            subscription,
            payload,
            channels.vapid(),
            channels.config.vapid_subject,
            ttl=ttl,
            topic=job.venue_id.replace("_", "-")[:32],  # one pending offer per venue
            session=channels.session(),
        )
        return
    raise PushError(f"unknown push kind {job.kind!r}")


def _settle(db: Session, job: PushJob, exc: Exception | None, at: float, ttl: float) -> str:
    """Record the outcome of one attempt; returns 'sent', 'retry' or 'dropped'."""
    if exc is None:
        job.sent_at, job.next_attempt_at, job.error = at, None, None
        return "sent"
    reason = str(exc)[:500] or type(exc).__name__
    if isinstance(exc, RecipientGone):
        if job.kind == "wallet":
            gone = presence_push.forget_wallet_user(db, job.target, f"recipient gone: {reason}")
            log.info("wallet user gone: %d opt-in(s) removed", gone)
        elif job.kind == "webpush":
            presence_push.forget_subscription(db, job.target, f"recipient gone: {reason}")
            log.info("web push subscription %s gone: removed", job.target)
        job.next_attempt_at, job.error = None, f"recipient gone: {reason}"
        return "dropped"
    if exc.retry if isinstance(exc, PushError) else True:
        after = at + backoff(job.attempts, getattr(exc, "retry_after", None))
        if job.attempts < MAX_ATTEMPTS and after < job.created_at + ttl:
            job.next_attempt_at, job.error = after, reason
            return "retry"
        reason = f"given up after {job.attempts} attempt(s): {reason}"
    job.next_attempt_at, job.error = None, reason
    return "dropped"


def run_once(app: Flask, *, limit: int = BATCH, channels: Channels | None = None) -> int:
    """Claim and send one batch of due jobs; the number sent."""
    clock: Callable[[], float] = app.config["CLOCK"]
    config = PushSettings.of(app)
    own = channels is None
    channels = Channels(config) if channels is None else channels
    sent = 0
    try:
        with cloud_db.session(app) as db:
            ids = claim(db, float(clock()), limit)
            db.commit()
            for job_id in ids:
                job = db.get(PushJob, job_id)
                if job is None or job.sent_at is not None:
                    continue
                at = float(clock())
                error: Exception | None = None
                if job.created_at + config.job_ttl <= at:
                    error = PushError("expired before it could be sent")
                else:
                    try:
                        deliver(db, job, channels, at)
                    except Exception as exc:  # a bug must not lose the job: retried, bounded
                        if not isinstance(exc, PushError):
                            log.exception("push job %s failed unexpectedly", job_id)
                        error = exc
                outcome = _settle(db, job, error, float(clock()), config.job_ttl)
                if outcome != "sent":
                    log.info("push job %s (%s): %s: %s", job_id, job.kind, outcome, job.error)
                sent += outcome == "sent"
                db.commit()
    finally:
        if own:
            channels.close()
    return sent


def serve(app: Flask, *, interval: float = 1.0, stop: threading.Event | None = None) -> None:
    """Send until SIGTERM/SIGINT (or `stop` is set): a full batch is followed at once by the
    next, otherwise the worker looks again after `interval` seconds."""
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for signo in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signo, lambda *_: stop.set())
    channels = Channels(PushSettings.of(app))
    try:
        while not stop.is_set():
            try:
                busy = run_once(app, channels=channels) >= BATCH
            except Exception:  # the database is away: keep the worker, try again
                log.exception("push worker: run failed")
                busy = False
            if not busy:
                stop.wait(interval)
    finally:
        channels.close()
