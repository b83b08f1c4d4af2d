"""The daemon's event loop: control socket, station detection, expiry and the reconciler.

One asyncio loop, one thread: requests and events are handled one at a time, so the session
table needs no locks, and each handler is short (a SQLite write and a netlink batch). The only
other threads read the kernel for the accounting poll and the reconciler (every counter, every
client element: too slow for this thread at 10,000 clients); what they read is handed back to
this thread, which alone touches the session table and changes the kernel
(gateway/dataplane/firewall.py declares what it asks of it, kernel.py does it).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import grp
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.config import Config
from gateway.dataplane.firewall import NftError
from gateway.garden.venue import VenueGarden
from gateway.gateway import Gateway
from gateway.ops.metrics import Family, GatewayMetrics
from gateway.stations.station import SessionError
from plaza import sdnotify

if TYPE_CHECKING:
    from gateway.dataplane.guard import Guard
    from gateway.garden.queue import GardenInspector
    from gateway.stations.detect import DetectQueue
    from gateway.stations.lease_watch import LeaseWatch
    from gateway.stations.leases import Event

log = logging.getLogger("plaza.daemon")

MAX_REQUEST = 64 * 1024
RECONCILE_SECONDS = 5.0
FULL_RECONCILE_SECONDS = 60.0  # compare the whole kernel at least this often, changed or not
THOROUGH_RECONCILE_SECONDS = 600.0  # and let the gateway itself compare and repair this often
# How long a worker thread (a big kernel read) may hold the interpreter before this thread
# gets it back to answer a login: Python's default is 5 ms.
SWITCH_INTERVAL = 0.001


class AlreadyRunning(RuntimeError):
    pass


def acquire_lock(config: Config) -> int:
    """Hold an exclusive lock for the daemon's life; a second daemon fails with a clear error."""
    state = Path(config.gateway.state_dir)
    state.mkdir(parents=True, exist_ok=True, mode=0o750)
    fd = os.open(state / "plaza-gateway.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = os.read(fd, 32).decode().strip() or "?"
        os.close(fd)
        raise AlreadyRunning(
            f"another plaza-gateway (pid {pid}) is running with state in {state} "
            f"and socket {config.gateway.control_socket}"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd


def check_socket_free(path: str) -> None:
    """Refuse to steal a live socket (a daemon with another state dir); remove a stale one."""
    if not os.path.exists(path):
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        os.unlink(path)  # stale: left by a killed daemon
        return
    finally:
        probe.close()
    raise AlreadyRunning(f"another daemon is answering on {path}")


class Daemon:
    def __init__(
        self,
        config: Config,
        gateway: Gateway,
        lan_ifindex: int | None,
        metrics_listen: tuple[str, int] | None = None,
    ) -> None:
        self.config = config
        self.gateway = gateway
        self.lan_ifindex = lan_ifindex
        self.stopping = asyncio.Event()
        self.garden: GardenInspector | None = None
        self.detector: DetectQueue | None = None
        self.uplink_stop = threading.Event()
        self.guard: Guard | None = None
        self.leases: LeaseWatch | None = None
        self.uplink_threads: list[threading.Thread] = []
        self.metrics = GatewayMetrics(gateway, garden=lambda: self.garden)
        self.metrics_listen = metrics_listen  # (host, port) of GET /metrics, None: not served
        self._reconciled: tuple[float, int, int] | None = None  # when, generation, commits
        self._thorough = time.monotonic()  # the gateway's start() has just reconciled
        self.venue_garden = VenueGarden(config)  # the cloud's garden names
        self._dnsmasq_restart: asyncio.Task | None = None
        self.metrics.register_collector(self._venue_garden_metrics)

    async def handle_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            try:
                line = await asyncio.wait_for(reader.readline(), timeout=5)
            except (asyncio.LimitOverrunError, ValueError):
                response = {"ok": False, "error": f"request larger than {MAX_REQUEST} bytes"}
                self.metrics.invalid_request()
            except TimeoutError:
                return
            else:
                try:
                    request = json.loads(line)
                except (ValueError, RecursionError):  # RecursionError: `[[[[...` nested deep
                    response = {"ok": False, "error": "request is not valid JSON"}
                    self.metrics.invalid_request()
                else:
                    response = self.metrics.handle(request)  # gateway.handle, counted and timed
            writer.write(json.dumps(response, separators=(",", ":")).encode() + b"\n")
            await writer.drain()
        except (ConnectionError, OSError):
            pass
        except Exception:
            log.exception("control request failed")
            with contextlib.suppress(Exception):
                writer.write(b'{"ok":false,"error":"internal error, see the gateway log"}\n')
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def serve_control(self) -> asyncio.AbstractServer:
        path = self.config.gateway.control_socket
        Path(path).parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        check_socket_free(path)
        old = os.umask(0o117)
        try:
            server = await asyncio.start_unix_server(
                self.handle_connection, path=path, limit=MAX_REQUEST
            )
        finally:
            os.umask(old)
        if self.config.gateway.control_group:
            os.chown(path, 0, grp.getgrnam(self.config.gateway.control_group).gr_gid)
        return server

    def start_neighbours(self) -> Coroutine[None, None, None]:
        """Learn stations from the kernel's neighbour table (gateway/stations/neighbours.py):
        its prober now, before the lease file is read; the watch, to run as a task."""
        from gateway.stations import neighbours

        assert self.lan_ifindex is not None
        found = neighbours.prober(self.gateway, self.lan_ifindex, self.config.lan.interface)
        return neighbours.watch(found)

    def start_leases(self, loop: asyncio.AbstractEventLoop) -> None:
        """dnsmasq's leases from its lease file (gateway/stations/lease_watch.py): read now,
        then at every change, on this loop."""
        from gateway.stations import dnsmasq
        from gateway.stations.lease_watch import LeaseWatch

        watch = self.leases = LeaseWatch(dnsmasq.lease_file(self.config), self._lease)
        watch.start(loop)

        def families() -> list[Family]:
            events = Family(
                "plaza_lease_events_total", "counter",
                "DHCP lease events read from dnsmasq's lease file, by action.",
            )  # fmt: skip
            for action in ("add", "old", "del"):
                events.add(watch.events[action], action=action)
            bad = Family(
                "plaza_lease_file_bad_lines_total", "counter",
                "Lines of dnsmasq's lease file that were no lease (each logged once).",
            )  # fmt: skip
            bad.add(watch.bad_lines)
            return [events, bad]

        self.metrics.register_collector(families)

    def _lease(self, event: Event) -> None:
        lease = event.lease
        try:
            self.gateway.requests.lease(
                event.action, lease.mac, lease.ip, lease.hostname, replayed=event.replayed
            )
        except SessionError as exc:
            log.info("lease %s %s %s ignored: %s", event.action, lease.mac, lease.ip, exc)

    def start_guard(self) -> None:
        """The LAN bridge's guard table (gateway/dataplane/guard.py), with its drops in the
        metrics."""
        from gateway.dataplane.guard import Guard
        from gateway.ops.metrics import Family

        try:
            guard = Guard(committed=self.gateway.firewall.own_commit)
            guard.start()
        except (NftError, OSError) as exc:
            log.error("LAN guard not loaded (rogue DHCP/RA between stations not stopped): %s", exc)
            return
        self.guard = guard

        def families() -> list[Family]:
            drops = guard.drops()
            family = Family(
                "plaza_lan_guard_drops_total", "counter",
                "Frames between stations dropped by the LAN guard, by kind.",
            )  # fmt: skip
            for kind, packets in sorted(drops.items()):
                family.add(packets, kind=kind)
            return [family]

        self.metrics.register_collector(families)

    def start_uplink(self, loop: asyncio.AbstractEventLoop) -> None:
        """The cloud uplink (gateway/uplink/sync.py), if this router is enrolled: its own
        threads, blocking HTTP; requests from the cloud run on this loop, like the control socket's.
        Not enrolled: nothing is imported (requests alone costs the daemon ~10 MB)."""
        if not (Path(self.config.gateway.state_dir) / "cloud.json").exists():
            log.info("cloud uplink off: not enrolled (plaza-gateway enrol)")
            return
        from gateway.stations.outbox import Outbox
        from gateway.uplink import start as uplink

        self.uplink_threads = uplink.start_uplink(
            self.config,
            uplink.on_loop(loop, self.metrics.handle),
            Outbox(self.gateway.store),
            None,
            self.uplink_stop,
            register_collector=self.metrics.register_collector,
        )

    def apply_venue_garden(self) -> None:
        """The cloud's garden names to the SNI inspector now, and to dnsmasq (a restart, in a
        worker thread, one at a time; a change during a restart waits for the next call)."""
        garden = self.venue_garden.check()
        if garden is not None and self.garden is not None:
            self.garden.set_garden(garden)
        busy = self._dnsmasq_restart is not None and not self._dnsmasq_restart.done()
        if self.venue_garden.restart_due and not busy:
            self._dnsmasq_restart = asyncio.create_task(
                asyncio.to_thread(self.venue_garden.restart_dnsmasq), name="dnsmasq-restart"
            )

    def _venue_garden_metrics(self) -> list[Family]:
        names = Family(
            "plaza_garden_names",
            "gauge",
            "Walled-garden names by where they were set (router: TOML and wallet; cloud).",
        )
        own = self.venue_garden.own
        names.add(len(own.exact) + len(own.below), source="router")
        names.add(len(self.venue_garden.cloud), source="cloud")
        restarts = Family(
            "plaza_dnsmasq_restarts_total",
            "counter",
            "dnsmasq restarts the daemon ran so dnsmasq reads the cloud's garden names.",
        )
        for result, n in sorted(self.venue_garden.restarts.items()):
            restarts.add(n, result=result)
        return [names, restarts]

    async def periodic(self) -> None:
        loop = asyncio.get_running_loop()
        next_reconcile = loop.time() + RECONCILE_SECONDS
        poll_seconds = self.config.accounting.poll_seconds
        next_poll = loop.time() + poll_seconds
        step = min(self.config.gateway.tick_seconds, poll_seconds)
        while not self.stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), timeout=step)
            try:
                self.apply_venue_garden()
            except Exception:
                log.exception("applying the cloud's walled garden failed; will retry")
            try:
                self.gateway.tick()
                if loop.time() >= next_poll:  # accounting: counters, quotas, idle, records
                    next_poll = loop.time() + poll_seconds
                    await self.poll()
            except Exception:
                log.exception("periodic work failed; will retry")
            try:  # apart: a poll that fails on a vanished table must not stop its repair
                if loop.time() >= next_reconcile:
                    next_reconcile = loop.time() + RECONCILE_SECONDS
                    await self.reconcile()
                    if self.guard is not None:
                        self.guard.ensure()
            except Exception:
                log.exception("reconciling failed; will retry")

    async def poll(self) -> None:
        """The accounting poll. Reading every counter is the slow part (~0.1 s at 10,000
        clients): it runs in a worker thread while this one keeps answering, and the gateway
        then works on that reading here (see kernel.Snapshot)."""
        with self.gateway.firewall.snapshot() as snap:
            try:
                await asyncio.to_thread(snap.read_readings)
            except NftError as exc:
                log.debug("background counter read failed (%s); the poll reads itself", exc)
            else:
                snap.install()
            self._timed("poll", snap.seconds, self.gateway.poll)

    async def reconcile(self) -> None:
        """Compare the kernel with what the gateway put there, and repair it.

        Cheap first: the kernel's ruleset generation moves on with every commit; when it has
        moved exactly by this process's own commits since the last comparison, nobody else
        touched any table and there is nothing to compare (but a comparison is made at least
        every FULL_RECONCILE_SECONDS). A comparison reads the kernel and diffs it against the
        gateway's grants in a worker thread (~0.2 s of Python at 10,000 clients, which on
        this thread would hold up every login meanwhile); what differs, less what this
        thread changed while the read ran, is then committed here: a repair costs what the
        drift costs, not a second comparison. Every THOROUGH_RECONCILE_SECONDS the grants
        themselves are checked against the session table (~20 ms at 10,000 clients); only
        a disagreement there, a failed read or a failed repair bring in the whole
        `gateway.reconcile()` on this thread."""
        firewall = self.gateway.firewall
        now = time.monotonic()
        generation = firewall.generation()
        thorough = now - self._thorough >= THOROUGH_RECONCILE_SECONDS
        if (
            not thorough
            and self._reconciled is not None
            and now - self._reconciled[0] < FULL_RECONCILE_SECONDS
        ):
            _, seen, commits = self._reconciled
            if (generation - seen) % 2**32 == firewall.commits - commits:
                self.metrics.reconcile_skipped()
                return
        self._reconciled = (now, generation, firewall.commits)
        if thorough:
            self._thorough = now
            started = time.perf_counter()
            if not self.gateway.granted_as_desired():
                log.warning("the gateway's grants differ from its sessions; reconciling all")
                self._timed("reconcile-full", 0.0, self.gateway.reconcile)
                return
            checked = time.perf_counter() - started
        else:
            checked = 0.0
        with firewall.snapshot() as snap:
            try:
                await asyncio.to_thread(snap.read_drift, list(self.gateway.granted.values()))
            except NftError as exc:
                log.debug("background state read failed (%s); reconciling reads itself", exc)
                self._timed("reconcile-full", snap.seconds, self.gateway.reconcile)
                return
            started = time.perf_counter()
            repair = snap.repair()
            if repair is not None and not repair:
                loop = checked + time.perf_counter() - started
                self.metrics.periodic("reconcile", snap.seconds, loop)
                return
            if repair is not None:
                try:
                    self.gateway.repair(repair)
                except NftError as exc:
                    log.warning("repair failed (%s); reconciling all", exc)
                else:
                    loop = checked + time.perf_counter() - started
                    self.metrics.periodic("reconcile-full", snap.seconds, loop)
                    return
        self._timed("reconcile-full", snap.seconds, self.gateway.reconcile)

    def _timed(self, task: str, read_seconds: float, work: Callable[[], object]) -> None:
        started = time.perf_counter()
        try:
            work()
        finally:
            self.metrics.periodic(task, read_seconds, time.perf_counter() - started)

    async def serve_metrics(self) -> asyncio.AbstractServer | None:
        """GET /metrics; a port that cannot be bound is logged, never fatal to the gateway."""
        if self.metrics_listen is None:
            return None
        host, port = self.metrics_listen
        try:
            server = await self.metrics.serve(host, port)
        except OSError as exc:
            log.error("metrics not served on %s:%d: %s", host, port, exc)
            return None
        log.info("metrics at http://%s:%d/metrics", host, port)
        return server

    def _task_done(self, task: asyncio.Task) -> None:
        if task.cancelled() or self.stopping.is_set():
            return
        log.error("background task ended: %r; stopping", task.exception() or task.get_name())
        self.stopping.set()  # let the supervisor restart us rather than run half-blind

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        sys.setswitchinterval(SWITCH_INTERVAL)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        server = await self.serve_control()
        metrics = await self.serve_metrics()
        garden = None
        if self.lan_ifindex is not None:  # the walled-garden SNI inspector (garden/inspector.py)
            from gateway.garden import queue as garden_queue

            garden = self.garden = garden_queue.start(self.config, loop)
            if garden is not None:  # its repairs commit too: not someone else's change
                garden.committed = self.gateway.firewall.own_commit
        detector = None
        if self.lan_ifindex is not None:  # first packets of unseen stations (stations/detect.py)
            from gateway.stations import detect

            seen = None
            try:
                seen = detect.SeenSets()
                self.gateway.forget_seen = seen.forget
            except Exception as exc:
                log.error("cannot write the detector's seen sets: %s", exc)
            detector = self.detector = detect.start(self.gateway.neighbour, loop, seen)
        if self.lan_ifindex is not None:  # stations may not be DHCP servers or routers
            self.start_guard()
        self.apply_venue_garden()  # before the first tick: the file may have changed while down
        tasks = [asyncio.create_task(self.periodic())]
        if self.lan_ifindex is not None:  # before the leases: a replayed one may need a probe
            tasks.append(asyncio.create_task(self.start_neighbours()))
        self.start_leases(loop)
        self.start_uplink(loop)
        for task in tasks:
            task.add_done_callback(self._task_done)
        log.info("control socket at %s", self.config.gateway.control_socket)
        print("plaza-gateway: ready", flush=True)
        sdnotify.notify("READY=1")  # Type=notify under systemd (plaza-gateway.service)
        await self.stopping.wait()
        server.close()
        if metrics is not None:
            metrics.close()
        if garden is not None:
            garden.stop()
        if detector is not None:
            detector.close()
        if self.leases is not None:
            self.leases.close()
        self.uplink_stop.set()  # its threads are daemons: a long poll in flight just ends
        for task in tasks:
            task.cancel()
        with contextlib.suppress(OSError):
            os.unlink(self.config.gateway.control_socket)
        log.info("stopped; the kernel table stays so authorized clients stay online")
