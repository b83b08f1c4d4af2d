"""The Uplink: what the router exchanges with the cloud and when (heartbeat, venue config
pull, usage and presence upload, the command poll), and its metrics.

The uplink runs in two threads of its own (one long-polls for commands, one does everything
else; gateway/uplink/start.py starts them) and touches the gateway only through `execute`, a
callable that runs a control request on the daemon loop's thread, and the outboxes, which are
SQLite and safe to share.

Why the outbox is uploaded strictly oldest first and marked sent on 200 only: a batch whose
answer was lost is sent again and the cloud drops the copies by key, so nothing is counted
twice; a batch the cloud refuses (4xx) stays where it is, in order, for an operator, rather
than being skipped (lost) or retried fast (a flood). Network errors and 5xx back off
exponentially with jitter (transport.Backoff).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from gateway.files import write_atomic
from gateway.uplink import cloud_config, enrolment
from gateway.uplink.commands import LONG_POLL, Commands, Execute
from gateway.uplink.identity import Identity, UplinkError
from gateway.uplink.transport import Backoff, Refused, Transport, Unreachable, error, version

if TYPE_CHECKING:
    from gateway.ops.metrics import Family

log = logging.getLogger("plaza.uplink")

CONFIG_FILE = cloud_config.FILE
BATCH = 1000  # usage records per request (the protocol's maximum)
MIN_POLL_SECONDS = 1.0  # a cloud that answers polls at once is not polled faster than this
CONFIG_LIMIT = cloud_config.MAX_BYTES  # the venue config answer: the size its file may have

Health = Callable[[], dict[str, Any]]


class UsageOutbox(Protocol):
    """What the uplink needs of gateway.stations.outbox.Outbox (and of the presence outbox)."""

    def pending(self, limit: int = ...) -> list[dict[str, Any]]: ...
    def mark_sent(self, keys: Iterable[str], now: float) -> int: ...
    def backlog(self) -> int: ...


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


class Uplink:
    """The router's side of the protocol. Methods do one exchange each and raise UplinkError;
    `main_loop` and `command_loop` (or `run`) schedule them and never raise. Receives its
    transport, clocks and outboxes; `commands` is its command half (gateway/uplink/commands.py),
    sharing its counters."""

    def __init__(
        self,
        transport: Transport,
        *,
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
        self.transport = transport
        self.outbox, self.health = outbox, health
        self.presence = presence  # gateway/stations/presence.py: same pending/mark_sent contract
        self.heartbeat_seconds, self.upload_seconds = heartbeat_seconds, upload_seconds
        self.clock, self.monotonic, self.rng = clock, monotonic, rng
        self._config_lock = threading.Lock()
        self._config_version: int | None = None
        self._config_version_read = False
        self.config_due = threading.Event()  # set: pull the venue config soon
        self._refused_batch: tuple[str, int, str] | None = None
        self._down: dict[str, bool] = {}
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
        self.commands = Commands(transport, self.stats, self._refresh_config, execute)

    @property
    def state_dir(self) -> Path:
        return self.transport.state_dir

    @property
    def identity(self) -> Identity:
        return self.transport.identity

    @property
    def base_url(self) -> str:
        return self.transport.base_url

    def _link(self, channel: str, error: UplinkError | None) -> None:
        """Log a channel going down once, and its coming back, not every failed attempt."""
        was_down = self._down.get(channel, False)
        if error is not None and not was_down:
            log.warning("cloud %s failing: %s; retrying with backoff", channel, error)
        elif error is None and was_down:
            log.info("cloud %s working again", channel)
        self._down[channel] = error is not None

    def enrol(
        self, cloud_url: str, claim_code: str, *, force: bool = False, hostname: str = ""
    ) -> Identity:
        """Enrol (gateway/uplink/enrolment.py); the venue config held so far is forgotten."""
        identity = enrolment.enrol(
            self.transport, cloud_url, claim_code, force=force, hostname=hostname
        )
        self._config_version, self._config_version_read = None, True
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
            version=version(),
            config_version=self.config_version or 0,
            outbox_backlog=self.outbox.backlog() if self.outbox is not None else 0,
        )
        try:
            resp = self.transport.signed("POST", "/device/heartbeat", body)
            if resp.status_code != 200:
                raise Refused(resp.status_code, f"heartbeat refused: {error(resp)}")
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
            self.transport.learn_time(float(answer["time"]))
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
            resp = self.transport.signed(
                "GET", "/device/config", headers=headers, limit=CONFIG_LIMIT
            )
            if resp.status_code == 304:
                return False
            if resp.status_code != 200:
                raise Refused(resp.status_code, f"config refused: {error(resp)}")
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

    def _refresh_config(self) -> None:
        """A `refresh-config` command: pull now; if that fails, the main loop keeps trying."""
        try:
            self.pull_config()
        except UplinkError:
            self.config_due.set()
            raise

    # -- usage and presence ----------------------------------------------------------------
    def upload_usage(self) -> int:
        """Send the oldest unsent records (one batch); returns how many the cloud took (0:
        nothing waiting). Marked sent on 200 only; a refused batch stays, logged once."""
        if self.outbox is None:
            return 0
        records = self.outbox.pending(limit=BATCH)
        if not records:
            return 0
        try:
            resp = self.transport.signed("POST", "/device/usage", {"records": records})
        except Unreachable:
            self.stats["usage_upload_errors"] += 1
            raise
        if resp.status_code != 200:
            self.stats["usage_batches_refused"] += 1
            why = error(resp)
            which = (records[0]["key"], resp.status_code, why)
            if which != self._refused_batch:
                self._refused_batch = which
                log.error(
                    "usage batch of %d records from %s refused by the cloud (HTTP %d): %s; "
                    "the records stay in the outbox, in order, for an operator",
                    len(records), records[0]["key"], resp.status_code, why,
                )  # fmt: skip
            raise Refused(resp.status_code, f"usage refused: {why}")
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
        resp = self.transport.signed("POST", "/device/presence", {"events": events})
        keys = [e["key"] for e in events]
        if resp.status_code in (400, 413, 422):  # the events themselves: never better
            self.stats["presence_batches_refused"] += 1
            log.error(
                "presence batch of %d events refused (HTTP %d): %s; dropped",
                len(events), resp.status_code, error(resp),
            )  # fmt: skip
        elif resp.status_code != 200:  # the cloud or our credential: try again later
            raise Refused(resp.status_code, f"presence refused: {error(resp)}")
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
                self.commands.poll(wait)
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
