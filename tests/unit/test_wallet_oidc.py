"""OpenID Connect login end to end: the portal's provider against the sandbox wallet.

Happy path first, then everything a real wallet or our client must refuse, each with the
message the portal would log.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from pathlib import Path
from urllib.parse import urlencode

import pytest
import requests
from joserfc.jwk import KeySet, RSAKey

from lab.wallet.app import approve
from plaza.wallet import LoginError, WalletUser, make_provider
from plaza.wallet.oidc import OidcProvider
from tests.wallet_harness import (
    CONFIDENTIAL,
    OIDC_CALLBACK,
    Answer,
    Browser,
    Sandbox,
    pooled_logins,
)

VERIFIER = "v" * 43


def login(provider: OidcProvider, browser: Browser, **kw: object) -> tuple[Answer, dict]:
    url, txn = provider.start(OIDC_CALLBACK)
    return approve(browser, url, **kw), txn  # type: ignore[arg-type]


def authorize_url(wallet: Sandbox, **over: str) -> str:
    challenge = base64.urlsafe_b64encode(hashlib.sha256(VERIFIER.encode()).digest()).rstrip(b"=")
    params = {
        "response_type": "code",
        "client_id": "plaza-portal",
        "redirect_uri": OIDC_CALLBACK,
        "scope": "openid profile",
        "state": "s" * 20,
        "nonce": secrets.token_urlsafe(16),  # a reused nonce is refused as a replay
        "code_challenge": challenge.decode(),
        "code_challenge_method": "S256",
        **over,
    }
    return f"{wallet.issuer}/authorize?" + urlencode({k: v for k, v in params.items() if v})


def token_request(wallet: Sandbox, code: str, verifier: str = VERIFIER) -> requests.Response:
    return requests.post(
        wallet.issuer + "/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": OIDC_CALLBACK,
            "client_id": "plaza-portal",
            "code_verifier": verifier,
        },
        verify=wallet.ca_file,
        timeout=5,
    )


@pytest.fixture
def provider(wallet: Sandbox) -> OidcProvider:
    return make_provider(wallet.oidc_config())  # type: ignore[return-value]


# -- it works ----------------------------------------------------------------------------------


def test_alice_logs_in_with_name_from_userinfo(provider: OidcProvider, browser: Browser) -> None:
    answer, txn = login(provider, browser)
    assert answer.status == 302 and answer.location.startswith(OIDC_CALLBACK + "?")
    user = provider.finish(answer.query(), txn, OIDC_CALLBACK)
    assert user == WalletUser("2088000000000001", "Alice Wang", "oidc", {})
    assert user.claims["sub"] == "2088000000000001"
    assert not {"nonce", "at_hash", "access_token", "id_token"} & set(user.claims)


def test_authorize_url_carries_pkce_s256_state_and_nonce(provider: OidcProvider) -> None:
    url, txn = provider.start(OIDC_CALLBACK)
    assert "code_challenge_method=S256" in url and "code_challenge=" in url
    assert f"state={txn['state']}" in url and f"nonce={txn['nonce']}" in url
    assert txn["code_verifier"] not in url
    assert set(txn) == {"dialect", "redirect_uri", "created_at", "state", "nonce", "code_verifier"}


def test_bob_logs_in_after_alice_on_the_same_phone(
    provider: OidcProvider, browser: Browser
) -> None:
    answer, txn = login(provider, browser)
    provider.finish(answer.query(), txn, OIDC_CALLBACK)
    answer, txn = login(provider, browser, user="bob", pin="5678")
    assert provider.finish(answer.query(), txn, OIDC_CALLBACK).display_name == "Bob Li"


def test_logins_reuse_the_providers_ssl_context_and_pool(
    provider: OidcProvider, browser: Browser, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every wallet call of two logins goes through the provider's pool, whose SSL context
    was made with the trust anchors once (see `pooled_logins`)."""
    assert pooled_logins(provider, browser, OIDC_CALLBACK, monkeypatch) == 6


# -- the client refuses ------------------------------------------------------------------------


@pytest.mark.parametrize("state", ["forged-state", ""])
def test_forged_or_missing_state_is_refused(
    provider: OidcProvider, browser: Browser, state: str
) -> None:
    answer, txn = login(provider, browser)
    args = {**answer.query(), "state": state}
    with pytest.raises(LoginError, match="state mismatch") as err:
        provider.finish(args, txn, OIDC_CALLBACK)
    assert err.value.reason == "state"
    assert args["code"] not in str(err.value)


def test_deny_is_a_declined_login(provider: OidcProvider, browser: Browser) -> None:
    answer, txn = login(provider, browser, deny=True)
    assert answer.query()["error"] == "access_denied"
    with pytest.raises(LoginError, match="declined") as err:
        provider.finish(answer.query(), txn, OIDC_CALLBACK)
    assert err.value.reason == "denied"


