"""Alipay's RSA2 rule and the raw-JSON cutting its response signatures depend on."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from plaza.wallet import rsa2
from plaza.wallet.rawjson import raw_members


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


PARAMS = {
    "app_id": "2021000000000001",
    "method": "alipay.system.oauth.token",
    "charset": "utf-8",
    "sign_type": "RSA2",
    "timestamp": "2026-11-25 15:04:05",
    "version": "1.0",
    "grant_type": "authorization_code",
    "code": "4b203fe6c11548bcabd8da5bb087a83b",
    "biz_content": '{"a":"b c&d=e"}',
}


def test_signing_string_is_sorted_raw_and_skips_sign_and_empty_values() -> None:
    text = rsa2.signing_string({"b": "2", "a": "1", "sign": "xyz", "empty": "", "none": None})
    assert text == "a=1&b=2"
    # Values are raw: no URL encoding, even for spaces, '&' and '=' inside JSON.
    assert 'biz_content={"a":"b c&d=e"}' in rsa2.signing_string(PARAMS)
    assert rsa2.signing_string(PARAMS).startswith("app_id=2021000000000001&biz_content=")


def test_signing_string_sorts_by_ascii() -> None:
    assert rsa2.signing_string({"a": "1", "B": "2", "_": "3", "a_b": "4", "ab": "5"}) == (
        "B=2&_=3&a=1&a_b=4&ab=5"
    )


def test_sign_and_verify(key: rsa.RSAPrivateKey) -> None:
    signature = rsa2.sign(PARAMS, key)
    assert base64.b64decode(signature) and len(base64.b64decode(signature)) == 256
    assert rsa2.verify(PARAMS, signature, key.public_key())
    # `sign` itself is excluded, so a signed request verifies with its sign attached.
    assert rsa2.verify({**PARAMS, "sign": signature}, signature, key.public_key())


def test_a_tampered_param_fails(key: rsa.RSAPrivateKey) -> None:
    signature = rsa2.sign(PARAMS, key)
    assert not rsa2.verify({**PARAMS, "code": "another"}, signature, key.public_key())
    assert not rsa2.verify({**PARAMS, "extra": "x"}, signature, key.public_key())


def test_an_empty_value_does_not_change_the_signature(key: rsa.RSAPrivateKey) -> None:
    signature = rsa2.sign(PARAMS, key)
    assert rsa2.verify({**PARAMS, "auth_token": ""}, signature, key.public_key())


def test_garbage_signatures_are_false_not_errors(key: rsa.RSAPrivateKey) -> None:
    for junk in ("", "not base64!", base64.b64encode(b"x" * 256).decode(), "王"):
        assert rsa2.verify(PARAMS, junk, key.public_key()) is False


def test_text_signatures_cover_utf8(key: rsa.RSAPrivateKey) -> None:
    text = '{"nick_name":"王美","user_id":"2088000000000003"}'
    signature = rsa2.sign_text(text, key)
    assert rsa2.verify_text(text, signature, key.public_key())
    assert not rsa2.verify_text(text.replace("王", "汪"), signature, key.public_key())
    assert not rsa2.verify_text(text.replace(":", ": "), signature, key.public_key())


def test_a_1024_bit_key_is_refused(tmp_path: Path) -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(rsa2.KeyFileError, match="1024 bits"):
        rsa2.sign(PARAMS, weak)
    (tmp_path / "weak.key").write_bytes(rsa2.private_pem(weak))
    (tmp_path / "weak.pub").write_bytes(rsa2.public_pem(weak.public_key()))
    with pytest.raises(rsa2.KeyFileError, match="at least 2048"):
        rsa2.load_private_key(tmp_path / "weak.key")
    with pytest.raises(rsa2.KeyFileError, match="at least 2048"):
        rsa2.load_public_key(tmp_path / "weak.pub")
    # ...and a weak key's signature never verifies, even if it is right.
    signature = base64.b64encode(
        weak.sign(rsa2.signing_string(PARAMS).encode(), *_pkcs1_sha256())
    ).decode()
    assert not rsa2.verify(PARAMS, signature, weak.public_key())


def _pkcs1_sha256() -> tuple:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    return padding.PKCS1v15(), hashes.SHA256()


def test_keys_load_from_pem_pkcs1_and_bare_base64(key: rsa.RSAPrivateKey, tmp_path: Path) -> None:
    public = key.public_key()
    pkcs1 = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    pkcs8_der = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    spki_der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    wrapped = base64.encodebytes(pkcs8_der)  # the console's form, line-wrapped
    for data in (rsa2.private_pem(key), pkcs1, base64.b64encode(pkcs8_der), wrapped):
        path = tmp_path / "k"
        path.write_bytes(data)
        assert rsa2.load_private_key(path).private_numbers() == key.private_numbers()
    for data in (rsa2.public_pem(public), base64.b64encode(spki_der) + b"\n"):
        path = tmp_path / "p"
        path.write_bytes(data)
        assert rsa2.load_public_key(path).public_numbers() == public.public_numbers()


def test_non_rsa_and_unreadable_keys_are_refused_without_echoing_them(tmp_path: Path) -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1())
    path = tmp_path / "ec.key"
    path.write_bytes(
        ec_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(rsa2.KeyFileError, match="RSA2 needs RSA"):
        rsa2.load_private_key(path)
    path.write_bytes(b"SECRET-LOOKING-GARBAGE")
    with pytest.raises(rsa2.KeyFileError) as err:
        rsa2.load_private_key(path)
    assert "SECRET" not in str(err.value)
    with pytest.raises(rsa2.KeyFileError, match="cannot read"):
        rsa2.load_public_key(tmp_path / "missing.pub")


# -- raw JSON members ---------------------------------------------------------------------------


def test_raw_members_keep_the_exact_text() -> None:
    body = '{ "a_response" : {"x": 1,  "y":"王\\u0041"} ,"sign":"abc=" }'
    members = raw_members(body)
    assert members == {"a_response": '{"x": 1,  "y":"王\\u0041"}', "sign": '"abc="'}


def test_raw_members_are_not_fooled_by_nested_or_quoted_lookalikes() -> None:
    body = (
        '{"error_response":{"a_response":{"evil":1},"s":"\\"a_response\\":{}"},'
        '"a_response":{"good":true},"sign":"x"}'
    )
    assert raw_members(body)["a_response"] == '{"good":true}'


@pytest.mark.parametrize(
    "text",
    ['{"a":1,"a":2}', '{"a":1', "[1]", '{"a":1} trailing', "", '{"a" 1}', '{"a":1,}'],
)
def test_raw_members_refuse_ambiguous_or_broken_json(text: str) -> None:
    with pytest.raises(ValueError):
        raw_members(text)
