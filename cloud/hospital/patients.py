"""Who the patient is: a bearer token the wallet-signed-in shopper takes from the shop.

The shop's session cookie is scoped to /plaza (cloud/o2o/shop.py: a shopper's cookie and a
merchant's never meet), so the FHIR API does not ride on it. The phone, signed in with the
wallet, fetches `GET /plaza/hospital/token` (under /plaza: the shop's cookie says who it is)
and sends `Authorization: Bearer <token>` to /fhir/r4. The token is the shopper's id signed
with the app's secret and dated; it lives as long as the shop's session (12 hours), any
instance checks it with no table, and with no cookie on /fhir/r4 there is nothing a
cross-site request could ride (no CSRF). A signed-out shopper's token lives on until it
expires: the price of no table, the same as the session cookie's.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify, request
from itsdangerous import BadSignature, URLSafeTimedSerializer

from cloud.db import get_db
from cloud.o2o.shoppers import SESSION_SECONDS, Shopper, current_shopper, shopper_required

SALT = "plaza-fhir-patient"
bp = Blueprint("hospital_token", __name__, url_prefix="/plaza/hospital")


def _signer(app: Flask) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(app.config["SECRET_KEY"], salt=SALT)


def token_for(app: Flask, shopper_id: str) -> str:
    return _signer(app).dumps({"shp": shopper_id})


def bearer_claims(signer: URLSafeTimedSerializer, max_age: int) -> dict[str, Any] | None:
    """What the request's bearer token says, if `signer` signed it less than `max_age`
    seconds ago (the patient's token here, the clinician's in clinicians.py)."""
    kind, _, token = request.headers.get("Authorization", "").partition(" ")
    if kind.lower() != "bearer" or not token:
        return None
    try:
        claims = signer.loads(token.strip(), max_age=max_age)
    except BadSignature:
        return None
    return claims if isinstance(claims, dict) else None


def bearer_patient() -> Shopper | None:
    """The shopper the request's bearer token names, if the token is good and fresh."""
    claims = bearer_claims(_signer(current_app), SESSION_SECONDS)
    shopper_id = claims.get("shp") if claims else None
    return get_db().get(Shopper, shopper_id) if isinstance(shopper_id, str) else None


@bp.get("/token")
@shopper_required
def token() -> Response:
    """The signed-in shopper's FHIR token (JSON; a cross-site page cannot read it)."""
    shopper = current_shopper()
    assert shopper is not None
    response = jsonify(
        access_token=token_for(current_app, shopper.id), token_type="Bearer",
        expires_in=SESSION_SECONDS, patient=f"Patient/{shopper.id.replace('_', '-', 1)}",
    )  # fmt: skip
    response.headers["Cache-Control"] = "no-store"
    return response
