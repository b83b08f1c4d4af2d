"""One-tap reconnect end to end: the link lives in the wallet, not in a MAC or the portal.

A shopper logs in through the wallet, opts in, and confirms "add to wallet" on the wallet's own
page. Later the phone rejoins with a new (randomized) MAC and a browser that remembers nothing
of the portal; the wallet app still lists the pass, and opening it authorizes the new MAC with
one tap. Revoked, foreign and tampered tokens never authorize. Runs once per wallet dialect.
"""

from __future__ import annotations

import json
import secrets
import zlib
from collections.abc import Iterator
from urllib.parse import urljoin

import pytest
from itsdangerous.encoding import base64_decode, base64_encode

from lab import shopper
from lab.phone import Phone
from lab.topology import PORTAL_HOST, Lab
from lab.topology import Phone as LabPhone
from lab.wallet.app import WalletAppError, passes, sign_in
from portal import load_secret_key, secret_key_path
from portal.reconnect import Tokens
from tests.netns.conftest import _need_root, unique_name

pytestmark = pytest.mark.netns

NEW_MAC = "02:50:4c:00:99:01"
# Wallet users (login, PIN, user id: OIDC `sub` and Alipay user_id alike). Each test signs in
# as its own user, so "forget me" in one does not revoke another's links and each wallet's
# list holds only that test's passes.
ALICE = ("alice", "1234", "2088000000000001")
BOB = ("bob", "5678", "2088000000000002")
MEI = ("mei", "2468", "2088000000000003")
TITLE = "Plaza Demo Café Wi-Fi"
LOGIN_FAILED = "/?error=login_failed"


@pytest.fixture(scope="module", params=["oidc", "alipay"])
def lab(request: pytest.FixtureRequest) -> Iterator[Lab]:
    _need_root()
    lab = Lab(unique_name("r"))
    try:
        lab.up(phones=2, wallet_dialect=request.param)
        yield lab
    finally:
        lab.down()


@pytest.fixture
def urls(lab: Lab) -> dict[str, str]:
    status = lab.status()
    return {
        "portal": status["portal_url"],
        "wallet": status["wallet_url"].rstrip("/"),
        "site": status["internet"]["web_url"],
    }


@pytest.fixture
def phones(lab: Lab) -> Iterator[list[Phone]]:
    """Phones (cookie jars) a test makes with `new(name)`; every jar is removed afterwards."""
    made: list[Phone] = []
    yield made
    for phone in made:
        phone.close()


def new_phone(lab: Lab, made: list[Phone], name: str) -> Phone:
    phone = Phone(lab.netns_of(name))
    made.append(phone)
    return phone


def lab_phone(lab: Lab, name: str) -> LabPhone:
    return next(p for p in lab.state.phones if p.name == name)


def state_of(lab: Lab, mac: str) -> str:
    return lab.control().client(mac)["state"]


def wallet_login(phone: Phone, portal: str, user: tuple[str, str, str]) -> None:
    shopper.wallet_login(phone, portal, user=user[0], pin=user[1])


def opt_in_and_save(phone: Phone, urls: dict[str, str], user: tuple[str, str, str]) -> str:
    return shopper.opt_in_and_save(phone, urls["portal"], urls["wallet"], user[0], user[1])


def logged_out(phone: Phone, lab: Lab, urls: dict[str, str], mac: str) -> None:
    assert phone.logout(urls["portal"]).status == 303
    assert state_of(lab, mac) == "captive"


def tamper(token: str) -> str:
    """The token with its claims changed to another user's, keeping the old signature.

    itsdangerous marks a zlib-compressed payload with a leading "."; the forged one is sent
    uncompressed, which the portal's serializer reads just as well.
    """
    payload, _, signature = token.rpartition(".")
    raw = base64_decode(payload.removeprefix("."))
    claims = json.loads(zlib.decompress(raw) if payload.startswith(".") else raw)
    claims["sub"] = ALICE[2]
    forged = base64_encode(json.dumps(claims, separators=(",", ":")).encode()).decode()
    return f"{forged}.{signature}"


def flip(token: str) -> str:
    """The token with one character of its payload changed."""
    i = len(token) // 3
    return token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1 :]


# -- the journey ----------------------------------------------------------------------------


