"""A phone acting as the network's DHCP server or router (gateway/dataplane/guard.py): its offers
and router advertisements never reach the other phones, and each drop is counted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.topology import Lab, nsexec
from tests.netns.conftest import running_lab

pytestmark = pytest.mark.netns

ROGUE_IP = "10.66.0.1"
ROGUE_PREFIX = "2001:db8:66::"


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with running_lab("g", phones=2) as lab:
        yield lab


def phone(lab: Lab, name: str) -> dict:
    return next(p for p in lab.status()["phones"] if p["name"] == name)


def drops(lab: Lab) -> dict[str, int]:
    out = nsexec(lab.state.router, "nft", "-j", "list", "counters", "table", "bridge",
                 "plaza_guard")  # fmt: skip
    return {
        i["counter"]["name"]: i["counter"]["packets"]
        for i in json.loads(out)["nftables"]
        if "counter" in i
    }


def test_rogue_dhcp_server_on_a_phone_reaches_no_other_phone(lab: Lab, tmp_path: Path) -> None:
    victim, rogue = phone(lab, "phone1"), phone(lab, "phone2")
    nsexec(rogue["netns"], "ip", "addr", "add", f"{ROGUE_IP}/24", "dev", "eth0")
    conf = tmp_path / "udhcpd.conf"
    conf.write_text(
        f"interface eth0\nstart 10.66.0.10\nend 10.66.0.20\noption router {ROGUE_IP}\n"
        f"option dns {ROGUE_IP}\nlease_file {tmp_path / 'leases'}\npidfile {tmp_path / 'pid'}\n"
    )
    (tmp_path / "leases").touch()
    server = subprocess.Popen(
        ["ip", "netns", "exec", rogue["netns"], "busybox", "udhcpd", "-f", str(conf)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    before = drops(lab)
    try:
        time.sleep(0.5)
        # The victim asks for an address from scratch, as a phone joining does.
        sniffer = subprocess.Popen(
            ["ip", "netns", "exec", victim["netns"], "timeout", "8", "tcpdump", "-i", "eth0",
             "-nn", "-l", "udp src port 67"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        time.sleep(0.5)
        cmd, env = lab.dhcp_command(next(p for p in lab.state.phones if p.name == "phone1"),
                                    once=True)  # fmt: skip
        env = {**env, "PLAZA_LEASE": str(tmp_path / "victim.lease")}
        subprocess.run(
            ["ip", "netns", "exec", victim["netns"], "env",
             *(f"{k}={v}" for k, v in env.items()), *cmd],
            check=True, capture_output=True, timeout=30,
        )  # fmt: skip
        seen, _ = sniffer.communicate(timeout=15)
    finally:
        server.terminate()
        server.wait(timeout=5)
        nsexec(rogue["netns"], "ip", "addr", "del", f"{ROGUE_IP}/24", "dev", "eth0")
    assert (tmp_path / "victim.lease").read_text().strip().startswith("198.19.0.")
    replies = [line for line in seen.splitlines() if "Reply" in line]
    assert replies and all(" 198.19.0.1.67 >" in line for line in replies), seen  # router only
    assert drops(lab)["rogue_dhcp"] > before["rogue_dhcp"]  # it did send, and was dropped


RA = """
from scapy.all import Ether, IPv6, sendp, conf
from scapy.layers.inet6 import ICMPv6ND_RA, ICMPv6NDOptPrefixInfo, ICMPv6NDOptSrcLLAddr
conf.verb = 0
mac = open("/sys/class/net/eth0/address").read().strip()
ra = (Ether(src=mac, dst="33:33:00:00:00:01") / IPv6(dst="ff02::1")
      / ICMPv6ND_RA(routerlifetime=1800) / ICMPv6NDOptSrcLLAddr(lladdr=mac)
      / ICMPv6NDOptPrefixInfo(prefix="PREFIX", prefixlen=64, L=1, A=1))
sendp(ra, iface="eth0", count=5, inter=0.2)
"""


def test_rogue_router_advertisement_is_dropped(lab: Lab) -> None:
    victim, rogue = phone(lab, "phone1"), phone(lab, "phone2")
    before = drops(lab)
    script = RA.replace("PREFIX", ROGUE_PREFIX)
    nsexec(rogue["netns"], sys.executable, "-c", script)
    time.sleep(1.5)
    addresses = phone(lab, "phone1")["ipv6"]
    assert addresses and not any(a.startswith(ROGUE_PREFIX[:-1]) for a in addresses)
    routes = nsexec(victim["netns"], "ip", "-6", "route", "show", "default")
    assert rogue["mac"] not in routes and "fe80::" in routes  # still the real router only
    assert drops(lab)["rogue_ra"] >= before["rogue_ra"] + 5


def test_a_restarted_daemon_keeps_the_guard_and_its_counts(lab: Lab) -> None:
    """kill -9 and a new daemon: the table it finds is this version's (its comment), so it
    is kept, with the drops counted so far, rather than reloaded."""
    from gateway.dataplane import guard

    before = drops(lab)
    assert before["rogue_dhcp"] + before["rogue_ra"] > 0  # the tests above dropped frames
    os.killpg(lab.state.pids["router-gateway"], signal.SIGKILL)
    lab.stop("router-gateway")  # reap
    lab.start_gateway()
    assert drops(lab) == before
    listing = nsexec(lab.state.router, "nft", "list", "table", "bridge", "plaza_guard")
    assert f'comment "{guard.COMMENT}"' in listing


def test_guard_table_comes_back_if_removed(lab: Lab) -> None:
    nsexec(lab.state.router, "nft", "delete", "table", "bridge", "plaza_guard")
    deadline = time.monotonic() + 15  # the daemon checks it with each reconcile (5 s)
    while time.monotonic() < deadline:
        listing = nsexec(lab.state.router, "nft", "list", "tables", check=False)
        if "bridge plaza_guard" in listing:
            return
        time.sleep(0.2)
    raise AssertionError("the guard table was not restored")


FLOOD = """
import random
from scapy.all import Ether, IP, UDP, conf, sendp
conf.verb = 0
frames = []
for i in range(COUNT):
    mac = "02:66:%02x:%02x:%02x:%02x" % (i >> 16 & 255, i >> 8 & 255, i & 255,
                                         random.randrange(256))
    ip = "198.19.0.%d" % (2 + i % 97)
    frames.append(Ether(src=mac, dst="ff:ff:ff:ff:ff:ff") / IP(src=ip, dst="198.19.0.1")
                  / UDP(sport=40000, dport=53) / b"x")
sendp(frames, iface="eth0")
"""


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_mac_flood_is_survived_with_bounded_memory_and_logged_once(lab: Lab) -> None:
    """A phone sends frames from 3,000 made-up MACs as fast as it can: the daemon keeps
    answering, its memory stays bounded, the real phones keep their state, and the flood is
    logged once, not per packet."""
    pid = lab.state.pids["router-gateway"]
    before = rss_kb(pid)
    victim = phone(lab, "phone1")
    lab.control().auth(victim["mac"])
    script = FLOOD.replace("COUNT", "3000")
    nsexec(phone(lab, "phone2")["netns"], sys.executable, "-c", script)
    time.sleep(2)
    control = lab.control()
    stations = control.call("ping")["clients"]  # still answering...
    assert stations > 50  # ...after the flood reached it (each made-up MAC claims an address)
    assert control.client(victim["mac"])["state"] == "authorized"
    assert rss_kb(pid) - before < 40_000  # kB: bounded, whatever the flood's size
    log = (lab.run_dir / "router-gateway.log").read_text()
    assert log.count("MAC flood?") <= 1
    control.deauth(victim["mac"])
