"""How the daemon starts the uplink: the one entry it uses (`start_uplink`, with `on_loop`
for its control requests), and `uplink_for`, which assembles an Uplink from its parts.

Why the daemon imports this only once the router is enrolled: `requests` alone costs the daemon
~10 MB, and a router that never enrols should not pay it (gateway/daemon.py).
"""

from __future__ import annotations

import concurrent.futures
import logging
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.config import Config
from gateway.uplink.commands import Execute
from gateway.uplink.identity import NotEnrolled, UplinkError
from gateway.uplink.sync import Health, Uplink, UsageOutbox
from gateway.uplink.transport import Transport

if TYPE_CHECKING:
    import asyncio

    from gateway.ops.metrics import Family

log = logging.getLogger("plaza.uplink")

EXECUTE_TIMEOUT = 10.0


def uplink_for(
    state_dir: str | Path,
    *,
    url: str = "",
    ca_bundle: str = "",
    clock: Callable[[], float] = time.time,
    monotonic: Callable[[], float] = time.monotonic,
    rng: Callable[[], float] = random.random,
    **kwargs: Any,
) -> Uplink:
    """An Uplink for the enrolment in `state_dir`, its transport and it on the same clocks;
    `kwargs` are Uplink's (outboxes, execute, health, intervals)."""
    transport = Transport(state_dir, url=url, ca_bundle=ca_bundle, clock=clock, monotonic=monotonic)
    return Uplink(transport, clock=clock, monotonic=monotonic, rng=rng, **kwargs)


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

    cloud = config.cloud
    uplink = uplink_for(
        config.gateway.state_dir,
        url=cloud.url,
        ca_bundle=cloud.ca_bundle,
        heartbeat_seconds=cloud.heartbeat_seconds,
        upload_seconds=cloud.upload_seconds,
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
