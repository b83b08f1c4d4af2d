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
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from gateway.gateway import Gateway

log = logging.getLogger("plaza.neighbours")

NUD_REACHABLE, NUD_STALE, NUD_DELAY, NUD_PROBE, NUD_FAILED, NUD_PERMANENT = (
    0x02, 0x04, 0x08, 0x10, 0x20, 0x80,
)  # fmt: skip
SEEN = NUD_REACHABLE | NUD_STALE | NUD_DELAY | NUD_PROBE | NUD_PERMANENT
ANSWERED = NUD_REACHABLE | NUD_STALE | NUD_PERMANENT  # the station itself spoke
CONFIRM_SECONDS = 15.0

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
        self.confirming = {
            a: v for a, v in self.confirming.items() if now - v[1] <= CONFIRM_SECONDS
        }
        self.confirming[ip] = (holder, now)
        self.reprobe(ip, holder)


async def watch(gateway: Gateway, ifindex: int, interface: str) -> None:
    """Follow the kernel's neighbour table on the LAN for the daemon's lifetime."""
    from pyroute2 import AsyncIPRoute
    from pyroute2.netlink.rtnl import RTMGRP_NEIGH

    loop = asyncio.get_running_loop()
    pending: set[asyncio.Task[Any]] = set()

    def reprobe(ip: str, mac: str) -> None:
        task = loop.create_task(_reprobe(interface, ip, mac))
        pending.add(task)
        task.add_done_callback(pending.discard)

    neighbours = Neighbours(gateway, ifindex, reprobe)

    def feed(msg: Any) -> None:
        neighbours.message(
            msg["ifindex"],
            msg["state"],
            msg.get_attr("NDA_DST"),
            msg.get_attr("NDA_LLADDR"),
            msg.get_attr("NDA_PROBES") or 0,
        )

    async with AsyncIPRoute() as ipr:
        await ipr.bind(groups=RTMGRP_NEIGH)
        async for msg in await ipr.neigh("dump"):
            feed(msg)
        while True:  # get() ends after each batch the socket delivered
            async for msg in ipr.get():
                if msg.get("event") == "RTM_NEWNEIGH":
                    feed(msg)


async def _reprobe(interface: str, ip: str, mac: str) -> None:
    """`ip neigh replace ADDRESS lladdr MAC nud probe`: the kernel probes MAC unicast."""
    proc = await asyncio.create_subprocess_exec(
        "ip", "neigh", "replace", ip, "lladdr", mac, "nud", "probe", "dev", interface,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await proc.communicate()
    if proc.returncode:
        log.warning("cannot re-probe %s at %s: %s", mac, ip, err.decode().strip())
