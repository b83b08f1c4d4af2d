"""Standard Web Push to a shopper's browser: RFC 8030 delivery, RFC 8291 message encryption,
RFC 8292 VAPID identification, done by pywebpush (http-ece and py-vapid underneath).

The browser subscribed with our VAPID public key (its `applicationServerKey`), and its push
service only relays what that key signs; so the VAPID key is an identity that must outlive
restarts and deploys: a new key silently orphans every subscription. Hence the helpers here
create it once, 0600, and refuse to overwrite it. The push service only ever sees ciphertext;
the payload is capped so the encrypted body fits the 4096 bytes every push service must take.

Every POST goes through an `EndpointGuard` (cloud/push/endpoints.py): the endpoint's host is
resolved, refused unless public (or in the allowed networks), and connected to at the address
that was checked; a redirect is never followed.

Answers become the cloud's push errors: 404/410 mean the subscription expired (delete it),
413 that the payload is too large, 429 and 5xx that the push may work later.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
import os
import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid02, VapidException
from pywebpush import WebPushException, webpush

from cloud.push import PushError, RecipientGone, retry_after_seconds
from cloud.push.endpoints import EndpointGuard, EndpointRefused, guarded_session, is_guarded

log = logging.getLogger("plaza.cloud.push")

TTL = 3600  # an offer for a shopper who just walked in is stale after an hour
TIMEOUT = 10.0
# RFC 8291 §4: the whole body in one 4096-byte record, less the aes128gcm header with a 65-byte
# key id (86), the AEAD tag (16) and the padding delimiter (1).
MAX_PAYLOAD = 4096 - 86 - 16 - 1
VAPID_SECONDS = 12 * 3600  # RFC 8292 §2: `exp` at most 24 h ahead; half that leaves slack
URGENCIES = ("very-low", "low", "normal", "high")  # RFC 8030 §5.3
TOPIC = re.compile(r"[A-Za-z0-9_-]{1,32}")  # RFC 8030 §5.4: base64url alphabet, 32 at most
B64URL = re.compile(r"[A-Za-z0-9_-]*=*")
SUBJECT = re.compile(r"mailto:[^@\s]+@[^@\s]+|https://[^\s/]+\S*")  # RFC 8292 §2.1


class SubscriptionExpired(RecipientGone):
    """The push service says the subscription is gone (404/410): delete it."""


# -- the VAPID key -------------------------------------------------------------------------------


def generate_vapid_key() -> ec.EllipticCurvePrivateKey:
    """A new P-256 key (ES256 is the only algorithm RFC 8292 allows)."""
    return ec.generate_private_key(ec.SECP256R1())


def save_vapid_key(key: ec.EllipticCurvePrivateKey, path: str | Path) -> None:
    """Write `key` as PKCS#8 PEM, created 0600; FileExistsError rather than replace a key that
    live subscriptions are bound to."""
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # 0600 from the first byte
    with os.fdopen(fd, "wb") as f:
        f.write(pem)


def load_vapid_key(path: str | Path) -> ec.EllipticCurvePrivateKey:
    """Read a VAPID key file; ValueError names the file, never its contents."""
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except OSError as exc:
        raise ValueError(f"{path}: cannot read VAPID key ({exc.strerror})") from None
    except (ValueError, TypeError):
        raise ValueError(f"{path}: not an unencrypted PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise ValueError(f"{path}: a VAPID key must be EC P-256")
    return key


def load_or_create_vapid_key(path: str | Path) -> ec.EllipticCurvePrivateKey:
    """The key at `path`, made on first use: what a fresh deployment calls at start."""
    if not Path(path).exists():
        with contextlib.suppress(FileExistsError):  # another instance made it first: use theirs
            save_vapid_key(generate_vapid_key(), path)
    return load_vapid_key(path)


def application_server_key(key: ec.EllipticCurvePrivateKey) -> str:
    """The public key as the browser's PushManager.subscribe() wants it: the uncompressed
    point, base64url without padding."""
    raw = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return b64url(raw)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64url(text: str) -> bytes:
    """base64url with or without padding; ValueError if it is not (the decoder alone would
    silently skip characters outside the alphabet)."""
    if not isinstance(text, str) or not B64URL.fullmatch(text):
        raise ValueError("not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("not base64url") from None


# -- checks ----------------------------------------------------------------------------------


def origin(url: str) -> str:
    """The RFC 6454 origin of an https URL (no default port): the VAPID `aud`."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port
    return f"{parts.scheme}://{host}" + ("" if port in (None, 443) else f":{port}")


def check_subscription(subscription: Any) -> dict[str, Any]:
    """A browser's PushSubscription JSON, checked before it is stored or used: an https
    endpoint, a P-256 `p256dh` point and a 16-byte `auth` secret. ValueError says what is wrong."""
    if not isinstance(subscription, Mapping):
        raise ValueError("a subscription is a JSON object")
    endpoint, keys = subscription.get("endpoint"), subscription.get("keys")
    if not isinstance(endpoint, str) or not endpoint.startswith("https://") or len(endpoint) > 2048:
        raise ValueError("the subscription's endpoint must be an https:// URL")
    try:
        urlsplit(endpoint).port  # noqa: B018 (raises on a bad port)
    except ValueError:
        raise ValueError("the subscription's endpoint is not a valid URL") from None
    if not isinstance(keys, Mapping):
        raise ValueError("the subscription has no keys")
    p256dh, auth = keys.get("p256dh"), keys.get("auth")
    if not isinstance(p256dh, str) or not isinstance(auth, str):
        raise ValueError("the subscription's keys need p256dh and auth")
    point, secret = unb64url(p256dh), unb64url(auth)
    try:
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    except ValueError:
        raise ValueError("p256dh is not an uncompressed P-256 public key") from None
    if len(point) != 65 or len(secret) != 16:
        raise ValueError("p256dh must be 65 bytes and auth 16 bytes")
    return {"endpoint": endpoint, "keys": {"p256dh": p256dh, "auth": auth}}


