"""The walled garden: which names a captive client may reach, and the verdict per connection.

Two gates, both needed. The kernel admits captive TCP/443 only to addresses that the router's
own resolver returned for a garden name (nft sets filled by dnsmasq `nftset=`); that alone
would let a client reach *any* site sharing a CDN address with a garden name. So the first
TLS packet of each such connection also comes here, and the ClientHello's server name (SNI)
must be a garden name. The verdict rides back on the packet mark; nft copies it into the
connection's ct mark, so every later packet of the connection stays in the kernel.

Name semantics (documented in the config): `wallet.test` admits exactly that host;
`*.example.com` admits every name below example.com at any depth, but not example.com itself
(list both to admit both). The address sets are filled more generously (dnsmasq's
`nftset=/example.com/` covers the domain and all its subdomains); the SNI check is the strict one.

Decisions are kept apart from I/O: `Inspector` takes packet bytes, an opaque handle and the
time, and returns (handle, verdict) pairs; `garden_queue` owns the NFQUEUE socket.
"""

from __future__ import annotations

import logging
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Generic, TypeVar

from gateway.config import Config, wallet_hosts
from gateway.garden.sni import MAX_STREAM, Kind, parse_client_hello
from plaza.logs import RateLimitedLog

log = logging.getLogger("plaza.garden")

HOLD_SECONDS = 2.0  # how long a ClientHello split over segments may take to arrive
MAX_FLOWS = 256  # connections with a partial ClientHello held at once (memory bound)
MAX_SEGMENTS = 16  # segments per held ClientHello (16 KiB at a 1 KiB MSS)
LOG_INTERVAL = 60.0  # seconds between two log lines about the same kind of refusal


# -- which names ---------------------------------------------------------------------------
def _norm(name: str) -> str:
    return name.strip().lower().rstrip(".")


@dataclass(frozen=True)
class Garden:
    """Garden names: exact hosts, and domains whose every subdomain is in (`*.x`)."""

    exact: frozenset[str] = frozenset()
    below: frozenset[str] = frozenset()

    @classmethod
    def of(cls, names: Iterable[str]) -> Garden:
        exact: set[str] = set()
        below: set[str] = set()
        for raw in names:
            name = _norm(raw)
            if name.startswith("*."):
                below.add(name[2:])
            elif name:
                exact.add(name)
        return cls(frozenset(exact), frozenset(below))

    @classmethod
    def from_config(cls, config: Config) -> Garden:
        """The configured domains plus the wallet's own hosts, which are always in."""
        return cls.of([*config.garden.domains, *wallet_hosts(config.wallet)])

    def with_names(self, names: Iterable[str]) -> Garden:
        """This garden and `names` (validated host names, `*.x` for a domain's subdomains)."""
        more = Garden.of(names)
        return Garden(self.exact | more.exact, self.below | more.below)

    def allows(self, host: str) -> bool:
        host = _norm(host)
        if host in self.exact:
            return True
        labels = host.split(".")
        return any(".".join(labels[i:]) in self.below for i in range(1, len(labels)))

    def dns_domains(self) -> list[str]:
        """The domains whose A/AAAA answers go into the garden address sets."""
        return sorted(self.exact | self.below)


# -- what one packet is --------------------------------------------------------------------
Flow = tuple[str, int, str, int]  # source, source port, destination, destination port


@dataclass(frozen=True)
class Segment:
    flow: Flow
    seq: int
    payload: bytes
    complete: bool  # False when the queue copied only part of the packet


# IPv6 extension headers a TCP segment may sit behind: type -> length of the header from its
# second byte (RFC 8200); a fragment header is refused (the kernel reassembles before the queue).
_V6_EXT = {0: lambda n: (n + 1) * 8, 43: lambda n: (n + 1) * 8, 60: lambda n: (n + 1) * 8,
           51: lambda n: (n + 2) * 4}  # fmt: skip


