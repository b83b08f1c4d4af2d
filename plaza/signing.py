"""Request and command signatures between router and cloud (docs/cloud-protocol.md).

One implementation for both ends: the router signs requests and verifies commands, the cloud
verifies requests and signs commands. Ed25519 because the cloud then stores only public keys:
its database cannot be used to impersonate a router.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

PREFIX = "PLAZA-V1"
MAX_SKEW_SECONDS = 300
NONCE_RE = re.compile(r"^[A-Za-z0-9_-]{16,64}\Z")
# Digits only, as sign_request writes them: int() would also take " 17", "1_7", Arabic-Indic
# digits, or 400 digits that overflow the float comparison with the clock (a 500, not a 401).
TIMESTAMP_RE = re.compile(r"^[0-9]{1,12}\Z")
HEADERS = ("X-Plaza-Device", "X-Plaza-Timestamp", "X-Plaza-Nonce", "X-Plaza-Signature")


class SignatureError(ValueError):
    """A signature, key or signed message that does not check out; str() says which part."""


def canonical(method: str, path: str, timestamp: int, nonce: str, body: bytes) -> bytes:
    """The exact bytes a request signature covers."""
    return "\n".join(
        (PREFIX, method.upper(), path, str(timestamp), nonce, hashlib.sha256(body).hexdigest())
    ).encode()


def new_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def private_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def load_private(pem: bytes) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise SignatureError("not an Ed25519 private key")
    return key


def public_b64(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def load_public(b64: str) -> Ed25519PublicKey:
    try:
        raw = base64.b64decode(b64, validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError:
        raise SignatureError("public key must be 32 bytes of base64") from None


def sign_request(
    key: Ed25519PrivateKey,
    device_id: str,
    method: str,
    path: str,
    body: bytes,
    timestamp: int,
    nonce: str | None = None,
) -> dict[str, str]:
    """The headers that authenticate one request."""
    nonce = nonce or secrets.token_urlsafe(18)
    signature = key.sign(canonical(method, path, timestamp, nonce, body))
    return {
        "X-Plaza-Device": device_id,
        "X-Plaza-Timestamp": str(timestamp),
        "X-Plaza-Nonce": nonce,
        "X-Plaza-Signature": base64.b64encode(signature).decode(),
    }


def verify_request(
    public: Ed25519PublicKey,
    headers: Mapping[str, str],
    method: str,
    path: str,
    body: bytes,
    now: float,
) -> tuple[int, str]:
    """Check a request's signature and freshness; returns (timestamp, nonce). The caller
    checks the nonce against those already seen (replay)."""
    try:
        if not TIMESTAMP_RE.match(headers["X-Plaza-Timestamp"]):
            raise ValueError("timestamp")
        timestamp = int(headers["X-Plaza-Timestamp"])
        nonce = headers["X-Plaza-Nonce"]
        signature = base64.b64decode(headers["X-Plaza-Signature"], validate=True)
    except (KeyError, ValueError, TypeError):
        raise SignatureError("missing or malformed signature headers") from None
    if not NONCE_RE.match(nonce):
        raise SignatureError("malformed nonce")
    if abs(now - timestamp) > MAX_SKEW_SECONDS:
        raise SignatureError("clock skew: timestamp too far from the cloud's time")
    try:
        public.verify(signature, canonical(method, path, timestamp, nonce, body))
    except InvalidSignature:
        raise SignatureError("bad signature") from None
    return timestamp, nonce


def command_bytes(command: Mapping[str, Any]) -> bytes:
    """What a command signature covers: every field but the signature, canonical JSON."""
    unsigned = {k: v for k, v in command.items() if k != "signature"}
    return json.dumps(unsigned, sort_keys=True, separators=(",", ":")).encode()


def sign_command(key: Ed25519PrivateKey, command: Mapping[str, Any]) -> dict[str, Any]:
    signature = base64.b64encode(key.sign(command_bytes(command))).decode()
    return {**command, "signature": signature}


def verify_command(public: Ed25519PublicKey, command: Mapping[str, Any]) -> None:
    try:
        signature = base64.b64decode(str(command["signature"]), validate=True)
        public.verify(signature, command_bytes(command))
    except (KeyError, ValueError, InvalidSignature):
        raise SignatureError("command signature does not verify") from None
