"""Alipay-dialect login end to end, and the gateway's signature rules from both sides."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests

from lab.wallet.app import approve
from plaza.wallet import LoginError, WalletUser, make_provider, rsa2
from plaza.wallet.alipay import AlipayProvider, parse_response, timestamp
from plaza.wallet.http import new_session
from plaza.wallet.rawjson import raw_members
from tests.wallet_harness import ALIPAY_CALLBACK, Answer, Browser, Sandbox, pooled_logins


def login(provider: AlipayProvider, browser: Browser, **kw: object) -> tuple[Answer, dict]:
    url, txn = provider.start(ALIPAY_CALLBACK)
    return approve(browser, url, **kw), txn  # type: ignore[arg-type]


def make(wallet: Sandbox, **over: object) -> AlipayProvider:
    clock = over.pop("clock", None)
    config = wallet.alipay_config(**over)  # type: ignore[arg-type]
    return make_provider(config, clock=clock) if clock else make_provider(config)  # type: ignore


@pytest.fixture
def provider(wallet: Sandbox) -> AlipayProvider:
    return make(wallet)


def gateway(wallet: Sandbox, params: dict[str, str]) -> dict:
    answer = requests.post(
        wallet.issuer + "/gateway.do", data=params, verify=wallet.ca_file, timeout=5
    )
    return json.loads(answer.text)


# -- it works ----------------------------------------------------------------------------------


def test_alice_logs_in_with_auth_user(provider: AlipayProvider, browser: Browser) -> None:
    url, txn = provider.start(ALIPAY_CALLBACK)
    assert "scope=auth_user" in url and f"state={txn['state']}" in url
    answer = approve(browser, url)
    assert answer.status == 302 and answer.location.startswith(ALIPAY_CALLBACK + "?")
    args = answer.query()
    assert args["app_id"] == provider.app_id and args["state"] == txn["state"]
    user = provider.finish(args, txn, ALIPAY_CALLBACK)
    assert user == WalletUser("2088000000000001", "Alice Wang", "alipay", {})
    assert user.claims["open_id"] and user.claims["scope"] == "auth_user"
    assert "access_token" not in user.claims and "refresh_token" not in user.claims


def test_logins_reuse_the_providers_ssl_context_and_pool(
    provider: AlipayProvider, browser: Browser, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every wallet call of two logins goes through the provider's pool, whose SSL context
    was made with the trust anchors once (see `pooled_logins`)."""
    assert pooled_logins(provider, browser, ALIPAY_CALLBACK, monkeypatch) == 4


def test_a_non_ascii_nick_name_survives_the_raw_text_signature(
    provider: AlipayProvider, browser: Browser
) -> None:
    answer, txn = login(provider, browser, user="mei", pin="2468")
    assert provider.finish(answer.query(), txn, ALIPAY_CALLBACK).display_name == "王美"


def test_auth_base_is_silent_once_signed_in(wallet: Sandbox, browser: Browser) -> None:
    provider = make(wallet, alipay_scope="auth_base")
    answer, txn = login(provider, browser)
    user = provider.finish(answer.query(), txn, ALIPAY_CALLBACK)
    assert user.user_id == "2088000000000001" and user.display_name is None
    url, txn = provider.start(ALIPAY_CALLBACK)
    silent = browser.get(url)  # no page at all: straight back to the portal with a code
    assert silent.status == 302 and "auth_code" in silent.query()
    assert provider.finish(silent.query(), txn, ALIPAY_CALLBACK).user_id == user.user_id