# -- sending -----------------------------------------------------------------------------------


def send_webpush(
    subscription: Mapping[str, Any],
    payload: Mapping[str, Any],
    vapid_private_key: ec.EllipticCurvePrivateKey | str | Path,
    subject: str,
    *,
    ttl: int = TTL,
    urgency: str = "normal",
    topic: str | None = None,
    ca_bundle: str = "",
    session: requests.Session | None = None,
    guard: EndpointGuard | None = None,
    timeout: float = TIMEOUT,
    clock: Callable[[], float] = time.time,
) -> int:
    """Encrypt `payload` (as compact JSON) for `subscription` and hand it to its push service.

    `subject` is how the push service can reach us (mailto: or https:). `topic` replaces an
    undelivered message with the same topic (one pending offer per venue, not a pile).
    Returns the push service's status (201). SubscriptionExpired on 404/410; PushError
    otherwise, with `retry` for 429, 5xx and network failures. Without a `guard`, only
    public push services are reached. Pass a `session` (made by
    `cloud.push.endpoints.guarded_session`, which then holds the guard) to reuse connections
    over a fan-out; an unguarded session is refused.
    """
    try:
        checked = check_subscription(subscription)
    except ValueError as exc:
        raise PushError(f"invalid subscription: {exc}") from None
    if not SUBJECT.fullmatch(subject):
        raise PushError("the VAPID subject must be a mailto: or https: URL")
    if urgency not in URGENCIES:
        raise PushError(f"urgency must be one of {', '.join(URGENCIES)}")
    if topic is not None and not TOPIC.fullmatch(topic):
        raise PushError("a topic is 1-32 characters of the base64url alphabet")
    if not 0 <= ttl <= 28 * 86400:
        raise PushError("ttl must be between 0 and 28 days")
    data = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    if len(data) > MAX_PAYLOAD:
        raise PushError(f"the payload is {len(data)} bytes of JSON; at most {MAX_PAYLOAD} fit")
    if not isinstance(vapid_private_key, ec.EllipticCurvePrivateKey):
        vapid_private_key = load_vapid_key(vapid_private_key)
    claims: dict[str, str | int] = {
        "sub": subject,
        "aud": origin(checked["endpoint"]),
        "exp": int(clock()) + VAPID_SECONDS,
    }
    headers: dict[str, str | int | float] = {"Urgency": urgency}
    if topic is not None:
        headers["Topic"] = topic
    own_session = session is None
    if session is None:
        session = guarded_session(ca_bundle, guard or EndpointGuard())
    elif not is_guarded(session, checked["endpoint"]):
        raise PushError("refusing to push through a session without an endpoint guard")
    try:
        response = webpush(
            checked,
            data=data,  # type: ignore[arg-type]  # bytes are what it encrypts
            # Our SUBJECT check, not py-vapid's, which refuses an https: subject with a path.
            vapid_private_key=Vapid02(private_key=vapid_private_key, conf={"no-strict": True}),
            vapid_claims=claims,
            ttl=ttl,
            headers=headers,
            timeout=timeout,
            requests_session=session,
        )
    except WebPushException as exc:
        if exc.response is None:
            raise PushError(f"cannot push: {exc.message}") from None
        response = exc.response
    except VapidException as exc:
        raise PushError(f"cannot sign the VAPID token: {exc}") from None
    except EndpointRefused as exc:
        raise PushError(f"endpoint refused: {exc}", retry=exc.temporary) from None
    except requests.TooManyRedirects:
        raise PushError("the push service answered with a redirect") from None
    except requests.RequestException as exc:
        log.warning("web push: %s", type(exc).__name__)  # not the endpoint: it is a capability
        raise PushError(
            f"the push service is unreachable ({type(exc).__name__})", retry=True
        ) from None
    finally:
        if own_session:
            session.close()
    assert isinstance(response, requests.Response)
    return _outcome(response)


def _outcome(response: requests.Response) -> int:
    status = response.status_code
    if status in (200, 201, 202):
        return status
    if status in (404, 410):
        raise SubscriptionExpired(f"subscription expired (HTTP {status})", status=status)
    if status == 413:
        raise PushError("the push service refused the payload as too large (413)", status=413)
    wait = retry_after_seconds(response.headers.get("Retry-After"))
    if status == 429:
        when = f"; retry after {wait:.0f} s" if wait is not None else ""
        raise PushError(
            f"rate limited by the push service (429){when}",
            retry=True,
            status=429,
            retry_after=wait,
        )
    if status in (401, 403):
        raise PushError(
            f"the push service refused our VAPID authorization ({status}): "
            "was the subscription made with another applicationServerKey?",
            status=status,
        )
    if status >= 500:
        raise PushError(
            f"the push service failed ({status})", retry=True, status=status, retry_after=wait
        )
    raise PushError(f"the push service refused the message ({status})", status=status)
