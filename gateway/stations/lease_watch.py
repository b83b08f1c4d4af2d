"""The daemon's view of dnsmasq's leases: the lease file watched with inotify, no process per event.

dnsmasq used to run a `dhcp-script` per DHCP event: a process each (sh, then a Python start,
~10 ms of the router's CPU), run one at a time by dnsmasq's helper, so a crowd joining at once
queued behind them (docs/decisions.md, "The lease file instead of the lease hook"). dnsmasq
writes every change to its lease file anyway; the daemon watches that file's directory with
inotify (the file may not exist yet, and is rewritten in place by dnsmasq or replaced by a
restore), reads it a few milliseconds after a change, compares it with the last reading
(gateway/stations/leases.py) and hands each event to `apply`, on the daemon's loop.

A reading may catch dnsmasq mid-write: it truncates the file, then writes it (a long one in
4 KiB chunks), so a reading is a prefix of the new file: empty, or cut mid-line, or, rarely,
cut at a line's end (dnsmasq's lease.c: rewind, ftruncate, fprintf per lease, fflush). New and
renewed leases in a prefix are true; a missing lease may only be missing from the prefix. So a
half line is read again, and a lease that went is only released when a reading RELEASE_AFTER
later still lacks it: on a loaded machine dnsmasq can be kept off the CPU mid-write for longer
than a few milliseconds (a 100-phone storm on two CPUs showed 44 such readings in a row when
the next reading came 10 ms later). A release is not urgent: it only starts a re-probe of the
station (gateway/stations/control.py). At start the file is read once and every lease given as
`old`, as dnsmasq replays its leases to a script when it restarts, marked `replayed`: the file
may predate a power cut, so such a lease is checked against the sessions the database restored
before it moves one (gateway/stations/control.py).

inotify through ctypes (libc's inotify_init1 / inotify_add_watch; glibc and musl both have them):
three calls, no dependency to install on a router. Should inotify be unavailable (no instances
left), the file is looked at every POLL_SECONDS instead, and the log says so once.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import struct
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from gateway.stations import leases
from gateway.stations.leases import Event, Lease

log = logging.getLogger("plaza.gateway")

DEBOUNCE = 0.01  # after the first change: dnsmasq has truncated, written and synced by then
RETRIES = 3  # readings of a half-written file (no final newline, a torn line) before it counts
RELEASE_AFTER = 1.0  # seconds a lease must stay missing before it counts as released
POLL_SECONDS = 0.5  # without inotify

IN_MODIFY, IN_CLOSE_WRITE, IN_MOVED_FROM, IN_MOVED_TO = 0x2, 0x8, 0x40, 0x80
IN_CREATE, IN_DELETE, IN_Q_OVERFLOW = 0x100, 0x200, 0x4000
IN_NONBLOCK, IN_CLOEXEC = os.O_NONBLOCK, os.O_CLOEXEC
WATCHED = IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_CREATE | IN_DELETE
HEADER = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len; then the name


def inotify_watch(directory: Path) -> int:
    """A non-blocking inotify descriptor watching `directory`'s entries; OSError if not."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
    if fd < 0:
        raise OSError(ctypes.get_errno(), f"inotify_init1: {os.strerror(ctypes.get_errno())}")
    if libc.inotify_add_watch(fd, os.fsencode(directory), WATCHED) < 0:
        errno = ctypes.get_errno()
        os.close(fd)
        raise OSError(errno, f"inotify_add_watch {directory}: {os.strerror(errno)}")
    return fd


def names_changed(buffer: bytes) -> tuple[set[bytes], bool]:
    """The entry names a read of inotify events names, and whether the queue overflowed."""
    names, offset, overflow = set(), 0, False
    while offset + HEADER.size <= len(buffer):
        _wd, mask, _cookie, length = HEADER.unpack_from(buffer, offset)
        offset += HEADER.size
        names.add(buffer[offset : offset + length].rstrip(b"\0"))
        overflow |= bool(mask & IN_Q_OVERFLOW)
        offset += length
    return names, overflow