def dissect(packet: bytes) -> Segment | None:
    """The TCP segment inside an IPv4/IPv6 packet as the queue delivers it; None if not TCP.

    A hand parser of three fixed headers rather than scapy: scapy's IP layers alone cost the
    daemon ~32 MB of memory for what is a few struct reads. Raises ValueError on bytes that
    are not a well-formed header chain; the Inspector turns that into a refusal.
    """
    if not packet:
        return None
    version = packet[0] >> 4
    if version == 4:
        if len(packet) < 20:
            raise ValueError("truncated IPv4 header")
        ihl = (packet[0] & 0x0F) * 4
        wire = int.from_bytes(packet[2:4], "big")
        if ihl < 20 or wire < ihl or len(packet) < ihl:
            raise ValueError("bad IPv4 header length")
        if int.from_bytes(packet[6:8], "big") & 0x3FFF:
            raise ValueError("IPv4 fragment")
        if packet[9] != 6:
            return None
        src, dst = (
            socket.inet_ntop(socket.AF_INET, packet[12:16]),
            socket.inet_ntop(socket.AF_INET, packet[16:20]),
        )
        start = ihl
    elif version == 6:
        if len(packet) < 40:
            raise ValueError("truncated IPv6 header")
        wire = 40 + int.from_bytes(packet[4:6], "big")
        src = socket.inet_ntop(socket.AF_INET6, packet[8:24])
        dst = socket.inet_ntop(socket.AF_INET6, packet[24:40])
        nxt, start = packet[6], 40
        while nxt in _V6_EXT:
            if len(packet) < start + 2:
                raise ValueError("truncated IPv6 extension header")
            nxt, start = packet[start], start + _V6_EXT[nxt](packet[start + 1])
        if nxt == 44:
            raise ValueError("IPv6 fragment")
        if nxt != 6:
            return None
    else:
        return None
    if len(packet) < start + 20:
        raise ValueError("truncated TCP header")
    doff = (packet[start + 12] >> 4) * 4
    if doff < 20 or len(packet) < start + doff:
        raise ValueError("bad TCP header length")
    sport = int.from_bytes(packet[start : start + 2], "big")
    dport = int.from_bytes(packet[start + 2 : start + 4], "big")
    seq = int.from_bytes(packet[start + 4 : start + 8], "big")
    end = min(wire, len(packet))  # bytes past the IP length are Ethernet padding
    return Segment(
        flow=(src, sport, dst, dport),
        seq=seq,
        payload=bytes(packet[start + doff : end]),
        complete=len(packet) >= wire,
    )


# -- verdicts ------------------------------------------------------------------------------
class Verdict(Enum):
    ALLOW = "allow"  # accept with the allow mark: nft marks the connection allowed
    REFUSE = "refuse"  # accept unmarked: nft resets the connection and remembers it
    PASS = "pass"  # no payload (e.g. an ACK nft could not classify): accept, decide later
    DROP = "drop"  # a retransmitted copy of a segment that is already held


T = TypeVar("T")


@dataclass
class _Held(Generic[T]):
    handles: list[T]
    data: bytearray
    start: int  # sequence number of the first payload byte
    deadline: float


