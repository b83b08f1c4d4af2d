"""The reconciler's comparison of the kernel's client elements and objects with the grants,
streamed: each netlink answer is checked as it is parsed (see `drift`).

Apart from the firewall (gateway/dataplane/kernel.py) because it is the one part of it that
is pure given the kernel's answers: tests/unit/test_drift.py feeds it crafted answers and
checks it finds what `grants.diff` finds.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from gateway.dataplane.grants import (
    COUNTER_DOWN,
    COUNTER_UP,
    LIMIT_PREFIX,
    QUOTA_PREFIX,
    TABLE,
    Changes,
    Grant,
    ObjectKey,
    Spec,
    Triple,
    element_order,
    grant_elements,
    grant_objects,
)
from gateway.dataplane.messages import CLIENT_SETS, element_pairs, object_spec
from gateway.dataplane.netlink import (
    BE32,
    ELEM_LIST_SET,
    ELEM_LIST_TABLE,
    MSG_GETOBJ,
    MSG_GETSETELEM,
    OBJ_TABLE,
    OBJ_TYPE,
    OBJ_TYPES,
    NfNetlink,
    attr,
    parse_object,
    strz,
)

_MISSING: Any = object()


def _object_and_spec(buf: bytearray, start: int, end: int) -> tuple[ObjectKey, Spec] | None:
    found = parse_object(buf, start, end)
    if found is None:
        return None
    kind, name, values = found
    return (kind, name), object_spec(kind, values)


# Bits of a session's objects, by name prefix, for `drift`'s tally of what it found.
_OBJECT_BITS = {
    prefix: 1 << i
    for i, prefix in enumerate(
        (COUNTER_UP, COUNTER_DOWN, *QUOTA_PREFIX.values(), *LIMIT_PREFIX.values())
    )
}  # fmt: skip


def drift(nl: NfNetlink, grants: Iterable[Grant]) -> Changes:
    """The changes that make the kernel's client elements and objects equal `grants`: what
    `diff(desired(grants), state)` (grants.py) gives, without building either side.

    Each object and element of the kernel is checked against its session's grant (found by
    session name or address in two dicts that hold only references) as it is parsed, and
    ticked off in tallies that hold only references too (a bit mask per session, the
    addresses found per set); what was not ticked off is missing. So the comparison
    allocates no small objects that outlive one kernel answer: at 10,000 clients it used to
    hold ~5 MB of them at once (the wanted side as dicts of keys and names), made in a
    worker thread while the daemon's thread made new sessions' objects among them, and the
    allocator could not give those pages back afterwards (resident memory rose by a few MB
    with every comparison under churn)."""
    grants = list(grants)
    by_session = {g.session: g for g in grants}
    by_address = {a: g for g in grants for a in g.addresses}
    address_of = {a: a for a in by_address}  # the grants' own strings, to tally with
    found_objects: dict[str, int] = {}  # session -> _OBJECT_BITS of its objects found
    found_elements: dict[str, set[str]] = {name: set() for name in CLIENT_SETS}
    del_objects: list[ObjectKey] = []
    add_objects: list[tuple[ObjectKey, Spec]] = []
    replaced: set[str] = set()  # limits cannot change in place: deleted and made again
    del_elements: list[Triple] = []
    add_elements: list[Triple] = []

    def check_object(buf: bytearray, start: int, end: int) -> None:
        parsed = _object_and_spec(buf, start, end)
        if parsed is None:
            return
        key, have = parsed
        prefix, _, session = key[1].partition("_")
        grant = by_session.get(session)
        spec = grant_objects(grant).get(key, _MISSING) if grant else _MISSING
        if spec is _MISSING:
            del_objects.append(key)
            return
        found_objects[grant.session] = found_objects.get(grant.session, 0) | _OBJECT_BITS[prefix]
        if spec != have:
            if key[0] == "limit":
                replaced.add(key[1])
                del_objects.append(key)
            add_objects.append((key, spec))

    for kind in OBJ_TYPES:
        body = strz(OBJ_TABLE, TABLE) + attr(OBJ_TYPE, BE32.pack(OBJ_TYPES[kind]))
        nl.request(MSG_GETOBJ, body, dump=True, parse=check_object)
    for grant in grants:
        found = found_objects.get(grant.session, 0)
        for key, spec in grant_objects(grant).items():
            if not found & _OBJECT_BITS[key[1].partition("_")[0]]:
                add_objects.append((key, spec))
    found_objects.clear()

    for name in CLIENT_SETS:
        found_here = found_elements[name]

        def check_elements(
            buf: bytearray, start: int, end: int, name: str = name, found_here: set = found_here
        ) -> None:
            for key, obj in element_pairs(buf, start, end):
                address = key.partition(" . ")[0]
                grant = by_address.get(address)
                wanted: Any = _MISSING
                if grant is not None:
                    for n, k, o in grant_elements(grant):
                        if n == name and k == key:
                            wanted = o
                            break
                if wanted is _MISSING:
                    del_elements.append((name, key, obj))
                    continue
                found_here.add(address_of[address])
                if wanted != obj or obj in replaced:
                    del_elements.append((name, key, obj))
                    add_elements.append((name, key, wanted))

        body = strz(ELEM_LIST_TABLE, TABLE) + strz(ELEM_LIST_SET, name)
        nl.request(MSG_GETSETELEM, body, dump=True, parse=check_elements)
    for grant in grants:
        for name, key, obj in grant_elements(grant):
            if key.partition(" . ")[0] not in found_elements[name]:
                add_elements.append((name, key, obj))
    order = element_order
    return Changes(
        del_elements=tuple(sorted(del_elements, key=order)),
        del_objects=tuple(sorted(del_objects)),
        add_objects=tuple(sorted(add_objects)),
        add_elements=tuple(sorted(add_elements, key=order)),
    )
