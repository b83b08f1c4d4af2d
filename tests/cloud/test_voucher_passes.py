"""The Apple Wallet `.pkpass` (cloud/o2o/passes.py), signed with a certificate from the lab's
CA and checked the way a phone checks it: every file in the manifest with its SHA-1, and the
manifest's detached PKCS#7 signature verified by OpenSSL against the CA."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import zipfile
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from cloud.o2o import passes
from lab.pki import LabCA

VOUCHER = passes.VoucherPass(
    serial="vch_0123456789abcdef", organization="Cafe Uno", title="10 off", value="¥10 off",
    terms="Spend ¥30 or more.", code="PV1.payload.signature", expires_at=1_800_086_400.0,
    link="https://cloud.example/plaza/vouchers/vch_0123456789abcdef",
)  # fmt: skip


@pytest.fixture
def signer_config(tmp_path: Path) -> dict[str, str]:
    ca = LabCA(tmp_path / "ca")
    cert, key = ca.issue("pass-signer", ["pass.example.plaza.voucher"])
    return {"PASS_CERT_FILE": str(cert), "PASS_KEY_FILE": str(key),
            "PASS_WWDR_FILE": str(ca.cert_path), "PASS_TYPE_ID": "pass.example.plaza.voucher",
            "PASS_TEAM_ID": "TEAM123456"}  # fmt: skip


def test_pkpass_is_complete_and_its_signature_verifies(signer_config, tmp_path: Path):
    signer = passes.PassSigner.from_config(signer_config)
    assert signer is not None
    archive = zipfile.ZipFile(io.BytesIO(passes.build_pkpass(VOUCHER, signer)))
    names = set(archive.namelist())
    assert {"pass.json", "manifest.json", "signature", "icon.png", "icon@2x.png"} <= names
    manifest = json.loads(archive.read("manifest.json"))
    assert set(manifest) == names - {"manifest.json", "signature"}
    for name, digest in manifest.items():
        assert hashlib.sha1(archive.read(name)).hexdigest() == digest, name
    body = json.loads(archive.read("pass.json"))
    assert body["passTypeIdentifier"] == "pass.example.plaza.voucher"
    assert body["teamIdentifier"] == "TEAM123456"
    barcode = {"format": "PKBarcodeFormatQR", "message": VOUCHER.code,
               "messageEncoding": "iso-8859-1", "altText": VOUCHER.serial}  # fmt: skip
    assert body["barcodes"][0] == barcode
    assert body["coupon"]["primaryFields"][0]["value"] == "¥10 off"
    assert archive.read("icon.png").startswith(b"\x89PNG\r\n\x1a\n")

    (tmp_path / "manifest.json").write_bytes(archive.read("manifest.json"))
    (tmp_path / "signature").write_bytes(archive.read("signature"))

    def verify(content: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in",
             str(tmp_path / "signature"), "-content", str(content), "-CAfile",
             signer_config["PASS_WWDR_FILE"], "-purpose", "any", "-out", "/dev/null"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip

    done = verify(tmp_path / "manifest.json")
    assert done.returncode == 0, done.stderr
    (tmp_path / "tampered.json").write_bytes(archive.read("manifest.json").replace(b"a", b"b", 1))
    assert verify(tmp_path / "tampered.json").returncode != 0  # the check can fail


def test_no_certificate_no_pkpass():
    assert passes.PassSigner.from_config({}) is None


def test_sandbox_wallet_link():
    url = passes.sandbox_wallet_link("https://wallet.example/", "plaza-cloud", "x" * 100,
                                     VOUCHER.link)  # fmt: skip
    parts = urlsplit(url)
    assert (parts.netloc, parts.path) == ("wallet.example", "/passes/add")
    query = parse_qs(parts.query)
    assert query["client_id"] == ["plaza-cloud"] and query["link"] == [VOUCHER.link]
    assert len(query["title"][0]) == 80
