"""Plaza's .ipk under OpenWrt's own procd, ubus, uci and firewall4 (built from upstream by
../shared/tools/openwrt-host), as a technician meets it: opkg's postinst creates the user,
enables and starts the service, which refuses while disabled; once configured, procd runs
the daemon and the portal (the portal as user plaza), respawns a killed daemon, restarts it
when /etc/config/plaza changes, `fw4 restart` leaves Plaza's table alone, and `stop` leaves
nothing running. A config that would lock the technician out, or that fails the checks,
starts nothing.

What this userland lacks (netifd, odhcpd, dnsmasq, ujail, musl: docs/openwrt.md) is stood in
for: the guest bridge is made with the host's `ip` in the instance's netns, dnsmasq's lease
file is written as dnsmasq writes it (where dhcp's `leasefile` puts it: the daemon follows),
and the portal listens on ports above 1024 (without ujail procd cannot give it
CAP_NET_BIND_SERVICE).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.openwrt.instance import (
    GUEST,
    OpenWrt,
    client,
    installed,
    running,
    start_plaza,
    with_uci_defaults,
    write_leases,
)

pytestmark = pytest.mark.netns

CONFIGURE = (
    "uci set plaza.lan.interface=br-guest; uci set plaza.gateway.enabled=1; "
    "uci set plaza.portal.port=8000; uci set plaza.portal.intercept_port=8080; "
    "uci commit plaza"
)


PHONE_MAC, PHONE_IP = "02:50:4c:00:00:09", "198.19.0.109"
OTHER_MAC, OTHER_IP = "02:50:4c:00:00:0a", "198.19.0.110"
# Not OpenWrt's default (/tmp/dhcp.leases, test_phone's): the overlay must follow dnsmasq's.
LEASES = "/tmp/dnsmasq.guest.leases"


@pytest.fixture
def router(plaza_rootfs: Path, tmp_path: Path) -> Iterator[OpenWrt]:
    leasefile = f"set dhcp.@dnsmasq[0].leasefile='{LEASES}'\n"
    extra = with_uci_defaults(tmp_path / "extra", "10-test-guest", GUEST + leasefile)
    box = OpenWrt(f"plaza-{os.getpid()}", plaza_rootfs, (extra,))
    box.start()
    try:
        box.host_net("ip", "link", "add", "br-guest", "type", "bridge")
        box.host_net("ip", "addr", "add", "198.19.0.1/24", "dev", "br-guest")
        box.host_net("ip", "link", "set", "br-guest", "up")
        yield box
    finally:
        box.stop()


def test_lifecycle_under_procd(router: OpenWrt) -> None:
    box = router
    installed(box)
    assert box.sh("grep ^plaza: /etc/passwd").startswith("plaza:x:411:411:")
    assert "S95plaza" in box.sh("ls /etc/rc.d")
    assert "not starting: plaza.gateway.enabled is 0" in box.log()
    assert box.instances("plaza") == {}

    box.sh(CONFIGURE)
    pids = start_plaza(box, enable=True)
    portal = box.instances("plaza")["portal"]
    assert portal.get("user") == "plaza"
    assert "Uid:\t411" in box.sh(f"cat /proc/{pids['portal']}/status")
    box.wait("the daemon's nft table", lambda: "table inet plaza" in box.sh("nft list tables"))
    # What the start set through UCI, and fw4 applied: the captive zone reaches the portal.
    assert box.sh("uci get firewall.plaza_forward.src").strip() == "guest"
    assert box.sh("uci get dhcp.plaza_garden").strip() == "ipset"
    assert "Plaza-portal" in box.sh("nft list chain inet fw4 input_guest")

    # A DHCP lease the OpenWrt way: a line in dnsmasq's lease file, wherever dhcp says it is.
    assert box.sh("uci get plaza.lan.lease_file").strip() == LEASES
    assert not box.sh("ls /etc/hotplug.d/dhcp 2>/dev/null", check=False).strip()
    write_leases(box, LEASES, [(PHONE_MAC, PHONE_IP, "phone9")])
    phone = box.wait("the lease reaching the daemon", lambda: client(box, PHONE_MAC))
    assert (phone["ip"], phone["state"], phone["hostname"]) == (PHONE_IP, "captive", "phone9")
    box.sh(f"plaza-ctl auth {PHONE_MAC} --minutes 30")
    assert client(box, PHONE_MAC)["state"] == "authorized"
    assert PHONE_IP in box.sh("nft list set inet plaza auth4")

    # Idle memory on the 128 MB router class (glibc/x86_64 here, not musl/MIPS).
    rss_kb = int(box.sh(f"grep VmRSS /proc/{pids['gateway']}/status").split()[1])
    print(f"daemon RSS idle under procd: {rss_kb / 1024:.1f} MiB")
    assert rss_kb <= 40 * 1024

    # kill -9: procd respawns the daemon (respawn timeout 5 s); the portal is left alone.
    box.sh(f"kill -9 {pids['gateway']}")
    again = box.wait(
        "the daemon respawned",
        lambda: (r := running(box)) and r["gateway"] != pids["gateway"] and r,
        seconds=30,
    )
    assert again["portal"] == pids["portal"]

    # A UCI change + reload_config: procd sees /etc/config/plaza changed, restarts both.
    box.sh("uci set plaza.policy.session_minutes=30; uci commit plaza; reload_config")
    box.wait(
        "a restart after the config change",
        lambda: (r := running(box)) and r["gateway"] != again["gateway"] and r,
    )
    assert box.sh("uci get plaza.policy.session_minutes").strip() == "30"
    # ... and takes effect: a session granted now lasts the new default (the shipped one is 60).
    write_leases(box, LEASES, [(PHONE_MAC, PHONE_IP, "phone9"), (OTHER_MAC, OTHER_IP, "phone10")])
    box.wait("the second lease reaching the daemon", lambda: client(box, OTHER_MAC))
    box.sh(f"plaza-ctl auth {OTHER_MAC}")
    left = client(box, OTHER_MAC)["expires_at"] - time.time()
    assert 30 * 60 - 60 < left <= 30 * 60, left

    # fw4 rebuilds only its own table.
    box.sh("fw4 restart >/dev/null 2>&1")
    assert "table inet plaza" in box.sh("nft list tables")
    assert running(box)
    # The session outlived the respawn, the restart and fw4's: the phone is still online.
    box.wait("the daemon answering", lambda: client(box, PHONE_MAC))
    assert client(box, PHONE_MAC)["state"] == "authorized"
    assert PHONE_IP in box.sh("nft list set inet plaza auth4")

    box.sh("/etc/init.d/plaza stop")
    box.wait("no plaza instance", lambda: not box.instances("plaza"))
    ps = box.sh("ps w")
    assert "plaza-gateway" not in ps and "plaza-portal" not in ps, ps
    assert "table inet plaza" not in box.sh("nft list tables")


def test_refuses_what_would_lock_out_or_is_wrong(router: OpenWrt) -> None:
    box = router
    installed(box)
    box.sh("uci set plaza.gateway.enabled=1; uci set plaza.lan.interface=br-lan; uci commit plaza")
    box.sh("/etc/init.d/plaza start", check=False)
    assert "is the management LAN and no admin MAC is in plaza.policy.trusted_macs" in box.log()
    assert box.instances("plaza") == {}

    box.sh(CONFIGURE + "; uci set plaza.policy.sesion_minutes=30; uci commit plaza")
    out = box.sh("/etc/init.d/plaza start", check=False)
    assert "sesion_minutes" in out, out  # check-config names the option at fault
    assert box.instances("plaza") == {}
    assert box.sh("ubus call system board", check=False)  # the router still answers
