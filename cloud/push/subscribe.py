"""Web Push subscriptions from shoppers' browsers: `POST /api/v1/push/subscribe` and
`GET /api/v1/push/vapid-public-key` (public: called by the portal's page, cross-origin).

How a browser is tied to a shopper: the portal page that subscribes also holds the shopper's
one-tap reconnect token (issued at its opt-in, or the one it tapped in with), and sends it
along as `connect_token`. The router already reported that link (`connect_url` in the
opted-in `login` event), so the cloud finds the shopper link whose `connect_url` is exactly
`<Origin>/reconnect/<token>` at that venue, and ties the subscription to that link's wallet
user at the venue. So:
- nobody can subscribe a browser to someone else's presence: that takes their reconnect
  token, a bearer secret that already logs in as them;
- the request must come from the portal origin the router reported for that very link: the
  CORS restriction is enforced here, on the POST, server-side. The preflight answers any
  well-formed https origin (it cannot know the venue: it has no body); it grants nothing,
  since the POST from any other origin is refused with 403 and stores nothing;
- the endpoint must be a public push service (cloud/push/endpoints.py): the cloud POSTs
  there later, so a private or loopback address would make it a request forger;
- a subscription follows the wallet user, not the MAC: a phone that comes back with a new
  random MAC and logs in again still gets its browser's push.
No cookies are involved (no credentials mode), so there is nothing for CSRF to ride on.
"""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from flask.typing import ResponseReturnValue
from sqlalchemy import select

from cloud.api import ApiError, json_object, now
from cloud.db import dialect_insert, get_db
from cloud.models import PushSubscription, ShopperLink, new_id
from cloud.push.endpoints import EndpointRefused
from cloud.push.settings import PushSettings
from cloud.push.webpush import application_server_key, check_subscription

bp = Blueprint("push", __name__, url_prefix="/api/v1/push")

ORIGIN_RE = re.compile(r"https://([A-Za-z0-9.-]{1,253})(?::([0-9]{1,5}))?")
TOKEN_RE = re.compile(r"[A-Za-z0-9_.-]{1,512}")
FIELDS = {"venue_id", "subscription", "connect_token"}
MAX_PER_SHOPPER = 5  # browsers per wallet user per venue; the oldest make room
VAPID_KEY = "plaza_push_vapid_key"


def vapid_key() -> Any:
    """The VAPID key (PLAZA_CLOUD_VAPID_KEY_FILE), read once per app."""
    ext = current_app.extensions
    if VAPID_KEY not in ext:
        ext[VAPID_KEY] = PushSettings.of(current_app).vapid_key()  # type: ignore[arg-type]
    return ext[VAPID_KEY]


def request_origin() -> str | None:
    """The request's Origin, canonical (host lower-case, no :443), if it is an https origin."""
    match = ORIGIN_RE.fullmatch(request.headers.get("Origin", ""))
    if match is None:
        return None
    host, port = match[1].lower().rstrip("."), match[2]
    if port is not None and not 0 < int(port) < 65536:
        return None
    return f"https://{host}" if port in (None, "443") else f"https://{host}:{int(port)}"


def _cors(response: Response, origin: str) -> Response:
    response.headers["Access-Control-Allow-Origin"] = origin
    response.vary.add("Origin")
    return response


@bp.get("/vapid-public-key")
def vapid_public_key() -> ResponseReturnValue:
    response = jsonify(public_key=application_server_key(vapid_key()))
    response.headers["Access-Control-Allow-Origin"] = "*"  # public, and the same for everyone
    response.headers["Cache-Control"] = "public, max-age=3600"
    return response


@bp.route("/subscribe", methods=["POST", "OPTIONS"], provide_automatic_options=False)
def subscribe() -> ResponseReturnValue:
    origin = request_origin()
    if request.method == "OPTIONS":
        if origin is None:
            raise ApiError(403, "an https Origin is required")
        response = _cors(current_app.response_class(status=204), origin)
        response.headers["Access-Control-Allow-Methods"] = "POST"
        response.headers["Access-Control-Allow-Headers"] = "Content-Type"
        response.headers["Access-Control-Max-Age"] = "600"
        return response
    if origin is None:
        raise ApiError(403, "an https Origin is required (the venue's portal page)")
    body = json_object()
    if set(body) != FIELDS:
        raise ApiError(400, "body must be {venue_id, subscription, connect_token}")
    venue_id, token = body["venue_id"], body["connect_token"]
    if not isinstance(venue_id, str) or len(venue_id) > 24:
        raise ApiError(400, "venue_id: not a venue id")
    if not isinstance(token, str) or not TOKEN_RE.fullmatch(token):
        raise ApiError(400, "connect_token: not a reconnect token")
    try:
        checked = check_subscription(body["subscription"])
    except ValueError as exc:
        raise ApiError(400, f"subscription: {exc}") from None
    db = get_db()
    link = db.scalar(
        select(ShopperLink).where(
            ShopperLink.venue_id == venue_id,
            ShopperLink.connect_url == f"{origin}/reconnect/{token}",
            ShopperLink.opted_in.is_(True),
        )
    )
    if link is None:
        # One answer for a wrong venue, origin or token: which one is nobody's business.
        raise ApiError(403, "no opted-in shopper of this venue holds that link")
    # Only now, for a proven shopper, does the cloud look the endpoint's host up: nobody
    # else gets to make it resolve names. Checked again at every send (DNS can change).
    guard = PushSettings.of(current_app).endpoint_guard()  # type: ignore[arg-type]
    try:
        guard.check(checked["endpoint"])
    except EndpointRefused as exc:
        raise ApiError(400, f"subscription: {exc}") from None
    values = {
        "wallet_user": link.wallet_user,
        "p256dh": checked["keys"]["p256dh"],
        "auth": checked["keys"]["auth"],
        "created_at": now(),
    }
    insert = dialect_insert(db, PushSubscription).values(
        id=new_id("wps"), venue_id=venue_id, endpoint=checked["endpoint"], **values
    )
    db.execute(insert.on_conflict_do_update(index_elements=["venue_id", "endpoint"], set_=values))
    sid = db.scalar(
        select(PushSubscription.id).where(
            PushSubscription.venue_id == venue_id,
            PushSubscription.endpoint == checked["endpoint"],
        )
    )
    stale = db.scalars(
        select(PushSubscription)
        .where(
            PushSubscription.venue_id == venue_id,
            PushSubscription.wallet_user == link.wallet_user,
        )
        .order_by(PushSubscription.created_at.desc(), PushSubscription.id)
        .offset(MAX_PER_SHOPPER)
    ).all()
    for old in stale:
        db.delete(old)
    db.commit()
    response = jsonify(id=sid)
    response.status_code = 201
    return _cors(response, origin)