class LeaseWatch:
    """Reads `path` on the running loop when it changes and hands `apply` what changed."""

    def __init__(
        self,
        path: Path,
        apply: Callable[[Event], None],
        debounce: float = DEBOUNCE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.clock = clock
        self.apply = apply
        self.debounce = debounce
        self.leases: dict[tuple[str, str], Lease] = {}
        self.events: Counter[str] = Counter()  # by action, for the metrics
        self.bad_lines = 0  # lines logged as bad, for the metrics
        self._logged_bad: set[bytes] = set()  # bad lines already logged, by their text
        self._lines: dict[bytes, Lease] = {}  # the last reading's lines, parsed
        self._fd: int | None = None
        self._pending: asyncio.TimerHandle | None = None  # the next reading
        self._polling: asyncio.TimerHandle | None = None  # without inotify
        self._retries = 0
        self._missing: dict[tuple[str, str], float] = {}  # leases readings lack, since when
        self._confirm: asyncio.TimerHandle | None = None  # the reading that may release them
        self._stat: tuple[int, int, int] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Read the file once (every lease as `old`), then follow its changes."""
        self._loop = loop
        try:
            self._fd = inotify_watch(self.path.parent)
        except (OSError, AttributeError) as exc:
            log.error("lease file %s polled every %.1f s: %s", self.path, POLL_SECONDS, exc)
            self._polling = loop.call_later(POLL_SECONDS, self._poll)
        else:
            loop.add_reader(self._fd, self._on_events)
        self.read(replay=True)

    def close(self) -> None:
        for handle in (self._pending, self._polling, self._confirm):
            if handle is not None:
                handle.cancel()
        if self._fd is not None and self._loop is not None:
            self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = None

    def _on_events(self) -> None:
        assert self._fd is not None
        ours = False
        while True:
            try:
                buffer = os.read(self._fd, 65536)
            except BlockingIOError:
                break
            names, overflow = names_changed(buffer)
            ours |= overflow or self.path.name.encode() in names
        if ours:
            self._schedule()

    def _schedule(self) -> None:
        if self._pending is None and self._loop is not None:
            self._pending = self._loop.call_later(self.debounce, self._due)

    def _confirm_later(self, delay: float) -> None:
        if self._loop is not None and self._confirm is None:
            self._confirm = self._loop.call_later(max(delay, self.debounce), self._confirmed)

    def _confirmed(self) -> None:
        self._confirm = None
        self.read()

    def _due(self) -> None:
        self._pending = None
        self.read()

    def _poll(self) -> None:
        assert self._loop is not None
        self._polling = self._loop.call_later(POLL_SECONDS, self._poll)
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return
        stat = (st.st_ino, st.st_size, st.st_mtime_ns)
        if stat != self._stat:
            self._stat = stat
            self.read()

    def read(self, replay: bool = False) -> None:
        """Read the file and apply what changed since the last reading. A file that is gone
        changes nothing (dnsmasq keeps its file; a lease that ended is a line that went)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as exc:
            log.error("cannot read the lease file %s: %s", self.path, exc)
            return
        reading = leases.parse(data, self._lines)
        self._lines = reading.lines
        new_bad = [bad for bad in reading.bad if bad.line not in self._logged_bad]
        unsettled = not reading.complete or bool(new_bad)
        if unsettled and not replay and self._retries < RETRIES:
            self._retries += 1  # most likely read mid-write: once more, a little later
            self._schedule()
            return
        self._retries = 0
        for bad in new_bad:  # once each, not at every rewrite of the file
            self.bad_lines += 1
            log.warning("lease file %s: skipped %s", self.path, bad)
        self._logged_bad = {bad.line for bad in reading.bad}
        events = leases.replay(reading) if replay else leases.diff(self.leases, reading.leases)
        now = self.clock()
        missing = {(e.lease.mac, e.lease.ip) for e in events if e.action == "del"}
        self._missing = {key: self._missing.get(key, now) for key in missing}
        unconfirmed = {k for k, since in self._missing.items() if now - since < RELEASE_AFTER}
        for key in missing - unconfirmed:
            del self._missing[key]
        if unconfirmed:
            self._confirm_later(min(self._missing.values()) + RELEASE_AFTER - now)
        events = [e for e in events if (e.lease.mac, e.lease.ip) not in unconfirmed]
        kept = {key: self.leases[key] for key in unconfirmed}
        self.leases = {**kept, **reading.leases}
        for event in events:
            self.events[event.action] += 1
            try:
                self.apply(event)
            except Exception:
                lease = event.lease
                log.exception("lease %s %s %s not applied", event.action, lease.mac, lease.ip)
