"""The neighbour table over a plain rtnetlink socket: messages crafted as the kernel sends
them (nlmsghdr, ndmsg, NDA_* attributes), parsed into what `Neighbours.message` takes."""

from __future__ import annotations

import socket
import struct

import pytest

from gateway.stations import neighbours
from gateway.stations.neighbours import (
    NDA_DST,
    NDA_LLADDR,
    NDA_PROBES,
    NUD_FAILED,
    NUD_PROBE,
    NUD_REACHABLE,
    RTM_GETNEIGH,
    RTM_NEWNEIGH,
)

RTM_DELNEIGH = 29


def attr(kind: int, payload: bytes) -> bytes:
    size = 4 + len(payload)
    return struct.pack("=HH", size, kind) + payload + b"\0" * (-size % 4)


def message(kind: int, family: int, ifindex: int, state: int, *attrs: bytes) -> bytes:
    body = struct.pack("=BxxxiHBB", family, ifindex, state, 0, 1) + b"".join(attrs)
    return struct.pack("=IHHII", 16 + len(body), kind, 0, 0, 0) + body


def test_reachable_ipv4_and_ipv6_entries() -> None:
    data = message(
        RTM_NEWNEIGH, socket.AF_INET, 7, NUD_REACHABLE,
        attr(NDA_DST, socket.inet_aton("198.19.0.100")),
        attr(NDA_LLADDR, bytes.fromhex("02504c000001")),
        attr(NDA_PROBES, struct.pack("=I", 0)),
    ) + message(
        RTM_NEWNEIGH, socket.AF_INET6, 7, NUD_REACHABLE,
        attr(NDA_DST, socket.inet_pton(socket.AF_INET6, "2001:db8:19:0::1:a")),
        attr(NDA_LLADDR, bytes.fromhex("02504C000001")),
    )  # fmt: skip
    assert neighbours.parse(data) == [
        (7, NUD_REACHABLE, "198.19.0.100", "02:50:4c:00:00:01", 0),
        (7, NUD_REACHABLE, "2001:db8:19::1:a", "02:50:4c:00:00:01", 0),
    ]


def test_failed_entry_without_lladdr_counts_its_probes() -> None:
    data = message(
        RTM_NEWNEIGH, socket.AF_INET, 3, NUD_FAILED,
        attr(NDA_DST, socket.inet_aton("198.19.0.9")), attr(NDA_PROBES, struct.pack("=I", 3)),
    )  # fmt: skip
    assert neighbours.parse(data) == [(3, NUD_FAILED, "198.19.0.9", None, 3)]


def test_other_messages_and_garbage_are_left_out() -> None:
    dst = attr(NDA_DST, socket.inet_aton("198.19.0.9"))
    done = struct.pack("=IHHII", 20, 3, 0, 1, 0) + b"\0" * 4
    deleted = message(RTM_DELNEIGH, socket.AF_INET, 3, NUD_FAILED, dst)
    bad_address = message(RTM_NEWNEIGH, socket.AF_INET, 3, NUD_REACHABLE, attr(NDA_DST, b"\1\2"))
    truncated = message(RTM_NEWNEIGH, socket.AF_INET, 3, NUD_REACHABLE, dst)[:-3]
    assert neighbours.parse(deleted + done) == []
    assert neighbours.parse(bad_address) == [(3, NUD_REACHABLE, None, None, 0)]
    assert neighbours.parse(truncated) == []
    assert neighbours.parse(b"\xff" * 7) == []


def test_dump_request_asks_for_every_family() -> None:
    req = neighbours.dump_request(5)
    length, kind, flags, seq, _pid = struct.unpack_from("=IHHII", req)
    assert (length, kind, seq) == (len(req), RTM_GETNEIGH, 5)
    assert flags & 0x300 == 0x300 and flags & 1
    assert req[16] == socket.AF_UNSPEC


def test_parsed_messages_feed_the_gateway(tmp_path) -> None:
    seen: list[tuple] = []

    class Gw:
        table = type("T", (), {"by_ip": {}})()

        def neighbour(self, mac, ip, failed=False) -> None:
            seen.append((mac, ip, failed))

    n = neighbours.Neighbours(Gw(), 7, lambda ip, mac: None)  # type: ignore[arg-type]
    data = message(
        RTM_NEWNEIGH, socket.AF_INET, 7, NUD_REACHABLE,
        attr(NDA_DST, socket.inet_aton("198.19.0.100")),
        attr(NDA_LLADDR, bytes.fromhex("02504c000001")),
    ) + message(
        RTM_NEWNEIGH, socket.AF_INET, 8, NUD_REACHABLE,  # another interface: not the LAN
        attr(NDA_DST, socket.inet_aton("198.19.0.101")),
        attr(NDA_LLADDR, bytes.fromhex("02504c000002")),
    )  # fmt: skip
    for m in neighbours.parse(data):
        n.message(*m)
    assert seen == [("02:50:4c:00:00:01", "198.19.0.100", False)]


def test_the_probe_request_is_what_ip_neigh_replace_nud_probe_sends() -> None:
    """The re-probe (a release's or a failure's confirmation) asks the kernel over rtnetlink:
    RTM_NEWNEIGH, create or replace, acknowledged, the holder's MAC in state PROBE. Read back
    with the daemon's own parser, for both families."""
    for ip, family in (("198.19.0.100", socket.AF_INET), ("2001:db8:42:1::5", socket.AF_INET6)):
        request = neighbours.probe_request(7, 3, ip, "02:50:4c:00:00:01")
        length, kind, flags, seq, _pid = struct.unpack_from("=IHHII", request)
        assert (length, kind, seq) == (len(request), RTM_NEWNEIGH, 7)
        assert flags == 0x1 | 0x4 | 0x400 | 0x100  # REQUEST, ACK, CREATE, REPLACE
        assert request[16] == family and len(request) % 4 == 0
        assert neighbours.parse(request) == [(3, NUD_PROBE, ip, "02:50:4c:00:00:01", 0)]


def test_a_refused_probe_is_an_os_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel's NLMSG_ERROR answer becomes OSError with its errno (the daemon logs it)."""
    sent: list[bytes] = []

    class Kernel:
        def __init__(self, *args: int) -> None:
            pass

        def __enter__(self) -> Kernel:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

        def settimeout(self, seconds: float) -> None:
            pass

        def sendto(self, data: bytes, address: tuple[int, int]) -> None:
            sent.append(data)

        def recv(self, size: int) -> bytes:
            error = struct.pack("=i", -19) + sent[-1][:16]  # ENODEV, and the request's header
            return struct.pack("=IHHII", 16 + len(error), 2, 0, 1, 0) + error

    monkeypatch.setattr(neighbours.socket, "socket", Kernel)
    with pytest.raises(OSError) as caught:
        neighbours.probe(3, "198.19.0.100", "02:50:4c:00:00:01")
    assert caught.value.errno == 19 and len(sent) == 1
