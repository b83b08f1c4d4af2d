"""Runs in the router's namespace: prints `ack <mac> <wall time>` for every DHCPACK it sees
leave on the LAN bridge (AF_PACKET, so the time is when the server sent it), until stdin
closes. Stdlib only; the kernel's receive timestamp (SO_TIMESTAMPNS) is used, not the time
Python got round to reading it."""

from __future__ import annotations

import select
import socket
import struct
import sys

ETH_P_ALL = 0x0003
SO_TIMESTAMPNS = 35


def dhcp_ack_mac(frame: bytes) -> str | None:
    if len(frame) < 14 + 20 + 8 + 240 or frame[12:14] != b"\x08\x00":
        return None
    ihl = (frame[14] & 0x0F) * 4
    if frame[14 + 9] != 17:
        return None
    udp = 14 + ihl
    sport, dport = struct.unpack("!HH", frame[udp : udp + 4])
    if (sport, dport) != (67, 68):
        return None
    bootp = udp + 8
    if frame[bootp] != 2:  # BOOTREPLY
        return None
    mac = frame[bootp + 28 : bootp + 34]
    options = bootp + 240
    i = options
    while i + 1 < len(frame) and frame[i] != 255:
        if frame[i] == 0:
            i += 1
            continue
        code, length = frame[i], frame[i + 1]
        if code == 53 and length == 1 and frame[i + 2] == 5:
            return ":".join(f"{b:02x}" for b in mac)
        i += 2 + length
    return None


def main() -> int:
    iface = sys.argv[1]
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.bind((iface, 0))
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    print("ready", flush=True)
    while True:
        ready, _, _ = select.select([sock, sys.stdin], [], [])
        if sys.stdin in ready and not sys.stdin.readline():
            return 0
        if sock in ready:
            frame, ancdata, _flags, _addr = sock.recvmsg(2048, 64)
            mac = dhcp_ack_mac(frame)
            if mac is None:
                continue
            stamp = next(
                (struct.unpack("qq", data[:16]) for lvl, kind, data in ancdata
                 if lvl == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS),
                None,
            )  # fmt: skip
            when = stamp[0] + stamp[1] / 1e9 if stamp else 0.0
            print(f"ack {mac} {when:.6f}", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
