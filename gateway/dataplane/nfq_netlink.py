"""NFQUEUE over a plain netlink socket, in Python: what the daemon uses of the `netfilterqueue`
binding, for routers whose Python has no such package and no compiler to build one (OpenWrt's
feed has neither). gateway/dataplane/nfqueue.py falls back to it when `netfilterqueue` cannot
be imported.

The same surface, so the queue readers do not know which one they hold: `bind(num, callback,
max_len, range)`, `get_fd()`, `run(block)`, `run_socket(sock)`, `unbind()`; packets offer
`get_payload()`, `get_hw()`, `get_mark()`, `set_mark()`, `accept()`, `drop()`, and a verdict
may be given later (the garden inspector holds a packet while a ClientHello is reassembled).
The messages are linux/netfilter/nfnetlink_queue.h's: NFQNL_MSG_CONFIG to bind (copy mode
and range, queue length), NFQNL_MSG_PACKET in, NFQNL_MSG_VERDICT (with a mark) out.
"""

from __future__ import annotations

import errno
import socket
import struct
from collections.abc import Callable

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET, NFQNL_MSG_VERDICT, NFQNL_MSG_CONFIG = 0, 1, 2
NFQA_CFG_CMD, NFQA_CFG_PARAMS, NFQA_CFG_QUEUE_MAXLEN = 1, 2, 3
NFQNL_CFG_CMD_BIND, NFQNL_CFG_CMD_UNBIND = 1, 2
NFQNL_COPY_PACKET = 2
NFQA_PACKET_HDR, NFQA_VERDICT_HDR, NFQA_MARK, NFQA_HWADDR, NFQA_PAYLOAD = 1, 2, 3, 9, 10
NF_DROP, NF_ACCEPT = 0, 1
NLM_F_REQUEST, NLM_F_ACK = 0x1, 0x4
NLMSG_ERROR = 2
NLA_TYPE_MASK = 0x3FFF  # without NLA_F_NESTED / NLA_F_NET_BYTEORDER
_NLMSGHDR = struct.Struct("=IHHII")
_NFGENMSG = struct.Struct("!BBH")  # family, version, resource id (the queue number)
_NLATTR = struct.Struct("=HH")
RECV_SIZE = 1 << 17  # one datagram: a packet message is at most copy range + ~200 bytes
RCVBUF = 1 << 20  # what netfilterqueue asks for too; the kernel caps it at rmem_max
ACK_SECONDS = 2.0


def attr(kind: int, value: bytes) -> bytes:
    length = _NLATTR.size + len(value)
    return _NLATTR.pack(length, kind) + value + b"\0" * (-length % 4)


def message(
    kind: int, num: int, attrs: list[bytes], seq: int = 0, flags: int = NLM_F_REQUEST
) -> bytes:
    body = _NFGENMSG.pack(socket.AF_UNSPEC, 0, num) + b"".join(attrs)
    kind = (NFNL_SUBSYS_QUEUE << 8) | kind
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), kind, flags, seq, 0) + body


def config_message(
    num: int, command: int, seq: int, max_len: int = 0, copy_range: int = 0
) -> bytes:
    attrs = [attr(NFQA_CFG_CMD, struct.pack("!BxH", command, 0))]
    if command == NFQNL_CFG_CMD_BIND:
        attrs.append(attr(NFQA_CFG_PARAMS, struct.pack("!IB", copy_range, NFQNL_COPY_PACKET)))
        attrs.append(attr(NFQA_CFG_QUEUE_MAXLEN, struct.pack("!I", max_len)))
    return message(NFQNL_MSG_CONFIG, num, attrs, seq, NLM_F_REQUEST | NLM_F_ACK)


def verdict_message(num: int, packet_id: int, verdict: int, mark: int | None) -> bytes:
    attrs = [attr(NFQA_VERDICT_HDR, struct.pack("!II", verdict, packet_id))]
    if mark is not None:
        attrs.append(attr(NFQA_MARK, struct.pack("!I", mark & 0xFFFFFFFF)))
    return message(NFQNL_MSG_VERDICT, num, attrs)


def attributes(data: bytes, pos: int, end: int) -> dict[int, bytes]:
    found: dict[int, bytes] = {}
    while pos + _NLATTR.size <= end:
        length, kind = _NLATTR.unpack_from(data, pos)
        if length < _NLATTR.size or pos + length > end:
            break
        found[kind & NLA_TYPE_MASK] = data[pos + _NLATTR.size : pos + length]
        pos += (length + 3) & ~3
    return found


