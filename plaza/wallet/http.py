"""Back-channel HTTP to the wallet: short timeouts, our own trust anchors, no surprises.

The portal runs on a router serving shoppers who are waiting on a spinner, so every call to the
wallet has a 5 s budget. Environment proxies and .netrc are ignored (the router's environment
is not configuration), redirects are not followed (a token endpoint that redirects is broken or
hostile), and failures become a `LoginError` that names the problem but not the request.
"""

from __future__ import annotations

import logging
import os
import ssl
from typing import Any, TypeVar

import requests
from requests.adapters import HTTPAdapter

from plaza.wallet.base import LoginError

TIMEOUT = 5.0
# Idle connections to the wallet kept per host: one per portal worker thread (portal/cli.py);
# a login beyond that opens a connection of its own and closes it after use.
POOL_SIZE = 16

log = logging.getLogger("plaza.portal.wallet")

S = TypeVar("S", bound=requests.Session)


def system_trust() -> str | bool:
    """The operating system's CA store, which `ca_file = ""` promises (requests would otherwise
    use its own bundled copy, which a router's firmware does not update)."""
    paths = ssl.get_default_verify_paths()
    for cafile in (paths.cafile, paths.openssl_cafile):
        if cafile and os.path.isfile(cafile):
            return cafile
    for capath in (paths.capath, paths.openssl_capath):
        if capath and os.path.isdir(capath):
            return capath
    return True


class KeptAlive(HTTPAdapter):
    """A provider's connections to the wallet, kept alive from one login to the next.

    Each login used to open its own session, so each paid a TCP and TLS handshake to the
    wallet and a new SSL context with the trust anchors loaded (a few milliseconds of the
    router's CPU per login, and a round trip more of the shopper's wait). A provider now
    owns one of these and its sessions borrow it: urllib3's pool is thread-safe, connections
    are keyed by host and trust anchors, and one the wallet closed is replaced, not reused.
    No retries, as before: a token request is not repeated. A session that borrowed it
    closes without closing the pool (the provider lives as long as the portal).
    """

    def __init__(self) -> None:
        super().__init__(pool_connections=4, pool_maxsize=POOL_SIZE)

    def close(self) -> None:
        """Called by every borrowing session's close(): the pool stays open."""


def configure(session: S, ca_file: str, pool: KeptAlive | None = None) -> S:
    """Set a session up for talking to the wallet: TLS checked against `ca_file` if given,
    HTTPS through `pool`'s kept-alive connections if given."""
    session.trust_env = False
    session.verify = ca_file or system_trust()
    session.max_redirects = 0
    if pool is not None:
        session.mount("https://", pool)
    return session


def new_session(ca_file: str, pool: KeptAlive | None = None) -> requests.Session:
    return configure(requests.Session(), ca_file, pool)


def unreachable(exc: Exception, what: str) -> LoginError:
    """Turn a transport failure into the error the shopper sees; log the class, not the URL."""
    if isinstance(exc, requests.exceptions.SSLError):
        log.warning("wallet %s: TLS failure (%s)", what, type(exc).__name__)
        return LoginError(
            "the wallet is unreachable (its certificate was not trusted)", "unreachable"
        )
    if isinstance(exc, requests.exceptions.Timeout):
        log.warning("wallet %s: timed out after %.0f s", what, TIMEOUT)
        return LoginError("the wallet is unreachable (it did not answer in time)", "unreachable")
    log.warning("wallet %s: %s", what, type(exc).__name__)
    return LoginError("the wallet is unreachable", "unreachable")


def get_json(session: requests.Session, url: str, what: str, **kw: Any) -> dict:
    """GET a JSON object from the wallet, or raise LoginError."""
    try:
        response = session.get(url, timeout=TIMEOUT, allow_redirects=False, **kw)
    except requests.RequestException as exc:
        raise unreachable(exc, what) from None
    if response.status_code != 200:
        log.warning("wallet %s: HTTP %d", what, response.status_code)
        if response.status_code >= 500:
            raise LoginError("the wallet is unreachable (it reported an error)", "unreachable")
        raise LoginError(f"the wallet's {what} answered HTTP {response.status_code}", "invalid")
    try:
        data = response.json()
    except (ValueError, RecursionError):  # RecursionError: nested past the recursion limit
        data = None
    if not isinstance(data, dict):
        raise LoginError(f"the wallet's {what} is not a JSON object", "invalid")
    return data
