"""The pure-netlink NFQUEUE codec (gateway/dataplane/nfq_netlink.py) without a kernel: the
messages it sends byte for byte, the packet messages it reads, one verdict per packet. The
kernel round trip is tests/netns/test_nfq_netlink.py."""

from __future__ import annotations

import struct

import pytest

from gateway.dataplane import nfq_netlink as nfq


def packet_message(packet_id: int, payload: bytes, mark: int | None, hw: bytes | None) -> bytes:
    attrs = [nfq.attr(nfq.NFQA_PACKET_HDR, struct.pack("!IHB", packet_id, 0x0800, 3))]
    if mark is not None:
        attrs.append(nfq.attr(nfq.NFQA_MARK, struct.pack("!I", mark)))
    if hw is not None:
        attrs.append(nfq.attr(nfq.NFQA_HWADDR, struct.pack("!HH", len(hw), 0) + hw.ljust(8, b"\0")))
    attrs.append(nfq.attr(nfq.NFQA_PAYLOAD, payload))
    return nfq.message(nfq.NFQNL_MSG_PACKET, 5, attrs)


class Recorder(nfq.NetlinkQueue):
    def __init__(self) -> None:
        super().__init__()
        self.num = 5
        self.sent: list[bytes] = []
        self.packets: list[nfq.Packet] = []
        self.callback = self.packets.append

    def send(self, data: bytes) -> None:
        self.sent.append(data)


def test_bind_message() -> None:
    data = nfq.config_message(7, nfq.NFQNL_CFG_CMD_BIND, seq=9, max_len=256, copy_range=4016)
    length, kind, flags, seq, _pid = struct.unpack_from("=IHHII", data)
    assert (length, kind, flags, seq) == (len(data), 0x0302, 0x5, 9)
    assert struct.unpack_from("!BBH", data, 16) == (0, 0, 7)
    attrs = nfq.attributes(data, 20, len(data))
    assert attrs[nfq.NFQA_CFG_CMD] == bytes([1, 0, 0, 0])
    assert attrs[nfq.NFQA_CFG_PARAMS] == struct.pack("!IB", 4016, 2)
    assert attrs[nfq.NFQA_CFG_QUEUE_MAXLEN] == struct.pack("!I", 256)
    assert len(data) % 4 == 0


def test_verdict_message_carries_a_mark_only_when_set() -> None:
    plain = nfq.verdict_message(5, 0x01020304, nfq.NF_ACCEPT, None)
    attrs = nfq.attributes(plain, 20, len(plain))
    assert attrs == {nfq.NFQA_VERDICT_HDR: struct.pack("!II", 1, 0x01020304)}
    marked = nfq.verdict_message(5, 1, nfq.NF_DROP, 0x1_0020_0000)  # wider than 32 bits
    attrs = nfq.attributes(marked, 20, len(marked))
    assert attrs[nfq.NFQA_MARK] == struct.pack("!I", 0x0020_0000)
    assert struct.unpack_from("=H", marked, 4)[0] == 0x0301


def test_packets_are_read_and_judged_once() -> None:
    queue = Recorder()
    hw = bytes.fromhex("02504c000001")
    two = packet_message(11, b"\x45" + b"x" * 39, 0x10, hw) + packet_message(12, b"y", None, None)
    assert queue._dispatch(two) is None
    first, second = queue.packets
    assert (first.id, first.get_payload(), first.get_mark()) == (11, b"\x45" + b"x" * 39, 0x10)
    assert first.get_hw() == hw + b"\0\0"  # the 8-byte field, as netfilterqueue returns it
    assert (second.get_hw(), second.get_mark()) == (None, 0)
    first.set_mark(first.get_mark() | 0x20)
    assert first.get_mark() == 0x30
    first.accept()
    second.drop()
    assert queue.sent == [
        nfq.verdict_message(5, 11, nfq.NF_ACCEPT, 0x30),
        nfq.verdict_message(5, 12, nfq.NF_DROP, None),
    ]
    with pytest.raises(RuntimeError):
        first.drop()


def test_an_acknowledgement_is_found_among_packets() -> None:
    queue = Recorder()
    ack = struct.pack("=IHHII", 36, nfq.NLMSG_ERROR, 0, 4, 0) + struct.pack("=i", -1) + b"\0" * 16
    data = packet_message(1, b"z", None, None) + ack
    assert queue._dispatch(data, seq=4) == 1  # EPERM
    assert queue._dispatch(data, seq=5) is None
    assert len(queue.packets) == 2
