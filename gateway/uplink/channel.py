"""The router's half of the cloud protocol (docs/cloud-protocol.md): enrolment, heartbeat,
venue config, signed commands and usage upload.

Why threads and blocking `requests`, not the daemon's asyncio loop: a cloud that is slow, down
or behind a captive upstream must never delay a shopper's login, which the loop handles. The
uplink runs in two threads of its own (one long-polls for commands, one does everything else)
and touches the gateway only through `execute`, a callable that runs a control request on the
loop's thread (`on_loop()`), and the outbox, which is SQLite and safe to share.

Why the outbox is uploaded strictly oldest first and marked sent on 200 only: a batch whose
answer was lost is sent again and the cloud drops the copies by key, so nothing is counted
twice; a batch the cloud refuses (4xx) stays where it is, in order, for an operator, rather
than being skipped (lost) or retried fast (a flood). Network errors and 5xx back off
exponentially with jitter, so a fleet that lost its cloud does not return as a stampede.

Why commands are checked here although the channel is TLS: the router pins the cloud's key at
enrolment and obeys only what that key signed, for this device, unexpired, from a closed list
of operations. There is no operation that runs a program.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import email.utils
import json
import logging
import os
import random
import re
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

import requests

from gateway.config import Config, ConfigError, check_cloud_url
from gateway.files import write_atomic
from gateway.uplink import cloud_config
from plaza import signing

if TYPE_CHECKING:
    import asyncio

    from gateway.ops.metrics import Family

log = logging.getLogger("plaza.uplink")

API = "/api/v1"
KEY_FILE = "device.key"
CLOUD_FILE = "cloud.json"
CONFIG_FILE = cloud_config.FILE
OPS = ("authorize", "kick", "refresh-config")  # closed: nothing else is ever executed
BATCH = 1000  # usage records per request (the protocol's maximum)
LONG_POLL = 25  # seconds the cloud may hold a command poll
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 20.0
EXECUTE_TIMEOUT = 10.0
BACKOFF_BASE = 1.0
BACKOFF_CAP = 60.0
MIN_POLL_SECONDS = 1.0  # a cloud that answers polls at once is not polled faster than this
DONE_MEMORY = 4096  # at most this many results kept (each until its command expires)
ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_ERROR = 300
# The most of an answer the router reads (decoded, so a gzip bomb counts at its real size).
# A compromised or broken cloud must not make the router buffer without end: past the cap
# the connection is dropped, the answer refused and logged, and nothing of it applied.
CONFIG_LIMIT = cloud_config.MAX_BYTES  # the venue config: the size its file may have
COMMANDS_LIMIT = 1 << 20  # one poll's commands, ~0.5 kB each signed: some 2,000
ANSWER_LIMIT = 64 << 10  # everything else: heartbeat, enrolment, acknowledgements, errors
CHUNK = 64 << 10
SKEW_TOLERANCE = 30.0  # seconds of clock difference to the cloud ignored (the limit is 300)

Execute = Callable[[dict[str, Any]], dict[str, Any]]
Health = Callable[[], dict[str, Any]]


class UplinkError(Exception):
    """The uplink could not do something; str() is one line without secrets."""

    status: int | None = None


class Unreachable(UplinkError):
    """No answer, or a 5xx: worth retrying later, after a backoff."""


class Refused(UplinkError):
    """The cloud answered 4xx: retrying the same request will not help by itself."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class NotEnrolled(UplinkError):
    pass


class CommandRefused(ValueError):
    """A command the router will not execute; str() says why."""


class UsageOutbox(Protocol):
    """What the uplink needs of gateway.stations.outbox.Outbox."""

    def pending(self, limit: int = ...) -> list[dict[str, Any]]: ...
    def mark_sent(self, keys: Iterable[str], now: float) -> int: ...
    def backlog(self) -> int: ...


