"""Kernel firewall backends: libnftables in-process, and an in-memory fake for unit tests.

libnftables is called through ctypes rather than by spawning `nft`: an element add then costs
tens of microseconds instead of a fork+exec of several milliseconds, which is what keeps
authorize latency flat. The library ships with nftables itself (Debian: libnftables1).

What runs often talks nf_tables netlink directly (`NfNetlink`): client element and object
changes, counter and quota reads, the reconciler's listing, the table's presence and structure
fingerprint. libnftables fills its cache before every command, and that cache holds every
object and map element of the table: at 10,000 clients one `add element` cost ~35 ms and one
`list counters` ~200 ms, where a netlink batch or dump costs what its own objects cost. What is
rare (replacing the whole table, reading the garden sets into it, a text listing) stays with
libnftables and its JSON output, never `nft list` text.

Threads: the daemon's one thread makes every change; big reads (all counters, the whole client
state) may run in a worker thread (`Firewall.snapshot`). Each thread kind has its own netlink
socket, and changes committed while a snapshot was being read are replayed onto it before the
gateway sees it, so a read that overlapped a login or logout never undoes it.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno as errnos
import json
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Protocol

from gateway.config import Config
from gateway.dataplane import ruleset
from gateway.dataplane.ruleset import Changes, Element, Grant, KernelState, Start
from gateway.stations.accounting import NO_QUOTAS, Quota, Reading, Usage


class NftError(RuntimeError):
    """nft refused a command; the message is nft's own first error line."""


class Firewall(Protocol):
    """What the daemon needs of the kernel; one real and one fake implementation."""

    def apply(
        self, config: Config, grants: list[Grant], start: Mapping[str, Start] | None = None
    ) -> None: ...
    def change(self, changes: Changes, start: Mapping[str, Start] | None = None) -> None: ...
    def state(self) -> KernelState: ...
    def readings(self, sessions: Iterable[Grant] | None = None) -> dict[str, Reading]: ...
    def allowed(self) -> set[Element]: ...
    def present(self) -> bool: ...
    def current(self, config: Config) -> bool: ...


class Libnftables:
    """Minimal binding of the libnftables C API (nft_ctx_new / nft_run_cmd_from_buffer)."""

    NFT_CTX_OUTPUT_JSON = 1 << 4
    NFT_CTX_OUTPUT_TERSE = 1 << 11  # leave set elements out of listings

    def __init__(self) -> None:
        name = ctypes.util.find_library("nftables") or "libnftables.so.1"
        try:
            lib = ctypes.CDLL(name)
        except OSError as exc:
            raise NftError(
                f"libnftables not found ({exc}); install nftables/libnftables1"
            ) from None
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_output_buffer.restype = ctypes.c_char_p
        lib.nft_ctx_get_output_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
        lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
        lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
        self._lib = lib
        self._ctx = self._new()
        self._lock = threading.Lock()

    def _new(self) -> int:
        ctx = self._lib.nft_ctx_new(0)
        self._lib.nft_ctx_buffer_output(ctx)
        self._lib.nft_ctx_buffer_error(ctx)
        return ctx

    def release(self) -> None:
        """Drop the context's cache. libnftables keeps, between commands, its copy of every
        table it had to read: after a table load or listing at 10,000 clients that is ~45 MB
        of C memory (every element and object) held for as long as the context lives. Every
        frequent kernel operation goes over netlink instead (`NfNetlink`), so the rare
        libnftables call starts from an empty cache and the memory goes back after it."""
        from gateway.ops import memory

        with self._lock:
            old, self._ctx = self._ctx, self._new()
            self._lib.nft_ctx_free(old)
        memory.trim()

    def run(self, commands: str, json_output: bool = False, terse: bool = False) -> str:
        with self._lock:
            flags = self.NFT_CTX_OUTPUT_JSON if json_output else 0
            flags |= self.NFT_CTX_OUTPUT_TERSE if terse else 0
            self._lib.nft_ctx_output_set_flags(self._ctx, flags)
            rc = self._lib.nft_run_cmd_from_buffer(self._ctx, commands.encode())
            out = (self._lib.nft_ctx_get_output_buffer(self._ctx) or b"").decode()
            err = (self._lib.nft_ctx_get_error_buffer(self._ctx) or b"").decode()
        if rc != 0:
            first = next((line for line in err.splitlines() if line.strip()), "unknown error")
            raise NftError(first)
        return out


def json_documents(text: str) -> list[dict]:
    """Several list commands in one call answer with one JSON document each, back to back."""
    decoder = json.JSONDecoder()
    docs, pos = [], 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            return docs
        doc, pos = decoder.raw_decode(text, pos)
        docs.append(doc)


def _merged(text: str) -> str:
    """One `{"nftables": [...]}` document out of several."""
    items = [item for doc in json_documents(text) for item in doc.get("nftables", [])]
    return json.dumps({"nftables": items})


# -- nf_tables over netlink -------------------------------------------------------------------
NETLINK_NETFILTER = 12
SO_SNDBUFFORCE = 32
NFNL_SUBSYS_NFTABLES = 10
NFNL_MSG_BATCH_BEGIN, NFNL_MSG_BATCH_END = 0x10, 0x11
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP_INTR = 0x1, 0x4, 0x10
NLM_F_DUMP, NLM_F_CREATE = 0x300, 0x400
NLA_F_NESTED, NLA_TYPE_MASK = 0x8000, 0x3FFF
NFPROTO_INET, NFPROTO_BRIDGE = 1, 7
MSG_GETTABLE, MSG_NEWSETELEM, MSG_GETSETELEM, MSG_DELSETELEM = 1, 12, 13, 14
MSG_GETGEN, MSG_NEWOBJ, MSG_GETOBJ, MSG_DELOBJ = 16, 18, 19, 20
TABLE_NAME, TABLE_USERDATA = 1, 6
ELEM_LIST_TABLE, ELEM_LIST_SET, ELEM_LIST_ELEMENTS = 1, 2, 3
LIST_ELEM, ELEM_KEY, ELEM_OBJREF, DATA_VALUE = 1, 1, 9, 1
OBJ_TABLE, OBJ_NAME, OBJ_TYPE, OBJ_DATA = 1, 2, 3, 4
OBJ_TYPES = {"counter": 1, "quota": 2, "limit": 4}
OBJ_KINDS = {v: k for k, v in OBJ_TYPES.items()}
COUNTER_BYTES, COUNTER_PACKETS = 1, 2
QUOTA_BYTES, QUOTA_FLAGS, QUOTA_CONSUMED, QUOTA_F_INV = 1, 2, 4, 1
LIMIT_RATE, LIMIT_UNIT, LIMIT_BURST, LIMIT_TYPE, LIMIT_FLAGS = 1, 2, 3, 4, 5
LIMIT_PKT_BYTES, LIMIT_F_INV = 1, 1
GEN_ID = 1
UDATA_TABLE_COMMENT = 0

