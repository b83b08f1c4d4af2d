"""Saving a link in the sandbox wallet ("add to wallet"), and what the wallet refuses to save.

Runs against the HTTPS sandbox of tests/wallet_harness.py; the pass URLs come from the portal's own
providers, so both sides of the contract (`pass_url` and `/passes/add`) are exercised together.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from lab.wallet import app as wallet_app
from lab.wallet.passes import MAX_PASSES
from plaza.wallet import consent, make_provider, wallet_origin
from tests.wallet_harness import OIDC_CALLBACK, PORTAL, Browser, Sandbox

LINK = PORTAL + "/reconnect/InRva2VuIg.c2lnbmF0dXJl"
TITLE = "Plaza Demo Café Wi-Fi"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
USERS = (("alice", "1234"), ("bob", "5678"), ("mei", "2468"))


@pytest.fixture(autouse=True)
def empty_wallets(wallet: Sandbox) -> Iterator[None]:
    """The sandbox lives for the session: leave every user's passes as this test found them
    (empty), so tests do not see each other's passes."""
    yield
    for user, pin in USERS:
        phone = wallet.browser()
        wallet_app.sign_in(phone, wallet.issuer, user, pin)
        for _, link in wallet_app.passes(phone, wallet.issuer):
            wallet_app.remove_pass(phone, link, wallet.issuer)


def add_url(wallet: Sandbox, **params: str) -> str:
    query = {"client_id": "plaza-portal", "title": TITLE, "link": LINK, **params}
    return f"{wallet.issuer}/passes/add?{urlencode(query)}"


def oidc_pass_url(wallet: Sandbox, link: str = LINK, title: str = TITLE) -> str:
    return make_provider(wallet.oidc_config()).pass_url(link, title)


# -- the portal's side: pass_url ------------------------------------------------------------


def test_pass_url_of_both_dialects(wallet: Sandbox) -> None:
    for config, client_id in (
        (wallet.oidc_config(), "plaza-portal"),
        (wallet.alipay_config(), wallet.material["alipay"]["app_id"]),
    ):
        url = urlsplit(make_provider(config).pass_url(LINK, TITLE))
        assert f"{url.scheme}://{url.netloc}" == wallet.issuer == wallet_origin(config)
        assert url.path == "/passes/add"
        assert parse_qs(url.query) == {"client_id": [client_id], "title": [TITLE], "link": [LINK]}


def test_pass_url_uses_the_issuers_origin_and_a_title_the_wallet_takes(wallet: Sandbox) -> None:
    provider = make_provider(wallet.oidc_config(issuer="https://login.example:8443/realms/plaza"))
    url = urlsplit(provider.pass_url(LINK, "A  very\nlong " + "x" * 200))
    assert (url.netloc, url.path) == ("login.example:8443", "/passes/add")
    [title] = parse_qs(url.query)["title"]
    assert title.startswith("A very long x") and len(title) == 80


# -- adding, listing, removing --------------------------------------------------------------


def test_add_signs_in_on_the_wallet_page_then_lists_the_pass(
    wallet: Sandbox, browser: Browser
) -> None:
    url = oidc_pass_url(wallet)
    page = browser.get(url)
    assert page.status == 200
    assert "Plaza Free Wi-Fi</strong> wants to add a pass" in page.body
    assert TITLE in page.body and "It opens https://portal.plaza.test." in page.body
    assert 'name="login"' in page.body and 'name="pin"' in page.body  # not signed in yet
    assert "<script" not in page.body.lower()
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["cache-control"] == "no-store"

    saved = wallet_app.save_pass(browser, url)
    assert saved.status == 200 and "Saved to your wallet" in saved.body
    assert '<a href="https://portal.plaza.test/welcome">' in saved.body
    assert wallet_app.passes(browser, wallet.issuer) == [(TITLE, LINK)]
    listing = browser.get(wallet.issuer + "/passes").body
    assert f'<a class="pass" href="{LINK}">{TITLE}</a>' in listing
    assert "Plaza Free Wi-Fi, added " in listing


