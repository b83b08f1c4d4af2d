"""The gateway's one nftables table, rendered as a whole from config and client elements.

The text is written in the exact form `nft list table inet plaza` prints, so one golden copy
checks both the renderer (unit test) and what the kernel really holds (netns test).

Clients live in sets keyed by (address, MAC): per-packet cost is one hash lookup whatever the
number of clients, and authorizing is one element add, never a rule per client.

Walled garden (see gateway/garden/inspector.py for the why). Captive TCP/443 to a garden address is
let through for its handshake; its packets with payload are marked MARK_QUEUE by `garden_classify`
(jumped to from `lan_antispoof`, prerouting), and those of a connection not yet decided are sent to
NFQUEUE by a rule outside this table (iptables-nft mangle PREROUTING at priority mangle, or a native
`queue` in table `inet plaza_queue`, whichever the kernel has; the rule checks the ct mark, which
does not exist yet at priority raw). They come back with MARK_ALLOW or not. `lan_forward` turns that
into the connection's ct mark: allowed connections then pass at kernel speed, refused ones get a TCP
reset. A packet marked for the queue that comes back without a verdict (no inspector: `bypass`; a
hung one: the queue fails open when full, gateway/dataplane/nfqueue.py) is refused: the garden fails
closed. A station's first packet that skips the detection queue the same way meets the captive
rules below like any other.

Base chains, not rules, are what a forwarded packet pays for (docs/decisions.md, "forwarding
against a plain router" and "three base chains"): each one is a hook call, a chain entry and its
own first rules. An authorized station's packet, either way, meets three: `lan_antispoof`
(prerouting, raw), the queue hook's (prerouting, mangle; iptables-nft's one rule per queue) and
`lan_forward` (forward, filter + 10). Nothing is hooked on forward before `lan_forward`: the
garden's classification rides in `lan_antispoof` and its queue on prerouting, so no iptables-nft
chain is hooked on forward at all. `captive_dnat` is a nat chain: the kernel walks nat chains only
for a connection's first packet.

Per-client policy and accounting (see gateway/stations/policy.py and
gateway/stations/accounting.py). Every session owns named objects: counters `up_<session>` and
`down_<session>`, quotas `qup_`/`qdown_`/`qtotal_<session>` and limits `rup_`/`rdown_<session>` when
its policy has them. Maps keyed like the clients point at them: upstream by (address . MAC), as
`auth4` is, and downstream by the address alone (in the forward hook a packet to the LAN has no
client MAC yet; the session table gives each address one owner). An IPv6 client with several
addresses adds one element per address, all naming the same objects, so its usage adds up.
`lan_forward` (forward, priority filter + 10: after any other filter, fw4's or iptables', has
judged the packet; nothing on a router's forward hook comes later) sends an authorized client's
traffic, after the captive rules for the rest, to one chain per direction and family, through, in
order:
its rate limit (`limit ... over`: drop), its quotas (`quota ... over`: drop, so an exhausted client
stops at once, in the kernel), and its counter: what is counted is what was forwarded. No element,
no limit: an unlimited client costs one failed hash lookup per map, and a login is one transaction
of element and object adds. Policing with `limit` was measured against iperf3 in the lab at 2-50
Mbit/s to hold TCP within about 10% of the rate with a 100 ms bucket (gateway/stations/policy.py:
BURST_SECONDS); shaping with HTB would be smoother on real links but needs a class per client on two
interfaces.

The grants themselves (a session's elements and objects, the diff between what the kernel holds
and what it should, the nft commands between the two) are in gateway/dataplane/grants.py; this
module is the table's text.

The table's comment holds a fingerprint of its structure: a daemon that starts and finds the
same structure leaves it (and its counters, mid-stream) alone and only reconciles elements.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Iterable, Mapping

from gateway.config import Config
from gateway.dataplane.grants import (
    FAMILY,
    POLICY_MAPS,
    SET4,
    SET6,
    TABLE,
    Element,
    Grant,
    KernelState,
    Start,
    change_commands,
    desired,
    diff,
)

GARDEN4 = "garden4"
GARDEN6 = "garden6"
# Plain-HTTP garden (OCSP/CRL responders, RFC 8908 section 2): TCP/80 to these addresses is
# neither redirected nor refused. Kept apart from the TLS garden, whose names are checked by
# SNI: plain HTTP has no name the kernel could check, so list only dedicated hosts here.
GARDEN_HTTP4 = "garden_http4"
GARDEN_HTTP6 = "garden_http6"
GARDEN_SETS = ((GARDEN4, "ipv4_addr"), (GARDEN6, "ipv6_addr"),
               (GARDEN_HTTP4, "ipv4_addr"), (GARDEN_HTTP6, "ipv6_addr"))  # fmt: skip
GARDEN_SIZE = 65536  # addresses per family; dnsmasq adds one per A/AAAA answer
GARDEN_TIMEOUT = "1h"  # unused addresses fall out; far longer than dnsmasq's max-cache-ttl

QUEUE_TABLE = "plaza_queue"  # only with a native nft `queue`; else iptables-nft holds the rule
QUEUE_NUM = 11  # the NFQUEUE number the inspector binds
# Station detection: packets of an (address, MAC) pair the daemon has not marked seen (for
# DETECT_TIMEOUT) go to it (queue DETECT_QUEUE_NUM) before anything else judges them, so a
# new phone or a new IPv6 address is known, and let through if its station is authorized,
# from its first packet (gateway/stations/detect.py).
DETECT4 = "seen4"
DETECT6 = "seen6"
DETECT_QUEUE_NUM = 12
DETECT_TIMEOUT = "5m"
DETECT_SIZE = 65536

# Packet (meta) and connection (ct) mark bits; other bits are left alone for other users.
MARK_QUEUE = 0x00100000  # meta: this packet goes to the inspector
MARK_ALLOW = 0x00200000  # meta: the inspector allowed it; ct: the connection is allowed
MARK_DENY = 0x00400000  # ct: the connection was refused
MARK_DETECT = 0x00800000  # meta: first packet of an unseen (address, MAC): to the detector
MARK_DECIDED = MARK_ALLOW | MARK_DENY

GardenElement = tuple[str, int]  # (address, seconds until it expires)

FINGERPRINT_RE = re.compile(r'^\tcomment "plaza ([0-9a-f]{12})"$', re.M)


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


def _detect_set(name: str, kind: str) -> list[str]:
    return [
        f"\tset {name} {{",
        f"\t\ttype {kind} . ether_addr",
        f"\t\tsize {DETECT_SIZE}",
        f"\t\ttimeout {DETECT_TIMEOUT}",  # implies `flags timeout` (nft lists it so)
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


def _policy_maps(family: str) -> list[str]:
    lines: list[str] = []
    kind = "ipv4_addr" if family == "4" else "ipv6_addr"
    for stem, (obj, direction) in POLICY_MAPS.items():
        key = f"{kind} . ether_addr" if direction == "up" else kind
        lines += ["", f"\tmap {stem}{family} {{", f"\t\ttype {key} : {obj}", "\t}"]
    return lines


def _policy_chains() -> list[str]:
    """The chains `lan_forward` sends an authorized client's packets to: one per direction and
    family, each a rate limit, then quotas, then the counter. Split by family so a packet walks
    only its own family's rules (docs/decisions.md, "forwarding against a plain router")."""
    lines: list[str] = []
    for direction in ("up", "down"):
        for family, proto in (("4", "ip"), ("6", "ip6")):
            lines += ["", f"\tchain client_{direction}{family} {{"]
            for stem, (obj, way) in POLICY_MAPS.items():
                if way != direction:
                    continue
                verdict = "" if obj == "counter" else " drop"
                key = f"{proto} saddr . ether saddr" if way == "up" else f"{proto} daddr"
                lines.append(f"\t\t{obj} name {key} map @{stem}{family}{verdict}")
            lines.append("\t}")
    return lines


