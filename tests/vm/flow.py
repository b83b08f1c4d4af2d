"""What the VM end-to-end tests (test_e2e.py, test_power_cut.py) and bench/provision_vm.py do
to a router: flash and verify it as the technician does from the WAN, join a phone to its LAN,
and show the router's journal when something fails."""

from __future__ import annotations

import subprocess
import time

from lab import cloud as labcloud
from lab.phone import Phone
from lab.vm import PROBE_NET, WAN_ROUTER, RouterVM
from lab.vm_internet import ROUTER_CA

UNITS = ("plaza-gateway", "plaza-portal", "plaza-dnsmasq")
# `systemctl is-active A B C` exits 0 when any one is active: succeed only when all three are.
ALL_ACTIVE = f"! systemctl is-active {' '.join(UNITS)} | grep -vqx active"
LAN_PROBE = f"http://{PROBE_NET.split('.0/')[0]}.80/"  # routed through the router's LAN
ALL_OK = (
    *(f"service {u}" for u in UNITS),
    "config", "nft", "dhcp-option-114", "portal-https", "enrolled", "heartbeat", "captive-probe",
)  # fmt: skip
SETTLE = 300  # seconds for the daemon's first heartbeat after flash (TCG, 2 loaded cores)


def journal(vm: RouterVM) -> str:
    """The units' status and journal and the console's tail, for a failure message."""
    done = vm.ssh(
        f"systemctl --no-pager status {' '.join(UNITS)} | tail -30; "
        "journalctl --no-pager -n 40 -u plaza-gateway -u plaza-portal", check=False
    )  # fmt: skip
    return f"--- router journal ---\n{done.stdout}{done.stderr}\n--- console ---\n" + (
        vm.console_tail(15)
    )


def by_check(lines: list[dict]) -> dict[str, dict]:
    return {x["check"]: x for x in lines if "check" in x}


def steps(lines: list[dict]) -> dict[str, dict]:
    return {x["step"]: x for x in lines if "step" in x}


def flash_args(claim: str, *extra: str) -> list[str]:
    """`flash` from the WAN; generous waits: under TCG the services take minutes to start."""
    return ["flash", WAN_ROUTER, "--claim", claim, "--cloud", labcloud.CLOUD_URL,
            "--rollback-timeout", "240", "--wait", "240", *extra]  # fmt: skip


def prepare(vm: RouterVM) -> list[str]:
    """The lab CA on the router, the venue config and the portal's pair on the laptop, the
    laptop's second NIC on the LAN; returns flash's arguments for the config and the pair."""
    assert vm.internet is not None
    for f in vm.internet.router_files():
        vm.put(f.path, f.data, f.mode, f.group)
    config = vm.dir / "venue.toml"
    config.write_text(vm.internet.venue_config())
    vm.laptop_on_lan()
    chain, key = vm.internet.portal_pair()
    return ["--venue-config", str(config), "--portal-cert", str(chain), "--portal-key", str(key)]


def verify_once(vm: RouterVM, claim: str) -> tuple[int, list[dict], str]:
    assert vm.internet is not None
    return vm.provision(
        "verify", WAN_ROUTER, "--cloud", labcloud.CLOUD_URL, "--claim", claim,
        "--ca-bundle", str(vm.internet.ca.cert_path), "--portal-ca", ROUTER_CA,
        "--lan-probe", LAN_PROBE, timeout=240,
    )  # fmt: skip


def verify_until_ok(vm: RouterVM, claim: str, timeout: float = SETTLE) -> tuple[int, list[dict]]:
    """`verify` again until all ok, as a technician re-runs it while the daemon comes up
    (its first heartbeat); the last answer."""
    deadline = time.monotonic() + timeout
    while True:
        code, lines, _ = verify_once(vm, claim)
        if code == 0 or time.monotonic() > deadline:
            return code, lines
        time.sleep(5)


def join(vm: RouterVM, index: int) -> tuple[Phone, str]:
    """A phone joins the LAN: DHCP (with option 114), its resolv.conf from the lease."""
    ns = vm.add_phone(index)
    lease = vm.dir / f"phone{index}.lease"
    dhcp = subprocess.run(
        ["ip", "netns", "exec", ns, "busybox", "udhcpc", "-f", "-q", "-n", "-i", "eth0",
         "-O", "114", "-s", str(vm.udhcpc_script), "-t", "20", "-T", "2"],
        capture_output=True, text=True, check=False, timeout=90,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PLAZA_LEASE": str(lease),
             "PLAZA_RESOLV": f"/etc/netns/{ns}/resolv.conf"},
    )  # fmt: skip
    assert dhcp.returncode == 0, dhcp.stdout + dhcp.stderr
    return Phone(ns), lease.read_text().strip()
