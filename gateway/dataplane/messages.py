"""The nf_tables messages for the gateway's client sets, maps and objects: a `Changes` as one
batch of netlink messages, and dumps of them read back as elements, object specs and
per-session readings.

Apart from the socket (gateway/dataplane/netlink.py) so the encoders can be exercised without
a kernel (tests/unit/test_drift.py crafts the kernel's answers with them), and so the station
detector's seen sets (gateway/stations/detect.py) reuse the element encoder.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from gateway.dataplane.grants import (
    COUNTER_DOWN,
    COUNTER_UP,
    POLICY_MAPS,
    QUOTA_PREFIX,
    SET4,
    SET6,
    TABLE,
    Changes,
    ObjectKey,
    Spec,
    Start,
    Triple,
)
from gateway.dataplane.netlink import (
    BE32,
    BE64,
    COUNTER_BYTES,
    COUNTER_PACKETS,
    DATA_VALUE,
    ELEM_KEY,
    ELEM_LIST_ELEMENTS,
    ELEM_LIST_SET,
    ELEM_LIST_TABLE,
    ELEM_OBJREF,
    LIMIT_BURST,
    LIMIT_F_INV,
    LIMIT_FLAGS,
    LIMIT_PKT_BYTES,
    LIMIT_RATE,
    LIMIT_TYPE,
    LIMIT_UNIT,
    LIST_ELEM,
    MSG_DELOBJ,
    MSG_DELSETELEM,
    MSG_NEWOBJ,
    MSG_NEWSETELEM,
    NLM_F_CREATE,
    OBJ_DATA,
    OBJ_NAME,
    OBJ_TABLE,
    OBJ_TYPE,
    OBJ_TYPES,
    QUOTA_BYTES,
    QUOTA_CONSUMED,
    QUOTA_F_INV,
    QUOTA_FLAGS,
    Message,
    Object,
    attr,
    attrs,
    cstr,
    decode_key,
    encode_key,
    nest,
    parse_object,
    strz,
)
from gateway.stations.accounting import NO_QUOTAS, Quota, Reading, Usage

ELEMENTS_PER_MESSAGE = 16_384  # bytes of elements per message: attribute lengths are 16 bits


def elements_messages(verb: str, name: str, items: list[tuple[str, str | None]]) -> list[Message]:
    """NEWSETELEM / DELSETELEM messages for `items`, as many as their size needs."""
    messages: list[Message] = []
    elems: list[bytes] = []
    size, first = 0, 0
    for i, (key, obj) in enumerate(items):
        inner = nest(ELEM_KEY, attr(DATA_VALUE, encode_key(key)))
        if obj is not None and verb == "add":
            inner += strz(ELEM_OBJREF, obj)
        elem = nest(LIST_ELEM, inner)
        if elems and size + len(elem) > ELEMENTS_PER_MESSAGE:
            messages.append(_elements_message(verb, name, elems, items[first][0]))
            elems, size, first = [], 0, i
        elems.append(elem)
        size += len(elem)
    if elems:
        messages.append(_elements_message(verb, name, elems, items[first][0]))
    return messages


def _elements_message(verb: str, name: str, elems: list[bytes], key: str) -> Message:
    body = strz(ELEM_LIST_TABLE, TABLE) + strz(ELEM_LIST_SET, name)
    body += nest(ELEM_LIST_ELEMENTS, *elems)
    what = f"{verb} element {name} {{ {key}{' ...' if len(elems) > 1 else ''} }}"
    if verb == "add":
        return MSG_NEWSETELEM, NLM_F_CREATE, body, what
    return MSG_DELSETELEM, 0, body, what


def object_message(key: ObjectKey, spec: Spec | None, begin: Start) -> Message:
    """NEWOBJ (`spec`) or DELOBJ (None); a new object starts from `begin`, like the text
    `add counter ... { packets P bytes B }` / `add quota ... { over N bytes used U bytes }`."""
    kind, name = key
    head = strz(OBJ_TABLE, TABLE) + strz(OBJ_NAME, name)
    head += attr(OBJ_TYPE, BE32.pack(OBJ_TYPES[kind]))
    if spec is None:
        return MSG_DELOBJ, 0, head, f"delete {kind} {name}"
    prefix = name.partition("_")[0]
    if kind == "counter":
        u = begin.usage
        packets, count = (u.packets_up, u.bytes_up) if prefix == COUNTER_UP else (
            u.packets_down, u.bytes_down)  # fmt: skip
        data = attr(COUNTER_BYTES, BE64.pack(count))
        data += attr(COUNTER_PACKETS, BE64.pack(packets))
    elif kind == "quota":
        what = {v: k for k, v in QUOTA_PREFIX.items()}[prefix]
        data = attr(QUOTA_BYTES, BE64.pack(spec[0]))
        data += attr(QUOTA_FLAGS, BE32.pack(QUOTA_F_INV))
        data += attr(QUOTA_CONSUMED, BE64.pack(begin.quota_used.get(what, 0)))
    else:  # limit: rate over R bytes/second burst B bytes
        rate, burst = spec
        data = attr(LIMIT_RATE, BE64.pack(rate)) + attr(LIMIT_UNIT, BE64.pack(1))
        data += attr(LIMIT_BURST, BE32.pack(burst))
        data += attr(LIMIT_TYPE, BE32.pack(LIMIT_PKT_BYTES))
        data += attr(LIMIT_FLAGS, BE32.pack(LIMIT_F_INV))
    return MSG_NEWOBJ, NLM_F_CREATE, head + nest(OBJ_DATA, data), f"add {kind} {name}"


def change_messages(changes: Changes, start: Mapping[str, Start] | None = None) -> list[Message]:
    """`changes` as netlink messages, in `grants.change_commands` order: elements go before
    the objects they name, objects come before the elements that name them."""
    start = start or {}
    msgs: list[Message] = []
    for name, group in _by_set(changes.del_elements).items():
        msgs += elements_messages("delete", name, group)
    msgs += [object_message(key, None, Start()) for key in changes.del_objects]
    for key, spec in changes.add_objects:
        session = key[1].partition("_")[2]
        msgs.append(object_message(key, spec, start.get(session, Start())))
    for name, group in _by_set(changes.add_elements).items():
        msgs += elements_messages("add", name, group)
    return msgs


def _by_set(elements: Iterable[Triple]) -> dict[str, list[tuple[str, str | None]]]:
    groups: dict[str, list[tuple[str, str | None]]] = {}
    for name, key, obj in elements:
        groups.setdefault(name, []).append((key, obj))
    return groups


CLIENT_SETS = (
    SET4,
    SET6,
    *(f"{stem}{f}" for stem in POLICY_MAPS for f in "46"),
)


def parse_elements(name: str, messages: list[bytes], into: set[Triple]) -> None:
    """Add the (set, key, object or None) triples of a GETSETELEM dump to `into`."""
    for msg in messages:
        into.update((name, key, obj) for key, obj in element_pairs(msg, 0, len(msg)))


def element_pairs(buf: bytes | bytearray, start: int, end: int) -> list[tuple[str, str | None]]:
    """(key, object name or None) of each element in one GETSETELEM answer's attributes."""
    pairs: list[tuple[str, str | None]] = []
    for kind, s, e in attrs(buf, start, end):
        if kind != ELEM_LIST_ELEMENTS:
            continue
        for _elem, es, ee in attrs(buf, s, e):
            key, obj = b"", None
            for ak, as_, ae in attrs(buf, es, ee):
                if ak == ELEM_KEY:
                    for dk, ds, de in attrs(buf, as_, ae):
                        if dk == DATA_VALUE:
                            key = bytes(buf[ds:de])
                elif ak == ELEM_OBJREF:
                    obj = cstr(buf, as_, ae)
            pairs.append((decode_key(key), obj))
    return pairs