def test_refresh_token_grant_rotates(wallet: Sandbox, provider: AlipayProvider) -> None:
    with new_session(wallet.ca_file) as session:
        url, _ = provider.start(ALIPAY_CALLBACK)
        code = approve(wallet.browser(), url).query()["auth_code"]
        first = provider.call(
            session, "alipay.system.oauth.token", {"grant_type": "authorization_code", "code": code}
        )
        refresh = {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
        second = provider.call(session, "alipay.system.oauth.token", refresh)
        assert second["user_id"] == first["user_id"]
        assert second["access_token"] != first["access_token"]
        with pytest.raises(LoginError, match=r"isv.refresh-token-invalid"):
            provider.call(session, "alipay.system.oauth.token", refresh)


# -- the client refuses ------------------------------------------------------------------------


def test_a_forged_state_is_refused(provider: AlipayProvider, browser: Browser) -> None:
    answer, txn = login(provider, browser)
    with pytest.raises(LoginError, match="state mismatch"):
        provider.finish({**answer.query(), "state": "forged"}, txn, ALIPAY_CALLBACK)


def test_a_callback_for_another_app_is_refused(provider: AlipayProvider, browser: Browser) -> None:
    answer, txn = login(provider, browser)
    with pytest.raises(LoginError, match="different merchant app"):
        provider.finish({**answer.query(), "app_id": "2021999999999999"}, txn, ALIPAY_CALLBACK)


def test_deny_is_a_declined_login(provider: AlipayProvider, browser: Browser) -> None:
    answer, txn = login(provider, browser, deny=True)
    assert answer.status == 302 and "auth_code" not in answer.query()
    with pytest.raises(LoginError, match="declined") as err:
        provider.finish(answer.query(), txn, ALIPAY_CALLBACK)
    assert err.value.reason == "denied"


def test_a_replayed_auth_code_is_refused(provider: AlipayProvider, browser: Browser) -> None:
    answer, txn = login(provider, browser)
    provider.finish(answer.query(), txn, ALIPAY_CALLBACK)
    with pytest.raises(LoginError, match=r"refused alipay.system.oauth.token \(isv.code-invalid\)"):
        provider.finish(answer.query(), txn, ALIPAY_CALLBACK)


def test_an_expired_auth_code_is_refused(
    wallet: Sandbox, provider: AlipayProvider, browser: Browser
) -> None:
    answer, txn = login(provider, browser)
    wallet.clock.advance(61)
    # The portal's clock moves too, or its timestamps would look stale to the wallet.
    late = make(wallet, clock=wallet.clock)
    with pytest.raises(LoginError, match=r"isv.code-invalid"):
        late.finish(answer.query(), txn, ALIPAY_CALLBACK)


def test_a_response_signed_by_another_key_is_refused(wallet: Sandbox, browser: Browser) -> None:
    # Trusting the app's own public key instead of the wallet's: every answer is a forgery.
    provider = make(
        wallet,
        wallet_public_key_file=wallet.material["alipay"]["wallet_public_key_file"].replace(
            "wallet-rsa2", "app-rsa2"
        ),
    )
    answer, txn = login(provider, browser)
    with pytest.raises(LoginError, match="signature check") as err:
        provider.finish(answer.query(), txn, ALIPAY_CALLBACK)
    assert err.value.reason == "signature"


def test_a_tampered_response_is_refused(wallet: Sandbox, provider: AlipayProvider) -> None:
    key = rsa2.load_private_key(Path(wallet.material["settings"]).parent / "wallet-rsa2.key")
    inner = '{"user_id":"2088000000000001","open_id":"0abc","access_token":"t"}'
    body = f'{{"alipay_system_oauth_token_response":{inner},"sign":"{rsa2.sign_text(inner, key)}"}}'
    assert parse_response(body, "alipay.system.oauth.token", provider.wallet_key)["user_id"]
    tampered = body.replace("2088000000000001", "2088000000000002")
    with pytest.raises(LoginError, match="signature check"):
        parse_response(tampered, "alipay.system.oauth.token", provider.wallet_key)
    unsigned = f'{{"alipay_system_oauth_token_response":{inner}}}'
    with pytest.raises(LoginError, match="signature check"):
        parse_response(unsigned, "alipay.system.oauth.token", provider.wallet_key)


def test_a_stale_request_timestamp_is_refused_by_the_wallet(
    wallet: Sandbox, browser: Browser
) -> None:
    answer, txn = login(make(wallet), browser)
    fast = make(wallet, clock=lambda: wallet.clock() + 16 * 60)
    txn = {**txn, "created_at": int(fast.clock())}
    with pytest.raises(LoginError, match=r"isv.invalid-timestamp"):
        fast.finish(answer.query(), txn, ALIPAY_CALLBACK)


def test_an_unreachable_gateway_is_reported(wallet: Sandbox, browser: Browser) -> None:
    provider = make(wallet, gateway_url="https://127.0.0.1:1/gateway.do")
    answer, txn = login(provider, browser)
    with pytest.raises(LoginError, match="the wallet is unreachable"):
        provider.finish(answer.query(), txn, ALIPAY_CALLBACK)


def test_a_weak_app_key_is_refused_at_startup(wallet: Sandbox, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    weak = tmp_path / "weak.key"
    weak.write_bytes(rsa2.private_pem(rsa.generate_private_key(65537, 1024)))
    with pytest.raises(ValueError, match="1024 bits"):
        make(wallet, app_private_key_file=str(weak))


# -- the sandbox refuses -----------------------------------------------------------------------


def signed(provider: AlipayProvider, method: str, **params: str) -> dict[str, str]:
    return provider.request_params(method, params)


def test_sandbox_refuses_a_tampered_request_signature(
    wallet: Sandbox, provider: AlipayProvider
) -> None:
    params = signed(
        provider, "alipay.system.oauth.token", grant_type="authorization_code", code="a"
    )
    params["code"] = "b"  # changed after signing
    error = gateway(wallet, params)["error_response"]
    assert (error["code"], error["sub_code"]) == ("40002", "isv.invalid-signature")


def test_sandbox_refuses_a_missing_signature(wallet: Sandbox, provider: AlipayProvider) -> None:
    params = signed(
        provider, "alipay.system.oauth.token", grant_type="authorization_code", code="a"
    )
    del params["sign"]
    assert gateway(wallet, params)["error_response"]["sub_code"] == "isv.missing-signature"


def test_sandbox_refuses_an_unknown_app(wallet: Sandbox, provider: AlipayProvider) -> None:
    params = signed(
        provider, "alipay.system.oauth.token", grant_type="authorization_code", code="a"
    )
    params["app_id"] = "2021999999999999"
    assert gateway(wallet, params)["error_response"]["sub_code"] == "isv.invalid-app-id"


def test_sandbox_refuses_a_signature_by_another_key(
    wallet: Sandbox, provider: AlipayProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    wallet_key = rsa2.load_private_key(Path(wallet.material["settings"]).parent / "wallet-rsa2.key")
    monkeypatch.setattr(provider, "app_key", wallet_key)
    params = signed(
        provider, "alipay.system.oauth.token", grant_type="authorization_code", code="a"
    )
    assert gateway(wallet, params)["error_response"]["sub_code"] == "isv.invalid-signature"


def test_sandbox_refuses_stale_timestamps(wallet: Sandbox, provider: AlipayProvider) -> None:
    params = signed(
        provider, "alipay.system.oauth.token", grant_type="authorization_code", code="a"
    )
    params["timestamp"] = timestamp(wallet.clock() - 16 * 60)
    params["sign"] = rsa2.sign(params, provider.app_key)
    assert gateway(wallet, params)["error_response"]["sub_code"] == "isv.invalid-timestamp"


def test_sandbox_signs_its_errors_too(wallet: Sandbox, provider: AlipayProvider) -> None:
    params = signed(
        provider, "alipay.system.oauth.token", grant_type="authorization_code", code="nope"
    )
    answer = requests.post(
        wallet.issuer + "/gateway.do", data=params, verify=wallet.ca_file, timeout=5
    )
    members = raw_members(answer.text)
    sign = json.loads(members["sign"])
    assert rsa2.verify_text(members["error_response"], sign, provider.wallet_key)
    with pytest.raises(LoginError, match=r"refused alipay.system.oauth.token \(isv.code-invalid\)"):
        parse_response(answer.text, "alipay.system.oauth.token", provider.wallet_key)


def test_sandbox_user_info_needs_an_auth_user_grant(wallet: Sandbox, browser: Browser) -> None:
    provider = make(wallet, alipay_scope="auth_base")
    answer, _ = login(provider, browser)
    with new_session(wallet.ca_file) as session:
        token = provider.call(
            session,
            "alipay.system.oauth.token",
            {"grant_type": "authorization_code", "code": answer.query()["auth_code"]},
        )
        with pytest.raises(LoginError, match=r"isv.insufficient-user-permissions"):
            provider.call(session, "alipay.user.info.share", {"auth_token": token["access_token"]})
        with pytest.raises(LoginError, match=r"aop.invalid-auth-token"):
            provider.call(session, "alipay.user.info.share", {"auth_token": "made-up"})


@pytest.mark.parametrize(
    "over",
    [
        {"redirect_uri": "https://evil.test/login/alipay/callback"},
        {"app_id": "2021999999999999"},
        {"scope": "auth_everything"},
    ],
    ids=["unregistered-redirect-uri", "unknown-app", "bad-scope"],
)
def test_sandbox_refuses_bad_authorize_requests_before_consent(
    wallet: Sandbox, provider: AlipayProvider, browser: Browser, over: dict[str, str]
) -> None:
    from urllib.parse import urlencode

    params = {
        "app_id": provider.app_id,
        "scope": "auth_user",
        "redirect_uri": ALIPAY_CALLBACK,
        "state": "s",
        **over,
    }
    answer = browser.get(provider.authorize_url + "?" + urlencode(params))
    assert answer.status == 400 and not answer.location
    assert "This sign-in request is invalid" in answer.body and "Approve" not in answer.body


def test_sandbox_codes_are_single_use_even_under_a_race(
    wallet: Sandbox, provider: AlipayProvider, browser: Browser
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    url, _ = provider.start(ALIPAY_CALLBACK)
    code = approve(browser, url).query()["auth_code"]
    params = {"grant_type": "authorization_code", "code": code}

    def exchange(_: int) -> str:
        with new_session(wallet.ca_file) as session:
            try:
                return provider.call(session, "alipay.system.oauth.token", params)["user_id"]
            except LoginError as exc:
                return str(exc)

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(exchange, range(8)))
    assert results.count("2088000000000001") == 1
    assert all("isv.code-invalid" in r for r in results if r != "2088000000000001")
