"""Signed HTTP to the cloud (docs/cloud-protocol.md): one request at a time, each signed with
the device key (plaza/signing.py), each answer read up to a size cap; and the backoff the
uplink's loops wait by between failed attempts.

Why blocking `requests` in the uplink's own threads, not the daemon's asyncio loop: a cloud
that is slow, down or behind a captive upstream must never delay a shopper's login, which the
loop handles. One `requests.Session` per thread, so the two uplink threads never share one.

Why every answer has a cap (decoded, so a gzip bomb counts at its real size): a compromised or
broken cloud must not make the router buffer without end. Past the cap the connection is
dropped, the answer refused and logged, and nothing of it applied.

Why the router's clock can be corrected here: a router that booted without NTP must still be
able to sign requests; the cloud's Date (or its heartbeat's `time`) is adopted when ours is
more than a little off.
"""

from __future__ import annotations

import email.utils
import json
import logging
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

from gateway.config import check_cloud_url
from gateway.uplink.identity import Identity, UplinkError, load_key
from plaza import signing

log = logging.getLogger("plaza.uplink")

API = "/api/v1"
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 20.0
BACKOFF_BASE = 1.0
BACKOFF_CAP = 60.0
MAX_ERROR = 300
ANSWER_LIMIT = 64 << 10  # every answer but the config's and the commands': heartbeat, errors...
CHUNK = 64 << 10
SKEW_TOLERANCE = 30.0  # seconds of clock difference to the cloud ignored (the limit is 300)


class Unreachable(UplinkError):
    """No answer, or a 5xx: worth retrying later, after a backoff."""


class Refused(UplinkError):
    """The cloud answered 4xx: retrying the same request will not help by itself."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Backoff:
    """Exponential backoff with "equal jitter": the n-th failure in a row waits between half
    and all of min(cap, base * 2**(n-1)), so retries spread out but never come too soon (a
    fleet that lost its cloud does not return as a stampede)."""

    def __init__(
        self,
        base: float = BACKOFF_BASE,
        cap: float = BACKOFF_CAP,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.base, self.cap, self.rng = base, cap, rng
        self.failures = 0

    def failed(self) -> float:
        """Count a failure; returns how long to wait before the next attempt."""
        ceiling = min(self.cap, self.base * 2 ** min(self.failures, 32))
        self.failures += 1
        return ceiling * (0.5 + 0.5 * self.rng())

    def succeeded(self) -> None:
        self.failures = 0


def version() -> str:
    """This install's Plaza version, as the router reports it to the cloud."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("plaza")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0"


def _why(exc: requests.RequestException) -> str:
    """A short reason for a network failure (requests' own messages run to many lines)."""
    if isinstance(exc, requests.Timeout):
        return "timed out"
    if isinstance(exc, requests.exceptions.SSLError):
        return "TLS error (is ca_bundle right?)"
    if isinstance(exc, requests.ConnectionError):
        return "connection failed"
    return type(exc).__name__


