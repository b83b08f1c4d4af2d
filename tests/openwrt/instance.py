"""One OpenWrt userland instance (../shared/tools/openwrt-host/run-in-openwrt.sh): procd as
PID 1 of its own namespaces, commands run inside it, its log."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from tests.openwrt.host import TOOL

RUN = TOOL / "run-in-openwrt.sh"
T = TypeVar("T")


class OpenWrt:
    def __init__(self, name: str, rootfs: Path, overlays: tuple[Path, ...] = ()) -> None:
        self.name = name
        self.rootfs = rootfs
        self.overlays = overlays

    def start(self, netns: str | None = None) -> None:
        """Boot; in the named network namespace `netns` (owrt-*) if given, else a fresh one."""
        cmd = [str(RUN), "start", "-n", self.name, "-r", str(self.rootfs)]
        if netns:
            cmd += ["--netns", netns]
        for overlay in self.overlays:
            cmd += ["-o", str(overlay)]
        subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=60)

    def stop(self) -> None:
        subprocess.run([str(RUN), "stop", "-n", self.name], capture_output=True, timeout=60)

    def sh(self, script: str, check: bool = True, timeout: float = 60) -> str:
        """Run `script` with the instance's /bin/sh (busybox ash); its stdout and stderr."""
        done = subprocess.run(
            [str(RUN), "exec", "-n", self.name, "--", "/bin/sh", "-c", script],
            capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
        out = done.stdout + done.stderr
        if check and done.returncode != 0:
            raise AssertionError(f"{script!r} exited {done.returncode}:\n{out}\n{self.log()}")
        return out

    def pid(self) -> int:
        out = subprocess.run(
            [str(RUN), "status", "-n", self.name], capture_output=True, text=True, check=True
        ).stdout
        return int(out.split()[-1])

    def host_net(self, *args: str) -> None:
        """A host command (ip, ...) in the instance's network namespace."""
        subprocess.run(["nsenter", "-t", str(self.pid()), "-n", *args], check=True, timeout=30)

    def log(self) -> str:
        return self.sh("cat /tmp/log/messages", check=False)

    def services(self) -> dict:
        return json.loads(self.sh("ubus call service list") or "{}")

    def instances(self, service: str) -> dict[str, dict]:
        return self.services().get(service, {}).get("instances", {})

    def wait(self, what: str, predicate: Callable[[], T], seconds: float = 30.0) -> T:
        deadline = time.monotonic() + seconds
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}\n{self.log()}")
            time.sleep(0.3)


# What the tests ask of an instance with Plaza installed (tests/openwrt/test_*.py).
def client(box: OpenWrt, mac: str) -> dict | None:
    out = box.sh("plaza-ctl clients --json", check=False)  # the .ipk's default socket
    try:
        clients = json.loads(out)
    except ValueError:
        return None  # the daemon is (re)starting
    return next((c for c in clients if c.get("mac") == mac), None)


def installed(box: OpenWrt) -> None:
    """What `opkg install` does after laying the files: the package's postinst."""
    box.sh("/usr/lib/opkg/info/plaza.postinst 2>/dev/null")


def running(box: OpenWrt) -> dict[str, int] | None:
    inst = box.instances("plaza")
    pids = {name: i["pid"] for name, i in inst.items() if i.get("running")}
    return pids if set(pids) == {"gateway", "portal"} else None


# The guest network a technician adds for the phones, as /etc/uci-defaults scripts run at boot:
# a bridge with a static address, a DHCP pool on it, a zone of its own whose input and forward
# are refused (the overlay opens what Plaza needs). One copy for every test module.
GUEST = """set network.guest_dev=device
set network.guest_dev.name='br-guest'
set network.guest_dev.type='bridge'
set network.guest=interface
set network.guest.device='br-guest'
set network.guest.proto='static'
set network.guest.ipaddr='198.19.0.1'
set network.guest.netmask='255.255.255.0'
set dhcp.guest=dhcp
set dhcp.guest.interface='guest'
set dhcp.guest.start='100'
set dhcp.guest.limit='150'
set dhcp.guest.leasetime='1h'
add firewall zone
set firewall.@zone[-1].name='guest'
add_list firewall.@zone[-1].network='guest'
set firewall.@zone[-1].input='REJECT'
set firewall.@zone[-1].output='ACCEPT'
set firewall.@zone[-1].forward='REJECT'
add_list firewall.@zone[-1].device='br-guest'
"""


def uci_batch(commands: str) -> str:
    """A shell script that applies `commands` (one uci command a line) and commits them."""
    return f"uci batch <<'EOB'\n{commands}commit\nEOB\n"


def with_uci_defaults(tree: Path, name: str, commands: str) -> Path:
    """`tree` (an overlay, run-in-openwrt.sh -o) with /etc/uci-defaults/`name` applying
    `commands`: run at boot, before the services start, as on a router."""
    defaults = tree / "etc" / "uci-defaults"
    defaults.mkdir(parents=True, exist_ok=True)
    (defaults / name).write_text(uci_batch(commands))
    return tree


def start_plaza(box: OpenWrt, enable: bool = False) -> dict[str, int]:
    """`/etc/init.d/plaza start` (after `enable`, the boot links, if asked); the pids of the
    gateway and portal instances once procd runs both."""
    box.sh(("/etc/init.d/plaza enable && " if enable else "") + "/etc/init.d/plaza start")
    return box.wait("gateway and portal running", lambda: running(box))


def write_leases(box: OpenWrt, path: str, leases: list[tuple[str, str, str]]) -> None:
    """The lease file as OpenWrt's dnsmasq leaves it after a change: every lease (MAC, IP,
    host name), the file truncated and rewritten in place (dnsmasq's lease.c)."""
    expiry = int(time.time()) + 3600
    lines = "".join(f"{expiry} {mac} {ip} {name} *\\n" for mac, ip, name in leases)
    box.sh(f"printf '{lines}' > {path}")
