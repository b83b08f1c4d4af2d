"""Vouchers saved to a wallet: an Apple Wallet `.pkpass` built for real, and the sandbox
wallet's add-a-pass link.

A `.pkpass` is a zip of `pass.json`, the images, `manifest.json` (each file's SHA-1, as
Apple's format requires) and `signature`: a detached PKCS#7 (CMS) signature of the manifest
by the pass-type certificate, with Apple's WWDR intermediate included. Here the certificate
and key come from the app's config (`PASS_CERT_FILE`, `PASS_KEY_FILE`, optional
`PASS_WWDR_FILE`, `PASS_TYPE_ID`, `PASS_TEAM_ID`); the tests make them with the lab's CA, so
everything but Apple's own trust in the certificate is exercised. Without a certificate the
cloud offers no `.pkpass` (the sandbox wallet's pass still works).

The barcode carries the same signed redemption code as the QR on the shopper's page, so the
staff page scans either.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import struct
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs7

MIME_TYPE = "application/vnd.apple.pkpass"


@dataclass(frozen=True)
class PassSigner:
    """The pass-type certificate, its key and Apple's intermediate (None in a test setup
    whose CA is its own root)."""

    cert: x509.Certificate
    key: Any
    intermediate: x509.Certificate | None
    pass_type_id: str
    team_id: str

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> PassSigner | None:
        cert_file, key_file = config.get("PASS_CERT_FILE"), config.get("PASS_KEY_FILE")
        if not cert_file or not key_file:
            return None
        certs = x509.load_pem_x509_certificates(Path(cert_file).read_bytes())
        key = serialization.load_pem_private_key(Path(key_file).read_bytes(), None)
        wwdr = config.get("PASS_WWDR_FILE")
        intermediate = x509.load_pem_x509_certificate(Path(wwdr).read_bytes()) if wwdr else None
        return cls(
            certs[0],
            key,
            intermediate,
            str(config.get("PASS_TYPE_ID", "pass.example.plaza.voucher")),
            str(config.get("PASS_TEAM_ID", "PLAZA0TEAM")),
        )

    def sign(self, manifest: bytes) -> bytes:
        """Detached PKCS#7 (DER) of the manifest, SHA-256, with the signing time."""
        builder = pkcs7.PKCS7SignatureBuilder().set_data(manifest)
        builder = builder.add_signer(self.cert, self.key, hashes.SHA256())
        if self.intermediate is not None:
            builder = builder.add_certificate(self.intermediate)
        options = [pkcs7.PKCS7Options.DetachedSignature, pkcs7.PKCS7Options.Binary]
        return builder.sign(serialization.Encoding.DER, options)


@dataclass(frozen=True)
class VoucherPass:
    serial: str  # the voucher id
    organization: str  # the venue's name
    title: str
    value: str  # "¥10 off", "15 % off"
    terms: str
    code: str  # the signed redemption code
    expires_at: float
    link: str  # the shopper's voucher page


def _iso(at: float) -> str:
    return dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def pass_json(voucher: VoucherPass, signer: PassSigner) -> dict[str, Any]:
    return {
        "formatVersion": 1,
        "passTypeIdentifier": signer.pass_type_id,
        "teamIdentifier": signer.team_id,
        "serialNumber": voucher.serial,
        "organizationName": voucher.organization,
        "description": voucher.title,
        "expirationDate": _iso(voucher.expires_at),
        "barcodes": [
            {
                "format": "PKBarcodeFormatQR",
                "message": voucher.code,
                "messageEncoding": "iso-8859-1",
                "altText": voucher.serial,
            }
        ],
        "coupon": {
            "primaryFields": [{"key": "value", "label": voucher.title, "value": voucher.value}],
            "secondaryFields": [
                {
                    "key": "expires",
                    "label": "Valid until",
                    "value": _iso(voucher.expires_at),
                    "dateStyle": "PKDateStyleMedium",
                }
            ],
            "backFields": [
                {"key": "terms", "label": "Terms", "value": voucher.terms},
                {"key": "link", "label": "Open", "value": voucher.link},
            ],
        },
    }


def icon_png(size: int = 29, rgb: tuple[int, int, int] = (0x1F, 0x6F, 0xEB)) -> bytes:
    """A plain square PNG (Apple requires icon.png), made here so the cloud ships no image."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    row = b"\x00" + bytes(rgb) * size
    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(row * size))
        + chunk(b"IEND", b"")
    )


def build_pkpass(voucher: VoucherPass, signer: PassSigner) -> bytes:
    files = {
        "pass.json": json.dumps(pass_json(voucher, signer), ensure_ascii=False).encode(),
        "icon.png": icon_png(29),
        "icon@2x.png": icon_png(58),
        "logo.png": icon_png(50),
    }
    manifest = json.dumps(
        {name: hashlib.sha1(data).hexdigest() for name, data in files.items()},  # Apple: SHA-1
        sort_keys=True,
    ).encode()
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
        archive.writestr("manifest.json", manifest)
        archive.writestr("signature", signer.sign(manifest))
    return out.getvalue()


def sandbox_wallet_link(wallet_url: str, client_id: str, title: str, link: str) -> str:
    """The sandbox wallet's add-a-pass page (lab/wallet/passes.py) for this voucher: the
    wallet keeps a link to the shopper's voucher page, on the cloud's registered origin."""
    query = urlencode({"client_id": client_id, "title": title[:80], "link": link})
    return f"{wallet_url.rstrip('/')}/passes/add?{query}"
