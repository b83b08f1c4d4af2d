"""A scriptable wallet app: plays the shopper at the sandbox wallet's consent page.

Tests, the demo and benchmarks need a shopper who taps "Approve" without a browser. This walks
the same pages a person would, with the phone's own HTTP client and cookie jar (so the wallet
remembers the sign-in exactly as it would on the phone), and stops at the wallet's redirect
back to the merchant: following it is the portal flow's job, with the same phone.
"""

from __future__ import annotations

import html
import re
from typing import Protocol
from urllib.parse import urljoin, urlsplit

FORM_RE = re.compile(r'<form method="post" action="([^"]*)" data-wallet-user="([^"]*)">')
CSRF_RE = re.compile(r'name="csrf_token"\s+value="([^"]+)"')
MAX_HOPS = 3


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
    for _ in range(2):  # a second pass only after switching accounts
        form, csrf = FORM_RE.search(page.body), CSRF_RE.search(page.body)
        if not form or not csrf:
            raise WalletAppError(f"no consent form at {urlsplit(url).path} ({page.status})")
        action = urljoin(url, html.unescape(form.group(1)))
        if not _same_page(action, authorize_url):
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