_NLMSGHDR = struct.Struct("=IHHII")
_NLA = struct.Struct("=HH")
_BE32, _BE64 = struct.Struct(">I"), struct.Struct(">Q")
Message = tuple[int, int, bytes, str]  # (nf_tables message type, flags, attributes, what)
Object = tuple[str, str, dict[int, int]]  # (kind, name, {attribute: number})


def _attr(kind: int, payload: bytes) -> bytes:
    size = 4 + len(payload)
    return _NLA.pack(size, kind) + payload + b"\0" * (-size % 4)


def _str(kind: int, value: str) -> bytes:
    return _attr(kind, value.encode() + b"\0")


def _nest(kind: int, *attrs: bytes) -> bytes:
    return _attr(kind | NLA_F_NESTED, b"".join(attrs))


def _attrs(buf: bytes, start: int, end: int) -> Iterator[tuple[int, int, int]]:
    """(type, payload start, payload end) of each attribute in buf[start:end]."""
    while start + 4 <= end:
        size, kind = _NLA.unpack_from(buf, start)
        if size < 4:
            return
        yield kind & NLA_TYPE_MASK, start + 4, start + size
        start += (size + 3) & ~3


def _cstr(buf: bytes, start: int, end: int) -> str:
    return buf[start:end].split(b"\0", 1)[0].decode()


def encode_key(key: str) -> bytes:
    """An element key as nft writes it ("198.19.0.5 . 02:50:4c:00:00:01", or an address) in
    the kernel's layout: the fields concatenated, each padded to 4 bytes."""
    ip, _, mac = key.partition(" . ")
    raw = socket.inet_pton(socket.AF_INET6 if ":" in ip else socket.AF_INET, ip)
    if mac:
        raw += bytes.fromhex(mac.replace(":", "")) + b"\0\0"
    return raw


def decode_key(raw: bytes) -> str:
    """The inverse of `encode_key`; the length tells the layout (4, 16, 4+8 or 16+8 bytes)."""
    n = len(raw)
    if n == 12:
        return f"{socket.inet_ntoa(raw[:4])} . {raw[4:10].hex(':')}"
    if n == 4:
        return socket.inet_ntoa(raw)
    import ipaddress  # IPv6, written as the session table writes it (RFC 5952)

    ip = str(ipaddress.IPv6Address(raw[:16]))
    return f"{ip} . {raw[16:22].hex(':')}" if n == 24 else ip


