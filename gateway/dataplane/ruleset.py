"""The gateway's one nftables table, rendered as a whole from config and client elements.

The text is written in the exact form `nft list table inet plaza` prints, so one golden copy
checks both the renderer (unit test) and what the kernel really holds (netns test).

Clients live in sets keyed by (address, MAC): per-packet cost is one hash lookup whatever the
number of clients, and authorizing is one element add, never a rule per client.

Walled garden (see gateway/garden/inspector.py for the why). Captive TCP/443 to a garden address is
let through for its handshake; its first packet with payload is marked MARK_QUEUE by
`garden_classify` (forward, priority mangle - 5), sent to NFQUEUE by a rule outside this table
(iptables-nft mangle FORWARD at priority mangle, or a native `queue` in table `inet plaza_queue`,
whichever the kernel has), and comes back with MARK_ALLOW or not. `lan_forward` (priority filter)
turns that into the connection's ct mark: allowed connections then pass at kernel speed, refused
ones get a TCP reset. A packet marked for the queue that comes back without a verdict (no inspector:
`bypass`; a hung one: the queue fails open when full, gateway/dataplane/nfqueue.py) is refused: the
garden fails closed. A station's first packet that skips the detection queue the same way meets the
captive rules below like any other.

Per-client policy and accounting (see gateway/stations/policy.py and
gateway/stations/accounting.py). Every session owns named objects: counters `up_<session>` and
`down_<session>`, quotas `qup_`/`qdown_`/`qtotal_<session>` and limits `rup_`/`rdown_<session>` when
its policy has them. Maps keyed like the clients point at them: upstream by (address . MAC), as
`auth4` is, and downstream by the address alone (in the forward hook a packet to the LAN has no
client MAC yet; the session table gives each address one owner). An IPv6 client with several
addresses adds one element per address, all naming the same objects, so its usage adds up.
`client_policy` (forward, priority filter + 10: after lan_forward and any other filter has accepted
the packet) sends the client's traffic through, in order: its rate limit (`limit ... over`: drop),
its quotas (`quota ... over`: drop, so an exhausted client stops at once, in the kernel), and its
counter: what is counted is what was forwarded. No element, no limit: an unlimited client costs one
failed hash lookup per map, and a login is one transaction of element and object adds. Policing with
`limit` was measured against iperf3 in the lab at 2-50 Mbit/s to hold TCP within about 10% of the
rate with a 100 ms bucket (gateway/stations/policy.py: BURST_SECONDS); shaping with HTB would be
smoother on real links but needs a class per client on two interfaces.

The table's comment holds a fingerprint of its structure: a daemon that starts and finds the
same structure leaves it (and its counters, mid-stream) alone and only reconciles elements.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from gateway.config import Config
from gateway.stations.accounting import Quota, Reading, Usage
from gateway.stations.policy import Policy, burst_bytes

TABLE = "plaza"
FAMILY = "inet"
SET4 = "auth4"
SET6 = "auth6"
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

Element = tuple[str, str]  # (address, mac)
GardenElement = tuple[str, int]  # (address, seconds until it expires)

# Per-client maps: name stem -> (object kind, direction). Each exists for both families
# ("cnt_up4", "cnt_up6", ...); "up" maps are keyed (address . MAC), "down" maps by address.
POLICY_MAPS: dict[str, tuple[str, str]] = {
    "rate_up": ("limit", "up"),
    "rate_down": ("limit", "down"),
    "quota_up": ("quota", "up"),
    "quota_down": ("quota", "down"),
    "quota_total_up": ("quota", "up"),
    "quota_total_down": ("quota", "down"),
    "cnt_up": ("counter", "up"),
    "cnt_down": ("counter", "down"),
}
# Object name prefixes, by (kind, what): the session id follows ("up_0123abcd...").
COUNTER_UP, COUNTER_DOWN = "up", "down"
QUOTA_PREFIX = {"up": "qup", "down": "qdown", "total": "qtotal"}
LIMIT_PREFIX = {"up": "rup", "down": "rdown"}
FINGERPRINT_RE = re.compile(r'^\tcomment "plaza ([0-9a-f]{12})"$', re.M)

Triple = tuple[str, str, str | None]  # (set or map, key as nft writes it, object name or None)
ObjectKey = tuple[str, str]  # (kind, name)
Spec = tuple[int, ...]  # what must match: quota (bytes,), limit (rate, burst), counter ()


@dataclass(frozen=True, slots=True)
class Grant:
    """One authorized client as the kernel must hold it: its addresses (one IPv4 today; IPv6
    adds more), its MAC, and the kernel half of its policy, in bytes and bytes per second."""

    session: str
    mac: str
    addresses: tuple[str, ...]
    quota_up: int = 0
    quota_down: int = 0
    quota_total: int = 0
    rate_up: int = 0
    rate_down: int = 0

    @classmethod
    def of(cls, session: str, mac: str, addresses: Iterable[str], policy: Policy) -> Grant:
        return cls(
            session=session,
            mac=mac,
            addresses=tuple(addresses),
            quota_up=policy.quota_up_bytes,
            quota_down=policy.quota_down_bytes,
            quota_total=policy.quota_total_bytes,
            rate_up=policy.rate_up_bytes,
            rate_down=policy.rate_down_bytes,
        )

    def elements(self) -> list[Element]:
        return [(ip, self.mac) for ip in self.addresses]


@dataclass(frozen=True)
class KernelState:
    """Client elements and objects, as desired (from grants) or as listed (from the kernel)."""

    elements: frozenset[Triple] = frozenset()
    objects: Mapping[ObjectKey, Spec] = field(default_factory=dict)


@dataclass(frozen=True)
class Changes:
    """What turns one KernelState into another, in the order one transaction needs."""

    del_elements: tuple[Triple, ...] = ()
    del_objects: tuple[ObjectKey, ...] = ()
    add_objects: tuple[tuple[ObjectKey, Spec], ...] = ()
    add_elements: tuple[Triple, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.del_elements or self.del_objects or self.add_objects or self.add_elements)

    def size(self) -> int:
        return len(self.del_elements) + len(self.add_elements)


@dataclass(frozen=True)
class Start:
    """Initial values for objects the gateway creates: a session's counters continue from its
    known totals, its quotas from what they had used."""

    usage: Usage = field(default_factory=Usage)
    quota_used: Mapping[str, int] = field(default_factory=dict)


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


def _policy_rules(direction: str) -> list[str]:
    """Rate limit, then quotas, then the counter, for both families."""
    lines = []
    for stem, (obj, way) in POLICY_MAPS.items():
        if way != direction:
            continue
        verdict = "" if obj == "counter" else " drop"
        for family, proto in (("4", "ip"), ("6", "ip6")):
            key = f"{proto} saddr . ether saddr" if way == "up" else f"{proto} daddr"
            lines.append(f"\t\t{obj} name {key} map @{stem}{family}{verdict}")
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
    queue, allow, deny, decided = (
        _hex(MARK_QUEUE), _hex(MARK_ALLOW), _hex(MARK_DENY), _hex(MARK_DECIDED)
    )  # fmt: skip
    verdict = _hex(MARK_QUEUE | MARK_ALLOW)
    detect = _hex(MARK_DETECT)
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
        "\t\tip saddr 0.0.0.0 udp dport 67 return",
        "\t\tip6 saddr :: return",
        "\t\tfib saddr . iif oif missing drop",
        "\t\tip6 saddr fe80::/10 return",
        # An authorized station's known pair needs no detecting: it must not wait on the
        # daemon (a hung daemon would hold its packets in the queue, gateway/stations/detect.py).
        f"\t\tip saddr . ether saddr @{SET4} return",
        f"\t\tip6 saddr . ether saddr @{SET6} return",
        f"\t\tip saddr . ether saddr @{DETECT4} return",
        f"\t\tip6 saddr . ether saddr @{DETECT6} return",
        # not seen yet: to the detector, which learns the pair and adds it to the set
        f"\t\tmeta mark set meta mark | {detect}",
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
        f"\t\ttcp dport 80 ip daddr @{GARDEN_HTTP4} accept",
        f"\t\ttcp dport 80 ip6 daddr @{GARDEN_HTTP6} accept",
        "\t\tmeta l4proto tcp reject with tcp reset",
        "\t\treject with icmpx admin-prohibited",
        "\t}",
        "",
        # Per-client policy and accounting, for traffic that every filter before has let through.
        "\tchain client_policy {",
        "\t\ttype filter hook forward priority filter + 10; policy accept;",
        f'\t\tiifname "{lan}" jump client_up',
        f'\t\toifname "{lan}" jump client_down',
        "\t}",
        "",
        "\tchain client_up {",
        *_policy_rules("up"),
        "\t}",
        "",
        "\tchain client_down {",
        *_policy_rules("down"),
        "\t}",
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
    """
    mark, detect = _hex(MARK_QUEUE), _hex(MARK_DETECT)
    return (
        f"table {FAMILY} {QUEUE_TABLE} {{\n"
        "\tchain detect_queue {\n"
        "\t\ttype filter hook prerouting priority mangle; policy accept;\n"
        f"\t\tmeta mark & {detect} == {detect} queue num {DETECT_QUEUE_NUM} bypass\n"
        "\t}\n"
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


# -- client grants: desired state, kernel state, and the changes between them ----------------
def _family(ip: str) -> str:
    return "6" if ":" in ip else "4"


def grant_objects(grant: Grant) -> dict[ObjectKey, Spec]:
    s = grant.session
    objects: dict[ObjectKey, Spec] = {("counter", f"up_{s}"): (), ("counter", f"down_{s}"): ()}
    for what, size in (("up", grant.quota_up), ("down", grant.quota_down),
                       ("total", grant.quota_total)):  # fmt: skip
        if size:
            objects[("quota", f"{QUOTA_PREFIX[what]}_{s}")] = (size,)
    for what, rate in (("up", grant.rate_up), ("down", grant.rate_down)):
        if rate:
            objects[("limit", f"{LIMIT_PREFIX[what]}_{s}")] = (rate, burst_bytes(rate))
    return objects


def grant_elements(grant: Grant) -> set[Triple]:
    s = grant.session
    found: set[Triple] = set()
    for ip in grant.addresses:
        f = _family(ip)
        up, down = f"{ip} . {grant.mac}", ip
        found |= {
            (SET4 if f == "4" else SET6, up, None),
            (f"cnt_up{f}", up, f"up_{s}"),
            (f"cnt_down{f}", down, f"down_{s}"),
        }
        if grant.quota_up:
            found.add((f"quota_up{f}", up, f"qup_{s}"))
        if grant.quota_down:
            found.add((f"quota_down{f}", down, f"qdown_{s}"))
        if grant.quota_total:
            found |= {(f"quota_total_up{f}", up, f"qtotal_{s}"),
                      (f"quota_total_down{f}", down, f"qtotal_{s}")}  # fmt: skip
        if grant.rate_up:
            found.add((f"rate_up{f}", up, f"rup_{s}"))
        if grant.rate_down:
            found.add((f"rate_down{f}", down, f"rdown_{s}"))
    return found


def desired(grants: Iterable[Grant]) -> KernelState:
    elements: set[Triple] = set()
    objects: dict[ObjectKey, Spec] = {}
    for grant in grants:
        elements |= grant_elements(grant)
        objects.update(grant_objects(grant))
    return KernelState(frozenset(elements), objects)


def diff(want: KernelState, have: KernelState) -> Changes:
    """The changes that make `have` into `want`. A quota of a new size is updated in place
    (the kernel keeps what it used); a limit cannot be, so it is replaced together with the
    elements that name it."""
    changed = {k for k in want.objects.keys() & have.objects.keys()
               if want.objects[k] != have.objects[k]}  # fmt: skip
    replaced = {k for k in changed if k[0] == "limit"}
    replaced_names = {name for _, name in replaced}
    renamed = {e for e in have.elements if e[2] in replaced_names}
    del_objects = (have.objects.keys() - want.objects.keys()) | replaced
    add_objects = (want.objects.keys() - have.objects.keys()) | changed
    del_elements = (have.elements - want.elements) | renamed
    add_elements = (want.elements - have.elements) | (renamed & want.elements)
    return Changes(
        del_elements=tuple(sorted(del_elements, key=_element_order)),
        del_objects=tuple(sorted(del_objects)),
        add_objects=tuple((k, want.objects[k]) for k in sorted(add_objects)),
        add_elements=tuple(sorted(add_elements, key=_element_order)),
    )


def element_order(e: Triple) -> tuple[str, str, str]:
    return (e[0], e[1], e[2] or "")


_element_order = element_order


def _session_of(name: str) -> tuple[str, str]:
    """("qup", "0123...") from "qup_0123..."."""
    prefix, _, session = name.partition("_")
    return prefix, session


def _object_command(key: ObjectKey, spec: Spec, start: Mapping[str, Start]) -> str:
    kind, name = key
    prefix, session = _session_of(name)
    begin = start.get(session, Start())
    where = f"{FAMILY} {TABLE} {name}"
    if kind == "counter":
        u = begin.usage
        packets, count = (u.packets_up, u.bytes_up) if prefix == COUNTER_UP else (
            u.packets_down, u.bytes_down)  # fmt: skip
        return f"add counter {where} {{ packets {packets} bytes {count} }}"
    if kind == "quota":
        what = {v: k for k, v in QUOTA_PREFIX.items()}[prefix]
        used = begin.quota_used.get(what, 0)
        return f"add quota {where} {{ over {spec[0]} bytes used {used} bytes }}"
    rate, burst = spec
    return f"add limit {where} {{ rate over {rate} bytes/second burst {burst} bytes }}"


def change_commands(changes: Changes, start: Mapping[str, Start] | None = None) -> str:
    """The nft commands of `changes`, for one transaction: elements go before the objects they
    name, objects come before the elements that name them."""
    start = start or {}
    cmds = [_element_cmd("delete", e) for e in changes.del_elements]
    cmds += [f"delete {kind} {FAMILY} {TABLE} {name}" for kind, name in changes.del_objects]
    cmds += [_object_command(k, spec, start) for k, spec in changes.add_objects]
    cmds += [_element_cmd("add", e) for e in changes.add_elements]
    return "\n".join(cmds)


def _element_cmd(verb: str, element: Triple) -> str:
    name, key, value = element
    item = key if value is None or verb == "delete" else f'{key} : "{value}"'
    return f"{verb} element {FAMILY} {TABLE} {name} {{ {item} }}"


def _key(raw: object) -> str:
    if isinstance(raw, dict) and "concat" in raw:
        return " . ".join(str(part) for part in raw["concat"])
    return str(raw)


def parse_state(listing_json: str) -> KernelState:
    """The client elements and objects of a `list table` JSON answer (garden sets left out)."""
    client_sets = {SET4, SET6} | {f"{stem}{f}" for stem in POLICY_MAPS for f in "46"}
    elements: set[Triple] = set()
    objects: dict[ObjectKey, Spec] = {}
    for item in json.loads(listing_json).get("nftables", []):
        if "set" in item or "map" in item:
            body = item.get("set") or item.get("map")
            if body["name"] not in client_sets:
                continue
            for elem in body.get("elem", []):
                if isinstance(elem, list):  # a map element: [key, object name]
                    elements.add((body["name"], _key(elem[0]), str(elem[1])))
                else:
                    elements.add((body["name"], _key(elem), None))
        elif "counter" in item:
            objects[("counter", item["counter"]["name"])] = ()
        elif "quota" in item:
            objects[("quota", item["quota"]["name"])] = (int(item["quota"]["bytes"]),)
        elif "limit" in item:
            lim = item["limit"]
            objects[("limit", lim["name"])] = (int(lim["rate"]), int(lim.get("burst", 0)))
    return KernelState(frozenset(elements), objects)


def parse_readings(counters_json: str, quotas_json: str) -> dict[str, Reading]:
    """Per-session usage from `list counters` and `list quotas` JSON answers."""
    usage: dict[str, dict[str, int]] = {}
    quotas: dict[str, dict[str, Quota]] = {}
    for item in json.loads(counters_json).get("nftables", []):
        c = item.get("counter")
        if not c:
            continue
        prefix, session = _session_of(c["name"])
        if prefix in (COUNTER_UP, COUNTER_DOWN) and session:
            slot = usage.setdefault(session, {})
            slot[f"bytes_{prefix}"] = int(c["bytes"])
            slot[f"packets_{prefix}"] = int(c["packets"])
    kinds = {v: k for k, v in QUOTA_PREFIX.items()}
    for item in json.loads(quotas_json).get("nftables", []):
        q = item.get("quota")
        if not q:
            continue
        prefix, session = _session_of(q["name"])
        if prefix in kinds and session:
            quota = Quota(limit=int(q["bytes"]), used=int(q.get("used", 0)))
            quotas.setdefault(session, {})[kinds[prefix]] = quota
    return {
        s: Reading(Usage(**usage.get(s, {})), quotas.get(s, {}))
        for s in usage.keys() | quotas.keys()
    }
