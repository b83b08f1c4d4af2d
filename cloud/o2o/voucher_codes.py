"""Redemption codes: what the shopper's QR holds, signed Ed25519 with the venue's voucher key.

    PV1.<base64url payload>.<base64url signature>    payload = voucher|venue|gen|expires

Anyone holding the venue's public key (the staff page, a till that lost its network) can
check a code offline: signed by this venue, for this venue, not expired. That is a first
answer, not the redemption: a code is spent only by the online confirmation
(`vouchers.redeem`), which is what makes it single-use. `gen` is the voucher's code
generation, bumped when a redemption is reversed, so a code once scanned never works again.

Each venue's key is derived (HKDF-SHA256) from the cloud's own Ed25519 key and the venue id:
nothing new to store or back up, a venue's key never signs for another venue, and every
instance behind the load balancer derives the same key. Rotating the cloud key rotates every
venue's (docs/decisions.md).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

PREFIX = "PV1"
MAX_CODE = 400  # a real code is ~190 characters; anything much longer is not one
SALT = b"plaza voucher codes v1"


class CodeError(Exception):
    """A code refused before any database is asked. `reason`: malformed, forged,
    other_venue, expired."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class CodeClaims:
    voucher_id: str
    venue_id: str
    gen: int
    expires_at: int


def venue_key(cloud_key: Ed25519PrivateKey, venue_id: str) -> Ed25519PrivateKey:
    raw = cloud_key.private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )
    seed = HKDF(algorithm=hashes.SHA256(), length=32, salt=SALT, info=venue_id.encode()).derive(raw)
    return Ed25519PrivateKey.from_private_bytes(seed)


def public_b64(key: Ed25519PrivateKey) -> str:
    """The venue's public key as the staff page is given it: base64url of the 32 raw bytes."""
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return _b64(raw)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    """Strict: a character outside base64url is an error, not silently dropped."""
    return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)


def issue(key: Ed25519PrivateKey, voucher_id: str, venue_id: str, gen: int,
          expires_at: float) -> str:  # fmt: skip
    payload = f"{voucher_id}|{venue_id}|{gen}|{int(expires_at)}".encode()
    return f"{PREFIX}.{_b64(payload)}.{_b64(key.sign(payload))}"


def verify(code: str, public_key: Ed25519PublicKey | str, venue_id: str,
           now: float) -> CodeClaims:  # fmt: skip
    """The code's claims if `public_key` signed it for `venue_id` and it has not expired;
    CodeError otherwise. Needs no database: the offline check."""
    if isinstance(public_key, str):
        try:
            public_key = Ed25519PublicKey.from_public_bytes(_unb64(public_key))
        except (ValueError, binascii.Error) as exc:
            raise CodeError("malformed", "the venue key is not an Ed25519 public key") from exc
    text = "".join(code.split())
    parts = text.split(".")
    if len(text) > MAX_CODE or len(parts) != 3 or parts[0] != PREFIX:
        raise CodeError("malformed", "this is not a Plaza voucher code")
    try:
        payload, signature = _unb64(parts[1]), _unb64(parts[2])
    except (ValueError, binascii.Error) as exc:
        raise CodeError("malformed", "this is not a Plaza voucher code") from exc
    try:
        public_key.verify(signature, payload)
    except InvalidSignature as exc:
        raise CodeError(
            "forged", "this code was not signed by this venue: it is forged or for another venue"
        ) from exc
    fields = payload.decode("utf-8", "replace").split("|")
    if len(fields) != 4 or not fields[2].isdigit() or not fields[3].isdigit():
        raise CodeError("malformed", "this is not a Plaza voucher code")
    claims = CodeClaims(fields[0], fields[1], int(fields[2]), int(fields[3]))
    if claims.venue_id != venue_id:
        raise CodeError("other_venue", "this voucher is for another venue")
    if now >= claims.expires_at:
        raise CodeError("expired", "this voucher has expired")
    return claims
