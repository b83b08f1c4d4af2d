"""Redemption codes checked offline (cloud/o2o/voucher_codes.py): the venue's key and nothing
else, no database."""

from __future__ import annotations

import pytest

from cloud.o2o import voucher_codes
from cloud.o2o.voucher_codes import CodeError
from plaza import signing

CLOUD = signing.new_key()
NOW = 1_800_000_000.0


def reason(code: str, public: str, venue: str = "ven_a", now: float = NOW) -> str:
    with pytest.raises(CodeError) as info:
        voucher_codes.verify(code, public, venue, now)
    return info.value.reason


def test_a_code_verifies_with_the_venue_public_key_alone():
    key = voucher_codes.venue_key(CLOUD, "ven_a")
    code = voucher_codes.issue(key, "vch_1", "ven_a", 3, NOW + 60)
    claims = voucher_codes.verify(code, voucher_codes.public_b64(key), "ven_a", NOW)
    assert (claims.voucher_id, claims.venue_id, claims.gen, claims.expires_at) == (
        "vch_1", "ven_a", 3, int(NOW + 60))  # fmt: skip
    assert len(code) < 200  # fits a small QR code
    # the same key on every instance (derived), another key for another venue
    assert voucher_codes.public_b64(voucher_codes.venue_key(CLOUD, "ven_a")) == (
        voucher_codes.public_b64(key)
    )
    assert voucher_codes.public_b64(voucher_codes.venue_key(CLOUD, "ven_b")) != (
        voucher_codes.public_b64(key)
    )
    spaced = code[:50] + "\n " + code[50:]  # typed or pasted with line breaks
    assert voucher_codes.verify(spaced, voucher_codes.public_b64(key), "ven_a", NOW).gen == 3


def test_forged_expired_and_foreign_codes_are_refused():
    key_a = voucher_codes.venue_key(CLOUD, "ven_a")
    key_b = voucher_codes.venue_key(CLOUD, "ven_b")
    public_a = voucher_codes.public_b64(key_a)
    good = voucher_codes.issue(key_a, "vch_1", "ven_a", 1, NOW + 60)
    assert reason(good, public_a, now=NOW + 60) == "expired"
    # signed by venue B's key (a code from another venue, or a forger with some other key)
    assert reason(voucher_codes.issue(key_b, "vch_1", "ven_a", 1, NOW + 60), public_a) == "forged"
    assert reason(voucher_codes.issue(key_b, "vch_1", "ven_b", 1, NOW + 60), public_a) == "forged"
    # venue A's genuine code shown at venue B's counter
    assert reason(good, voucher_codes.public_b64(key_b), venue="ven_b") == "forged"
    # a payload changed after signing (a later expiry, another voucher)
    prefix, payload, signature = good.split(".")
    other = voucher_codes.issue(key_a, "vch_2", "ven_a", 1, NOW + 9999).split(".")[1]
    assert reason(f"{prefix}.{other}.{signature}", public_a) == "forged"
    # a key that really signed a payload naming another venue (a leaked key's misuse)
    assert reason(voucher_codes.issue(key_a, "vch_1", "ven_b", 1, NOW + 60), public_a) == (
        "other_venue"
    )
    for junk in ["", "PV1", "PV2.a.b", "PV1.!!.??", "x" * 500, f"PV1.{payload}"]:
        assert reason(junk, public_a) == "malformed", junk
    unsigned = voucher_codes._b64(b"vch_1|ven_a|x|1")
    assert reason(f"PV1.{unsigned}.{voucher_codes._b64(key_a.sign(b'vch_1|ven_a|x|1'))}",
                  public_a) == "malformed"  # fmt: skip
    assert reason(good, "not-a-key") == "malformed"
