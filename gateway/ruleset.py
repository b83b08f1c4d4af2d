"""The gateway's one nftables table, rendered as a whole from config and client elements.

The text is written in the exact form `nft list table inet plaza` prints, so one golden copy
checks both the renderer (unit test) and what the kernel really holds (netns test).

Clients live in sets keyed by (address, MAC): per-packet cost is one hash lookup whatever the
number of clients, and authorizing is one element add, never a rule per client.

Walled garden (see gateway/garden.py for the why). Captive TCP/443 to a garden address is let
through for its handshake; its first packet with payload is marked MARK_QUEUE by
`garden_classify` (forward, priority mangle - 5), sent to NFQUEUE by a rule outside this table
(iptables-nft mangle FORWARD at priority mangle, or a native `queue` in table
`inet plaza_queue`, whichever the kernel has), and comes back with MARK_ALLOW or not.
`lan_forward` (priority filter) turns that into the connection's ct mark: allowed connections
then pass at kernel speed, refused ones get a TCP reset. A packet marked for the queue that
comes back without a verdict (no inspector: `bypass`) is refused: the garden fails closed.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from gateway.config import Config

TABLE = "plaza"
FAMILY = "inet"
SET4 = "auth4"
SET6 = "auth6"
GARDEN4 = "garden4"
GARDEN6 = "garden6"
GARDEN_SIZE = 65536  # addresses per family; dnsmasq adds one per A/AAAA answer
GARDEN_TIMEOUT = "1h"  # unused addresses fall out; far longer than dnsmasq's max-cache-ttl

QUEUE_TABLE = "plaza_queue"  # only with a native nft `queue`; else iptables-nft holds the rule
QUEUE_NUM = 11  # the NFQUEUE number the inspector binds

# Packet (meta) and connection (ct) mark bits; other bits are left alone for other users.
MARK_QUEUE = 0x00100000  # meta: this packet goes to the inspector
MARK_ALLOW = 0x00200000  # meta: the inspector allowed it; ct: the connection is allowed
MARK_DENY = 0x00400000  # ct: the connection was refused
MARK_DECIDED = MARK_ALLOW | MARK_DENY

Element = tuple[str, str]  # (address, mac)
GardenElement = tuple[str, int]  # (address, seconds until it expires)


def _elements(name: str, kind: str, elements: list[Element]) -> list[str]:
    lines = [f"\tset {name} {{", f"\t\ttype {kind} . ether_addr"]
    if elements:
        body = ",\n\t\t\t     ".join(f"{ip} . {mac}" for ip, mac in elements)
        lines.append(f"\t\telements = {{ {body} }}")
    lines.append("\t}")
    return lines


def _garden_set(name: str, kind: str) -> list[str]:
    return [
        f"\tset {name} {{",
        f"\t\ttype {kind}",
        f"\t\tsize {GARDEN_SIZE}",
        "\t\tflags dynamic,timeout",
        f"\t\ttimeout {GARDEN_TIMEOUT}",
        "\t}",
    ]


def _hex(mark: int) -> str:
    return f"0x{mark:08x}"


def _bare(l3_header: int) -> str:
    """(L3 length . TCP data-offset byte) pairs of segments that carry no payload.

    nft has no arithmetic, so "no payload" is spelled out: the IP length equals the
    headers' length for each possible TCP data offset (5-15 words, reserved bits zero).
    `ip length` counts the 20-byte IPv4 header, `ip6 length` not the IPv6 one. The pairs
    are exact, so a segment with even one byte of data is never taken for bare; a bare one
    that is not listed (IP options, extension headers, the AccECN bit) just goes to the queue.
    """
    pairs = [f"{l3_header + 4 * doff} . 0x{doff << 4:02x}" for doff in range(5, 16)]
    return "{ " + ", ".join(pairs) + " }"


def render(config: Config, clients: Iterable[Element] = ()) -> str:
    """Return the table as nft text; `clients` are the authorized (address, mac) pairs."""
    lan = config.lan.interface
    ordered = sorted(clients, key=lambda e: (ipaddress.ip_address(e[0]), e[1]))
    v4 = [(ip, mac) for ip, mac in ordered if ":" not in ip]
    v6 = [(ip, mac) for ip, mac in ordered if ":" in ip]
    portal_ports = sorted({config.portal.port, config.portal.intercept_port, 443})
    ports = ", ".join(str(p) for p in portal_ports)
    lines = [f"table {FAMILY} {TABLE} {{"]
    lines += _elements(SET4, "ipv4_addr", v4)
    lines.append("")
    lines += _elements(SET6, "ipv6_addr", v6)
    lines.append("")
    lines += _garden_set(GARDEN4, "ipv4_addr")
    lines.append("")
    lines += _garden_set(GARDEN6, "ipv6_addr")
    queue, allow, deny, decided = (
        _hex(MARK_QUEUE), _hex(MARK_ALLOW), _hex(MARK_DENY), _hex(MARK_DECIDED)
    )  # fmt: skip
    verdict = _hex(MARK_QUEUE | MARK_ALLOW)
    lines += [
        "",
        # Captive HTTP goes to the portal's intercept listener; authorized clients and traffic
        # for the router itself are left alone.
        "\tchain captive_dnat {",
        "\t\ttype nat hook prerouting priority dstnat; policy accept;",
        f'\t\tiifname != "{lan}" return',
        f"\t\tip saddr . ether saddr @{SET4} return",
        f"\t\tip6 saddr . ether saddr @{SET6} return",
        "\t\tfib daddr type local return",
        f"\t\ttcp dport 80 redirect to :{config.portal.intercept_port}",
        "\t}",
        "",
        # What LAN stations may ask of the router itself: DHCP, DNS, the portal, ICMP.
        # Everything else (SSH, LuCI, ...) is closed to shoppers.
        "\tchain lan_input {",
        "\t\ttype filter hook input priority filter; policy accept;",
        f'\t\tiifname != "{lan}" return',
        # A connection redirected while captive would keep reaching the portal after login
        # (HTTP keep-alive); reset it so the browser reconnects and reaches the real site.
        f"\t\ttcp dport {config.portal.intercept_port} ct status dnat "
        f"ip saddr . ether saddr @{SET4} reject with tcp reset",
        f"\t\ttcp dport {config.portal.intercept_port} ct status dnat "
        f"ip6 saddr . ether saddr @{SET6} reject with tcp reset",
        "\t\tct state established,related accept",
        "\t\tudp dport { 53, 67 } accept",
        f"\t\ttcp dport {{ 53, {ports} }} accept",
        "\t\tmeta l4proto { icmp, ipv6-icmp } accept",
        "\t\tudp dport 547 accept",
        "\t\tmeta l4proto tcp reject with tcp reset",
        "\t\treject with icmpx admin-prohibited",
        "\t}",
        "",
        # Before the queue hook: which captive packets the inspector must see. Only the first
        # segments with payload of an undecided TCP/443 connection to a garden address; the
        # handshake and bare ACKs are left for lan_forward.
        "\tchain garden_classify {",
        "\t\ttype filter hook forward priority mangle - 5; policy accept;",
        f'\t\tiifname != "{lan}" return',
        f"\t\tip saddr . ether saddr @{SET4} return",
        f"\t\tip6 saddr . ether saddr @{SET6} return",
        f"\t\tct mark & {decided} != 0x00000000 return",
        f"\t\ttcp dport 443 ip daddr @{GARDEN4} ip length . @th,96,8 != {_bare(20)} "
        f"meta mark set meta mark | {queue}",
        f"\t\ttcp dport 443 ip6 daddr @{GARDEN6} ip6 length . @th,96,8 != {_bare(0)} "
        f"meta mark set meta mark | {queue}",
        "\t}",
        "",
        # Forwarding from the LAN: authorized (address, MAC) pairs pass at kernel speed; captive
        # TCP (HTTPS included) gets a reset at once so browsers fail fast, except TLS to the
        # walled garden that the inspector allowed; NTP to the garden passes; the rest
        # (QUIC included, so browsers fall back to TCP) is refused with ICMP.
        "\tchain lan_forward {",
        "\t\ttype filter hook forward priority filter; policy accept;",
        f'\t\tiifname != "{lan}" return',
        f"\t\tip saddr . ether saddr @{SET4} accept",
        f"\t\tip6 saddr . ether saddr @{SET6} accept",
        f"\t\tct mark & {allow} == {allow} accept",
        f"\t\tmeta l4proto tcp ct mark & {deny} == {deny} reject with tcp reset",
        # Allowed by the inspector: remember it on the connection, and keep the address in
        # the garden while it is in use (dnsmasq's re-adds do not extend an element's timeout).
        f"\t\tmeta mark & {verdict} == {verdict} update @{GARDEN4} {{ ip daddr }} "
        f"ct mark set ct mark | {allow} accept",
        f"\t\tmeta mark & {verdict} == {verdict} update @{GARDEN6} {{ ip6 daddr }} "
        f"ct mark set ct mark | {allow} accept",
        f"\t\tmeta l4proto tcp meta mark & {queue} == {queue} ct mark set ct mark | {deny} "
        "reject with tcp reset",
        f"\t\ttcp dport 443 ip daddr @{GARDEN4} accept",
        f"\t\ttcp dport 443 ip6 daddr @{GARDEN6} accept",
        f"\t\tudp dport 123 ip daddr @{GARDEN4} accept",
        f"\t\tudp dport 123 ip6 daddr @{GARDEN6} accept",
        "\t\tmeta l4proto tcp reject with tcp reset",
        "\t\treject with icmpx admin-prohibited",
        "\t}",
        "}",
    ]
    return "\n".join(lines) + "\n"


def transaction(
    config: Config, clients: Iterable[Element] = (), garden: Iterable[GardenElement] = ()
) -> str:
    """One atomic nft transaction that replaces the whole table (created first if missing).

    `garden` carries the garden addresses over with their remaining lifetime: they came from
    DNS answers that dnsmasq may now serve from its cache without adding them again.
    """
    text = f"table {FAMILY} {TABLE}\ndelete table {FAMILY} {TABLE}\n" + render(config, clients)
    keep = [(ip, left) for ip, left in garden if left >= 1]
    for name, v6 in ((GARDEN4, False), (GARDEN6, True)):
        items = [f"{ip} expires {left}s" for ip, left in keep if (":" in ip) == v6]
        if items:
            text += f"add element {FAMILY} {TABLE} {name} {{ {', '.join(items)} }}\n"
    return text


def garden_elements(listing_json: str) -> list[GardenElement]:
    """(address, seconds left) of a `list set` JSON answer, for `transaction(garden=...)`."""
    import json

    found: list[GardenElement] = []
    for item in json.loads(listing_json).get("nftables", []):
        for elem in item.get("set", {}).get("elem", []):
            if isinstance(elem, dict) and "elem" in elem:
                found.append((str(elem["elem"]["val"]), int(elem["elem"].get("expires", 0))))
    return found


def queue_table(num: int = QUEUE_NUM) -> str:
    """The queue hook for kernels with a native nft `queue`: its own table, so that the
    `inet plaza` table (and its golden copy) is the same whichever hook the kernel takes.
    `bypass`: with no inspector listening, packets go on unjudged and lan_forward refuses them.
    """
    mark = _hex(MARK_QUEUE)
    return (
        f"table {FAMILY} {QUEUE_TABLE} {{\n"
        "\tchain garden_queue {\n"
        "\t\ttype filter hook forward priority mangle; policy accept;\n"
        f"\t\tmeta mark & {mark} == {mark} queue num {num} bypass\n"
        "\t}\n"
        "}\n"
    )


def element_command(verb: str, clients: Iterable[Element]) -> str:
    """`add`/`delete` element commands for both families, in one transaction."""
    v4 = [f"{ip} . {mac}" for ip, mac in clients if ":" not in ip]
    v6 = [f"{ip} . {mac}" for ip, mac in clients if ":" in ip]
    cmds = []
    if v4:
        cmds.append(f"{verb} element {FAMILY} {TABLE} {SET4} {{ {', '.join(v4)} }}")
    if v6:
        cmds.append(f"{verb} element {FAMILY} {TABLE} {SET6} {{ {', '.join(v6)} }}")
    return "\n".join(cmds)