def _http_date(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None


def error(resp: requests.Response) -> str:
    """The cloud's one-line error, or the status."""
    try:
        message = resp.json().get("error")
    except (ValueError, AttributeError):
        message = None
    if not isinstance(message, str) or not message:
        return f"HTTP {resp.status_code}"
    return " ".join(message.split())[:MAX_ERROR]


class Transport:
    """Requests to the cloud as this router: `send` plain (enrolment), `signed` with the device
    key read from `state_dir` on first use. Raises Unreachable (no answer, 5xx, too slow) or
    Refused (an answer over its cap); other statuses are the caller's to judge."""

    def __init__(
        self,
        state_dir: str | Path,
        *,
        url: str = "",
        ca_bundle: str = "",
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.url_override = check_cloud_url("[cloud] url", url) if url else ""
        self.ca_bundle = ca_bundle
        self.clock, self.monotonic = clock, monotonic
        self.clock_offset = 0.0  # cloud time minus this router's clock, when known to matter
        self._local = threading.local()  # one requests.Session per thread
        self._identity: Identity | None = None
        self._key: Any = None

    # -- who we are ------------------------------------------------------------------------
    @property
    def identity(self) -> Identity:
        if self._identity is None:
            identity = Identity.load(self.state_dir)
            self._identity, self._key = identity, load_key(self.state_dir)
        return self._identity

    def adopt(self, identity: Identity, key: Any) -> None:
        """Sign as a new enrolment from now on (gateway/uplink/enrolment.py)."""
        self._identity, self._key = identity, key

    @property
    def base_url(self) -> str:
        return self.url_override or self.identity.cloud_url

    # -- the cloud's time ------------------------------------------------------------------
    def now(self) -> float:
        """The cloud's idea of the time: this router's clock, corrected when it is known to
        be off."""
        return self.clock() + self.clock_offset

    def learn_time(self, cloud_time: float | None) -> bool:
        """Adopt the cloud's time if ours is more than a little off; True if it changed."""
        if cloud_time is None:
            return False
        offset = cloud_time - self.clock()
        offset = 0.0 if abs(offset) < SKEW_TOLERANCE else offset
        if abs(offset - self.clock_offset) < SKEW_TOLERANCE:
            return False
        if offset:
            log.warning("this router's clock is %+d s off the cloud's; using the cloud's", -offset)
        else:
            log.info("this router's clock agrees with the cloud's again")
        self.clock_offset = offset
        return True

    # -- requests --------------------------------------------------------------------------
    def _http(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.headers["User-Agent"] = f"plaza-gateway/{version()}"
            self._local.session = session
        return session

    def send(
        self,
        method: str,
        url: str,
        data: bytes,
        headers: dict[str, str],
        timeout: tuple[float, float],
        limit: int = ANSWER_LIMIT,
    ) -> requests.Response:
        """One request; the answer is read whole, up to `limit` bytes (Refused beyond)."""
        try:
            resp = self._http().request(
                method, url, data=data or None, headers=headers, timeout=timeout,
                allow_redirects=False, stream=True,  # read below, up to the limit
                verify=self.ca_bundle or True,  # per request: REQUESTS_CA_BUNDLE cannot override
            )  # fmt: skip
            with resp:
                resp._content = self._read(resp, method, url, limit, timeout[1])
        except requests.RequestException as exc:
            raise Unreachable(f"{method} {urlsplit(url).path}: {_why(exc)}") from None
        except OSError as exc:  # requests' way of saying the CA bundle cannot be read
            raise Unreachable(f"ca_bundle {self.ca_bundle!r}: {exc.strerror or exc}") from None
        if resp.status_code >= 500:
            raise Unreachable(f"{method} {urlsplit(url).path}: {error(resp)}")
        return resp

    def _read(
        self, resp: requests.Response, method: str, url: str, limit: int, read_timeout: float
    ) -> bytes:
        """The answer's body, at most `limit` bytes decoded; the connection is closed (not
        pooled) when the body is refused. A cloud that trickles its answer gets the read
        timeout per chunk and twice that in all."""
        path = urlsplit(url).path
        declared = resp.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > limit:
            self._too_large(resp, method, path, limit, f"{int(declared)} bytes declared")
        body = bytearray()
        deadline = self.monotonic() + 2 * read_timeout
        for chunk in resp.iter_content(CHUNK):
            body += chunk
            if len(body) > limit:
                self._too_large(resp, method, path, limit, f"more than {limit} bytes sent")
            if self.monotonic() > deadline:
                resp.close()
                raise Unreachable(f"{method} {path}: the answer took too long")
        return bytes(body)

    @staticmethod
    def _too_large(resp: requests.Response, method: str, path: str, limit: int, what: str):
        resp.close()
        log.error(
            "cloud answer to %s %s refused: %s, the limit is %d; nothing of it is used",
            method, path, what, limit,
        )  # fmt: skip
        raise Refused(resp.status_code, f"{method} {path}: answer larger than {limit} bytes")

    def signed(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        read_timeout: float = READ_TIMEOUT,
        retry_skew: bool = True,
        limit: int = ANSWER_LIMIT,
    ) -> requests.Response:
        """One signed request to `API + path` (path may carry a query string). Refused for
        clock skew, it is signed again once with the cloud's time from the answer's Date."""
        identity, base = self.identity, self.base_url
        full = urlsplit(base).path.rstrip("/") + API + path  # exactly what the server sees
        data = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
        signed = signing.sign_request(
            self._key, identity.device_id, method, full, data, int(self.now())
        )
        signed.update(headers or {})
        if body is not None:
            signed["Content-Type"] = "application/json"
        resp = self.send(
            method, base + API + path, data, signed, (CONNECT_TIMEOUT, read_timeout), limit
        )
        skewed = retry_skew and resp.status_code == 401 and "clock skew" in error(resp)
        if skewed and self.learn_time(_http_date(resp.headers.get("Date"))):
            return self.signed(method, path, body, headers, read_timeout, False, limit)
        return resp
