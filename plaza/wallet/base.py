"""What the portal sees of a wallet, whichever dialect it speaks.

The portal never handles tokens: a provider turns the wallet's callback into a `WalletUser` or
a `LoginError` whose text is safe to show and log. Everything a provider needs between the
redirect and the callback travels in a small JSON-safe "transaction" that the portal keeps in
the browser's signed session cookie, so the callback is only accepted from the browser that
started the login, and the portal stays stateless.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlencode, urlsplit

TRANSACTION_MAX_AGE = 600.0  # seconds a shopper may spend in the wallet before starting again
CLOCK_SKEW = 60.0  # a transaction "from the future" beyond this was not made by this portal

_SAFE_CODE = re.compile(r"[A-Za-z0-9._-]{1,64}")

PASSES_ADD_PATH = "/passes/add"
MAX_PASS_TITLE = 80  # what the wallet accepts; a longer title would be refused, not cut


@dataclass(frozen=True)
class WalletUser:
    """A shopper the wallet vouched for. `claims` holds identity facts only, never tokens."""

    user_id: str
    display_name: str | None
    dialect: str
    claims: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


class LoginError(Exception):
    """A login that did not succeed. str() is safe to show and log: it never holds codes,
    tokens, keys or text chosen by whoever crafted the callback URL.

    `reason` is a short fixed word the portal can branch on: unreachable, denied, expired,
    state, rejected, signature, invalid. `code` is the wallet's own refusal code when it gave
    one (an Alipay sub_code such as ACQ.TRADE_NOT_EXIST), already checked to be plain.
    """

    def __init__(self, message: str, reason: str = "invalid", code: str = "") -> None:
        super().__init__(message)
        self.reason = reason
        self.code = code


class WalletProvider(Protocol):
    """The one interface the portal uses, implemented per dialect."""

    def start(self, redirect_uri: str) -> tuple[str, dict]:
        """(authorization URL to redirect the browser to, transaction to keep until callback)"""
        ...

    def finish(self, args: Mapping[str, str], transaction: dict, redirect_uri: str) -> WalletUser:
        """Check the callback's query args against the transaction; raises LoginError."""
        ...

    def pass_url(self, link: str, title: str, offers: bool = False) -> str:
        """Where to send the browser so the shopper can save `link` in their wallet.

        "Add to wallet" is browser-mediated: the shopper confirms on the wallet's own page, so
        the portal needs no API call, credential or user token to save it, and the wallet
        (which checks `link` against our registered origin) is the one who keeps it.
        """
        ...


def safe_code(value: object, default: str = "unknown error") -> str:
    """An error code from the wallet, fit for a log line, or `default` when it looks odd."""
    if isinstance(value, str) and _SAFE_CODE.fullmatch(value):
        return value
    return default


def new_transaction(dialect: str, redirect_uri: str, now: float, **fields: str) -> dict:
    """A transaction: plain JSON types only, as it is stored in a cookie."""
    return {"dialect": dialect, "redirect_uri": redirect_uri, "created_at": int(now), **fields}


def check_transaction(transaction: object, dialect: str, redirect_uri: str, now: float) -> dict:
    """Refuse a transaction that is missing, stale, or was made for another login."""
    if not isinstance(transaction, dict) or not isinstance(transaction.get("state"), str):
        raise LoginError("no login is in progress in this browser; please start again", "expired")
    created = transaction.get("created_at")
    if not isinstance(created, int | float) or isinstance(created, bool):
        raise LoginError("no login is in progress in this browser; please start again", "expired")
    if now - created > TRANSACTION_MAX_AGE or created - now > CLOCK_SKEW:
        raise LoginError("the login took too long; please start again", "expired")
    if transaction.get("dialect") != dialect:
        raise LoginError("the login was started for another wallet; please start again", "expired")
    if transaction.get("redirect_uri") != redirect_uri:
        raise LoginError("the login came back to a different address", "state")
    return transaction


def check_state(args: Mapping[str, str], transaction: dict) -> None:
    """The callback's `state` must be the one we sent: otherwise it is someone else's login
    (CSRF / login fixation). Compared in constant time, as bytes so any text is comparable."""
    sent = args.get("state")
    if not isinstance(sent, str) or not sent:
        raise LoginError("state mismatch: the wallet's answer carried no state", "state")
    if not hmac.compare_digest(sent.encode(), str(transaction["state"]).encode()):
        raise LoginError("state mismatch: the answer belongs to another login", "state")


def check_callback_error(args: Mapping[str, str]) -> None:
    """A callback that carries `error` instead of a code: the shopper said no, or the wallet did."""
    error = args.get("error")
    if error is None:
        return
    if error == "access_denied":
        raise LoginError("the login was declined in the wallet", "denied")
    raise LoginError(f"the wallet refused the login ({safe_code(error)})", "rejected")


def origin_of(url: str) -> str:
    """`scheme://host[:port]` of an https URL from our configuration (an issuer may have a
    path; the wallet's pages are at its origin)."""
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.netloc:
        raise ValueError(f"not an https URL: {url!r}")
    return f"https://{parts.netloc}"


def pass_add_url(
    wallet_url: str, client_id: str, link: str, title: str, offers: bool = False
) -> str:
    """The wallet's add-a-pass page for `link`, on the origin of `wallet_url`; with `offers`
    the wallet also asks the shopper to let the venue send its offers, and returns a consent
    proof (plaza/wallet/consent.py)."""
    title = " ".join(title.split())[:MAX_PASS_TITLE]
    params = {"client_id": client_id, "title": title, "link": link}
    if offers:
        params["offers"] = "1"
    query = urlencode(params)
    return f"{origin_of(wallet_url)}{PASSES_ADD_PATH}?{query}"