class Packet:
    """One queued packet; exactly one verdict, now or later."""

    __slots__ = ("_mark", "_queue", "_verdict_given", "hw", "id", "mark", "payload")

    def __init__(self, queue: NetlinkQueue, attrs: dict[int, bytes]) -> None:
        self._queue = queue
        self.id = struct.unpack_from("!I", attrs[NFQA_PACKET_HDR])[0]
        self.payload = attrs.get(NFQA_PAYLOAD, b"")
        self.mark = struct.unpack("!I", attrs[NFQA_MARK])[0] if NFQA_MARK in attrs else 0
        hw = attrs.get(NFQA_HWADDR)
        self.hw = hw[4:12] if hw is not None and len(hw) >= 12 else None  # the 8-byte field
        self._mark: int | None = None
        self._verdict_given = False

    def get_payload(self) -> bytes:
        return self.payload

    def get_hw(self) -> bytes | None:
        return self.hw

    def get_mark(self) -> int:
        return self.mark if self._mark is None else self._mark

    def set_mark(self, mark: int) -> None:
        self._mark = mark

    def accept(self) -> None:
        self._verdict(NF_ACCEPT)

    def drop(self) -> None:
        self._verdict(NF_DROP)

    def _verdict(self, verdict: int) -> None:
        if self._verdict_given:
            raise RuntimeError("verdict already given for this packet")
        self._queue.send(verdict_message(self._queue.num, self.id, verdict, self._mark))
        self._verdict_given = True


class NetlinkQueue:
    """One NFQUEUE number bound on its own netlink socket."""

    def __init__(self) -> None:
        self.sock: socket.socket | None = None
        self.num = 0
        self.callback: Callable[[Packet], None] | None = None
        self._seq = 0

    def bind(
        self,
        num: int,
        callback: Callable[[Packet], None],
        max_len: int = 1024,
        range: int = 65535,  # netfilterqueue's keyword: the bytes of each packet copied
    ) -> None:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
            sock.bind((0, 0))
            self.sock, self.num, self.callback = sock, num, callback
            self._request(config_message(num, NFQNL_CFG_CMD_BIND, self._next(), max_len, range))
        except OSError:
            sock.close()
            self.sock = None
            raise

    def _next(self) -> int:
        self._seq = (self._seq + 1) & 0x7FFFFFFF
        return self._seq

    def _request(self, data: bytes) -> None:
        """Send a config request and wait for the kernel's acknowledgement; packets that
        arrive meanwhile are handled as usual. OSError if the kernel refuses."""
        assert self.sock is not None
        seq = _NLMSGHDR.unpack_from(data)[3]
        self.sock.settimeout(ACK_SECONDS)
        try:
            self.sock.send(data)
            while True:
                reply = self.sock.recv(RECV_SIZE)  # TimeoutError if the kernel never answers
                code = self._dispatch(reply, seq)
                if code is not None:
                    if code:
                        raise OSError(code, f"NFQUEUE {self.num}: {errno.errorcode.get(code)}")
                    return
        finally:
            self.sock.settimeout(None)

    def _dispatch(self, data: bytes, seq: int | None = None) -> int | None:
        """Hand each packet in a datagram to the callback; the error code of an
        acknowledgement of `seq` (0: done) if the datagram holds one."""
        answer = None
        pos = 0
        while pos + _NLMSGHDR.size <= len(data):
            length, kind, _flags, got, _pid = _NLMSGHDR.unpack_from(data, pos)
            if length < _NLMSGHDR.size or pos + length > len(data):
                break
            if kind == NLMSG_ERROR and seq is not None and got == seq and length >= 20:
                answer = -struct.unpack_from("=i", data, pos + 16)[0]
            elif kind == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
                attrs = attributes(data, pos + _NLMSGHDR.size + _NFGENMSG.size, pos + length)
                if NFQA_PACKET_HDR in attrs and self.callback is not None:
                    self.callback(Packet(self, attrs))
            pos += (length + 3) & ~3
        return answer

    def send(self, data: bytes) -> None:
        if self.sock is None:
            raise RuntimeError("queue is not bound")
        self.sock.send(data)

    def get_fd(self) -> int:
        if self.sock is None:
            raise RuntimeError("queue is not bound")
        return self.sock.fileno()

    def run(self, block: bool = True) -> None:
        """Handle what is waiting (block=False) or serve until the socket fails (True)."""
        assert self.sock is not None
        while True:
            try:
                data = self.sock.recv(RECV_SIZE, 0 if block else socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            self._dispatch(data)

    def run_socket(self, sock: object) -> None:
        """One datagram read from `sock` (anything with recv), handled as from the queue."""
        self._dispatch(sock.recv(RECV_SIZE))  # type: ignore[attr-defined]

    def unbind(self) -> None:
        if self.sock is None:
            return
        try:
            self.sock.send(config_message(self.num, NFQNL_CFG_CMD_UNBIND, self._next()))
        except OSError:
            pass  # closing the socket unbinds too
        finally:
            self.sock.close()
            self.sock = None
