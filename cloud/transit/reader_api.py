"""The bus readers' API under /api/v1/transit: signed like every router request
(cloud/auth_device.py), and refused to any device that did not enrol as a reader.

- POST taps: a batch of tap-ons, stored once per (reader, seq), then charged;
- GET denylist: the cards to refuse offline (lost, or below zero), with the key the card
  QRs are signed with, so a reader checks a rider's code with no connection at all.
"""

from __future__ import annotations

from flask import Blueprint, current_app, g, jsonify
from flask.typing import ResponseReturnValue

from cloud.api import ApiError, json_object, now
from cloud.auth_device import signed
from cloud.db import get_db
from cloud.transit import cards, taps
from cloud.transit.models import TransitReader
from plaza import signing

bp = Blueprint("transit_readers", __name__, url_prefix="/api/v1/transit")


def _reader() -> TransitReader:
    reader = cards.reader_of(get_db(), g.device)
    if reader is None:
        raise ApiError(403, "this device is not a transit reader")
    return reader


@bp.post("/taps")
@signed
def upload() -> ResponseReturnValue:
    reader = _reader()
    t = now()
    try:
        batch = taps.parse_batch(json_object(g.body), reader.route_id, t)
    except taps.TapError as exc:
        raise ApiError(400, str(exc)) from None
    db = get_db()
    new = taps.store(db, g.device.id, batch, t)
    charged = {"charged": 0, "refused": 0, "fen": 0}
    if current_app.config.get("TRANSIT_CHARGE_ON_UPLOAD", True) and new:
        for card_id in sorted({tap["card_id"] for tap in batch}):
            for key, value in taps.charge_card(db, card_id, t).items():
                charged[key] += value
    return jsonify(
        received=len(batch), stored=new, duplicates=len(batch) - new,
        last_seq=max(tap["seq"] for tap in batch), **charged,
    )  # fmt: skip


@bp.get("/denylist")
@signed
def denylist() -> ResponseReturnValue:
    _reader()
    return jsonify(
        cards=cards.deny_list(get_db()),
        qr_public_key=signing.public_b64(current_app.config["CLOUD_KEY"]),
        time=now(),
    )
