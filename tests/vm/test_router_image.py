"""`make router-image` booted under QEMU (software emulation) with its WAN on a fake internet
and its LAN on a bridge: what a technician gets out of the box before `plaza-provision flash`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lab.vm import KEY, SSH_OPTIONS, WAN_MAC, WAN_ROUTER, RouterVM

pytestmark = [pytest.mark.vm, pytest.mark.netns]

UNITS = ("plaza-gateway", "plaza-portal", "plaza-dnsmasq")
# `systemctl is-active A B C` exits 0 when any one is active: succeed only when all three are.
ALL_ACTIVE = f"! systemctl is-active {' '.join(UNITS)} | grep -vqx active"


def _wait(vm: RouterVM, command: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """`command` until it succeeds; the last result. SSH comes up before the Plaza units: under
    emulation on a loaded 2-core machine Python's start-up alone took 80 s once (8 s of CPU)."""
    deadline = time.monotonic() + timeout
    while True:
        done = vm.ssh(command, check=False)
        if done.returncode == 0 or time.monotonic() > deadline:
            return done
        time.sleep(3)


def test_plaza_units_are_active(vm: RouterVM) -> None:
    _wait(vm, ALL_ACTIVE)
    states = vm.ssh(f"systemctl is-active {' '.join(UNITS)}", check=False).stdout.split()
    status = vm.ssh(f"systemctl status --no-pager {' '.join(UNITS)} | tail -40", check=False)
    assert states == ["active"] * 3, status.stdout


def test_the_gateway_loaded_its_table(vm: RouterVM) -> None:
    done = _wait(vm, "nft list table inet plaza")
    assert done.returncode == 0, done.stderr
    assert "chain" in done.stdout


def test_wan_took_its_address_by_dhcp_from_the_internet(vm: RouterVM) -> None:
    addr = vm.ssh("ip -4 -o addr show dev eth0").stdout
    assert f"{WAN_ROUTER}/30" in addr and "dynamic" in addr, addr
    leases = (vm.dir / "internet.leases").read_text()
    assert WAN_MAC in leases and WAN_ROUTER in leases, leases
    route = vm.ssh("ip -4 route show default").stdout
    assert "via 198.18.0.2 dev eth0" in route, route
    resolv = vm.ssh("cat /etc/resolv.conf").stdout
    assert "nameserver 198.18.0.2" in resolv, resolv


def test_lan_bridge_has_the_router_address(vm: RouterVM) -> None:
    addr = vm.ssh("ip -4 -o addr show dev br-lan").stdout
    assert "198.19.0.1/24" in addr, addr
    ports = vm.ssh("ip -o link show master br-lan").stdout
    assert " eth1:" in ports, ports


def test_the_lan_is_forwarded_and_masqueraded_to_the_wan(vm: RouterVM) -> None:
    """Plaza's table only filters: the image's networkd forwards the LAN and NATs it to the
    WAN (IPMasquerade= on br-lan), or an authorized phone would have no way out (the VM
    end-to-end test found it: nothing forwarded before)."""
    done = _wait(vm, "nft list table ip io.systemd.nat", timeout=60)
    assert done.returncode == 0, done.stderr
    assert "elements = { 198.19.0.0/24 }" in done.stdout, done.stdout
    assert "ip saddr @masq_saddr masquerade" in done.stdout, done.stdout
    assert vm.ssh("sysctl -n net.ipv4.ip_forward").stdout.strip() == "1"


def test_password_login_is_refused(vm: RouterVM) -> None:
    argv = [
        "ssh", *SSH_OPTIONS, "-o", "PubkeyAuthentication=no",
        "-o", "PreferredAuthentications=password,keyboard-interactive",
        f"root@{WAN_ROUTER}", "true",
    ]  # fmt: skip
    done = subprocess.run(
        ["ip", "netns", "exec", vm.internet_ns, *argv],
        capture_output=True, text=True, check=False, timeout=30, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == 255, done.stderr
    assert "Permission denied (publickey)" in done.stderr, done.stderr
    config = vm.ssh("sshd -T").stdout
    assert "passwordauthentication no" in config
    assert "kbdinteractiveauthentication no" in config
    shadow = vm.ssh("getent shadow root").stdout.split(":")
    assert shadow[1] in ("*", "!", "!*"), "root must have no password"


def test_the_baked_key_is_the_only_way_in(vm: RouterVM) -> None:
    keys = vm.ssh("cat /root/.ssh/authorized_keys").stdout.strip().splitlines()
    assert keys == [KEY.with_suffix(".pub").read_text().strip()]
    # Host keys were made on this boot, not shipped in the image.
    assert vm.ssh("ls /etc/ssh/ssh_host_ed25519_key").returncode == 0


def test_a_phone_on_the_lan_gets_a_lease_and_is_captive(vm: RouterVM) -> None:
    phone = vm.add_phone(1)
    lease = vm.dir / "phone1.lease"
    dhcp = subprocess.run(
        ["ip", "netns", "exec", phone, "busybox", "udhcpc", "-f", "-q", "-n", "-i", "eth0",
         "-O", "114", "-s", str(vm.udhcpc_script), "-t", "20", "-T", "2"],
        capture_output=True, text=True, check=False, timeout=90,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PLAZA_LEASE": str(lease)},
    )  # fmt: skip
    assert dhcp.returncode == 0, dhcp.stdout + dhcp.stderr
    ip = lease.read_text().strip()
    assert ip.startswith("198.19.0."), ip
    # An HTTP request to the internet is answered by the router's portal, not the internet.
    curl = subprocess.run(
        ["ip", "netns", "exec", phone, "curl", "-s", "-o", "/dev/null", "-m", "20",
         "-w", "%{http_code} %{redirect_url}", "http://192.0.2.80/"],
        capture_output=True, text=True, check=False, timeout=40,
    )  # fmt: skip
    code, _, location = curl.stdout.partition(" ")
    assert code in ("302", "303", "307", "511"), curl.stdout + curl.stderr
    assert "portal.plaza.test" in location or "198.19.0.1" in location, curl.stdout


def test_plaza_provision_verify_sees_a_blank_router(vm: RouterVM) -> None:
    """The technician's health check against the image out of the box: what the image gives
    is ok; what only `flash` brings (certificate, enrolment) fails with what to do."""
    _wait(vm, ALL_ACTIVE)
    tool = Path(sys.executable).parent / "plaza-provision"
    done = subprocess.run(
        ["ip", "netns", "exec", vm.internet_ns, str(tool), "verify", WAN_ROUTER,
         "-i", str(KEY), "--known-hosts", str(vm.dir / "known_hosts"), "--json"],
        capture_output=True, text=True, check=False, timeout=180,
    )  # fmt: skip
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    checks = {line["check"]: line for line in lines if "check" in line}
    for name in (*(f"service {u}" for u in UNITS), "config", "nft"):
        assert checks[name]["status"] == "ok", checks.get(name, done.stdout + done.stderr)
    assert checks["enrolled"]["status"] == "fail"
    assert "flash" in checks["enrolled"]["reason"]
    assert done.returncode == 1, done.stdout + done.stderr  # a check failed, not unreachable
