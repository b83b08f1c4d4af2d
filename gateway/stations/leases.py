"""dnsmasq's lease file as DHCP events: what a per-event script used to be told, read instead.

dnsmasq keeps its leases in one text file (`dhcp-leasefile=`) and rewrites it in place after
every change: a new lease, a renewal (a new expiry), a release or an expiry. So the file, read
after a change and compared with the previous reading, says what a `dhcp-script` would have
been run for: a lease that appeared is `add`, one whose expiry or name changed is `old` (a
renewal), one that went is `del`. Reading it costs the daemon a few hundred microseconds for a
hundred leases; a script costs a process per event (a Python start, ~10 ms of the router's CPU).

One IPv4 lease per line: `EXPIRY MAC IP HOSTNAME CLIENT-ID`, `*` for no name or id, expiry 0 for
an infinite lease. After a `duid` line come DHCPv6 leases (`EXPIRY IAID IP6 HOSTNAME DUID`):
they name no MAC, and Plaza's dnsmasq hands none out (stateless DHCPv6, SLAAC: addresses of
phones are learned from their packets), so they are skipped. A line that is none of these is
kept aside with its reason for one log line; the other lines still count.

Pure: text in, leases and events out (gateway/stations/lease_watch.py reads the file).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field

from gateway.stations import hostnames
from plaza.validators import MAC_RE


@dataclass(frozen=True)
class Lease:
    mac: str
    ip: str
    hostname: str  # printable UTF-8 or "" (gateway/stations/hostnames.py)
    expiry: int  # seconds since the epoch; 0: never


@dataclass(frozen=True)
class Event:
    """One DHCP event, as dnsmasq's script was told it: add, old (renewed) or del.
    `replayed`: read from the file as the daemon started, not seen to change. After a power
    cut the file may be older than the state database (dnsmasq does not fsync it), so such a
    lease does not outweigh a session the database restored (sessions.replay_conflict)."""

    action: str
    lease: Lease
    replayed: bool = False


@dataclass(frozen=True)
class Bad:
    """A line that is no lease: where, why, and the line (kept for the log)."""

    number: int
    reason: str
    line: bytes

    def __str__(self) -> str:
        shown = self.line[:120].decode("utf-8", "backslashreplace")
        return f"line {self.number}: {self.reason}: {shown!r}"


@dataclass
class Reading:
    leases: dict[tuple[str, str], Lease]  # by (MAC, IP): one station may hold two addresses
    bad: list[Bad]
    complete: bool  # False: the last line has no newline (read while dnsmasq was writing)
    lines: dict[bytes, Lease] = field(default_factory=dict)  # each good line's lease


def parse_line(fields: list[bytes]) -> Lease:
    """One IPv4 lease line, split; ValueError says what is wrong with it."""
    if len(fields) < 4:
        raise ValueError(f"expected at least 4 fields, got {len(fields)}")
    expiry_s, mac_b, ip_b, name = fields[:4]
    if not expiry_s.isdigit():
        raise ValueError("expiry is not a number")
    mac = mac_b.decode("ascii", "replace").lower()
    if not MAC_RE.match(mac):
        raise ValueError("not an Ethernet MAC address")
    try:
        ip = ipaddress.IPv4Address(ip_b.decode("ascii", "replace"))
    except ValueError:
        raise ValueError("not an IPv4 address") from None
    hostname = "" if name == b"*" else hostnames.clean(name)
    return Lease(mac, str(ip), hostname, int(expiry_s))


def parse(data: bytes, known: Mapping[bytes, Lease] | None = None) -> Reading:
    """The lease file's contents; bad lines are listed, never fatal. `known`: the previous
    reading's `lines`: dnsmasq rewrites the whole file for each change, so most lines are
    the same, and a line seen before is not checked again."""
    known = known or {}
    reading = Reading({}, [], complete=not data or data.endswith(b"\n"))
    lines = data.split(b"\n")
    if not reading.complete:
        lines = lines[:-1]  # half written: the next reading has it whole
    ipv6 = False
    for number, line in enumerate(lines, 1):
        fields = line.split()
        if not fields:
            continue
        if fields[0] == b"duid":
            ipv6 = True  # DHCPv6 leases follow; see the module's docstring
            continue
        if ipv6:
            continue
        lease = known.get(line)
        if lease is None:
            try:
                lease = parse_line(fields)
            except ValueError as exc:
                reading.bad.append(Bad(number, str(exc), line))
                continue
        reading.lines[line] = lease
        reading.leases[(lease.mac, lease.ip)] = lease
    return reading


def diff(before: dict[tuple[str, str], Lease], after: dict[tuple[str, str], Lease]) -> list[Event]:
    """What changed between two readings: releases first (an address handed from one station
    to the next is released by the first before the second holds it), then new leases, then
    renewals, each by expiry, else in file order: of one station's two leases the one it was
    given last comes last, as the address it holds now. (The daemon's first reading after a
    power cut held a phone's current lease and an older one of its first boot, in that order:
    taken in file order, the old address won and ended the restored session.)"""
    events = [Event("del", lease) for key, lease in before.items() if key not in after]
    for key, lease in after.items():
        old = before.get(key)
        if old is None:
            events.append(Event("add", lease))
        elif old != lease:
            events.append(Event("old", lease))
    return ordered(events)


def replay(reading: Reading) -> list[Event]:
    """Every lease of a reading as `old` and `replayed` (the daemon's start), in diff's order."""
    return ordered([Event("old", lease, replayed=True) for lease in reading.leases.values()])


def ordered(events: list[Event]) -> list[Event]:
    order = ("del", "add", "old")
    return sorted(events, key=lambda e: (order.index(e.action), e.lease.expiry or float("inf")))