def test_a_transaction_older_than_ten_minutes_is_refused(wallet: Sandbox, browser: Browser) -> None:
    now = [1_800_000_000.0]
    provider = make_provider(wallet.oidc_config(), clock=lambda: now[0])
    answer, txn = login(provider, browser)  # type: ignore[arg-type]
    now[0] += 601
    with pytest.raises(LoginError, match="took too long"):
        provider.finish(answer.query(), txn, OIDC_CALLBACK)


def test_a_callback_to_another_redirect_uri_is_refused(
    provider: OidcProvider, browser: Browser
) -> None:
    answer, txn = login(provider, browser)
    with pytest.raises(LoginError, match="different address"):
        provider.finish(answer.query(), txn, "https://evil.test/login/callback")


def test_a_replayed_code_is_refused(provider: OidcProvider, browser: Browser) -> None:
    answer, txn = login(provider, browser)
    provider.finish(answer.query(), txn, OIDC_CALLBACK)
    with pytest.raises(LoginError, match=r"refused the authorization code \(invalid_grant\)"):
        provider.finish(answer.query(), txn, OIDC_CALLBACK)


def test_an_expired_code_is_refused(
    wallet: Sandbox, provider: OidcProvider, browser: Browser
) -> None:
    answer, txn = login(provider, browser)
    wallet.clock.advance(61)  # codes live 60 s
    with pytest.raises(LoginError, match=r"invalid_grant") as err:
        provider.finish(answer.query(), txn, OIDC_CALLBACK)
    assert err.value.reason == "rejected"


def test_a_wrong_nonce_in_the_id_token_is_refused(provider: OidcProvider, browser: Browser) -> None:
    answer, txn = login(provider, browser)
    with pytest.raises(LoginError, match="nonce"):
        provider.finish(answer.query(), {**txn, "nonce": "another"}, OIDC_CALLBACK)


def test_an_id_token_signed_by_another_key_is_refused(
    provider: OidcProvider, browser: Browser, monkeypatch: pytest.MonkeyPatch
) -> None:
    answer, txn = login(provider, browser)
    real_kid = provider.key_set().keys[0].kid
    impostor = RSAKey.generate_key(2048, parameters={"kid": real_kid}, private=False)
    monkeypatch.setattr(provider, "key_set", lambda force=False: KeySet([impostor]))
    with pytest.raises(LoginError, match="signature check failed") as err:
        provider.finish(answer.query(), txn, OIDC_CALLBACK)
    assert err.value.reason == "signature"


def test_an_id_token_for_another_client_is_refused(
    provider: OidcProvider, browser: Browser, monkeypatch: pytest.MonkeyPatch
) -> None:
    answer, txn = login(provider, browser)
    exchange = provider._exchange

    def then_pretend_to_be_someone_else(*args: object) -> dict:
        token = exchange(*args)  # type: ignore[arg-type]
        monkeypatch.setattr(provider, "client_id", "someone-else")
        return token

    monkeypatch.setattr(provider, "_exchange", then_pretend_to_be_someone_else)
    with pytest.raises(LoginError, match="ID token's aud is wrong"):
        provider.finish(answer.query(), txn, OIDC_CALLBACK)


def test_an_unreachable_wallet_is_reported_as_such(wallet: Sandbox) -> None:
    provider = make_provider(wallet.oidc_config(issuer="https://127.0.0.1:1"))
    with pytest.raises(LoginError, match="the wallet is unreachable") as err:
        provider.start(OIDC_CALLBACK)
    assert err.value.reason == "unreachable"


def test_a_wallet_with_an_untrusted_certificate_is_unreachable(wallet: Sandbox) -> None:
    provider = make_provider(wallet.oidc_config(ca_file=""))  # system store: no lab CA
    with pytest.raises(LoginError, match="certificate was not trusted"):
        provider.start(OIDC_CALLBACK)


def test_a_discovery_document_for_another_issuer_is_refused(wallet: Sandbox) -> None:
    provider = make_provider(wallet.oidc_config(issuer=wallet.issuer + "/"))
    with pytest.raises(LoginError, match="different issuer"):
        provider.start(OIDC_CALLBACK)


def test_a_rotated_signing_key_is_fetched_again(provider: OidcProvider, browser: Browser) -> None:
    old = RSAKey.generate_key(2048, parameters={"kid": "retired"}, private=False)
    provider._jwks = (time.monotonic() - 60, {"keys": [old.as_dict()]})
    answer, txn = login(provider, browser)
    assert provider.finish(answer.query(), txn, OIDC_CALLBACK).user_id == "2088000000000001"


def test_a_missing_client_secret_file_is_a_config_error(wallet: Sandbox) -> None:
    with pytest.raises(ValueError, match="client_secret_file /nonexistent"):
        make_provider(wallet.oidc_config(client_secret_file="/nonexistent"))