@dataclass(frozen=True)
class Identity:
    """What enrolment established (`<state_dir>/cloud.json`; the private key is apart)."""

    device_id: str
    venue_id: str
    cloud_url: str
    cloud_public_key: str  # base64 of the 32 raw bytes: pinned, commands must verify with it

    @classmethod
    def load(cls, state_dir: Path) -> Identity:
        path = state_dir / CLOUD_FILE
        try:
            data = json.loads(path.read_text())
            identity = cls(**{k: str(data[k]) for k in cls.__dataclass_fields__})
            signing.load_public(identity.cloud_public_key)
            check_cloud_url(str(path), identity.cloud_url)
        except FileNotFoundError:
            raise NotEnrolled(f"not enrolled: no {path} (run plaza-gateway enrol)") from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UplinkError(f"{path}: unreadable or incomplete: {exc}") from None
        return identity


# -- timing --------------------------------------------------------------------------------
class Backoff:
    """Exponential backoff with "equal jitter": the n-th failure in a row waits between half
    and all of min(cap, base * 2**(n-1)), so retries spread out but never come too soon."""

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


def system_health() -> dict[str, Any]:
    """Uptime, load and memory of this machine, for the heartbeat."""
    out: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError, IndexError):
        out["uptime"] = int(float(Path("/proc/uptime").read_text().split()[0]))
    with contextlib.suppress(OSError):
        out["load"] = [round(x, 2) for x in os.getloadavg()]
    with contextlib.suppress(OSError, ValueError):
        mem = {}
        for line in Path("/proc/meminfo").read_text().splitlines():
            name, _, rest = line.partition(":")
            if name in ("MemTotal", "MemAvailable"):
                mem[name] = int(rest.split()[0]) * 1024
        if len(mem) == 2:
            out["mem_total_bytes"] = mem["MemTotal"]
            out["mem_used_bytes"] = mem["MemTotal"] - mem["MemAvailable"]
    return out


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("plaza")
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


def _error(resp: requests.Response) -> str:
    """The cloud's one-line error, or the status."""
    try:
        message = resp.json().get("error")
    except (ValueError, AttributeError):
        message = None
    if not isinstance(message, str) or not message:
        return f"HTTP {resp.status_code}"
    return " ".join(message.split())[:MAX_ERROR]


