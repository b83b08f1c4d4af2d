"""The consent proof's own checks (plaza/wallet/consent.py): only the wallet's key makes one,
and no trick of the JOSE header or claims gets a forged one past `verify`."""

from __future__ import annotations

import base64
import json
import time

import pytest
from cryptography.hazmat.primitives import hashes, hmac
from joserfc import jwt
from joserfc.jwk import RSAKey

from plaza.wallet import consent, rsa2
from tests.consent_wallet import WALLET_ISSUER, WALLET_KEY, consent_proof

PUBLIC = rsa2.public_pem(WALLET_KEY.public_key())
LINK = "https://portal.plaza.test/reconnect/abc"
NOW = time.time()


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims(**over: object) -> dict[str, object]:
    token = consent_proof("2088000000000001", LINK, NOW)
    found = consent.peek(token)
    assert found is not None
    return {**found, **over}


def signed(header: dict[str, object], body: dict[str, object]) -> str:
    return jwt.encode(header, body, RSAKey.import_key(rsa2.private_pem(WALLET_KEY)))


def test_a_proof_verifies_and_says_what_it_binds() -> None:
    made = consent.verify(consent_proof("2088000000000001", LINK, NOW), PUBLIC, WALLET_ISSUER, NOW)
    assert made.wallet_user == "2088000000000001"
    assert made.origin == "https://portal.plaza.test"
    assert made.link_digest == consent.link_digest(LINK) != consent.link_digest(LINK + "x")
    assert made.expires_at - made.issued_at == consent.LIFETIME


def test_alg_none_and_hmac_with_the_public_key_are_refused() -> None:
    body = b64(json.dumps(claims()).encode())
    none = f"{b64(json.dumps({'alg': 'none', 'typ': consent.TYPE}).encode())}.{body}."
    header = b64(json.dumps({"alg": "HS256", "typ": consent.TYPE}).encode())
    mac = hmac.HMAC(PUBLIC, hashes.SHA256())
    mac.update(f"{header}.{body}".encode())
    confused = f"{header}.{body}.{b64(mac.finalize())}"
    for token in (none, confused):
        with pytest.raises(consent.ConsentError, match="not signed by the wallet"):
            consent.verify(token, PUBLIC, None, NOW)


def test_a_changed_claim_breaks_the_signature() -> None:
    token = consent_proof("2088000000000001", LINK, NOW)
    head, _, sig = token.split(".")
    body = b64(json.dumps(claims(sub="2088000000000099")).encode())
    with pytest.raises(consent.ConsentError, match="not signed"):
        consent.verify(f"{head}.{body}.{sig}", PUBLIC, None, NOW)


@pytest.mark.parametrize(
    ("header", "body", "message"),
    [
        ({"alg": "RS256", "typ": "JWT"}, claims(), "not a consent proof"),
        ({"alg": "RS256", "typ": consent.TYPE}, claims(scope="everything"), "another purpose"),
        ({"alg": "RS256", "typ": consent.TYPE}, claims(extra=1), "expected set"),
        (
            {"alg": "RS256", "typ": consent.TYPE},
            claims(iss="https://evil.example"),
            "another wallet",
        ),
        (
            {"alg": "RS256", "typ": consent.TYPE},
            claims(aud="http://portal.plaza.test"),
            "malformed",
        ),
        ({"alg": "RS256", "typ": consent.TYPE}, claims(iat=NOW + 3600), "future"),
        ({"alg": "RS256", "typ": consent.TYPE}, claims(exp=NOW - 1), "expired"),
        ({"alg": "RS256", "typ": consent.TYPE}, claims(exp=NOW + 10 * 86400), "expired"),
        ({"alg": "RS256", "typ": consent.TYPE}, claims(sub=7), "not a string"),
    ],
)
def test_claims_are_checked(header: dict, body: dict, message: str) -> None:
    with pytest.raises(consent.ConsentError, match=message):
        consent.verify(signed(header, body), PUBLIC, WALLET_ISSUER, NOW)


@pytest.mark.parametrize("junk", ["", "a.b", "a.b.c", "x" * 5000, None, 7, "é.é.é"])
def test_junk_is_a_consent_error_never_a_crash(junk: object) -> None:
    with pytest.raises(consent.ConsentError):
        consent.verify(junk, PUBLIC, None, NOW)
    assert consent.peek(junk) is None or isinstance(consent.peek(junk), dict)
