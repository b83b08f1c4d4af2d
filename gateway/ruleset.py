"""The gateway's one nftables table, rendered as a whole from config and client elements.

The text is written in the exact form `nft list table inet plaza` prints, so one golden copy
checks both the renderer (unit test) and what the kernel really holds (netns test).

Clients live in sets keyed by (address, MAC): per-packet cost is one hash lookup whatever the
number of clients, and authorizing is one element add, never a rule per client.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from gateway.config import Config

TABLE = "plaza"
FAMILY = "inet"
SET4 = "auth4"
SET6 = "auth6"

Element = tuple[str, str]  # (address, mac)


def _elements(name: str, kind: str, elements: list[Element]) -> list[str]:
    lines = [f"\tset {name} {{", f"\t\ttype {kind} . ether_addr"]
    if elements:
        body = ",\n\t\t\t     ".join(f"{ip} . {mac}" for ip, mac in elements)
        lines.append(f"\t\telements = {{ {body} }}")
    lines.append("\t}")
    return lines


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
        # Forwarding from the LAN: authorized (address, MAC) pairs pass at kernel speed; captive
        # TCP (HTTPS included) gets a reset at once so browsers fail fast; the rest is refused.
        "\tchain lan_forward {",
        "\t\ttype filter hook forward priority filter; policy accept;",
        f'\t\tiifname != "{lan}" return',
        f"\t\tip saddr . ether saddr @{SET4} accept",
        f"\t\tip6 saddr . ether saddr @{SET6} accept",
        "\t\tmeta l4proto tcp reject with tcp reset",
        "\t\treject with icmpx admin-prohibited",
        "\t}",
        "}",
    ]
    return "\n".join(lines) + "\n"


def transaction(config: Config, clients: Iterable[Element] = ()) -> str:
    """One atomic nft transaction that replaces the whole table (created first if missing)."""
    return f"table {FAMILY} {TABLE}\ndelete table {FAMILY} {TABLE}\n" + render(config, clients)


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
