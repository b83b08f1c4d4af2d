"""Shoppers on the open Wi-Fi are untrusted (issue 10): a forged DHCP release from another
phone logs no one out, a real departure still ends the session, and a daemon that is alive
but stopped holds no authorized phone's packets and lets no captive phone out."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.control_client import ControlError
from gateway.dataplane import ruleset
from gateway.stations import detect
from lab.phone import Phone, Response
from lab.topology import WEB_IP, Lab, nsexec
from tests.netns.conftest import running_lab, wait_for

SITE = "http://www.example.test/"
RESOLVE = (
    "--resolve",
    f"www.example.test:80:{WEB_IP}",
    "--resolve",
    f"www.example.test:443:{WEB_IP}",
)


def fetch(lab: Lab, name: str, url: str = SITE, timeout: float = 5) -> Response:
    browser = Phone(lab.netns_of(name))
    try:
        return browser.get(url, timeout=timeout, extra=RESOLVE)
    finally:
        browser.close()


def online(r: Response) -> bool:
    return r.ok and r.status == 200 and "FAKE-INTERNET-OK" in r.body


def phone(lab: Lab, name: str):
    return next(p for p in lab.state.phones if p.name == name)


def leases(lab: Lab) -> str:
    return (Path(lab.gateway_config().gateway.state_dir) / "dnsmasq.leases").read_text()


def ended_reasons(lab: Lab, mac: str) -> list[str]:
    db = sqlite3.connect(f"file:{lab.gateway_config().db_path}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT reason FROM session_records WHERE mac = ? ORDER BY id", (mac,))
        return [r for (r,) in rows]
    finally:
        db.close()


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with running_lab("u", phones=3) as lab:
        yield lab


def test_forged_release_from_another_phone_logs_no_one_out(lab: Lab) -> None:
    """phone2 sends dnsmasq a DHCPRELEASE for phone1's lease with dnsmasq's own dhcp_release,
    naming phone1's address, MAC and client-id (all public on an open network). dnsmasq drops
    the lease; the gateway only re-probes phone1's MAC, which answers: phone1 stays online."""
    control = lab.control()
    victim, attacker = phone(lab, "phone1"), phone(lab, "phone2")
    control.auth(victim.mac, minutes=30)
    session = control.client(victim.mac)["session_id"]
    assert online(fetch(lab, "phone1"))
    (line,) = [x for x in leases(lab).splitlines() if victim.mac in x]
    client_id = line.split()[4]
    # dhcp_release sends to the first address of the interface it is given, in the lease's
    # subnet, and names it as the server: the attacker makes that the router's address
    # without answering for it (no local route, so ARP and packets go to the real router),
    # and sends from its own address.
    router_ip = lab.gateway_config().lan.ip
    router_mac = json.loads(nsexec(lab.state.router, "ip", "-j", "link", "show", "br-lan"))[0][
        "address"
    ]
    ns = attacker.netns
    nsexec(ns, "ip", "-4", "addr", "flush", "dev", "eth0")
    nsexec(ns, "ip", "addr", "add", f"{attacker.ipv4}/32", "dev", "eth0")  # not in the /24
    nsexec(ns, "ip", "addr", "add", f"{router_ip}/24", "dev", "eth0")
    nsexec(ns, "ip", "route", "del", "local", router_ip, "dev", "eth0", "table", "local")
    nsexec(ns, "ip", "route", "replace", f"{router_ip.rsplit('.', 1)[0]}.0/24", "dev", "eth0",
           "src", attacker.ipv4)  # fmt: skip
    nsexec(ns, "ip", "neigh", "replace", router_ip, "lladdr", router_mac, "dev", "eth0")
    nsexec(ns, "dhcp_release", "eth0", victim.ipv4, victim.mac, client_id)
    wait_for(lambda: victim.mac not in leases(lab), 5, "dnsmasq to drop the released lease")
    time.sleep(8)  # the lease file has been read; a re-probe takes ~3 s to fail; it did not
    after = control.client(victim.mac)
    assert (after["state"], after["session_id"], after["ip"]) == (
        "authorized", session, victim.ipv4,
    )  # fmt: skip
    assert online(fetch(lab, "phone1"))
    assert ended_reasons(lab, victim.mac) == []


