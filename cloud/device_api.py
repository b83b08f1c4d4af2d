"""The signed router endpoints under /api/v1/device (docs/cloud-protocol.md)."""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, current_app, g, jsonify, request
from flask.typing import ResponseReturnValue

from cloud import commands, presence, usage
from cloud.api import ApiError, json_object, now
from cloud.auth_device import signed
from cloud.db import get_db
from cloud.models import Venue

bp = Blueprint("device", __name__, url_prefix="/api/v1/device")
MAX_WAIT = 30

# Health fields a heartbeat may carry, with the check each must pass; others are dropped, so
# a newer router's extra fields are no error and an old cloud stores only what it knows.
_NUM = (int, float)
HEALTH: dict[str, Any] = {
    "uptime": lambda v: isinstance(v, _NUM) and v >= 0,
    "load": lambda v: isinstance(v, list) and len(v) == 3 and all(isinstance(x, _NUM) for x in v),
    "mem_used_bytes": lambda v: isinstance(v, int) and v >= 0,
    "mem_total_bytes": lambda v: isinstance(v, int) and v >= 0,
    "clients": lambda v: (
        isinstance(v, dict) and all(isinstance(n, int) and n >= 0 for n in v.values())
    ),
    "version": lambda v: isinstance(v, str) and len(v) <= 32 and v.isprintable(),
    "config_version": lambda v: isinstance(v, int) and v >= 0,
    "outbox_backlog": lambda v: isinstance(v, int) and v >= 0,
}


def _venue() -> Venue:
    venue = get_db().get(Venue, g.device.venue_id)
    if venue is None:  # only if a venue was deleted under its devices
        raise ApiError(404, "the device's venue no longer exists")
    return venue


@bp.post("/heartbeat")
@signed
def heartbeat() -> ResponseReturnValue:
    body = json_object(g.body)
    health = {}
    for name, check in HEALTH.items():
        if name in body:
            value = body[name]
            if isinstance(value, bool) or not check(value):
                raise ApiError(400, f"{name}: bad value {value!r:.60}")
            health[name] = value
    t = now()
    device = g.device
    device.health, device.last_heartbeat_at = health, t
    if isinstance(health.get("version"), str):
        device.version = health["version"]
    version = _venue().config_version
    get_db().commit()
    return jsonify(time=int(t), config_version=version)


@bp.get("/config")
@signed
def config() -> ResponseReturnValue:
    venue = _venue()
    etag = str(venue.config_version)
    if request.if_none_match.contains(etag):
        response = current_app.response_class(status=304)
    else:
        response = jsonify(version=venue.config_version, config=venue.config)
    response.set_etag(etag)
    response.headers["Cache-Control"] = "no-cache"
    return response


@bp.get("/commands")
@signed
def poll_commands() -> ResponseReturnValue:
    raw = request.args.get("wait", "0")
    if not (raw.isascii() and raw.isdigit()) or int(raw) > MAX_WAIT:
        raise ApiError(400, f"wait must be an integer from 0 to {MAX_WAIT}")
    db, interval = get_db(), float(current_app.config["COMMAND_POLL_SECONDS"])
    deadline = time.monotonic() + int(raw)
    while True:
        found = commands.pending(db, g.device.id, now())
        # End the transaction: a fresh snapshot next time (SQLite WAL keeps one per
        # transaction) and no pooled connection held while sleeping.
        db.rollback()
        left = deadline - time.monotonic()
        if found or left <= 0:
            return jsonify(commands=found)
        time.sleep(min(interval, left))


@bp.post("/commands/<command_id>/result")
@signed
def command_result(command_id: str) -> ResponseReturnValue:
    body = json_object(g.body)
    if not isinstance(body.get("ok"), bool):
        raise ApiError(400, "ok: must be true or false")
    if set(body) - {"ok", "error"}:
        raise ApiError(400, "unknown field in result")
    error = body.get("error")
    if error is not None and (not isinstance(error, str) or len(error) > 1000 or "\x00" in error):
        raise ApiError(400, "error: must be text of at most 1000 characters")
    db = get_db()
    if not commands.record_result(db, g.device.id, command_id, body, now()):
        raise ApiError(404, "no such command for this device")
    db.commit()
    return jsonify({})


@bp.post("/usage")
@signed
def post_usage() -> ResponseReturnValue:
    try:
        records = usage.validate_batch(json_object(g.body))
    except usage.BatchError as exc:
        raise ApiError(exc.status, str(exc)) from None
    accepted, duplicates = usage.store_batch(get_db(), g.device, records, now())
    return jsonify(accepted=accepted, duplicates=duplicates)


@bp.post("/presence")
@signed
def post_presence() -> ResponseReturnValue:
    try:
        events = presence.validate_events(json_object(g.body))
    except presence.PresenceError as exc:
        raise ApiError(exc.status, str(exc)) from None
    check = presence.consent_check(current_app)
    accepted, duplicates, refused = presence.store_events(get_db(), g.device, events, now(), check)
    return jsonify(accepted=accepted, duplicates=duplicates, refused=refused)
