"""A scriptable wallet app: plays the shopper at the sandbox wallet's pages.

Tests, the demo and benchmarks need a shopper who taps "Approve" (or "Add to wallet") without a
browser. This walks the same pages a person would, with the phone's own HTTP client and cookie
jar (so the wallet remembers the sign-in exactly as it would on the phone), and stops at the
wallet's redirect back to the merchant: following it is the portal flow's job, with the same
phone. `passes` reads the wallet app's list of saved passes; opening one is a plain GET.
`messages` reads the inbox of what merchants pushed; `tap` opens one through the wallet (which
marks it opened) and returns the link the phone should go to next.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urljoin, urlsplit

FORM_RE = re.compile(r'<form method="post" action="([^"]*)" data-wallet-user="([^"]*)">')
CSRF_RE = re.compile(r'name="csrf_token"\s+value="([^"]+)"')
PASS_RE = re.compile(r'<a class="pass" href="([^"]*)">([^<]*)</a>')
MESSAGE_RE = re.compile(
    r'<a class="message" href="([^"]*)">([^<]*)</a>\s*<p class="message-body">([^<]*)</p>\s*'
    r'<div class="hint"><span class="sender">([^<]*)</span>[^<]*(<span class="new">)?'
)
SIGNED_IN_RE = re.compile(r"<p>Signed in as <strong>")
MAX_HOPS = 3
WALLET = "https://wallet.test"  # the lab's wallet; the unit harness passes its own origin


class Answer(Protocol):
    status: int
    headers: dict[str, str]
    body: str

    @property
    def location(self) -> str: ...


class Browser(Protocol):
    """What approve() needs of a phone: lab.phone.Phone fits, so does a test adapter."""

    def get(self, url: str) -> Answer: ...

    def post(self, url: str, data: dict[str, str]) -> Answer: ...


class WalletAppError(RuntimeError):
    """The wallet did not show the page a shopper would expect (not a refusal: that returns)."""


def _same_page(url: str, other: str) -> bool:
    a, b = urlsplit(url), urlsplit(other)
    return (a.scheme, a.netloc, a.path) == (b.scheme, b.netloc, b.path)


def approve(
    phone: Browser,
    authorize_url: str,
    user: str = "alice",
    pin: str = "1234",
    deny: bool = False,
) -> Answer:
    """Open `authorize_url`, sign in as `user` if the wallet asks, tap Approve (or Deny).

    Returns the wallet's last response without following it: normally a 302 to the portal's
    callback (with a code, or with error=access_denied). A refusal on the wallet's side (wrong
    PIN, invalid request) is returned as is (403 / 400) for the caller to assert on.
    """
    url = authorize_url
    page = phone.get(url)
    for _ in range(MAX_HOPS):  # the only redirects we follow stay on the consent page
        if page.status in (301, 302, 303, 307, 308) and page.location:
            target = urljoin(url, page.location)
            if not _same_page(target, authorize_url):
                return page  # back to the merchant: silent sign-in (auth_base) or an error
            url, page = target, phone.get(target)
            continue
        break
    if page.status != 200:
        return page
    return _confirm(phone, url, page, authorize_url, user, pin, deny)


def _confirm(
    phone: Browser, url: str, page: Answer, expected: str, user: str, pin: str, deny: bool
) -> Answer:
    """Answer a wallet confirmation form shown at `url` (consent or add-a-pass) as `user`."""
    for _ in range(2):  # a second pass only after switching accounts
        form, csrf = FORM_RE.search(page.body), CSRF_RE.search(page.body)
        if not form or not csrf:
            raise WalletAppError(f"no consent form at {urlsplit(url).path} ({page.status})")
        action = urljoin(url, html.unescape(form.group(1)))
        if not _same_page(action, expected):
            raise WalletAppError("the consent form posts somewhere unexpected")
        signed_in = form.group(2)
        data = {"csrf_token": html.unescape(csrf.group(1))}
        if signed_in and signed_in != user and not deny:
            page = phone.post(action, {**data, "decision": "switch"})
            continue
        if not signed_in and not deny:
            data.update(login=user, pin=pin)
        return phone.post(action, {**data, "decision": "deny" if deny else "approve"})
    raise WalletAppError("the wallet kept another account signed in")


def pay(
    phone: Browser, pay_url: str, user: str = "alice", pin: str = "1234", deny: bool = False
) -> Answer:
    """Open the merchant's signed payment URL (alipay.trade.wap.pay), follow the wallet to its
    cashier page, sign in as `user` if asked and tap Pay (or Cancel).

    Returns the wallet's answer: normally a 302 back to the merchant's return_url, or a
    refusal (an error page, 403 wrong PIN, 409 already paid) as is.
    """
    page = phone.get(pay_url)
    if page.status != 302 or not page.location:
        return page
    cashier = urljoin(pay_url, page.location)
    page = phone.get(cashier)
    if page.status != 200:
        return page
    return _confirm(phone, cashier, page, cashier, user, pin, deny)


# -- passes ------------------------------------------------------------------------------------


def save_pass(
    phone: Browser, pass_url: str, user: str = "alice", pin: str = "1234", deny: bool = False
) -> Answer:
    """Open the wallet's add-a-pass page (where the portal's 303 points), sign in as `user` if
    asked, and tap "Add to wallet" (or Cancel).

    Returns the wallet's answer: 200 "Saved to your wallet", a 303 back to the merchant after
    Cancel, or a refusal (400 bad request, 403 wrong PIN, 409 wallet full) as is.
    """
    page = phone.get(pass_url)
    if page.status != 200:
        return page
    return _confirm(phone, pass_url, page, pass_url, user, pin, deny)


def sign_in(phone: Browser, wallet: str = WALLET, user: str = "alice", pin: str = "1234") -> Answer:
    """Sign in on the wallet's passes page: what the shopper does when the wallet forgot them."""
    url = wallet.rstrip("/") + "/passes"
    page = phone.get(url)
    csrf = CSRF_RE.search(page.body)
    if page.status != 200 or not csrf:
        raise WalletAppError(f"no passes page at {url} ({page.status})")
    data = {"csrf_token": html.unescape(csrf.group(1)), "login": user, "pin": pin}
    return phone.post(url + "/signin", data)