# -- the uplink ----------------------------------------------------------------------------
class Uplink:
    """The router's side of the protocol. Methods do one exchange each and raise UplinkError;
    `main_loop` and `command_loop` (or `run`) schedule them and never raise."""

    def __init__(
        self,
        state_dir: str | Path,
        *,
        url: str = "",
        ca_bundle: str = "",
        outbox: UsageOutbox | None = None,
        presence: UsageOutbox | None = None,
        execute: Execute | None = None,
        health: Health | None = None,
        heartbeat_seconds: float = 30.0,
        upload_seconds: float = 5.0,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.url_override = check_cloud_url("[cloud] url", url) if url else ""
        self.ca_bundle = ca_bundle
        self.outbox, self.execute, self.health = outbox, execute, health
        self.presence = presence  # gateway/stations/presence.py: same pending/mark_sent contract
        self.heartbeat_seconds, self.upload_seconds = heartbeat_seconds, upload_seconds
        self.clock, self.monotonic, self.rng = clock, monotonic, rng
        self._local = threading.local()  # one requests.Session per thread
        self._identity: Identity | None = None
        self._key: Any = None
        self._config_lock = threading.Lock()
        self._config_version: int | None = None
        self._config_version_read = False
        self.config_due = threading.Event()  # set: pull the venue config soon
        # Results of executed commands, kept until the command expires, so a redelivered
        # command (its result was lost) is answered again, never run again.
        self._done: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()
        self._refused_batch: tuple[str, int, str] | None = None
        self._down: dict[str, bool] = {}
        self.clock_offset = 0.0  # cloud time minus this router's clock, when known to matter
        self.stats: dict[str, float] = dict.fromkeys(
            (
                "heartbeats_ok", "heartbeats_failed", "config_pulls", "usage_batches_sent",
                "usage_records_sent", "usage_records_duplicate", "usage_batches_refused",
                "usage_upload_errors", "presence_events_sent", "presence_batches_refused",
                "commands_executed", "commands_failed", "commands_refused",
                "last_heartbeat_at", "cloud_config_version",
            ),
            0,
        )  # fmt: skip

    @classmethod
    def from_config(cls, config: Config, **kwargs: Any) -> Uplink:
        cloud = config.cloud
        return cls(
            config.gateway.state_dir,
            url=cloud.url,
            ca_bundle=cloud.ca_bundle,
            heartbeat_seconds=cloud.heartbeat_seconds,
            upload_seconds=cloud.upload_seconds,
            **kwargs,
        )

    # -- identity and HTTP -----------------------------------------------------------------
    @property
    def identity(self) -> Identity:
        if self._identity is None:
            identity = Identity.load(self.state_dir)
            try:
                key = signing.load_private((self.state_dir / KEY_FILE).read_bytes())
            except (OSError, ValueError) as exc:
                path = self.state_dir / KEY_FILE
                raise UplinkError(f"{path}: unusable device key: {exc}") from None
            self._identity, self._key = identity, key
        return self._identity

    @property
    def base_url(self) -> str:
        return self.url_override or self.identity.cloud_url

    def _http(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.headers["User-Agent"] = f"plaza-gateway/{_version()}"
            self._local.session = session
        return session

    def _send(
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
            raise Unreachable(f"{method} {urlsplit(url).path}: {_error(resp)}")
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

    def _signed(
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
        resp = self._send(
            method, base + API + path, data, signed, (CONNECT_TIMEOUT, read_timeout), limit
        )
        skewed = retry_skew and resp.status_code == 401 and "clock skew" in _error(resp)
        if skewed and self._learn_time(_http_date(resp.headers.get("Date"))):
            return self._signed(method, path, body, headers, read_timeout, False, limit)
        return resp

    def now(self) -> float:
        """The cloud's idea of the time: this router's clock, corrected when it is known to
        be off (a router that booted without NTP must still be able to sign requests)."""
        return self.clock() + self.clock_offset

    def _learn_time(self, cloud_time: float | None) -> bool:
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

    def _link(self, channel: str, error: UplinkError | None) -> None:
        """Log a channel going down once, and its coming back, not every failed attempt."""
        was_down = self._down.get(channel, False)
        if error is not None and not was_down:
            log.warning("cloud %s failing: %s; retrying with backoff", channel, error)
        elif error is None and was_down:
            log.info("cloud %s working again", channel)
        self._down[channel] = error is not None

    # -- enrolment -------------------------------------------------------------------------
    def enrol(
        self, cloud_url: str, claim_code: str, *, force: bool = False, hostname: str = ""
    ) -> Identity:
        """Claim this router for a venue: a new Ed25519 key, its public half sent with the
        one-time claim code; the private key and what the cloud answered are kept in the
        state dir. Refuses to replace an existing enrolment unless `force`."""
        try:
            base = check_cloud_url("cloud URL", cloud_url)
        except ConfigError as exc:
            raise UplinkError(str(exc)) from None
        claim_code = claim_code.strip()
        if not claim_code or len(claim_code) > 128 or not claim_code.isprintable():
            raise UplinkError("the claim code must be 1-128 printable characters")
        cloud_file = self.state_dir / CLOUD_FILE
        if cloud_file.exists() and not force:
            try:
                where = f" as {Identity.load(self.state_dir).device_id}"
            except UplinkError:
                where = ""
            raise UplinkError(f"already enrolled{where} ({cloud_file}); use --force to enrol again")
        key = signing.new_key()
        body = {
            "claim_code": claim_code,
            "public_key": signing.public_b64(key),
            "hostname": hostname or socket.gethostname(),
            "version": _version(),
        }
        resp = self._send(
            "POST",
            base + API + "/enrol",
            json.dumps(body).encode(),
            {"Content-Type": "application/json"},
            (CONNECT_TIMEOUT, READ_TIMEOUT),
        )
        if resp.status_code != 201:
            raise Refused(resp.status_code, f"enrolment refused: {_error(resp)}")
        try:
            data = resp.json()
            identity = Identity(
                device_id=str(data["device_id"]),
                venue_id=str(data["venue_id"]),
                cloud_url=base,
                cloud_public_key=str(data["cloud_public_key"]),
            )
            signing.load_public(identity.cloud_public_key)
            if not ID_RE.fullmatch(identity.device_id):
                raise ValueError("malformed device_id")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise UplinkError(f"enrolment answer not understood: {exc}") from None
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
        write_atomic(self.state_dir / KEY_FILE, signing.private_pem(key), 0o600)
        # Another venue's config must not linger, nor its version answer If-None-Match.
        (self.state_dir / CONFIG_FILE).unlink(missing_ok=True)
        write_atomic(cloud_file, json.dumps(asdict(identity), indent=2).encode() + b"\n", 0o644)
        self._identity, self._key = identity, key
        self._config_version, self._config_version_read = None, True
        log.info("enrolled as %s for venue %s at %s", identity.device_id, identity.venue_id, base)
        return identity

    # -- heartbeat and config ----------------------------------------------------------------
    @property
    def config_version(self) -> int | None:
        """The version of the venue config this router holds (None: none yet)."""
        if not self._config_version_read:
            self._config_version_read = True
            with contextlib.suppress(OSError, ValueError, AttributeError, TypeError):
                version = json.loads((self.state_dir / CONFIG_FILE).read_text()).get("version")
                self._config_version = version if isinstance(version, int) else None
        return self._config_version

    def heartbeat(self, health: dict[str, Any] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {**system_health(), **(health or {})}
        body.update(
            version=_version(),
            config_version=self.config_version or 0,
            outbox_backlog=self.outbox.backlog() if self.outbox is not None else 0,
        )
        try:
            resp = self._signed("POST", "/device/heartbeat", body)
            if resp.status_code != 200:
                raise Refused(resp.status_code, f"heartbeat refused: {_error(resp)}")
            try:
                answer = resp.json()
                remote = answer.get("config_version")
            except (ValueError, AttributeError):
                raise Refused(resp.status_code, "heartbeat answer not understood") from None
        except UplinkError:
            self.stats["heartbeats_failed"] += 1
            raise
        self.stats["heartbeats_ok"] += 1
        self.stats["last_heartbeat_at"] = self.clock()
        if isinstance(answer.get("time"), int | float):
            self._learn_time(float(answer["time"]))
        if isinstance(remote, int) and not isinstance(remote, bool):
            self.stats["cloud_config_version"] = remote
            if remote > (self.config_version or 0):
                self.config_due.set()
        return answer

    def pull_config(self) -> bool:
        """Fetch the venue config if the cloud has a newer one; True if it was written."""
        with self._config_lock:
            headers = {}
            if self.config_version is not None:
                headers["If-None-Match"] = f'"{self.config_version}"'
            resp = self._signed("GET", "/device/config", headers=headers, limit=CONFIG_LIMIT)
            if resp.status_code == 304:
                return False
            if resp.status_code != 200:
                raise Refused(resp.status_code, f"config refused: {_error(resp)}")
            try:
                document = resp.json()
                version, config = document["version"], document["config"]
                if not isinstance(version, int) or not isinstance(config, dict):
                    raise TypeError("version must be an integer and config an object")
            except (ValueError, KeyError, TypeError, RecursionError) as exc:
                raise Refused(200, f"config answer not understood: {exc}") from None
            data = json.dumps({"version": version, "config": config}, indent=1, sort_keys=True)
            if len(data.encode()) > CONFIG_LIMIT:  # the readers would refuse the file
                log.error("venue config version %d is too large to keep; not applied", version)
                raise Refused(200, f"config of more than {CONFIG_LIMIT} bytes")
            # Readable by the portal, which may run as another user; it holds nothing secret.
            write_atomic(self.state_dir / CONFIG_FILE, data.encode() + b"\n", 0o644)
            self._config_version, self._config_version_read = version, True
            self.stats["config_pulls"] += 1
            log.info("venue config version %d from the cloud", version)
            return True

    # -- commands --------------------------------------------------------------------------
    def check_command(self, command: Any) -> None:
        """Raise CommandRefused unless `command` is one this router may execute: signed by
        the pinned cloud key, for this device, not expired, an op from the closed list with
        exactly the arguments it takes."""
        if not isinstance(command, dict):
            raise CommandRefused("not a JSON object")
        try:
            signing.verify_command(signing.load_public(self.identity.cloud_public_key), command)
        except signing.SignatureError:
            raise CommandRefused("bad signature") from None
        if command.get("device_id") != self.identity.device_id:
            raise CommandRefused("for another device")
        expires = command.get("expires_at")
        if isinstance(expires, bool) or not isinstance(expires, int | float):
            raise CommandRefused("no expiry")
        if expires <= self.now():
            raise CommandRefused("expired")
        op, args = command.get("op"), command.get("args")
        if op not in OPS:
            raise CommandRefused(f"op {str(op)[:40]!r} is not one of {', '.join(OPS)}")
        if not isinstance(args, dict):
            raise CommandRefused("args must be an object")
        allowed = {"authorize": {"client", "minutes"}, "kick": {"client"}}.get(op, set())
        if set(args) - allowed:
            raise CommandRefused(f"{op} takes no {', '.join(sorted(set(args) - allowed))}")
        if op in ("authorize", "kick"):
            client = args.get("client")
            if not isinstance(client, str) or not 0 < len(client) <= 64:
                raise CommandRefused(f"{op} needs a client (MAC or IP)")
        minutes = args.get("minutes")
        if minutes is not None and (
            isinstance(minutes, bool) or not isinstance(minutes, int) or minutes < 1
        ):
            raise CommandRefused("minutes must be a positive integer")

    def _run(self, command: dict[str, Any]) -> dict[str, Any]:
        """Execute a checked command; the result as the cloud is told it."""
        op, args = command["op"], command["args"]
        if op == "refresh-config":
            try:
                self.pull_config()
            except UplinkError as exc:
                self.config_due.set()  # the main loop keeps trying
                return {"ok": False, "error": f"config pull failed: {exc}"}
            return {"ok": True}
        if self.execute is None:
            return {"ok": False, "error": "this uplink has no gateway to execute on"}
        if op == "authorize":
            request = {"op": "auth", "client": args["client"]}
            if "minutes" in args:
                request["minutes"] = args["minutes"]
        else:
            request = {"op": "deauth", "client": args["client"], "reason": "admin"}
        try:
            answer = self.execute(request)
        except Exception as exc:
            log.warning("command %s: the gateway did not answer: %r", command["id"], exc)
            return {"ok": False, "error": "the gateway did not answer"}
        if answer.get("ok") is True:
            return {"ok": True}
        return {"ok": False, "error": str(answer.get("error") or "failed")[:MAX_ERROR]}

    def handle_command(self, command: Any) -> dict[str, Any] | None:
        """Check, execute (at most once) and report one command; returns the result posted
        (None for a refused command without a usable id to report it under)."""
        cid = command.get("id") if isinstance(command, dict) else None
        cid = cid if isinstance(cid, str) and ID_RE.fullmatch(cid) else None
        now = self.now()
        while self._done and (
            len(self._done) > DONE_MEMORY or next(iter(self._done.values()))[0] < now
        ):
            self._done.popitem(last=False)  # oldest first; expired ones are never delivered
        if cid is not None and cid in self._done:
            result = self._done[cid][1]  # redelivered: our result was lost; never run twice
        else:
            try:
                self.check_command(command)
                if cid is None:
                    raise CommandRefused("malformed id")
            except CommandRefused as exc:
                self.stats["commands_refused"] += 1
                log.warning("command %s refused: %s", cid or "(no id)", exc)
                if cid is None:
                    return None
                result = {"ok": False, "error": f"refused by the router: {exc}"}
            else:
                result = self._run(command)
                self.stats["commands_executed" if result["ok"] else "commands_failed"] += 1
                log.info(
                    "command %s %s %s: %s", cid, command["op"], command["args"].get("client", ""),
                    "ok" if result["ok"] else result.get("error"),
                )  # fmt: skip
                self._done[cid] = (float(command["expires_at"]), result)
        resp = self._signed("POST", f"/device/commands/{cid}/result", result)
        if resp.status_code not in (200, 404, 409, 410):
            # 404/409/410: the cloud no longer wants this result (unknown, done or expired).
            raise Refused(resp.status_code, f"command result refused: {_error(resp)}")
        return result

    def poll_commands(self, wait: int = LONG_POLL) -> list[dict[str, Any] | None]:
        """One long poll; every command it brings is handled. Returns the results posted."""
        resp = self._signed(
            "GET", f"/device/commands?wait={wait}", read_timeout=wait + 15, limit=COMMANDS_LIMIT
        )
        if resp.status_code != 200:
            raise Refused(resp.status_code, f"command poll refused: {_error(resp)}")
        try:
            commands = resp.json()["commands"]
            if not isinstance(commands, list):
                raise TypeError
        except (ValueError, KeyError, TypeError, RecursionError):
            raise Refused(200, "command poll answer not understood") from None
        return [self.handle_command(c) for c in commands]

    # -- usage -----------------------------------------------------------------------------
    def upload_usage(self) -> int:
        """Send the oldest unsent records (one batch); returns how many the cloud took (0:
        nothing waiting). Marked sent on 200 only; a refused batch stays, logged once."""
        if self.outbox is None:
            return 0
        records = self.outbox.pending(limit=BATCH)
        if not records:
            return 0
        try:
            resp = self._signed("POST", "/device/usage", {"records": records})
        except Unreachable:
            self.stats["usage_upload_errors"] += 1
            raise
        if resp.status_code != 200:
            self.stats["usage_batches_refused"] += 1
            error = _error(resp)
            which = (records[0]["key"], resp.status_code, error)
            if which != self._refused_batch:
                self._refused_batch = which
                log.error(
                    "usage batch of %d records from %s refused by the cloud (HTTP %d): %s; "
                    "the records stay in the outbox, in order, for an operator",
                    len(records), records[0]["key"], resp.status_code, error,
                )  # fmt: skip
            raise Refused(resp.status_code, f"usage refused: {error}")
        keys = [r["key"] for r in records]
        self.outbox.mark_sent(keys, self.clock())
        with contextlib.suppress(ValueError, AttributeError, TypeError):
            # Copies of records the cloud already had: a resend after a lost answer.
            self.stats["usage_records_duplicate"] += int(resp.json().get("duplicates", 0))
        if self._refused_batch is not None:
            log.info("usage batch from %s accepted after all", records[0]["key"])
            self._refused_batch = None
        self.stats["usage_batches_sent"] += 1
        self.stats["usage_records_sent"] += len(keys)
        return len(keys)

    def upload_presence(self) -> int:
        """Send the oldest unsent presence events (one batch); marked sent on 200 only. A
        refused batch is logged and dropped: unlike usage, a presence event that the cloud
        cannot take is not worth holding the ones behind it."""
        if self.presence is None:
            return 0
        events = self.presence.pending(limit=BATCH)
        if not events:
            return 0
        resp = self._signed("POST", "/device/presence", {"events": events})
        keys = [e["key"] for e in events]
        if resp.status_code in (400, 413, 422):  # the events themselves: never better
            self.stats["presence_batches_refused"] += 1
            log.error(
                "presence batch of %d events refused (HTTP %d): %s; dropped",
                len(events), resp.status_code, _error(resp),
            )  # fmt: skip
        elif resp.status_code != 200:  # the cloud or our credential: try again later
            raise Refused(resp.status_code, f"presence refused: {_error(resp)}")
        self.presence.mark_sent(keys, self.clock())
        self.stats["presence_events_sent"] += len(keys) if resp.status_code == 200 else 0
        return len(keys)

    # -- loops -----------------------------------------------------------------------------
    def _health(self) -> dict[str, Any]:
        if self.health is None:
            return {}
        try:
            return dict(self.health())
        except Exception as exc:
            log.debug("health callback failed: %r", exc)
            return {}

    def main_loop(self, stop: threading.Event) -> None:
        """Heartbeat, config pulls and usage upload until `stop` is set; never raises."""
        self.config_due.set()  # pull at start: the cloud may have changed while we were off
        config_backoff, upload_backoff = Backoff(rng=self.rng), Backoff(rng=self.rng)
        next_heartbeat = next_config = next_upload = self.monotonic()
        while not stop.is_set():
            now = self.monotonic()
            if now >= next_heartbeat:
                try:
                    self.heartbeat(self._health())
                    self._link("heartbeat", None)
                except UplinkError as exc:
                    self._link("heartbeat", exc)
                except Exception:
                    log.exception("heartbeat failed")
                next_heartbeat = self.monotonic() + self.heartbeat_seconds
            if self.config_due.is_set() and now >= next_config:
                try:
                    self.config_due.clear()
                    self.pull_config()
                    config_backoff.succeeded()
                    self._link("config", None)
                except Exception as exc:
                    self.config_due.set()
                    next_config = self.monotonic() + config_backoff.failed()
                    if isinstance(exc, UplinkError):
                        self._link("config", exc)
                    else:
                        log.exception("config pull failed")
            if now >= next_upload:
                next_upload = self._upload_step(upload_backoff)
            due = [next_heartbeat, next_upload] + [next_config] * self.config_due.is_set()
            stop.wait(min(0.5, max(0.0, min(due) - self.monotonic())))

    def _upload_step(self, backoff: Backoff) -> float:
        """Upload one batch; returns when to try next: at once while a full backlog drains,
        after `upload_seconds` when caught up, after a backoff on failure."""
        try:
            sent = self.upload_usage()
            sent = max(sent, self.upload_presence())
        except UplinkError as exc:
            self._link("usage upload", exc if isinstance(exc, Unreachable) else None)
            return self.monotonic() + backoff.failed()
        except Exception:
            log.exception("usage upload failed")
            return self.monotonic() + backoff.failed()
        backoff.succeeded()
        self._link("usage upload", None)
        return self.monotonic() + (0.0 if sent >= BATCH else self.upload_seconds)

    def command_loop(self, stop: threading.Event, wait: int | None = None) -> None:
        """Long-poll for commands until `stop` is set; never raises. A poll in flight when
        `stop` is set ends within `wait` seconds (default LONG_POLL), or at once if the
        process exits: the thread is a daemon thread and holds nothing to flush."""
        wait = LONG_POLL if wait is None else wait
        backoff = Backoff(rng=self.rng)
        while not stop.is_set():
            started = self.monotonic()
            try:
                self.poll_commands(wait)
            except Exception as exc:
                if isinstance(exc, UplinkError):
                    self._link("commands", exc)
                else:
                    log.exception("command poll failed")
                stop.wait(backoff.failed())
                continue
            backoff.succeeded()
            self._link("commands", None)
            stop.wait(max(0.0, MIN_POLL_SECONDS - (self.monotonic() - started)))

    def run(self, stop: threading.Event) -> None:
        """Both loops until `stop` is set: commands in a thread of their own, the rest here."""
        commands = threading.Thread(
            target=self.command_loop, args=(stop,), name="plaza-uplink-commands", daemon=True
        )
        commands.start()
        try:
            self.main_loop(stop)
        finally:
            commands.join(timeout=LONG_POLL + 20)

    # -- metrics ---------------------------------------------------------------------------
    def families(self) -> list[Family]:
        """Prometheus families for gateway/ops/metrics.py
        (`register_collector(uplink.families)`)."""
        from gateway.ops.metrics import Family

        s = self.stats
        return [
            Family("plaza_uplink_heartbeats_total", "counter", "Heartbeats by outcome.")
            .add(s["heartbeats_ok"], outcome="ok")
            .add(s["heartbeats_failed"], outcome="failed"),
            Family(
                "plaza_uplink_last_heartbeat_timestamp_seconds",
                "gauge",
                "When the cloud last acknowledged a heartbeat (0: never since start).",
            ).add(s["last_heartbeat_at"]),
            Family(
                "plaza_uplink_usage_records_sent_total",
                "counter",
                "Usage records the cloud acknowledged.",
            ).add(s["usage_records_sent"]),
            Family(
                "plaza_uplink_usage_records_duplicate_total",
                "counter",
                "Acknowledged records the cloud already had (resent after a lost answer).",
            ).add(s["usage_records_duplicate"]),
            Family(
                "plaza_uplink_usage_batches_total",
                "counter",
                "Usage batches by outcome: sent; refused (4xx: the batch stays in the outbox "
                "for an operator); error (no answer or 5xx: retried with backoff).",
            )
            .add(s["usage_batches_sent"], outcome="sent")
            .add(s["usage_batches_refused"], outcome="refused")
            .add(s["usage_upload_errors"], outcome="error"),
            Family("plaza_uplink_commands_total", "counter", "Cloud commands by outcome.")
            .add(s["commands_executed"], outcome="executed")
            .add(s["commands_failed"], outcome="failed")
            .add(s["commands_refused"], outcome="refused"),
            Family(
                "plaza_uplink_config_version",
                "gauge",
                "Venue config version held by the router (0: none).",
            ).add(self.config_version or 0),
        ]


# -- wiring --------------------------------------------------------------------------------
def on_loop(
    loop: asyncio.AbstractEventLoop, handle: Execute, timeout: float = EXECUTE_TIMEOUT
) -> Execute:
    """A callable for `execute` that runs `handle` (e.g. Gateway.handle or the daemon's
    counted GatewayMetrics.handle) on `loop`'s thread and waits for its answer, so the
    session table keeps its single writer."""

    def execute(request: dict[str, Any]) -> dict[str, Any]:
        future: concurrent.futures.Future[dict[str, Any]] = concurrent.futures.Future()

        def call() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(handle(request))
            except BaseException as exc:
                future.set_exception(exc)

        loop.call_soon_threadsafe(call)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise

    return execute


def clients_health(execute: Execute) -> Health:
    """A health callable for the heartbeat: client counts from the gateway's `ping` op, run
    through `execute` (so on the loop's thread, like every other request)."""

    def health() -> dict[str, Any]:
        answer = execute({"op": "ping"})
        if answer.get("ok") is not True:
            return {}
        total, authorized = int(answer["clients"]), int(answer["authorized"])
        return {"clients": {"captive": max(0, total - authorized), "authorized": authorized}}

    return health


def start_uplink(
    config: Config,
    gateway_execute: Execute,
    outbox: UsageOutbox,
    health_fn: Health | None,
    stop_event: threading.Event,
    register_collector: Callable[[Callable[[], list[Family]]], Any] | None = None,
) -> list[threading.Thread]:
    """Start the uplink's two threads if this router is enrolled (`<state_dir>/cloud.json`);
    returns them (none when not enrolled or the enrolment files are unusable, which is
    logged). `health_fn` None: client counts by `clients_health(gateway_execute)`.
    `register_collector`, if given, receives the uplink's metrics collector."""
    health = health_fn if health_fn is not None else clients_health(gateway_execute)
    from gateway.stations.presence import PresenceOutbox

    uplink = Uplink.from_config(
        config,
        outbox=outbox,
        presence=PresenceOutbox(config.db_path),
        execute=gateway_execute,
        health=health,
    )
    try:
        identity = uplink.identity
    except NotEnrolled:
        log.info("cloud uplink off: not enrolled (plaza-gateway enrol)")
        return []
    except UplinkError as exc:
        log.error("cloud uplink off: %s", exc)
        return []
    if register_collector is not None:
        register_collector(uplink.families)
    threads = [
        threading.Thread(
            target=uplink.main_loop, args=(stop_event,), name="plaza-uplink", daemon=True
        ),
        threading.Thread(
            target=uplink.command_loop, args=(stop_event,), name="plaza-uplink-commands",
            daemon=True,
        ),
    ]  # fmt: skip
    for thread in threads:
        thread.start()
    log.info("cloud uplink to %s as %s", uplink.base_url, identity.device_id)
    return threads