@pytest.mark.parametrize("right", [True, False], ids=["right-secret", "wrong-secret"])
def test_a_confidential_client_authenticates_with_its_secret(
    wallet: Sandbox, browser: Browser, tmp_path: Path, right: bool
) -> None:
    secret = tmp_path / "secret"
    secret.write_text(CONFIDENTIAL["client_secret"] if right else "guess")
    config = wallet.oidc_config(client_id=CONFIDENTIAL["client_id"], client_secret_file=str(secret))
    provider = make_provider(config)
    answer, txn = login(provider, browser)  # type: ignore[arg-type]
    if right:
        assert provider.finish(answer.query(), txn, OIDC_CALLBACK).display_name == "Alice Wang"
    else:
        with pytest.raises(LoginError, match=r"\(invalid_client\)"):
            provider.finish(answer.query(), txn, OIDC_CALLBACK)


def test_discovery_is_cached(provider: OidcProvider, monkeypatch: pytest.MonkeyPatch) -> None:
    provider.start(OIDC_CALLBACK)
    monkeypatch.setattr(requests.Session, "get", lambda *a, **k: pytest.fail("fetched again"))
    provider.start(OIDC_CALLBACK)


# -- the sandbox refuses -----------------------------------------------------------------------


def code_from(browser: Browser, url: str) -> str:
    answer = approve(browser, url)
    assert answer.status == 302, answer.body
    return answer.query()["code"]


def test_sandbox_refuses_a_wrong_pkce_verifier(wallet: Sandbox, browser: Browser) -> None:
    code = code_from(browser, authorize_url(wallet))
    answer = token_request(wallet, code, verifier="w" * 43)
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_grant"


def test_sandbox_issues_tokens_for_the_right_verifier_once(
    wallet: Sandbox, browser: Browser
) -> None:
    code = code_from(browser, authorize_url(wallet))
    first = token_request(wallet, code)
    assert first.status_code == 200 and "id_token" in first.json()
    bearer = {"Authorization": "Bearer " + first.json()["access_token"]}
    userinfo = wallet.issuer + "/userinfo"
    assert requests.get(userinfo, headers=bearer, verify=wallet.ca_file, timeout=5).ok
    assert token_request(wallet, code).json()["error"] == "invalid_grant"
    # A replayed code revokes what the code bought (RFC 6749 §4.1.2).
    again = requests.get(userinfo, headers=bearer, verify=wallet.ca_file, timeout=5)
    assert again.status_code == 401


@pytest.mark.parametrize(
    "over",
    [
        {"code_challenge_method": "plain"},
        {"code_challenge": "", "code_challenge_method": ""},
        {"nonce": ""},
    ],
    ids=["plain-pkce", "no-pkce", "no-nonce"],
)
def test_sandbox_refuses_weak_requests_back_to_the_client(
    wallet: Sandbox, browser: Browser, over: dict[str, str]
) -> None:
    answer = browser.get(authorize_url(wallet, **over))
    assert answer.status == 302
    assert answer.query()["error"] == "invalid_request"
    assert answer.query()["state"] == "s" * 20


@pytest.mark.parametrize(
    "over",
    [{"redirect_uri": "https://evil.test/login/callback"}, {"client_id": "nobody"}],
    ids=["unregistered-redirect-uri", "unknown-client"],
)
def test_sandbox_refuses_before_consent_and_never_redirects(
    wallet: Sandbox, browser: Browser, over: dict[str, str]
) -> None:
    answer = browser.get(authorize_url(wallet, **over))
    assert answer.status == 400
    assert not answer.location
    assert "This sign-in request is invalid" in answer.body
    assert "Approve" not in answer.body


def test_sandbox_redirect_uri_must_match_exactly(wallet: Sandbox, browser: Browser) -> None:
    answer = browser.get(authorize_url(wallet, redirect_uri=OIDC_CALLBACK + "/"))
    assert answer.status == 400 and not answer.location


def test_sandbox_token_endpoint_refuses_a_code_for_another_redirect_uri(
    wallet: Sandbox, browser: Browser
) -> None:
    code = code_from(browser, authorize_url(wallet))
    answer = requests.post(
        wallet.issuer + "/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": "https://portal.plaza.test/other",
            "client_id": "plaza-portal",
            "code_verifier": VERIFIER,
        },
        verify=wallet.ca_file,
        timeout=5,
    )
    assert answer.json()["error"] == "invalid_grant"


def test_sandbox_token_endpoint_refuses_an_unknown_client(wallet: Sandbox) -> None:
    answer = requests.post(
        wallet.issuer + "/token",
        data={"grant_type": "authorization_code", "code": "x", "client_id": "nobody"},
        verify=wallet.ca_file,
        timeout=5,
    )
    assert answer.status_code in (400, 401) and answer.json()["error"] == "invalid_client"


def test_sandbox_refuses_a_reused_nonce(wallet: Sandbox, browser: Browser) -> None:
    url = authorize_url(wallet)
    code_from(browser, url)
    answer = browser.get(url)
    assert answer.query()["error"] == "invalid_request"


def test_sandbox_prompt_none_without_a_session_is_login_required(
    wallet: Sandbox, browser: Browser
) -> None:
    answer = browser.get(authorize_url(wallet, prompt="none"))
    assert answer.query()["error"] == "login_required"
