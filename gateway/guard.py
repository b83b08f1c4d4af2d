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

import json
import logging

log = logging.getLogger("plaza.guard")

FAMILY = "bridge"
TABLE = "plaza_guard"


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
    """Loads the table (atomically replacing any old copy) and keeps it there."""

    def __init__(self, nft) -> None:  # nft: gateway.nft.Libnftables
        self.nft = nft
        self.repairs = 0

    def install(self) -> None:
        where = f"{FAMILY} {TABLE}"
        self.nft.run(f"table {where}\ndelete table {where}\n{render()}")

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
            self.nft.run(f"list table {FAMILY} {TABLE}", terse=True)
        except Exception:
            return False
        return True

    def drops(self) -> dict[str, int]:
        """Packets dropped so far, by kind: {"rogue_dhcp": n, "rogue_ra": n}."""
        out = self.nft.run(f"list counters table {FAMILY} {TABLE}", json_output=True)
        found = {}
        for item in json.loads(out).get("nftables", []):
            counter = item.get("counter")
            if counter:
                found[counter["name"]] = int(counter["packets"])
        return found