def test_a_signed_in_user_only_taps_add(wallet: Sandbox, browser: Browser) -> None:
    provider = make_provider(wallet.oidc_config())
    login_url, _ = provider.start(OIDC_CALLBACK)
    assert wallet_app.approve(browser, login_url, user="bob", pin="5678").status == 302
    page = browser.get(oidc_pass_url(wallet))
    assert 'name="pin"' not in page.body and "Signed in as <strong>Bob Li</strong>" in page.body
    assert wallet_app.save_pass(browser, oidc_pass_url(wallet), user="bob").status == 200
    assert wallet_app.passes(browser, wallet.issuer) == [(TITLE, LINK)]


def test_an_alipay_app_saves_a_pass_under_its_app_id(wallet: Sandbox, browser: Browser) -> None:
    url = make_provider(wallet.alipay_config()).pass_url(LINK, "Alipay venue")
    assert wallet_app.save_pass(browser, url).status == 200
    assert wallet_app.passes(browser, wallet.issuer) == [("Alipay venue", LINK)]


def test_the_same_link_is_kept_once_newest_title_first(wallet: Sandbox, browser: Browser) -> None:
    other = PORTAL + "/reconnect/other"
    for link, title in ((LINK, "Old name"), (other, "Other"), (LINK, "New name")):
        assert wallet_app.save_pass(browser, oidc_pass_url(wallet, link, title)).status == 200
    assert wallet_app.passes(browser, wallet.issuer) == [("New name", LINK), ("Other", other)]


def test_remove_a_pass(wallet: Sandbox, browser: Browser) -> None:
    wallet_app.save_pass(browser, oidc_pass_url(wallet))
    answer = wallet_app.remove_pass(browser, LINK, wallet.issuer)
    assert answer.status == 303 and answer.location.endswith("/passes")
    assert wallet_app.passes(browser, wallet.issuer) == []


def test_remove_needs_the_csrf_token(wallet: Sandbox, browser: Browser) -> None:
    wallet_app.save_pass(browser, oidc_pass_url(wallet))
    answer = browser.post(wallet.issuer + "/passes/remove", {"link": LINK})
    assert answer.status == 400 and "expired" in answer.body
    forged = CSRF.search(wallet.browser().get(wallet.issuer + "/passes").body).group(1)  # type: ignore[union-attr]
    answer = browser.post(wallet.issuer + "/passes/remove", {"link": LINK, "csrf_token": forged})
    assert answer.status == 400
    assert wallet_app.passes(browser, wallet.issuer) == [(TITLE, LINK)]


def test_cancel_goes_back_to_the_portal_and_saves_nothing(
    wallet: Sandbox, browser: Browser
) -> None:
    wallet_app.sign_in(browser, wallet.issuer)
    answer = wallet_app.save_pass(browser, oidc_pass_url(wallet), deny=True)
    assert answer.status == 303 and answer.location == "https://portal.plaza.test/welcome"
    assert wallet_app.passes(browser, wallet.issuer) == []


def test_add_refuses_a_post_without_the_csrf_token(wallet: Sandbox, browser: Browser) -> None:
    url = oidc_pass_url(wallet)
    browser.get(url)
    answer = browser.post(url, {"login": "alice", "pin": "1234", "decision": "approve"})
    assert answer.status == 400 and "This form has expired" in answer.body
    wallet_app.sign_in(browser, wallet.issuer)
    assert wallet_app.passes(browser, wallet.issuer) == []


def test_a_wrong_pin_saves_nothing(wallet: Sandbox, browser: Browser) -> None:
    answer = wallet_app.save_pass(browser, oidc_pass_url(wallet), pin="0000")
    assert answer.status == 403 and "Unknown wallet user or wrong PIN." in answer.body
    wallet_app.sign_in(browser, wallet.issuer)
    assert wallet_app.passes(browser, wallet.issuer) == []