class NfNetlink:
    """nf_tables over a netlink socket: atomic batches of changes, dumps and single gets.

    The kernel handles what a process sends while `send` runs, so by the time it returns
    every answer is queued. A lock serializes callers; give each thread its own instance
    anyway, so a long dump in a worker never holds up the daemon's own calls.
    """

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self.sock.bind((0, 0))
        with contextlib.suppress(OSError):
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self._sndbuf = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        self._seq = 0
        self._buf = bytearray(1 << 17)
        self._lock = threading.Lock()

    def close(self) -> None:
        self.sock.close()

    @staticmethod
    def _header(
        mtype: int, flags: int, seq: int, body: bytes, family: int, batch: bool = False
    ) -> bytes:
        """nlmsghdr + nfgenmsg + attributes; batch delimiters name the subsystem instead."""
        res_id = NFNL_SUBSYS_NFTABLES if batch else 0
        kind = mtype if batch else (NFNL_SUBSYS_NFTABLES << 8) | mtype
        payload = struct.pack(">BBH", family, 0, res_id) + body
        return _NLMSGHDR.pack(16 + len(payload), kind, flags, seq, 0) + payload

    def _grow(self, size: int) -> None:
        """A batch must fit the send buffer whole; big reconciles need a bigger one."""
        if size + 4096 <= self._sndbuf // 2:
            return
        for option in (SO_SNDBUFFORCE, socket.SO_SNDBUF):  # FORCE needs CAP_NET_ADMIN
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, option, 2 * size + 65536)
            except OSError:
                continue
            break
        self._sndbuf = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)

    def commit(self, messages: list[Message]) -> None:
        """Send `messages` as one transaction: all of them take effect, or none.

        Only the last message asks for an ack (thousands of acks would overrun the socket);
        errors come unasked and before it; a failed commit answers for the batch's header."""
        if not messages:
            return
        with self._lock:
            first = self._seq + 1
            last = first + len(messages)
            self._seq = last + 1
            parts = [self._header(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, first, b"", 0, True)]
            for seq, (mtype, flags, body, _what) in enumerate(messages, start=first + 1):
                flags |= NLM_F_REQUEST | (NLM_F_ACK if seq == last else 0)
                parts.append(self._header(mtype, flags, seq, body, NFPROTO_INET))
            parts.append(self._header(NFNL_MSG_BATCH_END, NLM_F_REQUEST, last + 1, b"", 0, True))
            data = b"".join(parts)
            self._grow(len(data))
            try:
                self.sock.send(data)
            except OSError as exc:
                raise NftError(f"netlink: cannot send {len(data)} bytes: {exc.strerror}") from None
            errors: dict[int, int] = {}
            done = False
            while not done:
                for kind, _flags, seq, start, _end in self._receive():
                    if kind != NLMSG_ERROR or not first <= seq <= last:
                        continue  # a late answer to something earlier
                    code = -struct.unpack_from("=i", self._buf, start)[0]
                    if code:
                        errors[seq] = code
                    done |= seq == last
        if errors:
            seq, code = min(errors.items())
            what = messages[seq - first - 1][3] if seq > first else "commit"
            raise NftError(f"Error: Could not process rule: {os.strerror(code)} ({what})")

    def _receive(self) -> list[tuple[int, int, int, int, int]]:
        """One datagram into `self._buf`: (type, flags, seq, payload start, payload end) of
        each message in it."""
        try:
            size = self.sock.recv_into(self._buf)
        except OSError as exc:
            if exc.errno == errnos.ENOBUFS:
                raise NftError("netlink: answers overran the socket buffer") from None
            raise NftError(f"netlink: {exc.strerror}") from None
        out, pos = [], 0
        while pos + 16 <= size:
            length, kind, flags, seq, _pid = _NLMSGHDR.unpack_from(self._buf, pos)
            if length < 16:
                break
            out.append((kind, flags, seq, pos + 16, pos + length))
            pos += (length + 3) & ~3
        return out

    def request(
        self,
        mtype: int,
        body: bytes,
        dump: bool = False,
        parse: Callable[[bytearray, int, int], Any] | None = None,
        family: int = NFPROTO_INET,
    ) -> list[Any]:
        """One get (or dump) request: each answer's attributes (after the nfgenmsg header) as
        bytes, or what `parse(buffer, start, end)` makes of them (None: left out). NftError
        for an error answer; a dump that crossed a change is read again."""
        for _ in range(5):
            try:
                return self._request(mtype, body, dump, parse, family)
            except InterruptedError:
                continue
        raise NftError("netlink dump kept being interrupted by changes")

    def _request(
        self,
        mtype: int,
        body: bytes,
        dump: bool,
        parse: Callable[[bytearray, int, int], Any] | None,
        family: int = NFPROTO_INET,
    ) -> list[Any]:
        with self._lock:
            self._seq += 1
            seq = self._seq
            flags = NLM_F_REQUEST | (NLM_F_DUMP if dump else 0)
            try:
                self.sock.send(self._header(mtype, flags, seq, body, family))
            except OSError as exc:
                raise NftError(f"netlink: cannot send a request: {exc.strerror}") from None
            answers: list[Any] = []
            interrupted = False
            buf = self._buf
            while True:
                for kind, mflags, mseq, start, end in self._receive():
                    if mseq != seq:
                        continue  # a late answer to an earlier request
                    if kind == NLMSG_DONE:
                        if interrupted:
                            raise InterruptedError
                        return answers
                    if kind == NLMSG_ERROR:
                        code = -struct.unpack_from("=i", buf, start)[0]
                        if code:
                            raise NftError(f"Error: {os.strerror(code)}")
                        return answers
                    interrupted |= bool(mflags & NLM_F_DUMP_INTR)
                    if parse is None:
                        answers.append(bytes(buf[start + 4 : end]))
                    elif (parsed := parse(buf, start + 4, end)) is not None:
                        answers.append(parsed)
                    if not dump:
                        return answers

    def generation(self) -> int:
        """The ruleset's generation: it moves on by one with every committed transaction."""
        for msg in self.request(MSG_GETGEN, b""):
            for kind, start, _end in _attrs(msg, 0, len(msg)):
                if kind == GEN_ID:
                    return _BE32.unpack_from(msg, start)[0]
        raise NftError("no generation in the kernel's answer")

    def table_comment(self, table: str = ruleset.TABLE, family: int = NFPROTO_INET) -> str | None:
        """The table's comment (None: no comment); NftError if there is no such table."""
        for msg in self.request(MSG_GETTABLE, _str(TABLE_NAME, table), family=family):
            for kind, start, end in _attrs(msg, 0, len(msg)):
                if kind != TABLE_USERDATA:
                    continue
                pos = start
                while pos + 2 <= end:  # libnftnl's udata: type, length, value
                    utype, ulen = msg[pos], msg[pos + 1]
                    if utype == UDATA_TABLE_COMMENT:
                        return _cstr(msg, pos + 2, pos + 2 + ulen)
                    pos += 2 + ulen
        return None

    def elements(self, name: str) -> list[bytes]:
        body = _str(ELEM_LIST_TABLE, ruleset.TABLE) + _str(ELEM_LIST_SET, name)
        return self.request(MSG_GETSETELEM, body, dump=True)

    def objects(self, kind: str) -> list[Object]:
        body = _str(OBJ_TABLE, ruleset.TABLE) + _attr(OBJ_TYPE, _BE32.pack(OBJ_TYPES[kind]))
        return self.request(MSG_GETOBJ, body, dump=True, parse=parse_object)

    def object(
        self, kind: str, name: str, table: str = ruleset.TABLE, family: int = NFPROTO_INET
    ) -> Object | None:
        body = _str(OBJ_TABLE, table) + _str(OBJ_NAME, name)
        body += _attr(OBJ_TYPE, _BE32.pack(OBJ_TYPES[kind]))
        answers = self.request(MSG_GETOBJ, body, parse=parse_object, family=family)
        return answers[0] if answers else None

    def has_table(self, table: str = ruleset.TABLE, family: int = NFPROTO_INET) -> bool:
        try:
            self.request(MSG_GETTABLE, _str(TABLE_NAME, table), family=family)
        except NftError:
            return False
        return True


ELEMENTS_PER_MESSAGE = 16_384  # bytes of elements per message: attribute lengths are 16 bits


def _elements_messages(verb: str, name: str, items: list[tuple[str, str | None]]) -> list[Message]:
    """NEWSETELEM / DELSETELEM messages for `items`, as many as their size needs."""
    messages: list[Message] = []
    elems: list[bytes] = []
    size, first = 0, 0
    for i, (key, obj) in enumerate(items):
        inner = _nest(ELEM_KEY, _attr(DATA_VALUE, encode_key(key)))
        if obj is not None and verb == "add":
            inner += _str(ELEM_OBJREF, obj)
        elem = _nest(LIST_ELEM, inner)
        if elems and size + len(elem) > ELEMENTS_PER_MESSAGE:
            messages.append(_elements_message(verb, name, elems, items[first][0]))
            elems, size, first = [], 0, i
        elems.append(elem)
        size += len(elem)
    if elems:
        messages.append(_elements_message(verb, name, elems, items[first][0]))
    return messages


