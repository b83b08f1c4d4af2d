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

import hashlib
import logging
import subprocess
from collections.abc import Callable

from gateway.dataplane.firewall import NftError
from gateway.dataplane.netlink import COUNTER_PACKETS, NFPROTO_BRIDGE, NfNetlink

log = logging.getLogger("plaza.guard")

FAMILY = "bridge"
TABLE = "plaza_guard"
COUNTERS = ("rogue_dhcp", "rogue_ra")
BODY = (
    "\tcounter rogue_dhcp {\n\t}\n"
    "\tcounter rogue_ra {\n\t}\n"
    "\tchain forward {\n"
    "\t\ttype filter hook forward priority filter; policy accept;\n"
    '\t\tudp sport { 67, 547 } counter name "rogue_dhcp" drop\n'
    '\t\ticmpv6 type { nd-router-advert, nd-redirect } counter name "rogue_ra" drop\n'
    "\t}\n"
)
COMMENT = "plaza-guard " + hashlib.sha256(BODY.encode()).hexdigest()[:12]


def render() -> str:
    return f'table {FAMILY} {TABLE} {{\n\tcomment "{COMMENT}"\n{BODY}}}\n'


def run_nft(script: str) -> None:
    """`nft -f -` in a child process. Not libnftables in the daemon: loading a table makes
    libnftables fetch every table's sets and objects into its cache first, which at 10,000
    clients took the daemon's resident memory from 47 to 74 MB for a moment."""
    done = subprocess.run(
        ["nft", "-f", "-"], input=script, capture_output=True, text=True, timeout=30, check=False
    )
    if done.returncode != 0:
        raise NftError(f"nft -f: {done.stderr.strip()[:300]}")


class Guard:
    """Loads the table (atomically replacing any old copy) and keeps it there.

    Loading runs `nft -f` (rare: at start when the table is missing or from an older
    version, or after someone removed it); the checks every few seconds and the metrics'
    counter reads go over netlink and ask for this table's own objects only. Through
    libnftables, `list counters table bridge ...` fills its cache with every counter of every
    table first: at 10,000 clients that was ~170 ms on the daemon's thread per metrics scrape
    and ~45 MB kept in the context. A table already loaded by an earlier run of the daemon,
    same version (the comment's fingerprint), is kept, and so are its counters.
    `committed` is told of each commit the guard makes, so the reconciler can count it
    among the daemon's own (gateway/daemon.py)."""

    def __init__(
        self,
        run: Callable[[str], None] = run_nft,
        nl: NfNetlink | None = None,
        committed: Callable[[], None] | None = None,
    ) -> None:
        self.run = run
        self.nl = nl
        self.committed = committed
        self.repairs = 0

    def _netlink(self) -> NfNetlink:
        if self.nl is None:
            self.nl = NfNetlink()
        return self.nl

    def start(self) -> bool:
        """Load the table unless this version of it is there already; True if loaded."""
        try:
            if self._netlink().table_comment(TABLE, NFPROTO_BRIDGE) == COMMENT:
                return False
        except NftError:
            pass  # no such table
        self.install()
        return True

    def install(self) -> None:
        where = f"{FAMILY} {TABLE}"
        self.run(f"table {where}\ndelete table {where}\n{render()}")
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
