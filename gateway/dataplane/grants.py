"""Authorized clients as the kernel holds them, apart from the table's text (ruleset.py).

A grant (one session: its addresses, MAC and the kernel half of its policy) becomes set and map
elements and named objects (counters, quotas, limits); `diff` turns the kernel's listed state
into the desired one with the fewest changes, and `change_commands` writes them as one nft
transaction. This is what the daemon runs at every login, logout and reconcile; the table's
structure (ruleset.py) changes only with the config. The names shared by both (the table, the
client sets, the policy maps) live here, and everyone imports them from here, ruleset.py
included.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from gateway.stations.accounting import Quota, Reading, Usage
from gateway.stations.policy import Policy, burst_bytes

TABLE = "plaza"
FAMILY = "inet"
SET4 = "auth4"
SET6 = "auth6"

Element = tuple[str, str]  # (address, mac)

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
