"""Enrolment: a router trades a one-time claim code for its own identity.

The claim code is the only secret an unsigned request can carry, so it is single-use,
expires, and is kept only as a SHA-256 (a leaked database holds no usable codes). The router's
public key is stored; its private key never leaves the router.
"""

from __future__ import annotations

import hashlib
import re
import secrets

from flask import Blueprint, current_app, jsonify
from flask.typing import ResponseReturnValue
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from cloud.api import ApiError, json_object, now
from cloud.db import get_db
from cloud.models import ClaimCode, Device, Venue
from plaza import signing

bp = Blueprint("enrol", __name__, url_prefix="/api/v1")

# Crockford's base32 alphabet: no I, L, O, U, so a code read aloud or off a label survives.
ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
CODE_GROUPS = 3  # 3 x 4 characters = 60 bits: single use and a 7-day life make that plenty
TEXT_RE = re.compile(r"^[\x20-\x7e]{0,63}\Z")


class ClaimError(ValueError):
    """A claim code that cannot be created."""


def normalise(code: str) -> str:
    """What is hashed: upper case without separators, so "k7q4 9xmp-2d3f" still works."""
    return re.sub(r"[\s-]", "", code).upper()


def code_hash(code: str) -> str:
    return hashlib.sha256(normalise(code).encode()).hexdigest()


def create_claim(db: Session, venue_id: str, now: float, days: float = 7) -> str:
    """A new claim code for a venue; the plain code is returned once and never stored."""
    if db.get(Venue, venue_id) is None:
        raise ClaimError(f"no venue {venue_id}")
    if not 0 < days <= 365:
        raise ClaimError("days must be more than 0 and at most 365")
    raw = "".join(secrets.choice(ALPHABET) for _ in range(4 * CODE_GROUPS))
    code = "-".join(raw[i : i + 4] for i in range(0, len(raw), 4))
    db.add(
        ClaimCode(
            code_hash=code_hash(code), venue_id=venue_id, created_at=now,
            expires_at=now + days * 86400,
        )
    )  # fmt: skip
    db.flush()
    return code


def _text(body: dict, name: str) -> str:
    value = body.get(name, "")
    if not isinstance(value, str) or not TEXT_RE.match(value):
        raise ApiError(400, f"{name}: must be printable ASCII of at most 63 characters")
    return value


@bp.post("/enrol")
def enrol() -> ResponseReturnValue:
    body = json_object()
    code = body.get("claim_code")
    if not isinstance(code, str) or not 1 <= len(code) <= 64:
        raise ApiError(400, "claim_code: missing or not a string")
    public = body.get("public_key")
    try:
        signing.load_public(public if isinstance(public, str) else "")
    except signing.SignatureError as exc:
        raise ApiError(400, f"public_key: {exc}") from None
    hostname, version = _text(body, "hostname"), _text(body, "version")
    db, t = get_db(), now()
    claim = db.scalar(select(ClaimCode).where(ClaimCode.code_hash == code_hash(code)))
    if claim is None:
        raise ApiError(404, "unknown claim code")
    if claim.used_at is not None:
        raise ApiError(409, "claim code already used")
    if claim.expires_at <= t:
        raise ApiError(410, "claim code expired")
    device = Device(
        venue_id=claim.venue_id, public_key=public, hostname=hostname, version=version,
        enrolled_at=t, revoked=False,
    )  # fmt: skip
    db.add(device)
    db.flush()
    # Conditional update: of two routers presenting the same code at once, exactly one wins.
    taken = db.execute(
        update(ClaimCode)
        .where(ClaimCode.id == claim.id, ClaimCode.used_at.is_(None))
        .values(used_at=t, device_id=device.id)
        .execution_options(synchronize_session=False)
    )
    if taken.rowcount != 1:
        db.rollback()
        raise ApiError(409, "claim code already used")
    db.commit()
    cloud_public = signing.public_b64(current_app.config["CLOUD_KEY"])
    return jsonify(device_id=device.id, venue_id=claim.venue_id, cloud_public_key=cloud_public), 201


STATUS_DAYS = 30  # how long after use a claim code still answers for its router


@bp.post("/enrol/status")
def enrol_status() -> ResponseReturnValue:
    """Read-only: the router a claim code enrolled, and its last heartbeat, for the field
    technician's `plaza-provision verify`. The claim code is the credential: the technician
    already held it, it names one router, and it answers only for STATUS_DAYS after its use.
    POST so the code stays out of URLs and access logs."""
    code = json_object().get("claim_code")
    if not isinstance(code, str) or not 1 <= len(code) <= 64:
        raise ApiError(400, "claim_code: missing or not a string")
    db, t = get_db(), now()
    claim = db.scalar(select(ClaimCode).where(ClaimCode.code_hash == code_hash(code)))
    if claim is None:
        raise ApiError(404, "unknown claim code")
    if claim.used_at is None or claim.device_id is None:
        return jsonify(enrolled=False, time=t)
    if t - claim.used_at > STATUS_DAYS * 86400:
        raise ApiError(410, f"claim code used more than {STATUS_DAYS} days ago")
    device = db.get(Device, claim.device_id)
    if device is None:
        return jsonify(enrolled=False, time=t)
    return jsonify(
        enrolled=True, device_id=device.id, venue_id=device.venue_id,
        enrolled_at=device.enrolled_at, last_heartbeat_at=device.last_heartbeat_at,
        revoked=device.revoked, version=device.version, time=t,
    )  # fmt: skip