def test_titles_and_links_are_escaped(wallet: Sandbox, browser: Browser) -> None:
    title = '<script>alert(1)</script> "Café" & co'
    link = PORTAL + '/reconnect/x"><script>alert(2)</script>'
    page = browser.get(oidc_pass_url(wallet, link, title))
    assert "<script" not in page.body
    wallet_app.save_pass(browser, oidc_pass_url(wallet, link, title))
    listing = browser.get(wallet.issuer + "/passes").body
    assert "<script" not in listing and "&lt;script&gt;alert(1)" in listing
    assert wallet_app.passes(browser, wallet.issuer) == [(title, link)]


def test_a_wallet_holds_at_most_20_passes(wallet: Sandbox, browser: Browser) -> None:
    wallet_app.sign_in(browser, wallet.issuer, "mei", "2468")
    for i in range(MAX_PASSES):
        url = oidc_pass_url(wallet, f"{PORTAL}/reconnect/{i}", f"Pass {i}")
        assert wallet_app.save_pass(browser, url, user="mei").status == 200
    full = wallet_app.save_pass(browser, oidc_pass_url(wallet, PORTAL + "/x"), user="mei")
    assert full.status == 409 and "20 passes" in full.body
    again = oidc_pass_url(wallet, f"{PORTAL}/reconnect/3", "Pass 3, renamed")
    assert wallet_app.save_pass(browser, again, user="mei").status == 200  # same link: replaced
    mine = wallet_app.passes(browser, wallet.issuer)
    assert len(mine) == MAX_PASSES and mine[0] == ("Pass 3, renamed", f"{PORTAL}/reconnect/3")


# -- refusals -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"client_id": "nobody"}, "Unknown merchant"),
        ({"client_id": ""}, "Unknown merchant"),
        ({"link": "https://evil.test/reconnect/x"}, "a merchant may only save links to itself"),
        ({"link": "http://portal.plaza.test/reconnect/x"}, "only save links to itself"),
        ({"link": "https://portal.plaza.test:8443/x"}, "only save links to itself"),
        ({"link": "https://portal.plaza.test.evil.test/x"}, "only save links to itself"),
        ({"link": "https://portal.plaza.test@evil.test/x"}, "only save links to itself"),
        ({"link": "https://evil@portal.plaza.test/x"}, "only save links to itself"),
        ({"link": "javascript:alert(1)//portal.plaza.test"}, "only save links to itself"),
        ({"link": "//portal.plaza.test/x"}, "only save links to itself"),
        ({"link": ""}, "not a plain https:// address"),
        ({"link": "https://portal.plaza.test/a b"}, "not a plain https:// address"),
        ({"link": "https://portal.plaza.test\\@evil.test/"}, "not a plain https:// address"),
        ({"link": PORTAL + "/" + "x" * 1024}, "too long (at most 1024 characters)"),
        ({"title": "x" * 81}, "title is too long (at most 80 characters)"),
        ({"title": "  "}, "no title"),
        ({"title": "Plaza \u202egnp.exe"}, "characters a wallet cannot show"),
    ],
    ids=lambda v: str(v)[:40] if isinstance(v, str) else None,
)
def test_refused_requests(
    wallet: Sandbox, browser: Browser, params: dict[str, str], message: str
) -> None:
    answer = browser.get(add_url(wallet, **params))
    assert answer.status == 400, answer.body
    assert "This pass cannot be added: " in answer.body and message in answer.body
    assert "<form" not in answer.body


def test_limits_are_inclusive_and_the_origin_may_spell_its_port(
    wallet: Sandbox, browser: Browser
) -> None:
    link = "https://PORTAL.plaza.test:443/" + "x" * (1024 - len("https://PORTAL.plaza.test:443/"))
    answer = wallet_app.save_pass(browser, add_url(wallet, title="t" * 80, link=link))
    assert answer.status == 200
    assert wallet_app.passes(browser, wallet.issuer) == [("t" * 80, link)]


def test_a_parameter_given_twice_is_refused(wallet: Sandbox, browser: Browser) -> None:
    answer = browser.get(add_url(wallet) + "&link=https%3A%2F%2Fevil.test%2F")
    assert answer.status == 400 and "link is given more than once" in answer.body


