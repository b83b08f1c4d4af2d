"""IPv6 on the real kernel: what the router advertises, addresses learned and let through as
one station, and departures noticed from the neighbour table (confirmed, never a flush).

The egress-leak suite (test_egress.py) covers what a captive phone cannot reach over IPv6;
accounting over IPv6 is in test_policy.py.
"""

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
from tests.netns.conftest import running_lab, wait_for

pytestmark = pytest.mark.netns

PROBE = Path(__file__).with_name("ns_ipv6_probe.py")
SITE = "http://www.example.test/"


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with running_lab("v6", phones=2) as lab:
        yield lab


@pytest.fixture
def fresh(lab: Lab) -> Iterator[Lab]:
    control = lab.control()
    for client in control.clients():
        if client["state"] == "authorized":
            control.deauth(client["mac"])
    yield lab


def phone(lab: Lab, name: str) -> dict:
    return next(p for p in lab.status()["phones"] if p["name"] == name)


def probe(lab: Lab, what: str) -> dict:
    out = nsexec(phone(lab, "phone1")["netns"], sys.executable, str(PROBE), what)
    return json.loads(out)


def curl6(netns: str, source: str, url: str = SITE) -> tuple[int, str]:
    """(HTTP status, redirect target) over IPv6 from `source`; status 0: no answer."""
    out = subprocess.run(
        ["ip", "netns", "exec", netns, "curl", "-6", "-s", "-o", "/dev/null", "-m", "3",
         "--interface", source, "-w", "%{http_code} %{redirect_url}", url],
        capture_output=True, text=True, timeout=10,
    ).stdout.split()  # fmt: skip
    return int(out[0]) if out else 0, out[1] if len(out) > 1 else ""


def test_router_advertises_slaac_and_stateless_dhcpv6(lab: Lab) -> None:
    ra = probe(lab, "ra")
    assert ra["prefix"] == "2001:db8:19::/64" and ra["autonomous"] == 1
    assert ra["other"] == 1 and ra["managed"] == 0  # SLAAC addresses, DHCPv6 for options
    assert ra["router_lifetime"] > 0 and ra["source"].startswith("fe80:")
    assert ra["rdnss"] == [lab.status()["router"]["lan_ipv6"]]


def test_dhcpv6_carries_the_captive_portal_api(lab: Lab) -> None:
    """RFC 8910 option 103: the same https API URL as DHCPv4 option 114."""
    reply = probe(lab, "dhcp6")
    assert reply["captive_portal"] == lab.status()["captive_api_url"]
    assert reply["captive_portal"].startswith("https://")
    assert reply["dns"] == [lab.status()["router"]["lan_ipv6"]]


def test_captive_phone_is_sent_to_the_portal_over_ipv6(fresh: Lab) -> None:
    wait_for(lambda: len(phone(fresh, "phone1")["ipv6"]) >= 2, 10, "SLAAC addresses")
    info = phone(fresh, "phone1")  # a stable and a temporary (privacy) address
    status, target = curl6(info["netns"], info["ipv6"][0])
    assert (status, target) == (302, fresh.status()["portal_url"])
    # HTTPS to the internet is refused at once while captive
    status, _ = curl6(info["netns"], info["ipv6"][0], "https://www.example.test/")
    assert status == 0
    learned = fresh.control().client(info["mac"])["ipv6"]
    assert info["ipv6"][0] in learned  # from its first packet, before any neighbour entry


def test_login_opens_every_address_and_a_new_one_from_its_first_packet(fresh: Lab) -> None:
    info = phone(fresh, "phone1")
    control = fresh.control()
    control.auth(info["ipv4"])  # logged in over IPv4, as the portal would
    for source in info["ipv6"]:
        assert curl6(info["netns"], source)[0] == 200, f"{source} not let through"
    new = "2001:db8:19::beef:1"
    nsexec(info["netns"], "ip", "addr", "add", f"{new}/64", "dev", "eth0", "nodad")
    try:
        assert curl6(info["netns"], new)[0] == 200  # the very first connection works
        assert new in control.client(info["mac"])["ipv6"]
        # Another phone cannot use that address: same address, other MAC, nothing passes.
        other = phone(fresh, "phone2")
        nsexec(other["netns"], "ip", "addr", "add", f"{new}/64", "dev", "eth0", "nodad")
        try:
            assert curl6(other["netns"], new)[0] == 0
            assert control.client(new)["mac"] == info["mac"]
        finally:
            nsexec(other["netns"], "ip", "addr", "del", f"{new}/64", "dev", "eth0")
    finally:
        nsexec(info["netns"], "ip", "addr", "del", f"{new}/64", "dev", "eth0")
    control.deauth(info["mac"])
    for source in info["ipv6"]:
        assert curl6(info["netns"], source)[0] == 302  # captive again on every address


def test_neighbour_failure_ends_the_visit_but_a_flush_does_not(fresh: Lab) -> None:
    info = phone(fresh, "phone2")
    control = fresh.control()
    router = fresh.state.router
    control.auth(info["mac"])
    nsexec(router, "ip", "neigh", "flush", "dev", "br-lan")  # FAILED events, no probes
    time.sleep(1)
    assert control.client(info["mac"])["state"] == "authorized"
    # Quick neighbour timers on the router, then the phone goes silent (out of range).
    for key, value in (("delay_first_probe_time", "1"), ("retrans_time_ms", "200"),
                       ("base_reachable_time_ms", "500")):  # fmt: skip
        nsexec(router, "sysctl", "-qw", f"net.ipv4.neigh.br-lan.{key}={value}")
    nsexec(info["netns"], "ip", "link", "set", "eth0", "down")
    # The entry may have been confirmed just now (REACHABLE for tens of seconds: the new
    # base time applies at the kernel's next recomputation); as a station that went quiet.
    nsexec(router, "ip", "neigh", "replace", info["ipv4"], "lladdr", info["mac"], "nud",
           "stale", "dev", "br-lan")  # fmt: skip
    try:

        def gone() -> bool:
            nsexec(router, "ping", "-c1", "-W0.3", info["ipv4"], check=False)
            client = control.client(info["mac"])
            return client["state"] == "captive" and client["ip"] is None

        wait_for(gone, 20, "the silent phone to be noticed as gone")
    finally:
        nsexec(info["netns"], "ip", "link", "set", "eth0", "up")
        for key, value in (("delay_first_probe_time", "5"), ("retrans_time_ms", "1000"),
                           ("base_reachable_time_ms", "30000")):  # fmt: skip
            nsexec(router, "sysctl", "-qw", f"net.ipv4.neigh.br-lan.{key}={value}")
    # Back in range: like a phone re-associating, it renews its lease (busybox udhcpc:
    # SIGUSR1), and it is a station again, captive.
    os.kill(fresh.state.pids[f"{info['name']}-dhcp"], signal.SIGUSR1)
    wait_for(lambda: control.client(info["mac"])["ip"], 30, "the phone to be back")
    assert control.client(info["mac"])["state"] == "captive"