def _signed_in_page(phone: Browser, url: str, what: str) -> str:
    """The body of one of the wallet app's own pages, as the phone's signed-in user sees it."""
    page = phone.get(url)
    if page.status != 200:
        raise WalletAppError(f"the {what} page answered {page.status}")
    if SIGNED_IN_RE.search(page.body) is None:
        raise WalletAppError("nobody is signed in to the wallet on this phone")
    return page.body


def passes(phone: Browser, wallet: str = WALLET) -> list[tuple[str, str]]:
    """The signed-in user's passes as (title, link), newest first, read from the wallet app's
    list (GET /passes). WalletAppError if nobody is signed in on this phone: see sign_in()."""
    body = _signed_in_page(phone, wallet.rstrip("/") + "/passes", "passes")
    return [(html.unescape(t), html.unescape(link)) for link, t in PASS_RE.findall(body)]


def remove_pass(phone: Browser, link: str, wallet: str = WALLET) -> Answer:
    """Remove the pass with this link, as its "Remove" button on the passes page does (the
    wallet ignores a link the signed-in user does not hold)."""
    url = wallet.rstrip("/") + "/passes"
    page = phone.get(url)
    csrf = CSRF_RE.search(page.body)
    if page.status != 200 or not csrf:
        raise WalletAppError(f"no passes page at {url} ({page.status})")
    return phone.post(url + "/remove", {"csrf_token": html.unescape(csrf.group(1)), "link": link})


# -- messages ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class InboxMessage:
    """One message as the wallet app's inbox shows it."""

    title: str
    body: str
    sender: str  # the merchant app's registered name
    new: bool  # not opened yet
    url: str  # the wallet's own tap URL (not the merchant's link: tap() finds that out)


def messages(phone: Browser, wallet: str = WALLET) -> list[InboxMessage]:
    """The signed-in user's inbox (GET /messages), newest first. WalletAppError if nobody is
    signed in on this phone: see sign_in() (one sign-in serves passes and messages)."""
    url = wallet.rstrip("/") + "/messages"
    body = _signed_in_page(phone, url, "messages")
    return [
        InboxMessage(
            html.unescape(title),
            html.unescape(text),
            html.unescape(sender),
            bool(new),
            urljoin(url, html.unescape(href)),
        )
        for href, title, text, sender, new in MESSAGE_RE.findall(body)
    ]


def tap(phone: Browser, message: InboxMessage) -> str:
    """Tap a message in the inbox: the wallet marks it opened and answers with a redirect to
    the merchant's link, which is returned for the phone to open next (like a pass, a plain
    GET: following it is the caller's job). WalletAppError if the wallet shows no redirect."""
    answer = phone.get(message.url)
    if answer.status != 303 or not answer.location:
        raise WalletAppError(f"tapping the message answered {answer.status}, not a redirect")
    return answer.location