def test_a_post_is_checked_again(wallet: Sandbox, browser: Browser) -> None:
    """The form posts back to its own URL: a tampered URL is refused on post, not just on GET."""
    page = browser.get(add_url(wallet))
    token = CSRF.search(page.body).group(1)  # type: ignore[union-attr]
    answer = browser.post(
        add_url(wallet, link="https://evil.test/"),
        {"csrf_token": token, "login": "alice", "pin": "1234", "decision": "approve"},
    )
    assert answer.status == 400 and "only save links to itself" in answer.body


# -- the wallet app's list ------------------------------------------------------------------


def test_the_passes_page_asks_to_sign_in(wallet: Sandbox, browser: Browser) -> None:
    page = browser.get(wallet.issuer + "/passes")
    assert page.status == 200 and 'name="pin"' in page.body and 'class="pass"' not in page.body
    with pytest.raises(wallet_app.WalletAppError, match="nobody is signed in"):
        wallet_app.passes(browser, wallet.issuer)
    assert wallet_app.sign_in(browser, wallet.issuer, pin="0000").status == 403
    answer = wallet_app.sign_in(browser, wallet.issuer)
    assert answer.status == 303 and answer.location.endswith("/passes")
    assert wallet_app.passes(browser, wallet.issuer) == []


def test_passes_are_per_user(wallet: Sandbox, browser: Browser) -> None:
    wallet_app.save_pass(browser, oidc_pass_url(wallet))
    other = wallet.browser()
    wallet_app.sign_in(other, wallet.issuer, "bob", "5678")
    assert wallet_app.passes(other, wallet.issuer) == []
    wallet_app.remove_pass(other, LINK, wallet.issuer)  # bob cannot remove alice's pass
    assert wallet_app.passes(browser, wallet.issuer) == [(TITLE, LINK)]


def test_sign_out(wallet: Sandbox, browser: Browser) -> None:
    wallet_app.sign_in(browser, wallet.issuer)
    token = CSRF.search(browser.get(wallet.issuer + "/passes").body).group(1)  # type: ignore[union-attr]
    assert browser.post(wallet.issuer + "/passes/signout", {}).status == 400
    answer = browser.post(wallet.issuer + "/passes/signout", {"csrf_token": token})
    assert answer.status == 303
    with pytest.raises(wallet_app.WalletAppError, match="nobody is signed in"):
        wallet_app.passes(browser, wallet.issuer)


# -- consent to the venue's offers (issue 10, finding 1) -------------------------------------


def test_with_offers_the_wallet_asks_and_returns_a_signed_consent_proof(
    wallet: Sandbox, browser: Browser
) -> None:
    url = make_provider(wallet.oidc_config()).pass_url(LINK, TITLE, offers=True)
    assert parse_qs(urlsplit(url).query)["offers"] == ["1"]
    page = browser.get(url)
    assert "may also send its offers to your wallet" in page.body
    saved = wallet_app.save_pass(browser, url)
    # Back to the merchant's registered origin (never a parameter), with the proof.
    assert saved.status == 303
    back = urlsplit(saved.location)
    assert f"{back.scheme}://{back.netloc}{back.path}" == PORTAL + "/reconnect/saved"
    [proof] = parse_qs(back.query)["proof"]
    key = Path(wallet.material["alipay"]["wallet_public_key_file"]).read_bytes()
    made = consent.verify(proof, key, wallet.issuer, time.time())
    assert (made.wallet_user, made.origin) == ("2088000000000001", PORTAL)
    assert made.link_digest == consent.link_digest(LINK)
    assert wallet_app.passes(browser, wallet.issuer) == [(TITLE, LINK)]


def test_without_offers_or_on_cancel_there_is_no_proof(wallet: Sandbox, browser: Browser) -> None:
    url = make_provider(wallet.oidc_config()).pass_url(LINK, TITLE, offers=True)
    cancelled = wallet_app.save_pass(browser, url, deny=True)
    assert cancelled.status == 303 and "proof" not in cancelled.location
    plain = wallet_app.save_pass(browser, oidc_pass_url(wallet))
    assert plain.status == 200 and "proof" not in plain.body
    assert "may also send" not in browser.get(oidc_pass_url(wallet)).body
    assert browser.get(add_url(wallet, offers="yes")).status == 400
