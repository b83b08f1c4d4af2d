"""Image-baked enrolment: a router built with the merchant's fleet secret and a venue tag asks
to join on first boot, and waits in a "pending" list until the merchant approves it in the
dashboard. Never auto-trusted: the secret is in every image and may leak, so it only lets a
router ASK; the decision, and which venue it serves, are the merchant's.

The router polls the same endpoint with the same public key (one row per key, so a reboot
while waiting is no second request) and gets its identity once approved. Nothing secret is
in that answer: the router's private key never leaves it and its requests are signed.
"""

from __future__ import annotations

import hashlib
import secrets

from flask import Blueprint, current_app, jsonify
from flask.typing import ResponseReturnValue
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cloud.api import ApiError, json_object, now
from cloud.db import get_db
from cloud.enrol import TEXT_RE
from cloud.models import Device, FleetSecret, PendingDevice, Venue
from plaza import signing

bp = Blueprint("fleet", __name__, url_prefix="/api/v1")

MAX_PENDING = 200  # open requests per merchant: a leaked secret cannot flood the list


class FleetError(ValueError):
    """A decision the dashboard cannot make (not this merchant's, already decided)."""


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.strip().encode()).hexdigest()


def create_fleet_secret(db: Session, merchant_id: str, t: float) -> str:
    """A new fleet secret (shown once); the merchant's earlier ones are revoked, so baking a
    new image and revoking a leaked secret are one act."""
    for old in db.scalars(
        select(FleetSecret).where(
            FleetSecret.merchant_id == merchant_id, FleetSecret.revoked_at.is_(None)
        )
    ):
        old.revoked_at = t
    secret = "fleet-" + secrets.token_urlsafe(24)
    db.add(FleetSecret(merchant_id=merchant_id, secret_hash=secret_hash(secret), created_at=t))
    db.flush()
    return secret


def pending_for(db: Session, merchant_id: str) -> list[PendingDevice]:
    return list(
        db.scalars(
            select(PendingDevice)
            .where(PendingDevice.merchant_id == merchant_id, PendingDevice.decided_at.is_(None))
            .order_by(PendingDevice.requested_at)
        )
    )


def _open(db: Session, merchant_id: str, pending_id: str) -> PendingDevice:
    pending = db.get(PendingDevice, pending_id)
    if pending is None or pending.merchant_id != merchant_id:
        raise FleetError("no such router waiting")
    if pending.decided_at is not None:
        raise FleetError("this router was already decided")
    return pending


def approve(db: Session, merchant_id: str, pending_id: str, venue_id: str, t: float) -> Device:
    """The merchant lets the router in, for one of their venues."""
    pending = _open(db, merchant_id, pending_id)
    venue = db.get(Venue, venue_id)
    if venue is None or venue.merchant_id != merchant_id:
        raise FleetError("no such venue")
    device = Device(
        venue_id=venue.id,
        public_key=pending.public_key,
        hostname=pending.hostname,
        version=pending.version,
        enrolled_at=t,
        revoked=False,
    )
    db.add(device)
    db.flush()
    pending.decided_at, pending.device_id = t, device.id
    return device


def reject(db: Session, merchant_id: str, pending_id: str, t: float) -> None:
    pending = _open(db, merchant_id, pending_id)
    pending.decided_at, pending.rejected = t, True


def _text(body: dict, name: str) -> str:
    value = body.get(name, "")
    if not isinstance(value, str) or not TEXT_RE.match(value):
        raise ApiError(400, f"{name}: must be printable ASCII of at most 63 characters")
    return value


@bp.post("/enrol/fleet")
def fleet_enrol() -> ResponseReturnValue:
    """Ask to join (or ask again): 202 while pending, 201 with the identity once approved,
    403 if the merchant refused or the secret is unknown or revoked."""
    body = json_object()
    secret = body.get("fleet_secret")
    if not isinstance(secret, str) or not 1 <= len(secret) <= 128:
        raise ApiError(400, "fleet_secret: missing or not a string")
    public = body.get("public_key")
    try:
        signing.load_public(public if isinstance(public, str) else "")
    except signing.SignatureError as exc:
        raise ApiError(400, f"public_key: {exc}") from None
    tag, hostname, version = (
        _text(body, "venue_tag"),
        _text(body, "hostname"),
        _text(body, "version"),
    )
    db, t = get_db(), now()
    fleet = db.scalar(select(FleetSecret).where(FleetSecret.secret_hash == secret_hash(secret)))
    if fleet is None or fleet.revoked_at is not None:
        raise ApiError(403, "unknown or revoked fleet secret")
    pending = db.scalar(select(PendingDevice).where(PendingDevice.public_key == public))
    if pending is not None and pending.merchant_id != fleet.merchant_id:
        raise ApiError(409, "this key asked another merchant")
    if pending is None:
        waiting = db.scalar(
            select(func.count())
            .select_from(PendingDevice)
            .where(
                PendingDevice.merchant_id == fleet.merchant_id,
                PendingDevice.decided_at.is_(None),
            )
        )
        if (waiting or 0) >= MAX_PENDING:
            raise ApiError(429, "too many routers waiting for this merchant's approval")
        pending = PendingDevice(
            merchant_id=fleet.merchant_id,
            public_key=public,
            venue_tag=tag,
            hostname=hostname,
            version=version,
            requested_at=t,
            rejected=False,
        )
        db.add(pending)
        db.commit()
    if pending.rejected:
        raise ApiError(403, "the merchant refused this router")
    if pending.device_id is None:
        return jsonify(status="pending", pending_id=pending.id), 202
    device = db.get(Device, pending.device_id)
    if device is None or device.revoked:
        raise ApiError(403, "this router was revoked")
    cloud_public = signing.public_b64(current_app.config["CLOUD_KEY"])
    return jsonify(
        status="approved",
        device_id=device.id,
        venue_id=device.venue_id,
        cloud_public_key=cloud_public,
    ), 201
