"""Who the clinician is: a bearer token the signed-in dashboard hands out for one hospital.

Clinicians are the hospital venue's merchant accounts (reports.py). Their dashboard cookie
is scoped to /dashboard and never reaches /fhir/r4, so, like the patient (patients.py), a
clinician's tool fetches `GET /dashboard/hospital/<venue>/token` (signed in; another
merchant's venue is the dashboard's 404) and sends `Authorization: Bearer <token>`.

The token names the merchant and the one venue it was taken for, signed with the app's
secret under its own salt: a patient's token does not verify as a clinician's nor the other
way round (different salts give different signatures over the same secret), so neither can
pass for the other even with a claim forged to look right. It lives as long as a dashboard
session, and every use checks the venue still belongs to the merchant, so a venue moved to
another merchant stops answering its old tokens at once.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import Blueprint, Flask, Response, current_app, g, jsonify
from itsdangerous import URLSafeTimedSerializer

from cloud.dashboard import auth, security
from cloud.dashboard.tenancy import own_venue
from cloud.db import get_db
from cloud.hospital import patients
from cloud.models import Venue

SALT = "plaza-fhir-clinician"
SECONDS = auth.SESSION_SECONDS
bp = Blueprint("hospital_clinician", __name__, url_prefix="/dashboard/hospital")
bp.before_request(auth.load_merchant)
bp.after_request(security.add_headers)


@dataclass(frozen=True)
class Clinician:
    merchant_id: str
    venue: Venue


def _signer(app: Flask) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(app.config["SECRET_KEY"], salt=SALT)


def token_for(app: Flask, merchant_id: str, venue_id: str) -> str:
    return _signer(app).dumps({"mrc": merchant_id, "ven": venue_id})


def bearer_clinician() -> Clinician | None:
    """The clinician the request's bearer token names, if good, fresh and the venue is still
    the merchant's."""
    claims = patients.bearer_claims(_signer(current_app), SECONDS)
    if claims is None:
        return None
    merchant_id, venue_id = claims.get("mrc"), claims.get("ven")
    if not isinstance(merchant_id, str) or not isinstance(venue_id, str):
        return None
    venue = get_db().get(Venue, venue_id)
    if venue is None or venue.merchant_id != merchant_id:
        return None
    return Clinician(merchant_id, venue)


@bp.get("/<venue_id>/token")
@auth.login_required
def token(venue_id: str) -> Response:
    """The FHIR token for this hospital (JSON: a cross-site page cannot read it)."""
    venue = own_venue(venue_id)
    response = jsonify(
        access_token=token_for(current_app, g.merchant.id, venue.id), token_type="Bearer",
        expires_in=SECONDS, venue=venue.id, scope="Appointment.read",
    )  # fmt: skip
    response.headers["Cache-Control"] = "no-store"
    return response
