"""nf_tables over a netlink socket: the message layout, and the socket that sends batches and
reads dumps.

What runs often talks nf_tables netlink directly rather than through libnftables
(gateway/dataplane/libnft.py): client element and object changes, counter and quota reads,
the reconciler's listing, a table's presence and structure fingerprint. libnftables fills its
cache before every command, and that cache holds every object and map element of the table:
at 10,000 clients one `add element` cost ~35 ms and one `list counters` ~200 ms, where a
netlink batch or dump costs what its own objects cost.

This module knows the wire: attributes, keys, the socket. What the messages for client
elements and objects say is gateway/dataplane/messages.py.
"""

from __future__ import annotations

import contextlib
import errno as errnos
import os
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from typing import Any

from gateway.dataplane.firewall import NftError
from gateway.dataplane.grants import TABLE

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

NLMSGHDR = struct.Struct("=IHHII")
NLA = struct.Struct("=HH")
BE32, BE64 = struct.Struct(">I"), struct.Struct(">Q")
Message = tuple[int, int, bytes, str]  # (nf_tables message type, flags, attributes, what)
Object = tuple[str, str, dict[int, int]]  # (kind, name, {attribute: number})


def attr(kind: int, payload: bytes) -> bytes:
    size = 4 + len(payload)
    return NLA.pack(size, kind) + payload + b"\0" * (-size % 4)


def strz(kind: int, value: str) -> bytes:
    return attr(kind, value.encode() + b"\0")


def nest(kind: int, *parts: bytes) -> bytes:
    return attr(kind | NLA_F_NESTED, b"".join(parts))


def attrs(buf: bytes, start: int, end: int) -> Iterator[tuple[int, int, int]]:
    """(type, payload start, payload end) of each attribute in buf[start:end]."""
    while start + 4 <= end:
        size, kind = NLA.unpack_from(buf, start)
        if size < 4:
            return
        yield kind & NLA_TYPE_MASK, start + 4, start + size
        start += (size + 3) & ~3


def cstr(buf: bytes, start: int, end: int) -> str:
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
        return NLMSGHDR.pack(16 + len(payload), kind, flags, seq, 0) + payload

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
            length, kind, flags, seq, _pid = NLMSGHDR.unpack_from(self._buf, pos)
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
            for kind, start, _end in attrs(msg, 0, len(msg)):
                if kind == GEN_ID:
                    return BE32.unpack_from(msg, start)[0]
        raise NftError("no generation in the kernel's answer")

    def table_comment(self, table: str = TABLE, family: int = NFPROTO_INET) -> str | None:
        """The table's comment (None: no comment); NftError if there is no such table."""
        for msg in self.request(MSG_GETTABLE, strz(TABLE_NAME, table), family=family):
            for kind, start, end in attrs(msg, 0, len(msg)):
                if kind != TABLE_USERDATA:
                    continue
                pos = start
                while pos + 2 <= end:  # libnftnl's udata: type, length, value
                    utype, ulen = msg[pos], msg[pos + 1]
                    if utype == UDATA_TABLE_COMMENT:
                        return cstr(msg, pos + 2, pos + 2 + ulen)
                    pos += 2 + ulen
        return None

    def elements(self, name: str) -> list[bytes]:
        body = strz(ELEM_LIST_TABLE, TABLE) + strz(ELEM_LIST_SET, name)
        return self.request(MSG_GETSETELEM, body, dump=True)

    def objects(self, kind: str) -> list[Object]:
        body = strz(OBJ_TABLE, TABLE) + attr(OBJ_TYPE, BE32.pack(OBJ_TYPES[kind]))
        return self.request(MSG_GETOBJ, body, dump=True, parse=parse_object)

    def object(
        self, kind: str, name: str, table: str = TABLE, family: int = NFPROTO_INET
    ) -> Object | None:
        body = strz(OBJ_TABLE, table) + strz(OBJ_NAME, name)
        body += attr(OBJ_TYPE, BE32.pack(OBJ_TYPES[kind]))
        answers = self.request(MSG_GETOBJ, body, parse=parse_object, family=family)
        return answers[0] if answers else None

    def has_table(self, table: str = TABLE, family: int = NFPROTO_INET) -> bool:
        try:
            self.request(MSG_GETTABLE, strz(TABLE_NAME, table), family=family)
        except NftError:
            return False
        return True


def parse_object(msg: bytes | bytearray, start: int = 0, end: int | None = None) -> Object | None:
    """(kind, name, {attribute: number}) of a NEWOBJ answer's attributes in msg[start:end].

    Written out rather than with `attrs`: a poll parses 20,000 of these at 10,000 clients."""
    end = len(msg) if end is None else end
    name, kind, values = "", None, {}
    unpack, be32, be64 = NLA.unpack_from, BE32.unpack_from, BE64.unpack_from
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
