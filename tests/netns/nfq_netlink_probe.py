"""Run inside a fresh network namespace (`unshare -n`) by tests/netns/test_nfq_netlink.py: the
pure-netlink NFQUEUE reader against the kernel. Prints one line per finding."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from gateway.dataplane.nfq_netlink import NetlinkQueue
from gateway.dataplane.nfqueue import fail_open

NUM, PORT, MARK = 7, 9999, 0x42


def ipt(*args: str) -> str:
    return subprocess.run(["iptables", *args], check=True, capture_output=True, text=True).stdout


def main() -> None:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    ipt("-A", "OUTPUT", "-p", "udp", "--dport", str(PORT), "-j", "NFQUEUE", "--queue-num", str(NUM))
    ipt("-t", "mangle", "-A", "POSTROUTING", "-p", "udp", "-m", "mark", "--mark", hex(MARK))
    got: list = []
    queue = NetlinkQueue()
    queue.bind(NUM, got.append, max_len=16, range=200)
    fail_open(queue, NUM)  # the kernel acknowledges the flag on our socket's binding
    print("bound")
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", PORT))
    rx.settimeout(1)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    tx.sendto(b"plaza-accept", ("127.0.0.1", PORT))
    queue.run_socket(queue.sock)
    packet = got[0]
    print("payload", packet.get_payload()[-12:].decode(), len(packet.get_payload()))
    print("mark", packet.get_mark())
    packet.set_mark(packet.get_mark() | MARK)
    packet.accept()
    print("received", rx.recv(100).decode())
    counters = ipt("-t", "mangle", "-L", "POSTROUTING", "-v", "-x", "-n")
    print("marked", counters.splitlines()[2].split()[0])

    tx.sendto(b"plaza-drop", ("127.0.0.1", PORT))
    queue.run(block=False)
    got[1].drop()
    try:
        print("received", rx.recv(100).decode())
    except TimeoutError:
        print("dropped")
    try:
        got[1].accept()
    except RuntimeError:
        print("one verdict")
    queue.unbind()
    tx.sendto(b"plaza-unbound", ("127.0.0.1", PORT))  # no reader: NFQUEUE without bypass drops
    try:
        print("received", rx.recv(100).decode())
    except TimeoutError:
        print("unbound")


if __name__ == "__main__":
    main()
