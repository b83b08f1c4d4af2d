"""Alipay's RSA2 signature rule, for requests we send and responses the wallet sends back.

Alipay does not sign a canonical JSON form: a request is signed over its sorted, unescaped
parameters, and a response over the exact bytes of one JSON value inside the body. Both sides
must reproduce those strings byte for byte, so the rule lives in one place that the portal's
client and the lab's sandbox wallet share.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

K = TypeVar("K")

MIN_KEY_BITS = 2048  # Alipay's RSA2 floor; a 1024-bit key is factorable by a patient adversary


class KeyFileError(ValueError):
    """A key that cannot be used: unreadable, not RSA, or too short. Never holds key material."""


def signing_string(params: Mapping[str, str | None]) -> str:
    """The text Alipay signs: every parameter but `sign` and empty ones, sorted, raw `k=v&k=v`.

    Values are not URL-encoded: the signature is over what the parameters mean, not how one
    HTTP client happened to encode them.
    """
    items = sorted((k, v) for k, v in params.items() if k != "sign" and v not in (None, ""))
    return "&".join(f"{key}={value}" for key, value in items)


def sign_text(text: str, private_key: rsa.RSAPrivateKey) -> str:
    """SHA256withRSA (PKCS#1 v1.5) over the UTF-8 text, base64: what Alipay calls RSA2."""
    _check_size(private_key.key_size)
    signature = private_key.sign(text.encode("utf-8"), padding.PKCS1v15(), hashes.SHA256())
    return base64.b64encode(signature).decode("ascii")


def verify_text(text: str, signature: str, public_key: rsa.RSAPublicKey) -> bool:
    """True only for a well-formed RSA2 signature of exactly this text by this key."""
    if public_key.key_size < MIN_KEY_BITS or not isinstance(signature, str):
        return False
    try:
        raw = base64.b64decode(signature.encode("ascii"), validate=True)
        public_key.verify(raw, text.encode("utf-8"), padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, binascii.Error, UnicodeEncodeError, ValueError):
        return False
    return True


def sign(params: Mapping[str, str | None], private_key: rsa.RSAPrivateKey) -> str:
    """The `sign` value for a request with these parameters."""
    return sign_text(signing_string(params), private_key)


def verify(params: Mapping[str, str | None], signature: str, public_key: rsa.RSAPublicKey) -> bool:
    """Whether `signature` is the RSA2 signature of these parameters (their `sign` is ignored)."""
    return verify_text(signing_string(params), signature, public_key)


def notify_signing_string(params: Mapping[str, str | None]) -> str:
    """The text an asynchronous notify is signed over: as a request's, but `sign_type` is left
    out too (Alipay's rule for what it POSTs to a merchant's notify_url)."""
    return signing_string({k: v for k, v in params.items() if k != "sign_type"})


def sign_notify(params: Mapping[str, str | None], private_key: rsa.RSAPrivateKey) -> str:
    """The `sign` value of a notify with these parameters (the wallet's side)."""
    return sign_text(notify_signing_string(params), private_key)


def verify_notify(params: Mapping[str, str | None], public_key: rsa.RSAPublicKey) -> bool:
    """Whether a notify's `sign` is the wallet's RSA2 signature of its other parameters."""
    signature = params.get("sign")
    if params.get("sign_type") != "RSA2" or not isinstance(signature, str):
        return False
    return verify_text(notify_signing_string(params), signature, public_key)


def parse_private_key(data: bytes) -> rsa.RSAPrivateKey:
    """A private key from PEM (PKCS#8 or PKCS#1) or the bare base64 DER Alipay's console shows."""
    try:
        if b"-----BEGIN" in data:
            key = serialization.load_pem_private_key(data, password=None)
        else:
            key = serialization.load_der_private_key(_bare_base64(data), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise KeyFileError("not an unencrypted RSA private key (PEM or base64 DER)") from exc
    if not isinstance(key, rsa.RSAPrivateKey):
        raise KeyFileError("not an RSA private key: RSA2 needs RSA")
    _check_size(key.key_size)
    return key


def parse_public_key(data: bytes) -> rsa.RSAPublicKey:
    """A public key from PEM (SubjectPublicKeyInfo or PKCS#1) or bare base64 DER."""
    try:
        if b"-----BEGIN" in data:
            key = serialization.load_pem_public_key(data)
        else:
            key = serialization.load_der_public_key(_bare_base64(data))
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise KeyFileError("not an RSA public key (PEM or base64 DER)") from exc
    if not isinstance(key, rsa.RSAPublicKey):
        raise KeyFileError("not an RSA public key: RSA2 needs RSA")
    _check_size(key.key_size)
    return key


def load_private_key(path: str | Path) -> rsa.RSAPrivateKey:
    """Read a private key file; errors name the file, never its contents."""
    return _load(path, parse_private_key)


def load_public_key(path: str | Path) -> rsa.RSAPublicKey:
    """Read a public key file; errors name the file, never its contents."""
    return _load(path, parse_public_key)


def private_pem(key: rsa.RSAPrivateKey) -> bytes:
    """PKCS#8 PEM, unencrypted: the form this project writes key files in."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_pem(key: rsa.RSAPublicKey) -> bytes:
    """SubjectPublicKeyInfo PEM."""
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _load(path: str | Path, parse: Callable[[bytes], K]) -> K:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read key file ({exc.strerror})") from exc
    try:
        return parse(data)
    except KeyFileError as exc:
        raise KeyFileError(f"{path}: {exc}") from exc


def _bare_base64(data: bytes) -> bytes:
    text = b"".join(data.split())  # the console wraps or pads it with whitespace
    return base64.b64decode(text, validate=True)


def _check_size(bits: int) -> None:
    if bits < MIN_KEY_BITS:
        raise KeyFileError(f"RSA key is {bits} bits; RSA2 needs at least {MIN_KEY_BITS}")