def test_a_phone_that_really_leaves_ends_its_session_as_left(lab: Lab) -> None:
    """udhcpc -R releases the lease and takes the address down: the re-probe goes
    unanswered and the session ends, reason `left`, within seconds."""
    control = lab.control()
    leaver = phone(lab, "phone3")
    control.auth(leaver.mac, minutes=30)
    lab.stop("phone3-dhcp")
    wait_for(lambda: control.client(leaver.mac)["ip"] is None, 15, "phone3's departure")
    assert control.client(leaver.mac)["state"] == "captive"
    assert ended_reasons(lab, leaver.mac) == ["left"]


def queue_stats(lab: Lab, num: int) -> dict[str, int]:
    for line in nsexec(lab.state.router, "cat", "/proc/net/netfilter/nfnetlink_queue").splitlines():
        fields = line.split()
        if fields[0] == str(num):
            return {"waiting": int(fields[2]), "dropped": int(fields[5]) + int(fields[6])}
    raise AssertionError(f"queue {num} is not bound")


def test_a_stopped_daemon_holds_no_authorized_phone_and_lets_no_captive_one_out() -> None:
    """SIGSTOP the daemon, then an authorized phone opens a fresh connection (its `seen` entry
    has timed out, as it does every 5 minutes) and a new station tries to get out: the first
    connects at once, the second meets the captive rules. SIGCONT, and all is as before."""
    with running_lab("h", phones=1) as lab:
        control = lab.control()
        authorized = phone(lab, "phone1")
        control.auth(authorized.mac, minutes=30)
        assert online(fetch(lab, "phone1"))
        router = lab.state.router
        nsexec(router, "nft", "delete", "element", "inet", "plaza", ruleset.DETECT4,
               f"{{ {authorized.ipv4} . {authorized.mac} }}", check=False)  # fmt: skip
        newcomer = lab.add_phone(2, dhcp=False)
        nsexec(newcomer.netns, "ip", "addr", "add", "198.19.0.77/24", "dev", "eth0")
        nsexec(newcomer.netns, "ip", "route", "add", "default", "via", lab.gateway_config().lan.ip)
        pid = lab.state.pids["router-gateway"]
        os.kill(pid, signal.SIGSTOP)
        try:
            r = fetch(lab, "phone1")
            assert online(r) and r.seconds < 2.5, (r.status, r.error, r.seconds)
            # A new station: its first packets wait for the stopped daemon until the queue
            # is full; the rest fail open into the captive rules.
            burst = nsexec(newcomer.netns, "ping", "-n", "-c", "150", "-i", "0.01", "-W", "1",
                           WEB_IP, check=False)  # fmt: skip
            assert " 0 received" in burst, burst
            stats = queue_stats(lab, ruleset.DETECT_QUEUE_NUM)
            assert stats == {"waiting": detect.QUEUE_MAXLEN, "dropped": 0}, stats
            started = time.monotonic()
            tls = fetch(lab, "phone2", "https://www.example.test/", timeout=5)
            assert not tls.ok and time.monotonic() - started < 2  # a reset at once
            web = fetch(lab, "phone2")
            assert web.ok and web.status == 302, (web.status, web.error)  # to the portal
            assert "FAKE-INTERNET-OK" not in web.body
            assert online(fetch(lab, "phone1"))
        finally:
            os.kill(pid, signal.SIGCONT)

        def learned() -> bool:
            try:
                return control.client("198.19.0.77")["mac"] == newcomer.mac
            except ControlError:
                return False

        wait_for(learned, 10, "the daemon to learn the station it held")
        assert control.client(authorized.mac)["state"] == "authorized"
        assert control.client(newcomer.mac)["state"] == "captive"
        assert queue_stats(lab, ruleset.DETECT_QUEUE_NUM)["waiting"] == 0
