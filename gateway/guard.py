"""Layer-2 guard on the LAN bridge: stations may not act as the network's servers.

On a venue's Wi-Fi every phone is a port of the router's LAN bridge (on OpenWrt each SSID's
interface is a member of br-lan). A phone, by mistake (tethering software) or on purpose,
can answer DHCP, send router advertisements or ICMPv6 redirects to the other phones, and
would then be their gateway: their traffic would bypass the portal, the policy and the
accounting. The `inet plaza` table cannot see that traffic (it never reaches the router's IP
layer), so a small `bridge` table drops it between ports:

- DHCPv4 and DHCPv6 server messages (UDP source port 67 / 547) from a station,
- ICMPv6 router advertisements and redirects from a station (RA guard, RFC 6105).

Frames the router itself sends leave through the bridge's output path, not forward, so the
router's own DHCP and RAs are untouched. Each drop is counted (the counter is read into the
metrics), never logged per packet. Enable client isolation on the access points as well;
this table is the router's own line of defence either way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from gateway.nft import COUNTER_PACKETS, NFPROTO_BRIDGE, NfNetlink

log = logging.getLogger("plaza.guard")

FAMILY = "bridge"
TABLE = "plaza_guard"
COUNTERS = ("rogue_dhcp", "rogue_ra")


def render() -> str:
    return (
        f"table {FAMILY} {TABLE} {{\n"
        "\tcounter rogue_dhcp {\n\t}\n"
        "\tcounter rogue_ra {\n\t}\n"
        "\tchain forward {\n"
        "\t\ttype filter hook forward priority filter; policy accept;\n"
        '\t\tudp sport { 67, 547 } counter name "rogue_dhcp" drop\n'
        '\t\ticmpv6 type { nd-router-advert, nd-redirect } counter name "rogue_ra" drop\n'
        "\t}\n"
        "}\n"
    )


class Guard:
    """Loads the table (atomically replacing any old copy) and keeps it there.

    Loading goes through libnftables (rare: at start, or after someone removed the table);
    the checks every few seconds and the metrics' counter reads go over netlink and ask for
    this table's own objects only. Through libnftables, `list counters table bridge ...`
    fills its cache with every counter of every table first: at 10,000 clients that was
    ~170 ms on the daemon's thread per metrics scrape and ~45 MB kept in the context.
    `committed` is told of each commit the guard makes, so the reconciler can count it
    among the daemon's own (gateway/daemon.py)."""

    def __init__(
        self,
        nft,  # gateway.nft.Libnftables
        nl: NfNetlink | None = None,
        committed: Callable[[], None] | None = None,
    ) -> None:
        self.nft = nft
        self.nl = nl
        self.committed = committed
        self.repairs = 0

    def _netlink(self) -> NfNetlink:
        if self.nl is None:
            self.nl = NfNetlink()
        return self.nl

    def install(self) -> None:
        where = f"{FAMILY} {TABLE}"
        try:
            self.nft.run(f"table {where}\ndelete table {where}\n{render()}")
        finally:
            release = getattr(self.nft, "release", None)
            if release is not None:
                release()
        if self.committed is not None:
            self.committed()

    def ensure(self) -> bool:
        """Put the table back if someone removed it; True if it had to."""
        if self.present():
            return False
        log.warning("the LAN guard table was missing; loading it again")
        self.install()
        self.repairs += 1
        return True

    def present(self) -> bool:
        try:
            return self._netlink().has_table(TABLE, NFPROTO_BRIDGE)
        except Exception:
            return False

    def drops(self) -> dict[str, int]:
        """Packets dropped so far, by kind: {"rogue_dhcp": n, "rogue_ra": n}."""
        found = {}
        for name in COUNTERS:
            obj = self._netlink().object("counter", name, TABLE, NFPROTO_BRIDGE)
            if obj is not None:
                found[name] = obj[2].get(COUNTER_PACKETS, 0)
        return found