def _elements_message(verb: str, name: str, elems: list[bytes], key: str) -> Message:
    body = _str(ELEM_LIST_TABLE, ruleset.TABLE) + _str(ELEM_LIST_SET, name)
    body += _nest(ELEM_LIST_ELEMENTS, *elems)
    what = f"{verb} element {name} {{ {key}{' ...' if len(elems) > 1 else ''} }}"
    if verb == "add":
        return MSG_NEWSETELEM, NLM_F_CREATE, body, what
    return MSG_DELSETELEM, 0, body, what


def _object_message(key: ruleset.ObjectKey, spec: ruleset.Spec | None, begin: Start) -> Message:
    """NEWOBJ (`spec`) or DELOBJ (None); a new object starts from `begin`, like the text
    `add counter ... { packets P bytes B }` / `add quota ... { over N bytes used U bytes }`."""
    kind, name = key
    head = _str(OBJ_TABLE, ruleset.TABLE) + _str(OBJ_NAME, name)
    head += _attr(OBJ_TYPE, _BE32.pack(OBJ_TYPES[kind]))
    if spec is None:
        return MSG_DELOBJ, 0, head, f"delete {kind} {name}"
    prefix = name.partition("_")[0]
    if kind == "counter":
        u = begin.usage
        packets, count = (u.packets_up, u.bytes_up) if prefix == ruleset.COUNTER_UP else (
            u.packets_down, u.bytes_down)  # fmt: skip
        data = _attr(COUNTER_BYTES, _BE64.pack(count))
        data += _attr(COUNTER_PACKETS, _BE64.pack(packets))
    elif kind == "quota":
        what = {v: k for k, v in ruleset.QUOTA_PREFIX.items()}[prefix]
        data = _attr(QUOTA_BYTES, _BE64.pack(spec[0]))
        data += _attr(QUOTA_FLAGS, _BE32.pack(QUOTA_F_INV))
        data += _attr(QUOTA_CONSUMED, _BE64.pack(begin.quota_used.get(what, 0)))
    else:  # limit: rate over R bytes/second burst B bytes
        rate, burst = spec
        data = _attr(LIMIT_RATE, _BE64.pack(rate)) + _attr(LIMIT_UNIT, _BE64.pack(1))
        data += _attr(LIMIT_BURST, _BE32.pack(burst))
        data += _attr(LIMIT_TYPE, _BE32.pack(LIMIT_PKT_BYTES))
        data += _attr(LIMIT_FLAGS, _BE32.pack(LIMIT_F_INV))
    return MSG_NEWOBJ, NLM_F_CREATE, head + _nest(OBJ_DATA, data), f"add {kind} {name}"


def change_messages(changes: Changes, start: Mapping[str, Start] | None = None) -> list[Message]:
    """`changes` as netlink messages, in `ruleset.change_commands` order: elements go before
    the objects they name, objects come before the elements that name them."""
    start = start or {}
    msgs: list[Message] = []
    for name, group in _by_set(changes.del_elements).items():
        msgs += _elements_messages("delete", name, group)
    msgs += [_object_message(key, None, Start()) for key in changes.del_objects]
    for key, spec in changes.add_objects:
        session = key[1].partition("_")[2]
        msgs.append(_object_message(key, spec, start.get(session, Start())))
    for name, group in _by_set(changes.add_elements).items():
        msgs += _elements_messages("add", name, group)
    return msgs


def _by_set(elements: Iterable[ruleset.Triple]) -> dict[str, list[tuple[str, str | None]]]:
    groups: dict[str, list[tuple[str, str | None]]] = {}
    for name, key, obj in elements:
        groups.setdefault(name, []).append((key, obj))
    return groups


CLIENT_SETS = (
    ruleset.SET4,
    ruleset.SET6,
    *(f"{stem}{f}" for stem in ruleset.POLICY_MAPS for f in "46"),
)


def parse_elements(name: str, messages: list[bytes], into: set[ruleset.Triple]) -> None:
    """Add the (set, key, object or None) triples of a GETSETELEM dump to `into`."""
    for msg in messages:
        for kind, start, end in _attrs(msg, 0, len(msg)):
            if kind != ELEM_LIST_ELEMENTS:
                continue
            for _elem, es, ee in _attrs(msg, start, end):
                key, obj = b"", None
                for ak, as_, ae in _attrs(msg, es, ee):
                    if ak == ELEM_KEY:
                        for dk, ds, de in _attrs(msg, as_, ae):
                            if dk == DATA_VALUE:
                                key = msg[ds:de]
                    elif ak == ELEM_OBJREF:
                        obj = _cstr(msg, as_, ae)
                into.add((name, decode_key(key), obj))


def element_pairs(buf: bytes | bytearray, start: int, end: int) -> list[tuple[str, str | None]]:
    """(key, object name or None) of each element in one GETSETELEM answer's attributes."""
    pairs: list[tuple[str, str | None]] = []
    for kind, s, e in _attrs(buf, start, end):
        if kind != ELEM_LIST_ELEMENTS:
            continue
        for _elem, es, ee in _attrs(buf, s, e):
            key, obj = b"", None
            for ak, as_, ae in _attrs(buf, es, ee):
                if ak == ELEM_KEY:
                    for dk, ds, de in _attrs(buf, as_, ae):
                        if dk == DATA_VALUE:
                            key = bytes(buf[ds:de])
                elif ak == ELEM_OBJREF:
                    obj = _cstr(buf, as_, ae)
            pairs.append((decode_key(key), obj))
    return pairs


_MISSING: Any = object()


