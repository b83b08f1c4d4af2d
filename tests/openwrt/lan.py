"""The lab's network around an OpenWrt instance: the lab's fake internet (DNS, web sites, the
sandbox wallet and the Plaza cloud, as lab/topology.py builds them) and a router namespace
that the instance joins (run-in-openwrt.sh --netns), with phones on its guest bridge.

What netifd would do on a router is done here by hand in the router namespace: the WAN veth
with its address and default route, the guest bridge with its address, the resolv file for
dnsmasq's upstream. What OpenWrt itself does (fw4's zones and masquerade, dnsmasq's DHCP and
DNS, Plaza's daemon and portal under procd) runs in the instance.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
from pathlib import Path

from lab import cloud as labcloud
from lab.topology import (
    LAN_ADDRESS,
    OCSP_IP,
    WALLET_IP,
    WAN_INTERNET,
    WAN_ROUTER,
    WEB_IP,
    Lab,
    LabState,
    Phone,
    _tcp_open,
    _trust_lab_ca,
    _wait_for,
    nsexec,
    sh,
)

GUEST = "br-guest"


class OpenWrtLab(Lab):
    """A lab whose router namespace is left to an OpenWrt instance (its name starts with
    `owrt-`, which run-in-openwrt.sh --netns requires)."""

    def __init__(self) -> None:
        super().__init__(f"owrt-{secrets.token_hex(3)}")

    def build(self) -> None:
        self.down()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.router_dir.mkdir(parents=True, exist_ok=True)
        self.state = LabState(name=self.name, cloud=True)
        self._save()
        self._build_internet()
        self._build_router_netns()
        self._start_cloud()
        for ip, port in ((WEB_IP, 80), (WEB_IP, 443), (WALLET_IP, 443), (OCSP_IP, 80)):
            _wait_for(lambda ip=ip, port=port: _tcp_open(self.state.internet, ip, port), 10,
                      f"the fake internet to listen on {ip}:{port}")  # fmt: skip

    def _build_router_netns(self) -> None:
        r, i = self.state.router, self.state.internet
        sh("ip", "netns", "add", r)
        nsexec(r, "ip", "link", "set", "lo", "up")
        sh("ip", "link", "add", "wan", "netns", r, "type", "veth", "peer", "eth0", "netns", i)
        nsexec(r, "ip", "addr", "add", WAN_ROUTER, "dev", "wan")
        nsexec(i, "ip", "addr", "add", WAN_INTERNET, "dev", "eth0")
        nsexec(r, "ip", "link", "set", "wan", "up")
        nsexec(i, "ip", "link", "set", "eth0", "up")
        nsexec(r, "ip", "route", "add", "default", "via", WAN_INTERNET.split("/")[0])
        nsexec(r, "ip", "link", "add", GUEST, "type", "bridge")
        nsexec(r, "ip", "addr", "add", LAN_ADDRESS, "dev", GUEST)
        nsexec(r, "ip", "link", "set", GUEST, "up")
        nsexec(r, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        # The portal runs as user plaza and listens on 80/443: on OpenWrt ujail grants it
        # CAP_NET_BIND_SERVICE; this userland has no ujail, so the namespace lets any user
        # bind from port 80 up instead.
        nsexec(r, "sysctl", "-qw", "net.ipv4.ip_unprivileged_port_start=80")

    def add_guest_phone(self, index: int) -> Phone:
        """Wire phone `index` to the guest bridge (no DHCP yet: see `lease`)."""
        r, ns = self.state.router, f"{self.name}-phone{index}"
        mac = f"02:50:4c:00:{index // 256:02x}:{index % 256:02x}"
        sh("ip", "netns", "add", ns)
        nsexec(ns, "ip", "link", "set", "lo", "up")
        sh("ip", "link", "add", "eth0", "netns", ns, "address", mac, "type", "veth",
           "peer", f"lan{index}", "netns", r)  # fmt: skip
        nsexec(r, "ip", "link", "set", f"lan{index}", "master", GUEST)
        nsexec(r, "ip", "link", "set", f"lan{index}", "up")
        nsexec(ns, "ip", "link", "set", "eth0", "up")
        etc = Path("/etc/netns") / ns
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "resolv.conf").write_text("")
        _trust_lab_ca(etc, self.ca.cert_path)
        phone = Phone(name=f"phone{index}", netns=ns, mac=mac)
        self.state.phones.append(phone)
        self._save()
        return phone

    def lease(self, phone: Phone) -> tuple[str, str]:
        """Ask DHCP once (busybox udhcpc, option 114 requested); the address, and option 114
        as udhcpc gave it to lab/udhcpc.sh (the URI, or its hex when busybox has no name)."""
        cmd, env = self.dhcp_command(phone, once=True)
        done = subprocess.run(
            ["ip", "netns", "exec", phone.netns, *cmd], capture_output=True, text=True,
            timeout=60, env={**os.environ, **env},
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        lease = self.run_dir / f"{phone.name}.lease"
        phone.ipv4 = lease.read_text().strip()
        self._save()
        opt114 = Path(f"{lease}.opt114").read_text().strip()
        with contextlib.suppress(ValueError):
            opt114 = bytes.fromhex(opt114).decode()
        return phone.ipv4, opt114

    def claim(self) -> str:
        account = labcloud.bootstrap(self.run_dir, "Plaza Demo Café", "portal.plaza.test")
        return labcloud.claim_code(self.run_dir, account.venue_id)