def render(config: Config, clients: Iterable[Element] = ()) -> str:
    """Return the table as nft text; `clients` are the authorized (address, mac) pairs (their
    policy maps and objects are added by `grant_commands`)."""
    body = _render(config, clients)
    digest = hashlib.sha256(_render(config, ()).encode()).hexdigest()[:12]
    head, rest = body.split("\n", 1)
    return f'{head}\n\tcomment "plaza {digest}"\n{rest}'


def fingerprint(listing: str) -> str | None:
    """The structure fingerprint of a `list table` text answer (None: not ours, or older)."""
    match = FINGERPRINT_RE.search(listing)
    return match.group(1) if match else None


def _render(config: Config, clients: Iterable[Element]) -> str:
    lan = config.lan.interface
    ordered = sorted(clients, key=lambda e: (ipaddress.ip_address(e[0]), e[1]))
    v4 = [(ip, mac) for ip, mac in ordered if ":" not in ip]
    v6 = [(ip, mac) for ip, mac in ordered if ":" in ip]
    portal = config.portal
    ports = ", ".join(map(str, sorted({portal.port, portal.intercept_port, portal.https_port})))
    lines = [f"table {FAMILY} {TABLE} {{"]
    lines += _elements(SET4, "ipv4_addr", v4)
    lines.append("")
    lines += _elements(SET6, "ipv6_addr", v6)
    lines.append("")
    for name, kind in GARDEN_SETS:
        lines += _garden_set(name, kind)
        lines.append("")
    lines += [*_detect_set(DETECT4, "ipv4_addr"), "", *_detect_set(DETECT6, "ipv6_addr")]
    lines += _policy_maps("4")
    lines += _policy_maps("6")
    queue, allow, deny = _hex(MARK_QUEUE), _hex(MARK_ALLOW), _hex(MARK_DENY)
    verdict = _hex(MARK_QUEUE | MARK_ALLOW)
    detect = _hex(MARK_DETECT)
    down = "ipv4 : jump client_down4, ipv6 : jump client_down6"
    lines += [
        "",
        # Reverse-path check on the LAN: a source address that would not be routed back out
        # of the LAN (a forged internet address) is dropped before anything answers it, so a
        # captive phone cannot use the router's ICMP errors or the portal's SYN-ACKs as a
        # channel to the internet. DHCP DISCOVER (0.0.0.0) and IPv6 DAD (::) come before an
        # address exists.
        "\tchain lan_antispoof {",
        "\t\ttype filter hook prerouting priority raw; policy accept;",
        f'\t\tiifname != "{lan}" return',
        # An authorized station's known pair needs no detecting: it must not wait on the
        # daemon (a hung daemon would hold its packets in the queue, gateway/stations/detect.py).
        # Nor a route lookup: its address is a LAN address the daemon granted, so the check
        # below could only pass, and this is the bulk of all forwarded traffic (docs/decisions.md,
        # "forwarding against a plain router").
        f"\t\tip saddr . ether saddr @{SET4} return",
        f"\t\tip6 saddr . ether saddr @{SET6} return",
        "\t\tip saddr 0.0.0.0 udp dport 67 return",
        "\t\tip6 saddr :: return",
        "\t\tfib saddr . iif oif missing drop",
        "\t\tip6 saddr fe80::/10 return",
        # not seen yet: to the detector, which learns the pair and adds it to the set
        f"\t\tip saddr . ether saddr != @{DETECT4} meta mark set meta mark | {detect}",
        f"\t\tip6 saddr . ether saddr != @{DETECT6} meta mark set meta mark | {detect}",
        # captive TLS to the garden: here rather than in a forward chain of its own, so that
        # the queue hook can sit on prerouting and an authorized packet meets no extra base
        # chain on forward (see the module docstring)
        "\t\tjump garden_classify",
        "\t}",
        "",
        # Captive HTTP goes to the portal's intercept listener; authorized clients and traffic
        # for the router itself are left alone.
        "\tchain captive_dnat {",
        "\t\ttype nat hook prerouting priority dstnat; policy accept;",
        f'\t\tiifname != "{lan}" return',
        f"\t\tip saddr . ether saddr @{SET4} return",
        f"\t\tip6 saddr . ether saddr @{SET6} return",
        "\t\tfib daddr type local return",
        f"\t\ttcp dport 80 ip daddr @{GARDEN_HTTP4} return",
        f"\t\ttcp dport 80 ip6 daddr @{GARDEN_HTTP6} return",
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
        # The intercept listener is for redirected captive HTTP only: a direct connection to
        # it (a second copy of port 80 a port scan would find) is refused.
        f"\t\ttcp dport {config.portal.intercept_port} ct status ! dnat reject with tcp reset",
        "\t\tudp dport 53 accept",
        # DHCP per family: v4's server port 67, v6's 547. The other family's port is dropped
        # without an answer, not passed to a closed socket that says "port unreachable".
        "\t\tmeta nfproto ipv4 udp dport 67 accept",
        "\t\tmeta nfproto ipv6 udp dport 547 accept",
        "\t\tudp dport { 67, 547 } drop",
        f"\t\ttcp dport {{ 53, {ports} }} accept",
        "\t\tmeta l4proto { icmp, ipv6-icmp } accept",
        "\t\tmeta l4proto tcp reject with tcp reset",
        "\t\treject with icmpx admin-prohibited",
        "\t}",
        "",
        # From lan_antispoof, before the queue hook: which captive packets the inspector must
        # see. Segments with payload of TCP/443 to a garden address, not to the router itself
        # (the fib lookup comes last: only such segments pay for it); the handshake and bare
        # ACKs are left for lan_forward. Of these, the queue hook takes only those of a
        # connection not yet decided: the ct mark that says so does not exist yet at priority
        # raw (conntrack runs after it), and lan_forward judges a decided connection by its
        # ct mark before it looks at this packet mark.
        "\tchain garden_classify {",
        f"\t\ttcp dport 443 ip daddr @{GARDEN4} ip length . @th,96,8 != {_bare(20)} "
        f"fib daddr type != local meta mark set meta mark | {queue}",
        f"\t\ttcp dport 443 ip6 daddr @{GARDEN6} ip6 length . @th,96,8 != {_bare(0)} "
        f"fib daddr type != local meta mark set meta mark | {queue}",
        "\t}",
        "",
        # The one forward chain: the captive rules, then per-client policy and accounting. At
        # filter + 10, after every filter a router runs (fw4, iptables' filter table: priority
        # filter), so what is counted is what was forwarded; the captive rules lose nothing by
        # coming after them (a packet another filter drops never needed refusing, one it
        # accepts still comes here). A packet from the LAN that is also to the LAN (routed
        # between two stations) is judged as from the LAN first, and counted both ways.
        "\tchain lan_forward {",
        "\t\ttype filter hook forward priority filter + 10; policy accept;",
        f'\t\tiifname "{lan}" jump from_lan',
        f'\t\toifname "{lan}" meta nfproto vmap {{ {down} }}',
        "\t}",
        "",
        # Forwarding from the LAN: authorized (address, MAC) pairs pass at kernel speed through
        # their policy; captive TCP (HTTPS included) gets a reset at once so browsers fail
        # fast, except TLS to the walled garden that the inspector allowed; NTP to the garden
        # passes; the rest (QUIC included, so browsers fall back to TCP) is refused with ICMP.
        "\tchain from_lan {",
        f"\t\tip saddr . ether saddr @{SET4} goto client_up4",
        f"\t\tip6 saddr . ether saddr @{SET6} goto client_up6",
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
        f"\t\ttcp dport 80 ip daddr @{GARDEN_HTTP4} accept",
        f"\t\ttcp dport 80 ip6 daddr @{GARDEN_HTTP6} accept",
        "\t\tmeta l4proto tcp reject with tcp reset",
        "\t\treject with icmpx admin-prohibited",
        "\t}",
        *_policy_chains(),
        "}",
    ]
    return "\n".join(lines) + "\n"