_QUOTA_KINDS = {v: k for k, v in QUOTA_PREFIX.items()}


def tally(
    buf: bytearray,
    start: int,
    end: int,
    usage: dict[str, list[int]],
    quotas: dict[str, dict[str, Quota]],
) -> None:
    """Add one dumped counter or quota object to the per-session tallies."""
    found = parse_object(buf, start, end)
    if found is not None:
        _add(found, usage, quotas)


def _add(found: Object, usage: dict[str, list[int]], quotas: dict[str, dict[str, Quota]]) -> None:
    kind, name, values = found
    prefix, _, session = name.partition("_")
    if not session:
        return
    if kind == "counter" and prefix in (COUNTER_UP, COUNTER_DOWN):
        slot = usage.get(session)
        if slot is None:
            slot = usage[session] = [0, 0, 0, 0]  # bytes_up, packets_up, bytes_down, ...
        at = 0 if prefix == COUNTER_UP else 2
        slot[at], slot[at + 1] = values.get(COUNTER_BYTES, 0), values.get(COUNTER_PACKETS, 0)
    elif kind == "quota" and prefix in _QUOTA_KINDS:
        quota = Quota(limit=values.get(QUOTA_BYTES, 0), used=values.get(QUOTA_CONSUMED, 0))
        quotas.setdefault(session, {})[_QUOTA_KINDS[prefix]] = quota


def tallied(usage: dict[str, list[int]], quotas: dict[str, dict[str, Quota]]) -> dict[str, Reading]:
    found = {s: Reading(Usage(*slot), quotas.pop(s, NO_QUOTAS)) for s, slot in usage.items()}
    found.update((s, Reading(Usage(), q)) for s, q in quotas.items())
    return found


def readings_of(objects: Iterable[Object]) -> dict[str, Reading]:
    """Per-session usage and quotas from counter and quota objects."""
    usage: dict[str, list[int]] = {}
    quotas: dict[str, dict[str, Quota]] = {}
    for found in objects:
        _add(found, usage, quotas)
    return tallied(usage, quotas)


def object_spec(kind: str, values: dict[int, int]) -> Spec:
    if kind == "quota":
        return (values.get(QUOTA_BYTES, 0),)
    if kind == "limit":
        return (values.get(LIMIT_RATE, 0), values.get(LIMIT_BURST, 0))
    return ()
