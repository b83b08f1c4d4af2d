"""Who is calling: every router request after enrolment is signed with the router's own key.

Checks in the order docs/cloud-protocol.md gives: headers present, device known and not
revoked, timestamp within the window, signature (over method, path, timestamp, nonce and the
body's hash, verified by plaza.signing against the key stored at enrolment, so a router
naming another router's id fails here), and last the nonce. The nonce goes into a table with a
UNIQUE (device_id, nonce): a replay loses the insert on whichever instance it reaches, with no
shared memory between instances. Nonces outlive the time window by a second and are then
purged, since the timestamp check alone refuses anything older.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar
from urllib.parse import quote

from flask import current_app, g, request
from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cloud.api import ApiError, now
from cloud.db import get_db
from cloud.models import Device, Nonce
from plaza import signing

F = TypeVar("F", bound=Callable[..., Any])
PURGE_KEY = "plaza_cloud_nonce_purged_at"
DEVICE_ID_RE = re.compile(r"^dev_[0-9a-f]{16}\Z")


def signed_path() -> str:
    """The path and query as the router sent them (what it signed)."""
    path = quote(request.script_root + request.path, safe="/:@!$&'()*+,;=-._~")
    query = request.query_string.decode("latin-1")
    return f"{path}?{query}" if query else path


def authenticate(db: Session, t: float) -> tuple[Device, bytes]:
    """The calling device and the body it signed; ApiError if either does not check out."""
    for header in signing.HEADERS:
        if not request.headers.get(header):
            raise ApiError(401, f"missing header {header}")
    device_id = request.headers["X-Plaza-Device"]
    device = db.get(Device, device_id) if DEVICE_ID_RE.match(device_id) else None
    if device is None or device.revoked:
        raise ApiError(401, "unknown or revoked device")
    body = request.get_data(cache=True)
    try:
        timestamp, nonce = signing.verify_request(
            signing.load_public(device.public_key), request.headers, request.method,
            signed_path(), body, t,
        )  # fmt: skip
    except signing.SignatureError as exc:
        raise ApiError(401, str(exc)) from None
    db.add(
        Nonce(device_id=device.id, nonce=nonce, expires_at=timestamp + signing.MAX_SKEW_SECONDS + 1)
    )
    try:
        db.commit()  # committed at once: the nonce is spent even if the handler then fails
    except IntegrityError:
        db.rollback()
        raise ApiError(409, "replayed request") from None
    _maybe_purge(db, t)
    return device, body


def _maybe_purge(db: Session, t: float) -> None:
    """Delete expired nonces now and then (per process; harmless if instances overlap)."""
    last = current_app.extensions.get(PURGE_KEY, 0.0)
    if t - last < current_app.config["NONCE_PURGE_SECONDS"]:
        return
    current_app.extensions[PURGE_KEY] = t
    db.execute(delete(Nonce).where(Nonce.expires_at < t))
    db.commit()


def signed(view: F) -> F:
    """Decorator: the view runs only for an authenticated device, as `g.device`, with the
    verified body bytes in `g.body`."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        g.device, g.body = authenticate(get_db(), now())
        return view(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