def transaction(
    config: Config,
    grants: Iterable[Grant] = (),
    garden: Mapping[str, Iterable[GardenElement]] | Iterable[GardenElement] = (),
    start: Mapping[str, Start] | None = None,
) -> str:
    """One atomic nft transaction that replaces the whole table (created first if missing).

    `garden` carries the garden addresses over with their remaining lifetime: they came from
    DNS answers that dnsmasq may now serve from its cache without adding them again. `start`
    carries each session's counters and quota use over the same way.
    """
    text = f"table {FAMILY} {TABLE}\ndelete table {FAMILY} {TABLE}\n" + render(config)
    changes = diff(desired(grants), KernelState())
    if changes:
        text += change_commands(changes, start or {}) + "\n"
    if not isinstance(garden, Mapping):  # a plain list: the TLS garden, split by family
        garden = {GARDEN4: garden, GARDEN6: garden}
    for name, kind in GARDEN_SETS:
        v6 = kind == "ipv6_addr"
        items = [
            f"{ip} expires {left}s"
            for ip, left in garden.get(name, ())
            if left >= 1 and (":" in ip) == v6
        ]
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
    `bypass`: with no inspector listening, packets go on unjudged and lan_forward refuses them
    (as it does those the kernel lets go past a full queue: the queues fail open).

    One chain on prerouting (after conntrack, for the ct mark) holds both queues, like
    iptables-nft's mangle PREROUTING does: one base chain for every packet, not two. A packet
    given back by a queue goes on to the next *base chain*, never to the next rule, so the two
    rules must not both want one packet: the detector takes only packets not marked for the
    garden (such a packet's station is learned from its next one, or from DHCP).
    """
    queue, detect = _hex(MARK_QUEUE), _hex(MARK_DETECT)
    both, decided = _hex(MARK_QUEUE | MARK_DETECT), _hex(MARK_DECIDED)
    return (
        f"table {FAMILY} {QUEUE_TABLE} {{\n"
        "\tchain queues {\n"
        "\t\ttype filter hook prerouting priority mangle; policy accept;\n"
        f"\t\tmeta mark & {both} == {detect} queue num {DETECT_QUEUE_NUM} bypass\n"
        f"\t\tmeta l4proto tcp meta mark & {queue} == {queue} ct mark & {decided} == 0x00000000 "
        f"queue num {num} bypass\n"
        "\t}\n"
        "}\n"
    )
