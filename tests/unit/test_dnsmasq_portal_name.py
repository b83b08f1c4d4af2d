"""The router answers every query for its portal's name itself: during an internet outage a
phone must reach the portal without waiting on an upstream resolver that cannot answer
(the VM lab's outage scenario). Runs Debian's dnsmasq on loopback, its upstream a socket of
this test that records what reaches it."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

from scapy.layers.dns import DNS, DNSQR

from gateway.config import Config
from gateway.stations import dnsmasq

SKIP_PREFIXES = ("interface=", "bind-dynamic", "dhcp", "ra-", "enable-ra", "conf-dir", "nftset")


def test_the_portal_name_is_local() -> None:
    config = Config()
    assert f"local=/{config.portal.hostname}/" in dnsmasq.render_conf(config).splitlines()


def free_udp_port() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    return sock


def ask(port: int, name: str, qtype: str) -> DNS:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2)
        sock.sendto(bytes(DNS(rd=1, qd=DNSQR(qname=name, qtype=qtype))), ("127.0.0.1", port))
        return DNS(sock.recv(4096))


def test_no_query_for_the_portal_name_goes_upstream(tmp_path: Path) -> None:
    config = Config()
    upstream, listen = free_udp_port(), free_udp_port()
    upstream.settimeout(0.3)
    port = listen.getsockname()[1]
    listen.close()
    lines = [
        line
        for line in dnsmasq.render_conf(config).splitlines()
        if line and not line.startswith(SKIP_PREFIXES) and not line.startswith("server=")
    ]
    lines.append(f"server=127.0.0.1#{upstream.getsockname()[1]}")
    conf = tmp_path / "dnsmasq.conf"
    conf.write_text("\n".join(lines) + "\n")
    proc = subprocess.Popen(
        ["dnsmasq", "--keep-in-foreground", "--conf-file=" + str(conf), f"--port={port}",
         "--listen-address=127.0.0.1", "--bind-interfaces", "--log-facility=-",
         f"--pid-file={tmp_path / 'pid'}", "--user=root"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 5
        while True:
            try:
                answer = ask(port, config.portal.hostname, "A")
                break
            except OSError:
                assert time.monotonic() < deadline, "dnsmasq did not answer"
        assert answer.rcode == 0 and answer.an[0].rdata == config.lan.ip
        for qtype in ("AAAA", "HTTPS", "MX", "TXT"):
            reply = ask(port, config.portal.hostname, qtype)
            assert (reply.rcode, reply.ancount) == (0, 0), qtype  # NODATA, from the router
        # The test's upstream does answer nothing; it only proves the way out is open.
        ask_elsewhere = DNS(rd=1, qd=DNSQR(qname="example.test", qtype="A"))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(bytes(ask_elsewhere), ("127.0.0.1", port))
        forwarded = []
        while True:
            try:
                forwarded.append(DNS(upstream.recv(4096)).qd[0].qname.decode())
            except TimeoutError:
                break
        assert forwarded == ["example.test."]  # only the other name went upstream
    finally:
        proc.terminate()
        proc.wait(5)
        upstream.close()
