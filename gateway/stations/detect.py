"""Station detection from the first packet of an unseen (address, MAC) pair.

`lan_antispoof` marks every packet of an (address, MAC) pair missing from the `seen` sets,
and the hook in gateway/garden/queue.py queues it to DETECT_QUEUE_NUM. The daemon learns the
station from the first one *before* giving the verdict, then puts the pair in the `seen` set
(for ruleset.DETECT_TIMEOUT): so when that station is authorized (a new IPv6 temporary
address, a phone that kept its session across a restart) its first packets, the whole burst
a browser opens at once, already find it in the kernel's allowed sets. (Were the kernel to
add the pair itself on the first packet, the rest of the burst would overtake the daemon and
be refused.) When a station leaves, its pairs are taken out again (`SeenSets.forget`), so its
return is noticed from its first packet.

This is the earliest of the three sources (dnsmasq writes its lease file after the ACK; a
neighbour entry appears only once the router talks back) and the only one for IPv6 SLAAC
addresses the router has not needed yet. Its claims are as weak as a neighbour's: they
introduce stations and addresses but never take an address from another station.

A MAC flood is bounded three times over: the kernel set's size, the queue's length (beyond
it the kernel passes packets on unlearned: the queue fails open, gateway/dataplane/nfqueue.py) and
`MAX_PER_SECOND` new stations learned per second; the rest are passed unlearned (but
remembered as seen, so they stop coming) and counted, logged once.

A hung daemon (alive but stopped) holds at most QUEUE_MAXLEN packets here; every other packet
of an unseen pair fails open into the ruleset, where a captive station's packet meets the
captive rules like any other. Authorized stations' known (address, MAC) pairs never come here
(`lan_antispoof` lets them by before the mark), so a hung daemon cannot hold their traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections.abc import Callable
from typing import Any

from gateway.dataplane import ruleset
from gateway.dataplane.nfqueue import LoopQueue
from plaza.logs import RateLimitedLog

log = logging.getLogger("plaza.detect")

# Packets waiting for the daemon at once. Small on purpose: learning takes ~1 ms, so a busy
# moment fills it only with a burst of new stations, and what overflows is not lost but passed
# unlearned (fail-open); while the daemon hangs, only this many packets wait for it.
QUEUE_MAXLEN = 64
COPY_RANGE = 40  # an IPv6 header is all it needs
MAX_PER_SECOND = 500

Learn = Callable[[str, str], None]  # (mac, address)


class SeenSets:
    """The kernel's `seen4`/`seen6` sets, written over nf_tables netlink (one small commit
    per change: a station's arrival or departure, not per packet)."""

    def __init__(self) -> None:
        from gateway.dataplane.netlink import NfNetlink

        self.nl = NfNetlink()

    def remember(self, address: str, mac: str) -> None:
        self._commit("add", [(address, mac)])

    def forget(self, pairs: list[tuple[str, str]]) -> None:
        """Take pairs out; a pair that is not there (timed out) is no error."""
        for pair in pairs:  # one transaction each: deleting a missing element fails its batch
            with contextlib.suppress(Exception):
                self._commit("delete", [pair])

    def _commit(self, verb: str, pairs: list[tuple[str, str]]) -> None:
        from gateway.dataplane.messages import elements_messages

        for name in (ruleset.DETECT4, ruleset.DETECT6):
            items = [
                (f"{a} . {m}", None) for a, m in pairs if (":" in a) == (name == ruleset.DETECT6)
            ]
            if items:
                self.nl.commit(elements_messages(verb, name, items))


def source(payload: bytes) -> str | None:
    """The unicast source address of an IPv4 or IPv6 packet, or None when it is not one."""
    address: ipaddress.IPv4Address | ipaddress.IPv6Address
    if len(payload) >= 20 and payload[0] >> 4 == 4:
        address = ipaddress.IPv4Address(payload[12:16])
    elif len(payload) >= 40 and payload[0] >> 4 == 6:
        address = ipaddress.IPv6Address(payload[8:24])
    else:
        return None
    if address.is_unspecified or address.is_multicast or address.is_loopback:
        return None
    return str(address)


def mac_of(hw: bytes | None) -> str | None:
    if not hw or len(hw) < 6:
        return None
    return ":".join(f"{b:02x}" for b in hw[:6])


class Detector:
    """Turns queued packets into (mac, address) sightings; always accepts the packet."""

    def __init__(
        self,
        learn: Learn,
        clock: Callable[[], float] = time.monotonic,
        seen: Callable[[str, str], None] | None = None,
    ) -> None:
        self.learn = learn
        self.seen = seen  # (address, mac): stop queuing this pair (SeenSets.remember)
        self.clock = clock
        self.reasons = RateLimitedLog(log)
        self.stats = {"learned": 0, "malformed": 0, "over_rate": 0, "errors": 0}
        self._window = 0.0
        self._count = 0

    def packet(self, payload: bytes, hw: bytes | None) -> None:
        ip, mac = source(payload), mac_of(hw)
        if ip is None or mac is None:
            self.stats["malformed"] += 1
            self.reasons.note("malformed", "detector: packet without IP source or MAC ignored")
            return
        now = self.clock()
        if now - self._window >= 1.0:
            self._window, self._count = now, 0
        self._count += 1
        if self._count > MAX_PER_SECOND:
            self.stats["over_rate"] += 1
            self._seen(ip, mac)
            self.reasons.note(
                "over-rate",
                "detector: more than %d new stations a second (MAC flood?); passing the rest "
                "unlearned",
                MAX_PER_SECOND,
            )
            return
        try:
            self.learn(mac, ip)
            self.stats["learned"] += 1
        except Exception as exc:  # a bad sighting must never stop the queue
            self.stats["errors"] += 1
            self.reasons.note("learn-error", "detector: could not learn %s %s: %s", mac, ip, exc)
        self._seen(ip, mac)

    def _seen(self, ip: str, mac: str) -> None:
        if self.seen is None:
            return
        try:
            self.seen(ip, mac)
        except Exception as exc:  # the set is full (a flood): the pair keeps being queued
            self.reasons.note("seen-error", "detector: cannot mark %s %s as seen: %s", mac, ip, exc)


class DetectQueue(LoopQueue):
    """Binds the detection queue on the daemon's loop: learn, then accept."""

    def __init__(self, detector: Detector, num: int = ruleset.DETECT_QUEUE_NUM) -> None:
        self.detector = detector
        super().__init__(num, QUEUE_MAXLEN, COPY_RANGE, detector.reasons)

    def on_packet(self, packet: Any) -> None:
        try:
            self.detector.packet(packet.get_payload(), packet.get_hw())
        finally:
            try:
                packet.accept()
            except (OSError, RuntimeError) as exc:
                self.detector.reasons.note("verdict-error", "detect verdict failed: %s", exc)


def start(
    learn: Learn, loop: asyncio.AbstractEventLoop, seen: SeenSets | None = None
) -> DetectQueue | None:
    """Bind the detection queue; without it stations are still learned from DHCP and the
    neighbour table (the hook's `bypass` lets packets through unjudged)."""
    try:
        queue = DetectQueue(Detector(learn, seen=seen.remember if seen else None))
        queue.attach(loop)
    except Exception as exc:
        log.error("station detector not running (DHCP and neighbours still used): %s", exc)
        return None
    log.info("station detector on queue %d", ruleset.DETECT_QUEUE_NUM)
    return queue
