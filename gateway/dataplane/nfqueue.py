"""An NFQUEUE read on the daemon's asyncio loop: bound once, read when readable, unbound on
close. The walled-garden inspector (gateway/garden/queue.py) and the station detector
(gateway/stations/detect.py) each subclass it with what they do per packet.

Every queue fails open (NFQA_CFG_F_FAIL_OPEN): a packet that finds the queue full (`max_len`
waiting) or the daemon's socket overrun is accepted by the kernel instead of dropped. A daemon
that is alive but stopped (SIGSTOP, a long pause) thus holds at most `max_len` packets; the
rest, retransmissions included, go on through the ruleset, which decides for them as for any
packet nobody judged (see gateway/dataplane/ruleset.py: a captive station stays captive). The python
binding sets the length but not the flags, so the flags go in a NFQNL_MSG_CONFIG of our own on
the binding's netlink socket (the kernel takes a queue's config only from the socket that
bound it), and the kernel's acknowledgement is awaited: a kernel that refuses fails the bind.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
import struct
import time
import warnings
from typing import Any

from plaza.logs import RateLimitedLog

# linux/netfilter/nfnetlink.h, nfnetlink_queue.h
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_CONFIG = 2
NFQA_CFG_MASK, NFQA_CFG_FLAGS = 4, 5
NFQA_CFG_F_FAIL_OPEN = 0x1
NLM_F_REQUEST, NLM_F_ACK = 0x1, 0x4
NLMSG_ERROR = 2
_NLMSGHDR = struct.Struct("=IHHII")
_NFGENMSG = struct.Struct("!BBH")  # family, version, queue number (big-endian)
ACK_SECONDS = 2.0


def config_flags_message(num: int, flags: int, mask: int, seq: int) -> bytes:
    """NFQNL_MSG_CONFIG setting `flags` (within `mask`) on queue `num`, asking for an ack."""
    attrs = b"".join(
        struct.pack("=HH", 8, kind) + struct.pack("!I", value)
        for kind, value in ((NFQA_CFG_MASK, mask), (NFQA_CFG_FLAGS, flags))
    )
    body = _NFGENMSG.pack(socket.AF_UNSPEC, 0, num) + attrs
    kind = (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_CONFIG
    return _NLMSGHDR.pack(16 + len(body), kind, NLM_F_REQUEST | NLM_F_ACK, seq, 0) + body


def ack_of(data: bytes, seq: int) -> int | None:
    """The error code of the NLMSG_ERROR answering `seq` in a datagram (0: done), or None."""
    pos = 0
    while pos + 16 <= len(data):
        length, kind, _flags, got, _pid = _NLMSGHDR.unpack_from(data, pos)
        if length < 16:
            break
        if kind == NLMSG_ERROR and got == seq and length >= 20:
            return -struct.unpack_from("=i", data, pos + 16)[0]
        pos += (length + 3) & ~3
    return None


class _Datagram:
    """One datagram already read off the queue's socket, offered to the binding's
    `run_socket` as if from the socket (packets that came before our acknowledgement)."""

    def __init__(self, data: bytes) -> None:
        self.data: bytes | None = data

    def recv(self, _size: int) -> bytes:
        data, self.data = self.data, None
        if data is None:
            raise BlockingIOError(errno.EAGAIN, "no more")
        return data


def fail_open(queue: Any, num: int, seq: int | None = None) -> None:
    """Make queue `num`, bound by `queue` (a NetfilterQueue), fail open; OSError if the kernel
    says no. Packets read while waiting for the answer are handed to the binding as usual."""
    seq = seq if seq is not None else int(time.monotonic() * 1000) & 0x7FFFFFFF
    sock = socket.socket(fileno=os.dup(queue.get_fd()))  # the same socket, the same port id
    try:
        sock.settimeout(ACK_SECONDS)
        sock.send(config_flags_message(num, NFQA_CFG_F_FAIL_OPEN, NFQA_CFG_F_FAIL_OPEN, seq))
        while True:
            data = sock.recv(1 << 16)  # TimeoutError (an OSError) if the kernel never answers
            code = ack_of(data, seq)
            if code is None:
                queue.run_socket(_Datagram(data))
            elif code:
                raise OSError(code, f"queue {num} refused fail-open: {os.strerror(code)}")
            else:
                return
    finally:
        sock.close()


class LoopQueue:
    """One NFQUEUE number on the loop: one thread, no locks; `on_packet` gives the verdict."""

    def __init__(self, num: int, max_len: int, copy_range: int, reasons: RateLimitedLog) -> None:
        try:
            from netfilterqueue import NetfilterQueue
        except ImportError:  # no C extension (OpenWrt): the same calls over netlink in Python
            from gateway.dataplane.nfq_netlink import NetlinkQueue as NetfilterQueue

        self.num = num
        self.reasons = reasons
        self.loop: asyncio.AbstractEventLoop | None = None
        self.queue = NetfilterQueue()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # rcvbuf capped by rmem_max: fine
            self.queue.bind(num, self.on_packet, max_len=max_len, range=copy_range)
        try:
            fail_open(self.queue, num)
        except OSError:
            self.queue.unbind()
            raise

    def on_packet(self, packet: Any) -> None:
        raise NotImplementedError

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        loop.add_reader(self.queue.get_fd(), self._readable)

    def _readable(self) -> None:
        try:
            self.queue.run(block=False)
        except OSError as exc:  # the socket overran or went away: log, keep serving
            self.reasons.note("queue-error", "NFQUEUE %d receive failed: %s", self.num, exc)

    def close(self) -> None:
        if self.loop is not None:
            with contextlib.suppress(ValueError, OSError):
                self.loop.remove_reader(self.queue.get_fd())
        self.queue.unbind()
