"""Properties of the Alipay response parser (plaza/wallet/alipay.py, rawjson.py, rsa2.py).

The wallet's gateway answers over HTTPS, but what it sends is believed only once the wallet's
key signed it; until then the body is outside bytes. Whatever the body holds, parsing ends in
the verified object or a LoginError, and key material from a file ends in a key or a
KeyFileError: never another exception (which the login page would turn into a 500).
"""

from __future__ import annotations

import json

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import example, given
from hypothesis import strategies as st

from plaza.wallet import http, rsa2
from plaza.wallet.alipay import TOKEN_METHOD, parse_response, response_key
from plaza.wallet.base import LoginError
from plaza.wallet.rawjson import raw_members
from tests.fuzz.jsonvalues import deep, mutated, objects, spaced, values

WALLET_KEY = rsa.generate_private_key(65537, 2048)
PUBLIC = WALLET_KEY.public_key()
KEY = response_key(TOKEN_METHOD)


def signed_body(result: dict, spacing: str = "") -> str:
    inner = json.dumps(result, ensure_ascii=False)
    sign = rsa2.sign_text(inner, WALLET_KEY)
    return f'{{"{KEY}":{spacing}{inner},{spacing}"sign":"{sign}"}}'


# -- rawjson ------------------------------------------------------------------------------------
@given(st.text(max_size=300))
@example(deep(opener='{"a":['))
@example('{"a":' + deep() + "}")  # regression: RecursionError escaped as not a ValueError
def test_raw_members_of_any_text_is_a_dict_or_value_error(text: str) -> None:
    check_raw_members(text)


def check_raw_members(text: str) -> None:
    try:
        members = raw_members(text)
    except ValueError:
        return
    parsed = json.loads(text)  # what it accepted, the standard decoder accepts
    assert isinstance(parsed, dict) and list(parsed) == list(members)
    for key, raw in members.items():
        assert json.loads(raw) == parsed[key] or parsed[key] != parsed[key]  # NaN


@given(objects.flatmap(lambda obj: st.tuples(st.just(obj), spaced(obj))))
def test_raw_members_cut_each_value_out_verbatim(case: tuple[dict, str]) -> None:
    obj, text = case
    members = raw_members(text)
    assert list(members) == list(obj)
    for key, raw in members.items():
        assert json.loads(raw) == obj[key]
        assert raw == raw.strip() and raw in text


@given(objects.flatmap(lambda obj: spaced(obj).flatmap(mutated)))
def test_raw_members_of_mutated_json(text: str) -> None:
    check_raw_members(text)


def test_deep_nesting_is_a_value_error() -> None:
    """Regression: a value nested past the recursion limit raised RecursionError."""
    with pytest.raises(ValueError, match="nested"):
        raw_members('{"a":' + deep() + "}")


# -- parse_response -----------------------------------------------------------------------------
user = st.fixed_dictionaries(
    {"user_id": st.text(min_size=1, max_size=20), "code": st.just("10000")},
    optional={"nick_name": st.text(max_size=20), "extra": values},
)


@given(user, st.sampled_from(["", " ", "\n  "]))
def test_a_signed_answer_round_trips(result: dict, spacing: str) -> None:
    assert parse_response(signed_body(result, spacing), TOKEN_METHOD, PUBLIC) == result


@given(user.flatmap(lambda r: st.tuples(st.just(r), mutated(signed_body(r)))))
def test_a_mutated_answer_is_refused_or_unchanged(case: tuple[dict, str]) -> None:
    result, body = case
    try:
        got = parse_response(body, TOKEN_METHOD, PUBLIC)
    except LoginError:
        return
    assert got == result  # only a change the signature does not cover (spacing) may pass


@given(st.one_of(st.text(max_size=400), objects.map(json.dumps), objects.flatmap(spaced)))
@example('{"' + KEY + '":' + deep() + ',"sign":"x"}')
@example('{"error_response":' + deep(10000) + "}")
@example('{"error_response":{"code":"40004","sub_code":"isv.code-invalid\\n"}}')
def test_any_answer_is_a_result_or_a_login_error(body: str) -> None:
    try:
        got = parse_response(body, TOKEN_METHOD, PUBLIC)
    except LoginError as exc:
        assert "\n" not in str(exc)
        return
    raise AssertionError(f"unsigned answer accepted: {got!r}")


# -- rsa2 ---------------------------------------------------------------------------------------
@given(st.text(max_size=200), st.text(max_size=400))
def test_verify_any_signature_is_false_never_an_exception(text: str, signature: str) -> None:
    assert rsa2.verify_text(text, signature, PUBLIC) is False


@given(st.text(max_size=200), st.data())
def test_a_flipped_signature_byte_does_not_verify(text: str, data: st.DataObject) -> None:
    import base64

    raw = bytearray(base64.b64decode(rsa2.sign_text(text, WALLET_KEY)))
    at = data.draw(st.integers(0, len(raw) - 1))
    raw[at] ^= data.draw(st.integers(1, 255))
    assert rsa2.verify_text(text, base64.b64encode(bytes(raw)).decode(), PUBLIC) is False
    assert rsa2.verify_text(text, rsa2.sign_text(text, WALLET_KEY), PUBLIC) is True


PEMS = [rsa2.public_pem(PUBLIC), rsa2.private_pem(WALLET_KEY)]


@given(
    st.one_of(
        st.binary(max_size=600),
        st.sampled_from(PEMS).flatmap(
            lambda pem: st.tuples(st.integers(0, len(pem) - 1), st.integers(0, 255)).map(
                lambda m: pem[: m[0]] + bytes([m[1]]) + pem[m[0] + 1 :]
            )
        ),
    )
)
def test_key_material_is_a_key_or_a_key_file_error(data: bytes) -> None:
    for parse in (rsa2.parse_public_key, rsa2.parse_private_key):
        try:
            key = parse(data)
        except rsa2.KeyFileError:
            continue
        assert isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey) and key.key_size >= 2048


# -- the OpenID Connect side's JSON (plaza/wallet/http.py) ---------------------------------------
class Session:
    """A requests session whose every GET answers 200 with `body`."""

    def __init__(self, body: bytes) -> None:
        self.body = body

    def get(self, url: str, **kw: object) -> requests.Response:
        response = requests.Response()
        response.status_code, response._content = 200, self.body
        return response


@given(st.one_of(st.binary(max_size=300), objects.map(lambda o: json.dumps(o).encode())))
@example(deep().encode())  # regression: RecursionError escaped get_json
def test_any_json_answer_is_an_object_or_a_login_error(body: bytes) -> None:
    try:
        data = http.get_json(Session(body), "https://wallet.test/x", "discovery")  # type: ignore[arg-type]
    except LoginError:
        return
    assert isinstance(data, dict)