@dataclass
class Inspector(Generic[T]):
    """Per-connection verdicts from the first TLS bytes; memory bounded by the limits above.

    Usually the ClientHello is one segment and one packet per connection reaches us. When it
    is split and the name is not in the first segment, segments are held (no verdict yet, so
    nothing reaches the server) until the name shows up, the hello ends, or HOLD_SECONDS pass.
    """

    garden: Garden
    clock: Callable[[], float] = time.monotonic
    # Refusals are client-driven (scanners, broken apps): logged only through this limiter.
    reasons: RateLimitedLog = field(default_factory=lambda: RateLimitedLog(log, LOG_INTERVAL))
    stats: Counter[str] = field(default_factory=Counter)
    held: dict[Flow, _Held[T]] = field(default_factory=dict)

    def packet(self, packet: bytes, handle: T) -> list[tuple[T, Verdict]]:
        """Decide on one queued packet; returns verdicts for it and any packets held before."""
        self.stats["packets"] += 1
        try:
            seg = dissect(packet)
        except Exception:  # hostile bytes: refuse, never crash the queue
            seg = None
        if seg is None:
            return self._refuse([handle], "garbled", "refused a queued packet that is not TCP")
        if not seg.payload:
            self.stats["passed"] += 1
            return [(handle, Verdict.PASS)]
        held = self.held.get(seg.flow)
        if held is None:
            data = bytearray(seg.payload)
            handles = [handle]
            start = seg.seq
            deadline = None
        else:
            offset = (seg.seq - held.start) & 0xFFFFFFFF
            if offset + len(seg.payload) <= len(held.data):
                self.stats["duplicates"] += 1
                return [(handle, Verdict.DROP)]  # a retransmission of what we hold
            if offset > len(held.data):
                del self.held[seg.flow]
                return self._refuse(
                    [*held.handles, handle], "out-of-order", "refused %s: segments out of order",
                    _who(seg.flow),
                )  # fmt: skip
            held.data += seg.payload[len(held.data) - offset :]
            held.handles.append(handle)
            data, handles, start = held.data, held.handles, held.start
            del self.held[seg.flow]
            deadline = held.deadline
        return self._decide(seg, bytes(data), handles, start, deadline)

    def _decide(
        self, seg: Segment, data: bytes, handles: list[T], start: int, deadline: float | None
    ) -> list[tuple[T, Verdict]]:
        hello = parse_client_hello(data)
        who = _who(seg.flow)
        if hello.kind is Kind.SNI:
            if self.garden.allows(hello.sni):
                self.stats["allowed"] += 1
                log.debug("allowed %s to %s", who, hello.sni)
                return [(h, Verdict.ALLOW) for h in handles]
            return self._refuse(
                handles, "not-garden", "refused %s: %s is not in the walled garden",
                who, hello.sni,
            )  # fmt: skip
        if hello.kind is Kind.INCOMPLETE:
            if not seg.complete:
                reason = "the queue copied only part of the packet"
            elif len(handles) >= MAX_SEGMENTS or len(data) >= MAX_STREAM:
                reason = "too many segments"
            elif len(self.held) >= MAX_FLOWS:
                reason = f"{MAX_FLOWS} ClientHellos already held"
            else:
                when = deadline if deadline is not None else self.clock() + HOLD_SECONDS
                self.held[seg.flow] = _Held(handles, bytearray(data), start, when)
                self.stats["held"] += 1
                return []
            return self._refuse(handles, "truncated", "refused %s: ClientHello cut short (%s)",
                                who, reason)  # fmt: skip
        return self._refuse(handles, hello.kind.value, "refused %s: %s (%s)",
                            who, hello.kind.value, hello.detail)  # fmt: skip

    def expire(self) -> list[tuple[T, Verdict]]:
        """Refuse held connections whose ClientHello never completed."""
        now = self.clock()
        out: list[tuple[T, Verdict]] = []
        for flow in [f for f, held in self.held.items() if held.deadline <= now]:
            held = self.held.pop(flow)
            out += self._refuse(held.handles, "truncated",
                                "refused %s: the rest of the ClientHello never came",
                                _who(flow))  # fmt: skip
        return out

    def next_deadline(self) -> float | None:
        return min((held.deadline for held in self.held.values()), default=None)

    def release_all(self) -> list[tuple[T, Verdict]]:
        """On shutdown: refuse whatever is held, so no packet is left without a verdict."""
        handles = [h for held in self.held.values() for h in held.handles]
        self.held.clear()
        return self._refuse(handles, "shutdown", "refused held connections: shutting down")

    def _refuse(
        self, handles: list[T], kind: str, message: str, *args: object
    ) -> list[tuple[T, Verdict]]:
        """The first packet carries the refusal (nft answers it with a reset); the rest drop."""
        if not handles:
            return []
        self.stats[f"refused:{kind}"] += 1
        self.reasons.note(kind, message, *args)
        return [(handles[0], Verdict.REFUSE), *((h, Verdict.DROP) for h in handles[1:])]


def _who(flow: Flow) -> str:
    src, sport, dst, dport = flow
    return f"{src}:{sport} -> {dst}:{dport}"
