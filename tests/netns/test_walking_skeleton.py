"""The whole path on the real kernel: join, captive, authorize, online, deauthorize, crash."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.stations import dnsmasq
from lab.phone import Phone
from lab.topology import Lab, nsexec
from tests.conftest import ROOT

pytestmark = pytest.mark.netns

SITE = "http://www.example.test/"
SITE_TLS = "https://www.example.test/"
WEB = "192.0.2.80"
BIN = Path(sys.executable).parent


def ctl(lab: Lab, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "plaza-ctl"), "--socket", lab.control_socket, *args],
        capture_output=True,
        text=True,
        timeout=10,
    )


def phone_info(lab: Lab, name: str) -> dict:
    return next(p for p in lab.status()["phones"] if p["name"] == name)


def assert_captive(phone: Phone, portal_url: str) -> None:
    r = phone.get(SITE)
    assert r.ok and r.status == 302 and r.location == portal_url
    assert r.headers["cache-control"] == "no-store"
    tls = phone.get(SITE_TLS, timeout=3)
    assert not tls.ok and tls.exit_code == 7, tls  # connection refused: the TCP reset
    assert tls.seconds < 0.5, "HTTPS must fail at once, not time out"
    assert not phone.ping(WEB)


def assert_online(phone: Phone) -> None:
    r = phone.get(SITE)
    assert r.ok and r.status == 200 and "FAKE-INTERNET-OK" in r.body
    tls = phone.get(SITE_TLS)  # verified against the lab CA the phone trusts
    assert tls.ok and tls.status == 200 and "FAKE-INTERNET-OK" in tls.body
    assert phone.ping(WEB)


def test_kernel_table_matches_golden(fresh: Lab) -> None:
    listing = nsexec(fresh.state.router, "nft", "list", "table", "inet", "plaza")
    assert listing == (ROOT / "tests" / "golden" / "plaza.nft").read_text()


def test_phones_get_real_leases_and_are_learned(fresh: Lab) -> None:
    clients = {c["mac"]: c for c in fresh.control().clients()}
    for phone in fresh.status()["phones"]:
        assert phone["ipv4"].startswith("198.19.0.")
        seen = clients[phone["mac"]]
        assert seen["ip"] == phone["ipv4"]
        assert seen["hostname"] == phone["name"]  # from the DHCP lease event, not netlink
        assert seen["state"] == "captive"


def test_dns_answers_truthfully_through_the_router(fresh: Lab) -> None:
    ns = fresh.netns_of("phone1")
    out = nsexec(ns, "getent", "ahostsv4", "www.example.test")
    assert out.split()[0] == WEB
    out = nsexec(ns, "getent", "ahostsv6", "www.example.test")
    assert out.split()[0] == fresh.status()["internet"]["web_ipv6"]
    portal = nsexec(ns, "getent", "ahostsv4", "portal.plaza.test")
    assert portal.split()[0] == "198.19.0.1"
    portal = nsexec(ns, "getent", "ahostsv6", "portal.plaza.test")
    assert portal.split()[0] == fresh.status()["router"]["lan_ipv6"]


def test_captive_phone_reaches_nothing_but_the_portal(fresh: Lab, phone1: Phone) -> None:
    portal_url = fresh.status()["portal_url"]
    assert_captive(phone1, portal_url)
    splash = phone1.get(portal_url)
    assert splash.ok and splash.status == 200 and 'href="/login/wallet"' in splash.body
    # Any path, any method, any host on port 80 gets the same redirect and nothing reflected.
    r = phone1.request("http://news.example.test/%3Cscript%3E?next=//evil.test", method="POST")
    assert r.status == 302 and r.location == portal_url and "script" not in r.body


def test_ctl_auth_then_deauth(fresh: Lab, phone1: Phone, phone2: Phone) -> None:
    info = phone_info(fresh, "phone1")
    r = ctl(fresh, "auth", info["mac"], "--minutes", "5")
    assert r.returncode == 0 and info["ipv4"] in r.stdout
    assert_online(phone1)
    assert_captive(phone2, fresh.status()["portal_url"])  # the other phone is untouched
    listing = ctl(fresh, "clients")
    assert any(info["mac"] in line and "authorized" in line for line in listing.stdout.splitlines())
    r = ctl(fresh, "deauth", info["ipv4"])
    assert r.returncode == 0
    assert_captive(phone1, fresh.status()["portal_url"])


def test_ctl_refuses_bad_clients(fresh: Lab) -> None:
    for who, message in [("198.19.0.7", "not a client"), ("banana", "not an IP address")]:
        r = ctl(fresh, "auth", who)
        assert r.returncode == 1 and message in r.stderr and r.stderr.count("\n") == 1


def test_portal_continue_and_logout(fresh: Lab, phone1: Phone) -> None:
    portal_url = fresh.status()["portal_url"]
    r = phone1.accept_terms(portal_url)
    assert r.status == 303 and r.location == "/welcome"
    assert_online(phone1)
    assert phone1.logout(portal_url).status == 303
    assert_captive(phone1, portal_url)


def test_sigkill_and_restart_keeps_the_phone_online(fresh: Lab, phone1: Phone) -> None:
    info = phone_info(fresh, "phone1")
    fresh.control().auth(info["mac"], minutes=30)
    pid = fresh.state.pids["router-gateway"]
    os.killpg(pid, signal.SIGKILL)
    fresh.stop("router-gateway")  # reap
    assert_online(phone1)  # the kernel set outlives the daemon
    fresh.start_gateway()
    client = fresh.control().client(info["mac"])
    assert client["state"] == "authorized" and client["seconds_remaining"] > 25 * 60
    assert_online(phone1)
    elements = nsexec(fresh.state.router, "nft", "list", "set", "inet", "plaza", "auth4")
    assert f"{info['ipv4']} . {info['mac']}" in elements


def test_a_stale_lease_file_after_a_crash_does_not_end_the_restored_session(
    fresh: Lab, phone1: Phone
) -> None:
    """dnsmasq does not fsync its lease file: after a power cut it may hold an older lease of
    the phone (the VM lab's phone had one from its first boot, another client-id) while the
    database holds the session's. The daemon reads the file at start, probes the session's
    address instead of ending the session, and the phone's answer keeps it online."""
    info = phone_info(fresh, "phone1")
    fresh.control().auth(info["mac"], minutes=30)
    pid = fresh.state.pids["router-gateway"]
    os.killpg(pid, signal.SIGKILL)
    fresh.stop("router-gateway")
    stale = info["ipv4"].rsplit(".", 1)[0] + ".250"
    leasefile = Path(dnsmasq.lease_file(fresh.gateway_config()))
    older = f"{int(time.time()) + 60} {info['mac']} {stale} phone1 ff:00:00:00:01\n"
    leasefile.write_text(older + leasefile.read_text())  # dnsmasq rewrites it at its next change
    fresh.start_gateway()
    time.sleep(3)  # the probe of the restored address has been answered or has failed by now
    client = fresh.control().client(info["mac"])
    assert (client["state"], client["ip"]) == ("authorized", info["ipv4"])
    assert_online(phone1)


def test_second_daemon_is_refused(fresh: Lab, phone1: Phone) -> None:
    fresh.control().auth(phone_info(fresh, "phone1")["mac"])
    r = subprocess.run(
        ["ip", "netns", "exec", fresh.state.router, str(BIN / "plaza-gateway"),
         "--config", str(fresh.gateway_config_path), "run"],
        capture_output=True, text=True, timeout=20,
    )  # fmt: skip
    assert r.returncode == 2
    assert "another plaza-gateway" in r.stderr and r.stderr.count("\n") == 1
    assert fresh.control().call("ping")["authorized"] == 1
    assert_online(phone1)


def test_unknown_interface_is_refused(fresh: Lab, tmp_path: Path) -> None:
    config = tmp_path / "gw.toml"
    config.write_text(fresh.gateway_config_path.read_text().replace('"br-lan"', '"wlan9"'))
    r = subprocess.run(
        ["ip", "netns", "exec", fresh.state.router, str(BIN / "plaza-gateway"),
         "--config", str(config), "run"],
        capture_output=True, text=True, timeout=20,
    )  # fmt: skip
    assert r.returncode == 2 and "no such interface: 'wlan9'" in r.stderr


def test_deleted_table_is_restored_by_the_reconciler(fresh: Lab, phone1: Phone) -> None:
    fresh.control().auth(phone_info(fresh, "phone1")["mac"])
    nsexec(fresh.state.router, "nft", "delete", "table", "inet", "plaza")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if nsexec(fresh.state.router, "nft", "list", "tables", check=False).count("plaza"):
            break
        time.sleep(0.2)
    assert_online(phone1)


def test_status_json_shape(fresh: Lab) -> None:
    out = subprocess.run(
        [str(BIN / "plaza-lab"), "--name", fresh.name, "status", "--json"],
        capture_output=True, text=True, timeout=10, check=True,
    ).stdout  # fmt: skip
    import json

    status = json.loads(out)
    assert status["router"]["netns"] == fresh.state.router
    assert status["internet"]["web_ipv4"] == WEB
    assert status["internet"]["web_url"] == SITE
    assert Path(status["ca_cert"]).exists()
    assert [set(p) >= {"name", "netns", "mac", "ipv4"} for p in status["phones"]] == [True, True]
    assert status["portal_url"] == "https://portal.plaza.test/"
    assert status["captive_api_url"] == "https://portal.plaza.test/api/captive"
    assert status["wallet_url"] == "https://wallet.test/"


KEEPALIVE = """
import http.client, sys
c = http.client.HTTPConnection("www.example.test", 80, timeout=3)
c.request("GET", "/"); r = c.getresponse(); r.read(); print(r.status, flush=True)
sys.stdin.readline()  # the test authorizes the phone now
try:
    c.request("GET", "/"); r = c.getresponse(); r.read(); print(r.status, flush=True)
except OSError as exc:
    print("reset", type(exc).__name__, flush=True)
c = http.client.HTTPConnection("www.example.test", 80, timeout=3)
c.request("GET", "/"); r = c.getresponse(); r.read(); print(r.status, flush=True)
"""


def test_kept_alive_redirected_connection_is_reset_after_login(fresh: Lab) -> None:
    proc = subprocess.Popen(
        ["ip", "netns", "exec", fresh.netns_of("phone1"), sys.executable, "-c", KEEPALIVE],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout.readline().split() == ["302"]
        fresh.control().auth(phone_info(fresh, "phone1")["mac"])
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.stdout.readline().split()[0] == "reset"  # not another 302 from the portal
        assert proc.stdout.readline().split() == ["200"]  # a new connection reaches the site
    finally:
        proc.kill()
        proc.wait()
