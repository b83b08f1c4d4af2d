"""The sandbox wallet's consent page: what a shopper sees and what it refuses."""

from __future__ import annotations

import re

import pytest

from lab.wallet.app import WalletAppError, approve
from plaza.wallet import make_provider
from tests.wallet_harness import OIDC_CALLBACK, Browser, Sandbox

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
ACTION = re.compile(r'<form method="post" action="([^"]+)"')


@pytest.fixture
def authorize(wallet: Sandbox) -> str:
    url, _ = make_provider(wallet.oidc_config()).start(OIDC_CALLBACK)
    return url


def form(browser: Browser, url: str) -> tuple[str, str, str]:
    page = browser.get(url)
    assert page.status == 200
    action = ACTION.search(page.body).group(1).replace("&amp;", "&")  # type: ignore[union-attr]
    origin = url.split("/authorize")[0]
    return page.body, origin + action, CSRF.search(page.body).group(1)  # type: ignore[union-attr]


def test_the_page_asks_to_sign_in_and_works_without_javascript(
    browser: Browser, authorize: str
) -> None:
    page = browser.get(authorize)
    assert "Plaza Free Wi-Fi</strong> wants to:" in page.body
    assert "know who you are" in page.body
    assert 'name="login"' in page.body and 'name="pin"' in page.body
    assert 'value="approve"' in page.body and 'value="deny"' in page.body
    assert "<script" not in page.body.lower()
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["cache-control"] == "no-store"
    assert 'name="viewport"' in page.body


@pytest.mark.parametrize(
    ("login", "pin"), [("mallory", "1234"), ("alice", "0000"), ("", "")], ids=str
)
def test_unknown_user_or_wrong_pin_is_refused_on_the_page(
    browser: Browser, authorize: str, login: str, pin: str
) -> None:
    answer = approve(browser, authorize, user=login, pin=pin)
    assert answer.status == 403 and not answer.location
    assert "Unknown wallet user or wrong PIN." in answer.body


def test_a_post_without_the_csrf_token_is_refused(browser: Browser, authorize: str) -> None:
    _, action, _ = form(browser, authorize)
    answer = browser.post(action, {"login": "alice", "pin": "1234", "decision": "approve"})
    assert answer.status == 400 and not answer.location
    assert "This form has expired" in answer.body


def test_a_csrf_token_from_another_browser_is_refused(
    wallet: Sandbox, browser: Browser, authorize: str
) -> None:
    _, action, token = form(wallet.browser(), authorize)  # the attacker's own page
    answer = browser.post(
        action, {"csrf_token": token, "login": "alice", "pin": "1234", "decision": "approve"}
    )
    assert answer.status == 400 and not answer.location


def test_a_returning_shopper_only_taps_approve(wallet: Sandbox, browser: Browser) -> None:
    provider = make_provider(wallet.oidc_config())
    first, _ = provider.start(OIDC_CALLBACK)
    assert approve(browser, first).status == 302
    second, _ = provider.start(OIDC_CALLBACK)
    body, action, token = form(browser, second)
    assert 'name="pin"' not in body and "Signed in as <strong>Alice Wang</strong>" in body
    answer = browser.post(action, {"csrf_token": token, "decision": "approve"})
    assert answer.status == 302 and "code=" in answer.location


def test_switching_accounts(wallet: Sandbox, browser: Browser) -> None:
    provider = make_provider(wallet.oidc_config())
    url, txn = provider.start(OIDC_CALLBACK)
    approve(browser, url)  # alice, remembered
    url, txn = provider.start(OIDC_CALLBACK)
    answer = approve(browser, url, user="bob", pin="5678")
    assert provider.finish(answer.query(), txn, OIDC_CALLBACK).user_id == "2088000000000002"


def test_deny_needs_no_sign_in(browser: Browser, authorize: str) -> None:
    answer = approve(browser, authorize, deny=True)
    assert answer.status == 302
    assert answer.query()["error"] == "access_denied" and "code" not in answer.query()


def test_the_wallet_app_refuses_a_page_that_is_not_the_consent_page(
    wallet: Sandbox, browser: Browser
) -> None:
    with pytest.raises(WalletAppError, match="no consent form"):
        approve(browser, wallet.issuer + "/health")
