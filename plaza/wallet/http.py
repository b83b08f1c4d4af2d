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
from urllib3.util.ssl_ import create_urllib3_context

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


def trust_anchors(ca_file: str) -> dict[str, str]:
    """`load_verify_locations` arguments for `ca_file`, or for the system's store if empty."""
    trust = ca_file or system_trust()
    if trust is True:  # no system store found: what requests would use, its bundled copy
        trust = requests.certs.where()
    return {"capath": trust} if os.path.isdir(trust) else {"cafile": trust}


class KeptAlive(HTTPAdapter):
    """A provider's HTTPS to the wallet: one SSL context, and connections kept alive.

    Each login used to open sessions of its own, and urllib3 makes a new SSL context with the
    trust anchors loaded for every new connection: with the system's store (`ca_file = ""`,
    what a wallet with a public certificate is configured with) that is ~150 certificates
    parsed, ~28 ms of CPU on the lab machine, two or three times per login. A provider owns
    one of these, and its sessions borrow it: the context is made once, with the same trust
    anchors and urllib3's defaults as before; urllib3's pool is thread-safe and keeps up to
    POOL_SIZE idle connections per host, so a wallet that allows keep-alive costs one TLS
    handshake per connection rather than per request (the lab's sandbox wallet does since
    2026-12-07: tests/unit/test_wallet_server.py). No retries, as before: a token request is
    never sent twice. A session that borrowed it closes without closing the pool (the provider
    lives as long as the portal).
    """

    def __init__(self, ca_file: str) -> None:
        self.ssl_context = create_urllib3_context()
        self.ssl_context.load_verify_locations(**trust_anchors(ca_file))
        super().__init__(pool_connections=4, pool_maxsize=POOL_SIZE)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, ssl_context=self.ssl_context, **kwargs)

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        """Always verified, against this context's anchors only: requests' own version would
        name its bundled CAs (verify=True) for urllib3 to add to the shared context on every
        connection, trusting them too and parsing them each time."""
        conn.cert_reqs = "CERT_REQUIRED"
        conn.ca_certs = None
        conn.ca_cert_dir = None

    def close(self) -> None:
        """Called by every borrowing session's close(): the pool stays open."""


def configure(session: S, ca_file: str, pool: KeptAlive | None = None) -> S:
    """Set a session up for talking to the wallet: TLS checked against `ca_file` if given
    (else the system's store), through `pool` if given (whose context holds those anchors)."""
    session.trust_env = False
    session.verify = True if pool is not None else ca_file or system_trust()
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
