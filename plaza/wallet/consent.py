"""Consent proofs: the wallet's signed word that a shopper agreed to hear from a venue.

A router is the merchant's box, and a rooted one can say anything about anyone, so the cloud
never messages a wallet user on a router's word. When a shopper saves the portal's one-tap link
in their wallet and agrees to get the venue's offers when they come back, the wallet (not the
portal, not the router) signs a short JWT and hands it back to the portal with the browser;
the portal passes it through the router to the cloud, which checks it before it links the
shopper to the venue (cloud/presence.py). What it binds, and why:

- `iss` / the signature (RS256 with the wallet's RSA2 key, the key that already signs its
  Alipay answers): only the wallet can make one;
- `sub`: the wallet user, as the merchant's app knows them (OIDC `sub`, Alipay `user_id`);
- `aud`: the origin of the saved link, which the wallet only accepts when it is one of the
  merchant's registered redirect origins; the cloud requires it to be the venue's registered
  portal host, so a proof made at one venue is worthless at another;
- `link`: the SHA-256 of the exact link saved, so the router cannot swap in another link (a
  phishing one) and still have it pushed;
- `iat` / `exp` / `jti`: when, how long it may take to reach the cloud, and a one-time id the
  cloud records so a proof is used once (a withdrawn consent cannot be replayed back on).

One module for both ends keeps the format in one place: the sandbox wallet calls `issue`, the
portal `peek`s (it checks nothing it could be trusted for), the cloud `verify`s.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import secrets
from dataclasses import dataclass
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import RSAKey

TYPE = "plaza-consent+jwt"
SCOPE = "venue_offers"
MAX_PROOF = 4096  # characters; a 2048-bit RS256 JWT with these claims is ~700
LIFETIME = 24 * 3600  # a proof must reach the cloud within a day (a router's outage)
MAX_SKEW = 300.0
CLAIMS = {"iss", "sub", "aud", "scope", "link", "iat", "exp", "jti"}
_JTI = re.compile(r"[A-Za-z0-9_-]{16,64}")
_ORIGIN = re.compile(r"https://[a-z0-9.-]{1,253}(?::[0-9]{1,5})?")


class ConsentError(ValueError):
    """Why a proof was refused; safe to log and to count (holds no proof material)."""


@dataclass(frozen=True)
class Consent:
    issuer: str
    wallet_user: str
    origin: str
    link_digest: str
    issued_at: float
    expires_at: float
    jti: str


def link_digest(link: str) -> str:
    """base64url(SHA-256(link)), unpadded: what `link` holds."""
    raw = hashlib.sha256(link.encode()).digest()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def issue(
    private_key_pem: bytes, issuer: str, wallet_user: str, origin: str, link: str, now: float
) -> str:
    """The wallet's proof that `wallet_user` agreed, at `now`, to hear from `origin`."""
    claims = {
        "iss": issuer,
        "sub": wallet_user,
        "aud": origin,
        "scope": SCOPE,
        "link": link_digest(link),
        "iat": int(now),
        "exp": int(now) + LIFETIME,
        "jti": secrets.token_urlsafe(18),
    }
    key = RSAKey.import_key(private_key_pem)
    return jwt.encode({"alg": "RS256", "typ": TYPE}, claims, key)


def peek(proof: Any) -> dict[str, Any] | None:
    """The proof's claims, unverified, or None if it is not shaped like one. The portal uses
    this only to refuse a proof for another user or link early; trust comes from `verify`."""
    if not isinstance(proof, str) or len(proof) > MAX_PROOF or proof.count(".") != 2:
        return None
    try:
        payload = proof.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (ValueError, UnicodeDecodeError):
        return None
    return claims if isinstance(claims, dict) else None


def verify(proof: Any, public_key_pem: bytes, issuer: str | None, now: float) -> Consent:
    """The consent `proof` stands for, if the wallet signed it and it is in date; otherwise
    ConsentError. Binding it to a venue, a user and a link is the caller's job (it knows
    them); this checks what only the proof itself can say."""
    if not isinstance(proof, str) or not proof or len(proof) > MAX_PROOF:
        raise ConsentError("consent proof missing or too long")
    try:
        token = jwt.decode(proof, RSAKey.import_key(public_key_pem), algorithms=["RS256"])
    except (JoseError, ValueError, TypeError) as exc:
        raise ConsentError(
            f"consent proof not signed by the wallet ({type(exc).__name__})"
        ) from None
    if token.header.get("typ") != TYPE:
        raise ConsentError("not a consent proof")
    claims = token.claims
    if set(claims) != CLAIMS:
        raise ConsentError("consent proof claims are not the expected set")
    if issuer is not None and claims["iss"] != issuer:
        raise ConsentError("consent proof from another wallet")
    if claims["scope"] != SCOPE:
        raise ConsentError("consent proof for another purpose")
    for name in ("iss", "sub", "aud", "link", "jti"):
        if not isinstance(claims[name], str) or not claims[name]:
            raise ConsentError(f"consent proof {name} is not a string")
    if not _ORIGIN.fullmatch(claims["aud"]) or not _JTI.fullmatch(claims["jti"]):
        raise ConsentError("consent proof aud or jti malformed")
    iat, exp = claims["iat"], claims["exp"]
    for value in (iat, exp):
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise ConsentError("consent proof times are not numbers")
    if iat > now + MAX_SKEW:
        raise ConsentError("consent proof issued in the future")
    if exp <= now or exp - iat > LIFETIME:
        raise ConsentError("consent proof expired")
    return Consent(
        claims["iss"], claims["sub"], claims["aud"], claims["link"], float(iat), float(exp),
        claims["jti"],
    )  # fmt: skip
