"""A stand-in for the wallet's signing of consent proofs (plaza/wallet/consent.py), shared by
the cloud tests and the router's uplink tests: one key per test run, and the proof an honest
wallet hands the portal when a shopper saves their link and agrees to the venue's offers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from plaza.wallet import consent, rsa2

WALLET_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
WALLET_ISSUER = "https://wallet.example"
PORTAL_HOST = "portal.plaza.test"  # the venue's registered portal host in these tests


def write_public_key(directory: Path) -> Path:
    """The wallet's public key as the cloud's WALLET_PUBLIC_KEY_FILE."""
    path = directory / "wallet-rsa2.pub"
    path.write_bytes(rsa2.public_pem(WALLET_KEY.public_key()))
    return path


def consent_proof(
    user: str, link: str, at: float, origin: str = f"https://{PORTAL_HOST}", key: Any = WALLET_KEY
) -> str:
    return consent.issue(rsa2.private_pem(key), WALLET_ISSUER, user, origin, link, at)
