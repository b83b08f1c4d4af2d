"""/etc/uci-defaults/90-plaza in a staging root (IPKG_INSTROOT, as an image build runs it):
run twice, the configs are the same; it writes what Plaza needs and captures nothing by
itself. Runs OpenWrt's own uci (built by ../shared/tools/openwrt-host) under busybox ash."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.openwrt.host import OVERLAY, ROOTFS, need_userland, uci_wrapper

GUEST = """
config device
	option name 'br-guest'
	option type 'bridge'

config interface 'guest'
	option device 'br-guest'
	option proto 'static'
	option ipaddr '198.19.0.1'
	option netmask '255.255.255.0'
"""
GUEST_DHCP = """
config dhcp 'guest'
	option interface 'guest'
	option start '100'
	option limit '150'
	option leasetime '1h'
"""
GUEST_ZONE = """
config zone
	option name 'guest'
	list network 'guest'
	option input 'REJECT'
	option output 'ACCEPT'
	option forward 'REJECT'
"""


@pytest.fixture
def staging(tmp_path: Path) -> Path:
    need_userland()
    if shutil.which("busybox") is None:
        pytest.fail("busybox is missing: make setup installs it")
    root = tmp_path / "root"
    config = root / "etc" / "config"
    config.mkdir(parents=True)
    for name in ("network", "dhcp", "firewall"):
        shutil.copy(ROOTFS / "etc" / "config" / name, config / name)
    shutil.copy(OVERLAY / "etc" / "config" / "plaza", config / "plaza")
    (root / "usr" / "share").mkdir(parents=True)
    shutil.copytree(OVERLAY / "usr" / "share" / "plaza", root / "usr" / "share" / "plaza")
    (root / "tmp" / ".uci").mkdir(parents=True)
    return root


def run_defaults(root: Path, bindir: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": f"{bindir}:/usr/bin:/bin", "IPKG_INSTROOT": str(root)}
    script = OVERLAY / "etc" / "uci-defaults" / "90-plaza"
    return subprocess.run(
        ["busybox", "ash", str(script)], env=env, capture_output=True, text=True, check=False
    )


def configs(root: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted((root / "etc" / "config").iterdir())}


def uci(root: Path, bindir: Path, *args: str) -> str:
    done = subprocess.run(
        [str(bindir / "uci"), "-q", "-c", str(root / "etc" / "config"), *args],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return done.stdout.strip()


def with_guest(root: Path, tmp_path: Path) -> Path:
    """`root` with the guest network, its DHCP pool and its zone added; the directory of the
    `uci` wrapper."""
    bindir = tmp_path / "bin"
    uci_wrapper(bindir)
    cfg = root / "etc" / "config"
    for name, text in (("network", GUEST), ("dhcp", GUEST_DHCP), ("firewall", GUEST_ZONE)):
        (cfg / name).write_text((cfg / name).read_text() + text)
    return bindir


def test_without_a_lan_interface_nothing_is_captured(staging: Path, tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    uci_wrapper(bindir)
    before = configs(staging)
    done = run_defaults(staging, bindir)
    assert done.returncode == 0, done.stderr
    assert "plaza.lan.interface is not set" in done.stderr
    after = configs(staging)
    # Only the portal's group for the control socket; dhcp and firewall untouched.
    assert after["dhcp"] == before["dhcp"] and after["firewall"] == before["firewall"]
    assert uci(staging, bindir, "get", "plaza.gateway.control_group") == "plaza"
    assert uci(staging, bindir, "get", "plaza.gateway.enabled") == "0"


def test_twice_gives_the_same_configs(staging: Path, tmp_path: Path) -> None:
    bindir = with_guest(staging, tmp_path)
    uci(staging, bindir, "set", "plaza.lan.interface=br-guest")
    uci(staging, bindir, "add_list", "plaza.garden.domains=*.static.example.net")
    uci(staging, bindir, "set", "plaza.portal.cert_file=/etc/plaza/tls/fullchain.pem")
    uci(staging, bindir, "set", "plaza.portal.key_file=/etc/plaza/tls/privkey.pem")
    uci(staging, bindir, "commit", "plaza")

    first = run_defaults(staging, bindir)
    assert first.returncode == 0, first.stderr
    once = configs(staging)
    second = run_defaults(staging, bindir)
    assert second.returncode == 0, second.stderr
    assert configs(staging) == once
    # nothing left uncommitted (uci leaves an empty delta file behind a commit or revert)
    assert all(p.stat().st_size == 0 for p in (staging / "tmp" / ".uci").iterdir())

    get = lambda key: uci(staging, bindir, "get", key)  # noqa: E731
    assert get("dhcp.plaza_garden") == "ipset"
    assert get("dhcp.plaza_garden.table") == "plaza"
    assert get("dhcp.plaza_garden.table_family") == "inet"
    assert get("dhcp.plaza_garden.name") == "garden4 garden6"
    assert get("dhcp.plaza_garden.domain") == "wallet.test static.example.net"
    assert get("dhcp.plaza_portal.name") == "portal.plaza.test"
    assert get("dhcp.plaza_portal.ip") == "198.19.0.1"
    assert get("dhcp.guest.dhcp_option_force") == '114,"https://portal.plaza.test/api/captive"'
    assert get("dhcp.lan.dhcp_option_force") == ""  # the management LAN is left alone
    assert get("firewall.plaza_forward") == "forwarding"
    assert (get("firewall.plaza_forward.src"), get("firewall.plaza_forward.dest")) == (
        "guest", "wan")  # fmt: skip
    assert get("firewall.plaza_portal.src") == "guest"
    assert get("firewall.plaza_portal.dest_port") == "80 443 8080"
    assert get("firewall.plaza_portal.target") == "ACCEPT"
    # The guest zone rejects input: the phones' DNS and DHCP to the router's dnsmasq pass.
    assert (get("firewall.plaza_dns.src"), get("firewall.plaza_dns.proto")) == ("guest", "tcp udp")
    assert (get("firewall.plaza_dns.dest_port"), get("firewall.plaza_dns.target")) == (
        "53", "ACCEPT")  # fmt: skip
    assert (get("firewall.plaza_dhcp.src"), get("firewall.plaza_dhcp.proto")) == ("guest", "udp")
    assert (get("firewall.plaza_dhcp.dest_port"), get("firewall.plaza_dhcp.family")) == (
        "67", "ipv4")  # fmt: skip
    assert get("plaza.lan.lease_file") == "/tmp/dhcp.leases"  # OpenWrt dnsmasq's default


def test_a_changed_portal_is_followed_and_option_114_removed(staging: Path, tmp_path: Path) -> None:
    bindir = with_guest(staging, tmp_path)
    uci(staging, bindir, "set", "plaza.lan.interface=br-guest")
    uci(staging, bindir, "set", "plaza.portal.cert_file=/etc/plaza/tls/fullchain.pem")
    uci(staging, bindir, "commit", "plaza")
    assert run_defaults(staging, bindir).returncode == 0
    uci(staging, bindir, "delete", "plaza.portal.cert_file")
    uci(staging, bindir, "set", "plaza.portal.port=8000")
    uci(staging, bindir, "commit", "plaza")
    assert run_defaults(staging, bindir).returncode == 0
    assert uci(staging, bindir, "get", "dhcp.guest.dhcp_option_force") == ""
    assert uci(staging, bindir, "get", "firewall.plaza_portal.dest_port") == "8000 443 8080"
    assert os.path.exists(staging / "etc" / "config" / "dhcp")


def test_the_lease_file_follows_openwrts_dnsmasq(staging: Path, tmp_path: Path) -> None:
    """plaza.lan.lease_file is dnsmasq's: its default, then `leasefile` of the first dnsmasq
    section, then of the one the captive network's dhcp section names as its `instance`; an
    install upgraded from the lease hook (no lease_file) gets it too. A dnsmasq that writes no
    lease file (odhcpd as the DHCP server, leasefile-ro) is said in the log."""
    bindir = with_guest(staging, tmp_path)
    set_ = lambda *pairs: [uci(staging, bindir, "set", p) for p in pairs]  # noqa: E731
    set_("plaza.lan.interface=br-guest")
    uci(staging, bindir, "delete", "plaza.lan.lease_file")  # as the hook's package shipped it
    uci(staging, bindir, "commit", "plaza")
    lease_file = lambda: uci(staging, bindir, "get", "plaza.lan.lease_file")  # noqa: E731

    done = run_defaults(staging, bindir)
    assert done.returncode == 0, done.stderr
    assert lease_file() == "/tmp/dhcp.leases"
    assert "leasefile-ro" not in done.stderr and "odhcpd" not in done.stderr

    set_("dhcp.@dnsmasq[0].leasefile=/tmp/main.leases")
    uci(staging, bindir, "commit", "dhcp")
    assert run_defaults(staging, bindir).returncode == 0
    assert lease_file() == "/tmp/main.leases"

    set_("dhcp.guest_dns=dnsmasq", "dhcp.guest_dns.leasefile=/tmp/guest.leases")
    set_("dhcp.guest.instance=guest_dns")
    uci(staging, bindir, "commit", "dhcp")
    assert run_defaults(staging, bindir).returncode == 0
    assert lease_file() == "/tmp/guest.leases"

    set_("dhcp.odhcpd=odhcpd", "dhcp.odhcpd.maindhcp=1")
    uci(staging, bindir, "commit", "dhcp")
    (staging / "etc" / "dnsmasq.conf").write_text("# local\n  leasefile-ro\n")
    done = run_defaults(staging, bindir)
    assert done.returncode == 0, done.stderr
    assert "dhcp.odhcpd.maindhcp is 1" in done.stderr
    assert "dnsmasq is set to leasefile-ro" in done.stderr
