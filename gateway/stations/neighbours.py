"""Stations from the kernel's neighbour table: who talks to the router, and who stopped.

A reachable entry introduces a station or an address (a weak claim, see sessions.seen). A
failed entry is how the router notices a station that left without releasing its lease, but
the kernel's word alone is not enough to log someone out:
- `ip neigh flush` reports every entry FAILED with no probe sent: ignored (NDA_PROBES = 0);
- a forged ARP claim points the victim's address at the attacker's MAC; when the attacker
  goes quiet the entry fails although the victim is still there.
So a failure is confirmed first: the entry is set back to the address holder's MAC in state
PROBE, and the kernel probes that MAC unicast. An answer (REACHABLE) clears it; a second
failure within CONFIRM_SECONDS ends the station's IPv4 presence or drops the IPv6 address.

A DHCP release is the same kind of claim (any station can send one for another: the MAC and
client-id it names are public on an open network), so it goes the same way (`confirm`): the
gateway hands it here, the holder's MAC is probed, and only the probe's failure is a departure.

The probe is asked for over rtnetlink (`probe`), as `ip neigh replace ADDRESS lladdr MAC nud
probe` asks: no process, and no iproute2 needed (OpenWrt's busybox `ip` has no `neigh
replace`: a release there was never confirmed while this ran `ip`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import struct
import time
from collections.abc import Callable

from gateway.dataplane import netlink
from gateway.gateway import Gateway

log = logging.getLogger("plaza.neighbours")

NUD_REACHABLE, NUD_STALE, NUD_DELAY, NUD_PROBE, NUD_FAILED, NUD_PERMANENT = (
    0x02, 0x04, 0x08, 0x10, 0x20, 0x80,
)  # fmt: skip
SEEN = NUD_REACHABLE | NUD_STALE | NUD_DELAY | NUD_PROBE | NUD_PERMANENT
ANSWERED = NUD_REACHABLE | NUD_STALE | NUD_PERMANENT  # the station itself spoke
CONFIRM_SECONDS = 15.0

# rtnetlink, as much of it as this needs (linux/rtnetlink.h, linux/neighbour.h). A plain
# socket rather than pyroute2, which cost the daemon ~7 MB of imports for these few fields.
NETLINK_ROUTE = 0
RTMGRP_NEIGH = 0x4
RTM_NEWNEIGH, RTM_GETNEIGH = 28, 30
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP, NLM_F_REPLACE, NLM_F_CREATE = 0x1, 0x4, 0x300, 0x100, 0x400
NDA_DST, NDA_LLADDR, NDA_PROBES = 1, 2, 4
_NLMSGHDR = struct.Struct("=IHHII")
_NDMSG = struct.Struct("=BxxxiHBB")  # family, ifindex, state, flags, type
_NLA = struct.Struct("=HH")
RECV_BUFFER = 1 << 16

Neighbour = tuple[int, int, str | None, str | None, int]  # ifindex, state, ip, mac, probes

Reprobe = Callable[[str, str], None]  # (address, mac): ask the kernel to probe that MAC


class Neighbours:
    """Turns neighbour messages into gateway sightings and confirmed departures."""

    def __init__(
        self,
        gateway: Gateway,
        ifindex: int,
        reprobe: Reprobe,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.gateway = gateway
        self.ifindex = ifindex
        self.reprobe = reprobe
        self.clock = clock
        self.confirming: dict[str, tuple[str, float]] = {}  # address -> (holder MAC, since)
        self.departures = 0

    def message(self, ifindex: int, state: int, ip: str | None, mac: str | None, probes: int):
        if ifindex != self.ifindex or not ip or ip.startswith("fe80:"):
            return
        now = self.clock()
        if state & SEEN:
            # Only an answer from the holder clears a pending confirmation: PROBE and DELAY
            # are the kernel still asking (our own re-probe starts in PROBE).
            pending = self.confirming.get(ip)
            if pending and state & ANSWERED and mac == pending[0]:
                del self.confirming[ip]
            if mac:
                self.gateway.neighbour(mac, ip)
        elif state & NUD_FAILED and probes:
            self._failed(ip, now)

    def confirm(self, ip: str, mac: str) -> None:
        """Probe `mac` at `ip` now (a released lease): as after a first failure, an answer
        clears it and the probe's failure is the station's departure."""
        now = self.clock()
        self._expire(now)
        self.confirming[ip] = (mac, now)
        self.reprobe(ip, mac)

    def _expire(self, now: float) -> None:
        self.confirming = {
            a: v for a, v in self.confirming.items() if now - v[1] <= CONFIRM_SECONDS
        }

    def _failed(self, ip: str, now: float) -> None:
        holder = self.gateway.table.by_ip.get(ip)
        if holder is None:
            return
        pending = self.confirming.pop(ip, None)
        if pending and pending[0] == holder and now - pending[1] <= CONFIRM_SECONDS:
            log.info("station %s no longer answers at %s", holder, ip)
            self.departures += 1
            self.gateway.neighbour(holder, ip, failed=True)
            return
        self._expire(now)
        self.confirming[ip] = (holder, now)
        self.reprobe(ip, holder)


def parse(data: bytes) -> list[Neighbour]:
    """The RTM_NEWNEIGH messages of one netlink datagram, as `Neighbours.message` takes
    them; other messages (a dump's end, deletions, errors) are left out."""
    found: list[Neighbour] = []
    pos = 0
    while pos + 16 <= len(data):
        length, kind, _flags, _seq, _pid = _NLMSGHDR.unpack_from(data, pos)
        if length < 16 or pos + length > len(data):
            break
        end = pos + length
        if kind == RTM_NEWNEIGH and length >= 16 + _NDMSG.size:
            family, ifindex, state, _nflags, _ntype = _NDMSG.unpack_from(data, pos + 16)
            ip = mac = None
            probes = 0
            at = pos + 16 + _NDMSG.size
            while at + 4 <= end:
                size, attr = _NLA.unpack_from(data, at)
                if size < 4 or at + size > end:
                    break
                value = data[at + 4 : at + size]
                attr &= 0x3FFF
                if attr == NDA_DST and family in (socket.AF_INET, socket.AF_INET6):
                    with contextlib.suppress(ValueError):  # a malformed address
                        ip = socket.inet_ntop(family, value)
                elif attr == NDA_LLADDR and len(value) == 6:
                    mac = value.hex(":")
                elif attr == NDA_PROBES and len(value) >= 4:
                    probes = struct.unpack_from("=I", value)[0]
                at += (size + 3) & ~3
            found.append((ifindex, state, ip, mac, probes))
        pos += (length + 3) & ~3
    return found


def dump_request(seq: int) -> bytes:
    """RTM_GETNEIGH dump of every family's neighbour table."""
    body = _NDMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
    return _NLMSGHDR.pack(16 + len(body), RTM_GETNEIGH, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body


def probe_request(seq: int, ifindex: int, ip: str, mac: str) -> bytes:
    """RTM_NEWNEIGH setting ADDRESS at MAC in state PROBE, created or replaced, acknowledged:
    the kernel then probes MAC unicast (what `ip neigh replace ... nud probe` sends)."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    attrs = netlink.attr(NDA_DST, socket.inet_pton(family, ip))
    attrs += netlink.attr(NDA_LLADDR, bytes.fromhex(mac.replace(":", "")))
    body = _NDMSG.pack(family, ifindex, NUD_PROBE, 0, 0) + attrs
    flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE
    return _NLMSGHDR.pack(16 + len(body), RTM_NEWNEIGH, flags, seq, 0) + body


def probe(ifindex: int, ip: str, mac: str) -> None:
    """Have the kernel probe `mac` for `ip` on `ifindex` now; OSError with the kernel's errno
    if it refuses. One request and its acknowledgement on a socket of its own: well under a
    millisecond, so the daemon's loop does not wait on it."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE) as sock:
        sock.settimeout(1.0)
        sock.sendto(probe_request(1, ifindex, ip, mac), (0, 0))
        answer = sock.recv(RECV_BUFFER)
    if len(answer) >= 20 and _NLMSGHDR.unpack_from(answer)[1] == NLMSG_ERROR:
        error = -struct.unpack_from("=i", answer, 16)[0]
        if error:
            raise OSError(error, os.strerror(error))


def prober(gateway: Gateway, ifindex: int, interface: str) -> Neighbours:
    """The LAN's neighbour watcher, made the gateway's `confirm_departure` at once: the lease
    file is read at start, before `watch` runs, and a lease that contradicts a restored
    session is probed then (gateway/stations/control.py). A probe's answer sent before
    `watch` listens is still seen: `watch` begins with a dump of the table."""

    def reprobe(ip: str, mac: str) -> None:
        try:
            probe(ifindex, ip, mac)
        except OSError as exc:
            log.warning("cannot re-probe %s at %s on %s: %s", mac, ip, interface, exc)

    neighbours = Neighbours(gateway, ifindex, reprobe)
    gateway.confirm_departure = neighbours.confirm
    return neighbours


async def watch(neighbours: Neighbours) -> None:
    """Follow the kernel's neighbour table on the LAN for the daemon's lifetime: a dump,
    then the multicast group's changes. Events lost to a full socket buffer (ENOBUFS: a
    flood of changes) are made good by dumping the table again."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.bind((0, RTMGRP_NEIGH))
        sock.setblocking(False)
        seq = 1
        await loop.sock_sendall(sock, dump_request(seq))
        while True:
            try:
                data = await loop.sock_recv(sock, RECV_BUFFER)
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                log.warning("neighbour events overran the socket; reading the table again")
                seq += 1
                await loop.sock_sendall(sock, dump_request(seq))
                continue
            for message in parse(data):
                neighbours.message(*message)
    finally:
        neighbours.gateway.confirm_departure = None
        sock.close()