def _object_and_spec(
    buf: bytearray, start: int, end: int
) -> tuple[ruleset.ObjectKey, ruleset.Spec] | None:
    found = parse_object(buf, start, end)
    if found is None:
        return None
    kind, name, values = found
    return (kind, name), object_spec(kind, values)


# Bits of a session's objects, by name prefix, for `drift`'s tally of what it found.
_OBJECT_BITS = {
    prefix: 1 << i
    for i, prefix in enumerate(
        (ruleset.COUNTER_UP, ruleset.COUNTER_DOWN, *ruleset.QUOTA_PREFIX.values(),
         *ruleset.LIMIT_PREFIX.values())
    )
}  # fmt: skip


def drift(nl: NfNetlink, grants: Iterable[Grant]) -> Changes:
    """The changes that make the kernel's client elements and objects equal `grants`: what
    `ruleset.diff(ruleset.desired(grants), state)` gives, without building either side.

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
    del_objects: list[ruleset.ObjectKey] = []
    add_objects: list[tuple[ruleset.ObjectKey, ruleset.Spec]] = []
    replaced: set[str] = set()  # limits cannot change in place: deleted and made again
    del_elements: list[ruleset.Triple] = []
    add_elements: list[ruleset.Triple] = []

    def check_object(buf: bytearray, start: int, end: int) -> None:
        parsed = _object_and_spec(buf, start, end)
        if parsed is None:
            return
        key, have = parsed
        prefix, _, session = key[1].partition("_")
        grant = by_session.get(session)
        spec = ruleset.grant_objects(grant).get(key, _MISSING) if grant else _MISSING
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
        body = _str(OBJ_TABLE, ruleset.TABLE) + _attr(OBJ_TYPE, _BE32.pack(OBJ_TYPES[kind]))
        nl.request(MSG_GETOBJ, body, dump=True, parse=check_object)
    for grant in grants:
        found = found_objects.get(grant.session, 0)
        for key, spec in ruleset.grant_objects(grant).items():
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
                    for n, k, o in ruleset.grant_elements(grant):
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

        body = _str(ELEM_LIST_TABLE, ruleset.TABLE) + _str(ELEM_LIST_SET, name)
        nl.request(MSG_GETSETELEM, body, dump=True, parse=check_elements)
    for grant in grants:
        for name, key, obj in ruleset.grant_elements(grant):
            if key.partition(" . ")[0] not in found_elements[name]:
                add_elements.append((name, key, obj))
    order = ruleset.element_order
    return Changes(
        del_elements=tuple(sorted(del_elements, key=order)),
        del_objects=tuple(sorted(del_objects)),
        add_objects=tuple(sorted(add_objects)),
        add_elements=tuple(sorted(add_elements, key=order)),
    )


def parse_object(msg: bytes | bytearray, start: int = 0, end: int | None = None) -> Object | None:
    """(kind, name, {attribute: number}) of a NEWOBJ answer's attributes in msg[start:end].

    Written out rather than with `_attrs`: a poll parses 20,000 of these at 10,000 clients."""
    end = len(msg) if end is None else end
    name, kind, values = "", None, {}
    unpack, be32, be64 = _NLA.unpack_from, _BE32.unpack_from, _BE64.unpack_from
    while start + 4 <= end:
        size, k = unpack(msg, start)
        if size < 4:
            break
        k &= NLA_TYPE_MASK
        if k == OBJ_NAME:
            name = msg[start + 4 : start + size].split(b"\0", 1)[0].decode()
        elif k == OBJ_TYPE:
            kind = OBJ_KINDS.get(be32(msg, start + 4)[0])
        elif k == OBJ_DATA:
            pos, stop = start + 4, start + size
            while pos + 4 <= stop:
                dsize, dk = unpack(msg, pos)
                if dsize == 12:
                    values[dk & NLA_TYPE_MASK] = be64(msg, pos + 4)[0]
                elif dsize == 8:
                    values[dk & NLA_TYPE_MASK] = be32(msg, pos + 4)[0]
                elif dsize < 4:
                    break
                pos += (dsize + 3) & ~3
        start += (size + 3) & ~3
    return (kind, name, values) if kind else None


_QUOTA_KINDS = {v: k for k, v in ruleset.QUOTA_PREFIX.items()}


def _tally(
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
    if kind == "counter" and prefix in (ruleset.COUNTER_UP, ruleset.COUNTER_DOWN):
        slot = usage.get(session)
        if slot is None:
            slot = usage[session] = [0, 0, 0, 0]  # bytes_up, packets_up, bytes_down, ...
        at = 0 if prefix == ruleset.COUNTER_UP else 2
        slot[at], slot[at + 1] = values.get(COUNTER_BYTES, 0), values.get(COUNTER_PACKETS, 0)
    elif kind == "quota" and prefix in _QUOTA_KINDS:
        quota = Quota(limit=values.get(QUOTA_BYTES, 0), used=values.get(QUOTA_CONSUMED, 0))
        quotas.setdefault(session, {})[_QUOTA_KINDS[prefix]] = quota


def _readings(
    usage: dict[str, list[int]], quotas: dict[str, dict[str, Quota]]
) -> dict[str, Reading]:
    found = {s: Reading(Usage(*slot), quotas.pop(s, NO_QUOTAS)) for s, slot in usage.items()}
    found.update((s, Reading(Usage(), q)) for s, q in quotas.items())
    return found


def readings_of(objects: Iterable[Object]) -> dict[str, Reading]:
    """Per-session usage and quotas from counter and quota objects."""
    usage: dict[str, list[int]] = {}
    quotas: dict[str, dict[str, Quota]] = {}
    for found in objects:
        _add(found, usage, quotas)
    return _readings(usage, quotas)


def object_spec(kind: str, values: dict[int, int]) -> ruleset.Spec:
    if kind == "quota":
        return (values.get(QUOTA_BYTES, 0),)
    if kind == "limit":
        return (values.get(LIMIT_RATE, 0), values.get(LIMIT_BURST, 0))
    return ()


def _release(nft: object) -> None:
    """Let a libnftables context (or a test's stand-in, which has no cache) drop its cache."""
    release = getattr(nft, "release", None)
    if release is not None:
        release()


class NftFirewall:
    """The real kernel, in the caller's network namespace: nf_tables netlink for what runs
    often, libnftables for replacing the whole table."""

    def __init__(self, nft: Libnftables | None = None) -> None:
        self.nft = nft or Libnftables()
        self.nl = NfNetlink()  # the daemon's own thread
        self.bulk = NfNetlink()  # big reads in a worker thread (`snapshot`)
        self.commits = 0  # transactions committed by this process
        self._journal: list[Changes | None] | None = None  # None: the table was replaced
        self._snapshots = 0
        self._readings: dict[str, Reading] | None = None  # installed by a snapshot
        self._state: KernelState | None = None

    # -- changes ---------------------------------------------------------------------------
    def apply(
        self, config: Config, grants: list[Grant], start: Mapping[str, Start] | None = None
    ) -> None:
        """Replace the table; walled-garden addresses learned from DNS are carried over with
        their remaining lifetime (dnsmasq answers from its cache without re-adding them), and
        session counters from `start` (the caller read them just before)."""
        garden: dict[str, list] = {}
        try:
            for name, _kind in ruleset.GARDEN_SETS:
                try:
                    out = self.nft.run(
                        f"list set {ruleset.FAMILY} {ruleset.TABLE} {name}", json_output=True
                    )
                except NftError:
                    continue  # no table yet (first start) or an older table without the set
                garden[name] = ruleset.garden_elements(out)
            self.nft.run(ruleset.transaction(config, grants, garden, start))
        finally:
            _release(self.nft)
        self._committed(None)

    def change(self, changes: Changes, start: Mapping[str, Start] | None = None) -> None:
        """Apply element and object changes in one transaction (all or nothing)."""
        if changes:
            self.nl.commit(change_messages(changes, start))
            self._committed(changes)

    def own_commit(self) -> None:
        """Count a commit this process made to another table (the LAN guard's, the garden
        hook's): it moves the ruleset generation like ours, and is no one else's change."""
        self.commits += 1

    def _committed(self, changes: Changes | None) -> None:
        self.commits += 1
        if self._journal is not None:
            self._journal.append(changes)

    # -- reads -----------------------------------------------------------------------------
    def generation(self) -> int:
        """The kernel's ruleset generation: with `commits`, tells whether anyone else has
        changed any table since (each commit moves it on by one)."""
        return self.nl.generation()

    def drift(self, grants: Iterable[Grant]) -> Changes:
        """What makes the kernel's client elements and objects equal `grants` (see `drift`;
        a snapshot's state, if one was installed, is dropped: this reads the kernel)."""
        self._state = None
        return drift(self.nl, grants)

    def state(self) -> KernelState:
        """The client sets, maps and objects (the garden sets, large, are not read)."""
        state, self._state = self._state, None
        return state if state is not None else self._read_state(self.nl)

    def _read_state(self, nl: NfNetlink) -> KernelState:
        elements: set[ruleset.Triple] = set()
        for name in CLIENT_SETS:
            parse_elements(name, nl.elements(name), elements)
        objects: dict[ruleset.ObjectKey, ruleset.Spec] = {}
        for kind in OBJ_TYPES:
            for _kind, name, values in nl.objects(kind):
                objects[(kind, name)] = object_spec(kind, values)
        return KernelState(frozenset(elements), objects)

    def readings(self, sessions: Iterable[Grant] | None = None) -> dict[str, Reading]:
        """Counters and quotas per session: all of them, or only those of `sessions` (a
        session's end reads its own objects, not ten thousand others)."""
        if sessions is None:
            found, self._readings = self._readings, None
            return found if found is not None else self._read_readings(self.nl)
        wanted = [key for g in sessions for key in ruleset.grant_objects(g) if key[0] != "limit"]
        if len(wanted) > 4096:  # many ended at once: one dump costs less than the gets
            keep = {name.partition("_")[2] for _kind, name in wanted}
            return {s: r for s, r in self._read_readings(self.nl).items() if s in keep}
        objects = []
        try:
            for kind, name in wanted:
                if found := self.nl.object(kind, name):
                    objects.append(found)
        except NftError:
            return self._read_readings(self.nl)  # an object is missing (drift): read all
        return readings_of(objects)

    def _read_readings(self, nl: NfNetlink) -> dict[str, Reading]:
        """Every session's counters and quotas, parsed as they arrive (at 10,000 clients the
        20,000 objects are never all held as parsed objects at once)."""
        if not self._present(nl):
            raise NftError("Error: No such file or directory; table inet plaza is missing")
        usage: dict[str, list[int]] = {}
        quotas: dict[str, dict[str, Quota]] = {}
        for kind in ("counter", "quota"):
            body = _str(OBJ_TABLE, ruleset.TABLE) + _attr(OBJ_TYPE, _BE32.pack(OBJ_TYPES[kind]))
            nl.request(
                MSG_GETOBJ, body, dump=True, parse=lambda b, s, e: _tally(b, s, e, usage, quotas)
            )
        return _readings(usage, quotas)

    def allowed(self) -> set[Element]:
        found: set[ruleset.Triple] = set()
        for name in (ruleset.SET4, ruleset.SET6):
            parse_elements(name, self.nl.elements(name), found)
        return {(key.split(" . ")[0], key.split(" . ")[1]) for _name, key, _obj in found}

    def present(self) -> bool:
        return self._present(self.nl)

    @staticmethod
    def _present(nl: NfNetlink) -> bool:
        try:
            nl.request(MSG_GETTABLE, _str(TABLE_NAME, ruleset.TABLE))
        except NftError:
            return False
        return True

    def current(self, config: Config) -> bool:
        """The kernel's table has the structure `config` renders (same fingerprint)."""
        try:
            comment = self.nl.table_comment()
        except NftError:
            return False
        have = ruleset.fingerprint(f'\tcomment "{comment}"') if comment else None
        return have is not None and have == ruleset.fingerprint(ruleset.render(config))

    def listing(self) -> str:
        try:
            return self.nft.run(f"list table {ruleset.FAMILY} {ruleset.TABLE}")
        finally:
            _release(self.nft)

    # -- reads in a worker thread ------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        """A big read to make in a worker thread: see `Snapshot`."""
        return Snapshot(self)

    def _install(self, snap: Snapshot) -> None:
        assert self._journal is not None
        since = self._journal[snap.mark :]
        if any(changes is None for changes in since):
            return  # the table was replaced meanwhile: the next read goes to the kernel
        changed = [c for c in since if c is not None]
        if snap.readings is not None:
            # Objects (re)created or deleted while the read ran: their numbers may predate it.
            redone = {
                name.partition("_")[2]
                for c in changed
                for _kind, name in (*c.del_objects, *(key for key, _ in c.add_objects))
            }
            self._readings = {s: r for s, r in snap.readings.items() if s not in redone}
        if snap.state is not None and not changed:
            self._state = snap.state
        elif snap.state is not None:
            elements = {(name, key): obj for name, key, obj in snap.state.elements}
            objects = dict(snap.state.objects)
            for c in changed:  # replayed in commit order: the kernel holds exactly this now
                for name, key, _obj in c.del_elements:
                    elements.pop((name, key), None)
                for key in c.del_objects:
                    objects.pop(key, None)
                objects.update(c.add_objects)
                elements.update(((name, key), obj) for name, key, obj in c.add_elements)
            triples = frozenset((name, key, obj) for (name, key), obj in elements.items())
            self._state = KernelState(triples, objects)

    def _journal_open(self) -> int:
        if self._journal is None:
            self._journal = []
        self._snapshots += 1
        return len(self._journal)

    def _journal_close(self) -> None:
        self._snapshots -= 1
        if not self._snapshots:
            self._journal = None
            self._readings = self._state = None


class Snapshot:
    """A big read (every counter, or the whole client state) made in a worker thread, so
    the daemon's thread keeps answering logins meanwhile.

    Used as `with firewall.snapshot() as snap:` on the daemon's thread, which starts a
    journal of the changes the firewall commits; `await asyncio.to_thread(snap.read_state)`
    reads with the worker's own netlink socket; `snap.install()` (daemon thread) replays the
    changes committed meanwhile onto what was read and hands it to the next `state()` or
    `readings()` call. A read overtaken by a whole-table replacement is dropped, and that
    next call reads the kernel itself.
    """

    def __init__(self, firewall: NftFirewall) -> None:
        self.firewall = firewall
        self.mark = 0
        self.readings: dict[str, Reading] | None = None
        self.state: KernelState | None = None
        self.drift: Changes | None = None  # kernel -> the grants, from `read_state(grants)`
        self.seconds = 0.0  # what the read (and diff) took in the worker

    def __enter__(self) -> Snapshot:
        self.mark = self.firewall._journal_open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.firewall._journal_close()

    def read_readings(self) -> None:
        started = time.perf_counter()
        self.readings = self.firewall._read_readings(self.firewall.bulk)
        self.seconds = time.perf_counter() - started

    def read_state(self, grants: list[Grant] | None = None) -> None:
        """Read the client state; with `grants` (what the gateway holds in the kernel, as it
        was when the snapshot opened), also diff it against them here in the worker."""
        started = time.perf_counter()
        self.state = self.firewall._read_state(self.firewall.bulk)
        if grants is not None:
            self.drift = ruleset.diff(ruleset.desired(grants), self.state)
        self.seconds = time.perf_counter() - started

    def read_drift(self, grants: list[Grant]) -> None:
        """Compare the kernel with `grants` (what the gateway holds in the kernel, as it was
        when the snapshot opened) without keeping the kernel's state: see `drift`."""
        started = time.perf_counter()
        self.drift = drift(self.firewall.bulk, grants)
        self.seconds = time.perf_counter() - started

    def drifted(self) -> bool:
        """(Daemon thread.) Whether the kernel differs from the grants beyond what this
        process committed while the read ran: what it touched is as it committed it, in the
        kernel and in the gateway alike, so only differences elsewhere are drift."""
        repair = self.repair()
        return repair is None or bool(repair)

    def repair(self) -> Changes | None:
        """(Daemon thread.) The part of the drift this process did not touch while the read
        ran: what makes the kernel equal the grants now. None: not known (no comparison, or
        the whole table was replaced meanwhile)."""
        if self.drift is None:
            return None
        since = self.firewall._journal[self.mark :] if self.firewall._journal else []
        if any(changes is None for changes in since):
            return None
        d = self.drift
        if not since:
            return d
        touched_elements = {
            (name, key) for c in since for name, key, _obj in (*c.del_elements, *c.add_elements)
        }
        touched_objects = {key for c in since for key in c.del_objects}
        touched_objects |= {key for c in since for key, _spec in c.add_objects}
        return Changes(
            del_elements=tuple(e for e in d.del_elements if e[:2] not in touched_elements),
            del_objects=tuple(k for k in d.del_objects if k not in touched_objects),
            add_objects=tuple(o for o in d.add_objects if o[0] not in touched_objects),
            add_elements=tuple(e for e in d.add_elements if e[:2] not in touched_elements),
        )

    def install(self) -> None:
        self.firewall._install(self)


class FakeFirewall:
    """In-memory stand-in with the same contract, so policy tests need neither root nor kernel.

    It models what the gateway relies on: client elements and objects with the kernel's
    transaction rules (a change that deletes what is missing, or re-points a key, fails whole),
    counters that carry initial values, and quotas that drop traffic once used up. `traffic()`
    plays packets through a client's policy as `client_up` / `client_down` would.
    """

    def __init__(self) -> None:
        self.table: str | None = None
        self.elements: set[ruleset.Triple] = set()
        self.objects: dict[ruleset.ObjectKey, ruleset.Spec] = {}
        self.counters: dict[str, list[int]] = {}  # name -> [packets, bytes]
        self.quota_used: dict[str, int] = {}
        self.calls: list[tuple[str, tuple]] = []
        self.fail_next: str | None = None  # an NftError message for the next change

    # -- the Firewall contract -------------------------------------------------------------
    def apply(
        self, config: Config, grants: list[Grant], start: Mapping[str, Start] | None = None
    ) -> None:
        self.table = ruleset.render(config)
        self.elements, self.objects = set(), {}
        self.counters, self.quota_used = {}, {}
        self._commit(ruleset.diff(ruleset.desired(grants), KernelState()), start or {})
        self.calls.append(("apply", tuple(sorted(e for g in grants for e in g.elements()))))

    def change(self, changes: Changes, start: Mapping[str, Start] | None = None) -> None:
        if self.table is None:
            raise NftError("Error: No such file or directory; did you mean table 'plaza'?")
        if self.fail_next:
            message, self.fail_next = self.fail_next, None
            raise NftError(message)
        self._check(changes)
        self._commit(changes, start or {})
        self.calls.append(("change", (changes.del_elements, changes.add_elements)))

    def state(self) -> KernelState:
        return KernelState(frozenset(self.elements), dict(self.objects))

    def readings(self, sessions: Iterable[Grant] | None = None) -> dict[str, Reading]:
        wanted = None if sessions is None else {g.session for g in sessions}
        usage: dict[str, dict[str, int]] = {}
        quotas: dict[str, dict[str, Quota]] = {}
        for (kind, name), spec in self.objects.items():
            prefix, _, session = name.partition("_")
            if wanted is not None and session not in wanted:
                continue
            if kind == "counter":
                packets, count = self.counters[name]
                usage.setdefault(session, {}).update(
                    {f"bytes_{prefix}": count, f"packets_{prefix}": packets}
                )
            elif kind == "quota":
                what = {v: k for k, v in ruleset.QUOTA_PREFIX.items()}[prefix]
                quotas.setdefault(session, {})[what] = Quota(spec[0], self.quota_used[name])
        return {
            s: Reading(Usage(**usage.get(s, {})), quotas.get(s, {}))
            for s in usage.keys() | quotas.keys()
        }

    def allowed(self) -> set[Element]:
        return {
            (key.split(" . ")[0], key.split(" . ")[1])
            for name, key, _ in self.elements
            if name in (ruleset.SET4, ruleset.SET6)
        }

    def present(self) -> bool:
        return self.table is not None

    def current(self, config: Config) -> bool:
        return self.table == ruleset.render(config)

    # -- test helpers ----------------------------------------------------------------------
    def flush(self) -> None:
        """The table vanished (someone ran `nft flush ruleset`)."""
        self.table = None
        self.elements, self.objects, self.counters, self.quota_used = set(), {}, {}, {}

    def traffic(self, ip: str, mac: str, up: int = 0, down: int = 0, size: int = 1000) -> int:
        """Send `up` bytes from and `down` bytes to a client in packets of `size` bytes;
        returns the bytes that got through (quotas drop the rest)."""
        passed = 0
        f = "6" if ":" in ip else "4"
        authorized = any(n.startswith("auth") and k == f"{ip} . {mac}" for n, k, _ in self.elements)
        for direction, amount, key in (("up", up, f"{ip} . {mac}"), ("down", down, ip)):
            if direction == "up" and not authorized:
                continue  # lan_forward rejects it
            while amount > 0:
                length = min(size, amount)
                amount -= length
                if self._dropped_by_quota(direction, f, key, length):
                    continue
                counter = self._target(f"cnt_{direction}{f}", key)
                if counter:
                    self.counters[counter][0] += 1
                    self.counters[counter][1] += length
                    passed += length
        return passed

    # -- internals -------------------------------------------------------------------------
    def _target(self, map_name: str, key: str) -> str | None:
        return next((v for n, k, v in self.elements if n == map_name and k == key), None)

    def _dropped_by_quota(self, direction: str, f: str, key: str, length: int) -> bool:
        for stem in (f"quota_{direction}", f"quota_total_{direction}"):
            name = self._target(f"{stem}{f}", key)
            if name:
                self.quota_used[name] += length
                if self.quota_used[name] >= self.objects[("quota", name)][0]:
                    return True  # `quota over`: the packet that crosses the line goes too
        return False

    def _check(self, changes: Changes) -> None:
        elements = set(self.elements)
        for e in changes.del_elements:
            match = next((x for x in elements if x[:2] == e[:2]), None)
            if match is None:
                raise NftError("Error: Could not process rule: No such file or directory")
            elements.discard(match)
        objects = set(self.objects)
        for key in changes.del_objects:
            if key not in objects:
                raise NftError("Error: Could not process rule: No such file or directory")
            if any(e[2] == key[1] for e in elements):
                raise NftError("Error: Could not process rule: Device or resource busy")
            objects.discard(key)
        objects |= {key for key, _ in changes.add_objects}
        for e in changes.add_elements:
            old = next((x for x in elements if x[:2] == e[:2]), None)
            if old is not None and old != e:
                raise NftError("Error: Could not process rule: File exists")
            if e[2] is not None and not any(k[1] == e[2] for k in objects):
                raise NftError("Error: Could not process rule: No such file or directory")
            elements.add(e)

    def _commit(self, changes: Changes, start: Mapping[str, Start]) -> None:
        for e in changes.del_elements:
            self.elements = {x for x in self.elements if x[:2] != e[:2]}
        for key in changes.del_objects:
            self.objects.pop(key, None)
            self.counters.pop(key[1], None)
            self.quota_used.pop(key[1], None)
        for key, spec in changes.add_objects:
            kind, name = key
            prefix, _, session = name.partition("_")
            begin = start.get(session, Start())
            exists = key in self.objects
            self.objects[key] = spec
            if exists:
                continue  # a quota resized in place keeps what it used
            if kind == "counter":
                u = begin.usage
                self.counters[name] = (
                    [u.packets_up, u.bytes_up] if prefix == "up" else [u.packets_down, u.bytes_down]
                )
            elif kind == "quota":
                what = {v: k for k, v in ruleset.QUOTA_PREFIX.items()}[prefix]
                self.quota_used[name] = begin.quota_used.get(what, 0)
        self.elements |= set(changes.add_elements)