def test_the_wallet_holds_the_link_and_a_new_mac_reconnects_in_one_tap(
    lab: Lab, urls: dict[str, str], phones: list[Phone]
) -> None:
    portal, wallet, site = urls["portal"], urls["wallet"], urls["site"]
    old = lab_phone(lab, "phone1")
    old_mac, old_ip = old.mac, old.ipv4
    browser = new_phone(lab, phones, "phone1")
    wallet_login(browser, portal, ALICE)
    assert state_of(lab, old_mac) == "authorized"
    link = opt_in_and_save(browser, urls, ALICE)
    assert passes(browser, wallet) == [(TITLE, link)]
    logged_out(browser, lab, urls, old_mac)

    # The phone comes back another day with a new random MAC: a stranger to the gateway.
    renewed = lab.rejoin_with_new_mac("phone1", NEW_MAC)
    assert renewed.ipv4 and renewed.ipv4 != old_ip
    assert state_of(lab, NEW_MAC) == "captive"
    assert lab.control().client(NEW_MAC)["ip"] == renewed.ipv4
    fresh = new_phone(lab, phones, "phone1")  # a browser that remembers nothing of the portal
    r = fresh.get(site)
    assert r.status == 302 and r.location == portal

    # The wallet app (signed in again on this phone if it forgot) still lists the pass...
    try:
        listed = passes(fresh, wallet)
    except WalletAppError:
        assert sign_in(fresh, wallet, user=ALICE[0], pin=ALICE[1]).status == 303
        listed = passes(fresh, wallet)
    assert listed == [(TITLE, link)]
    # ... and opening it is the one tap.
    r = fresh.get(link)
    assert r.status == 303 and r.location == "/welcome", (r.status, r.location)
    assert state_of(lab, NEW_MAC) == "authorized"
    assert lab.control().client(NEW_MAC)["ip"] == renewed.ipv4
    welcome = fresh.get(urljoin(portal, r.location))
    assert welcome.status == 200 and "Signed in with your wallet" in welcome.body  # again
    # A tap is no wallet login: it cannot mint another link (issue 10, finding 6).
    assert 'action="/reconnect"' not in welcome.body
    r = fresh.get(site)
    assert r.status == 200 and "FAKE-INTERNET-OK" in r.body


def test_forget_me_revokes_the_saved_link(
    lab: Lab, urls: dict[str, str], phones: list[Phone]
) -> None:
    portal = urls["portal"]
    mac = lab_phone(lab, "phone2").mac
    phone = new_phone(lab, phones, "phone2")
    wallet_login(phone, portal, BOB)
    link = opt_in_and_save(phone, urls, BOB)
    logged_out(phone, lab, urls, mac)
    r = phone.get(link)  # the link works ...
    assert r.status == 303 and r.location == "/welcome"
    assert state_of(lab, mac) == "authorized"

    token = shopper.csrf(phone, portal + "welcome")  # ... until the shopper says "forget me"
    r = phone.post(portal + "reconnect/forget", {"csrf_token": token})
    assert r.status == 303 and r.location == "/welcome?forgotten=1"
    logged_out(phone, lab, urls, mac)
    for browser in (phone, new_phone(lab, phones, "phone2")):
        r = browser.get(link)
        assert r.status == 303 and r.location == LOGIN_FAILED, (r.status, r.location)
        assert state_of(lab, mac) == "captive"
    # The wallet still holds the pass (it cannot know); the portal is what refuses it.
    assert passes(phone, urls["wallet"]) == [(TITLE, link)]


def test_foreign_and_tampered_tokens_never_authorize(
    lab: Lab, urls: dict[str, str], phones: list[Phone]
) -> None:
    portal = urls["portal"]
    mac = lab_phone(lab, "phone2").mac
    phone = new_phone(lab, phones, "phone2")
    wallet_login(phone, portal, MEI)
    real = opt_in_and_save(phone, urls, MEI).rpartition("/")[2]
    logged_out(phone, lab, urls, mac)

    this_lab_key = load_secret_key(secret_key_path(lab.gateway_config()))
    another_lab = Tokens(":memory:", secrets.token_bytes(32), venue=PORTAL_HOST, days=90)
    another_venue = Tokens(":memory:", this_lab_key, venue="other-venue.test", days=90)
    refused = {
        "another lab (its own key)": another_lab.issue(MEI[2]),
        "another venue (same key)": another_venue.issue(MEI[2]),
        "claims changed": tamper(real),
        "a character changed": flip(real),
        "signature cut off": real.rpartition(".")[0],
    }
    for why, token in refused.items():
        r = phone.get(portal + "reconnect/" + token)
        assert (r.status, r.location) == (303, LOGIN_FAILED), why
        assert state_of(lab, mac) == "captive", why
    r = phone.get(portal + "reconnect/" + real)  # the genuine one still works
    assert r.status == 303 and r.location == "/welcome"
    assert state_of(lab, mac) == "authorized"
