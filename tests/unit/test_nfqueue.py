"""The fail-open flag for NFQUEUE (issue 10, item 8): the config message the kernel expects,
and waiting for its answer without losing packets that arrive first (a socket pair stands in
for the queue's netlink socket; the netns test checks the kernel's side)."""

from __future__ import annotations

import socket
import struct
import threading

import pytest

from gateway.dataplane import nfqueue


def test_config_message_is_what_nfnetlink_queue_expects() -> None:
    msg = nfqueue.config_flags_message(12, 0x1, 0x1, seq=7)
    length, kind, flags, seq, pid = struct.unpack_from("=IHHII", msg)
    assert (length, kind, flags, seq, pid) == (len(msg), 0x0302, 0x5, 7, 0)
    assert msg[16:20] == bytes([socket.AF_UNSPEC, 0, 0, 12])  # nfgenmsg, queue 12 big-endian
    # NFQA_CFG_MASK then NFQA_CFG_FLAGS, each a 32-bit big-endian value
    assert msg[20:] == struct.pack("=HH", 8, 4) + b"\0\0\0\1" + struct.pack("=HH", 8, 5) + (
        b"\0\0\0\1"
    )


def ack(seq: int, error: int = 0) -> bytes:
    return struct.pack("=IHHIIi", 36, nfqueue.NLMSG_ERROR, 0, seq, 0, error) + bytes(16)


class FakeQueue:
    """The binding's side: its socket, and the datagrams its `run_socket` was handed."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.handled: list[bytes] = []

    def get_fd(self) -> int:
        return self.sock.fileno()

    def run_socket(self, s) -> None:
        while True:
            try:
                self.handled.append(s.recv(65536))
            except BlockingIOError:
                return


def kernel(end: socket.socket, answers: list[bytes], sent: list[bytes]) -> threading.Thread:
    def serve() -> None:
        sent.append(end.recv(65536))
        for answer in answers:
            end.send(answer)

    thread = threading.Thread(target=serve)
    thread.start()
    return thread


def test_fail_open_waits_for_the_ack_and_hands_earlier_packets_on() -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    queue, sent = FakeQueue(ours), []
    packet = struct.pack("=IHHII", 20, 0x0300, 0, 0, 0) + b"pkt!"
    thread = kernel(theirs, [packet, ack(99)], sent)
    nfqueue.fail_open(queue, 12, seq=99)
    thread.join()
    assert sent == [nfqueue.config_flags_message(12, 1, 1, 99)]
    assert queue.handled == [packet]  # the packet that came first went to the binding


def test_a_refusal_is_an_error() -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    thread = kernel(theirs, [ack(5, -95)], [])  # EOPNOTSUPP: an old kernel
    with pytest.raises(OSError, match="refused fail-open"):
        nfqueue.fail_open(FakeQueue(ours), 12, seq=5)
    thread.join()
