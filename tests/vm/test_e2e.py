"""Issue 13 end to end through the router image under QEMU (software emulation), one boot:
the technician flashes a blank router from the WAN with a claim code, `verify` says all ok
(the cloud sees the heartbeats, a probe from the LAN is captive), a phone joins, logs in
through the sandbox wallet and is online, then an upgrade to a newer package keeps it online.

Real here: the image's systemd, nftables, dnsmasq and sshd; the lab's cloud (plaza-cloud run,
HTTPS), sandbox wallet, web server and DNS on the internet (lab/vm_internet.py); the phone's
DHCP client and curl. Steps depend on the ones before (one router, in order).
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.shopper import wallet_login
from lab.topology import PORTAL_HOST
from lab.vm import WAN_ROUTER, RouterVM
from lab.vm_internet import ONLINE_MARK, SITE
from tests.vm.flow import (
    ALL_OK,
    by_check,
    flash_args,
    join,
    journal,
    prepare,
    steps,
    verify_until_ok,
)

pytestmark = [pytest.mark.vm, pytest.mark.netns]

ROOT = Path(__file__).resolve().parents[2]
PORTAL = f"https://{PORTAL_HOST}/"
FLASH_STEPS = [
    "connect", "disk space", "upload", "install", "portal certificate",
    "config (test and rollback)", "enrol",
    "services",
]  # fmt: skip


@pytest.fixture(scope="module")
def lab_vm(router_image: Path, newer_package: Path) -> Iterator[RouterVM]:
    """One boot for the module, with the lab's cloud and wallet on its internet."""
    machine = RouterVM(name=f"pe2e{os.getpid() % 10000}", image=router_image, services=True)
    try:
        machine.up()
        print(f"\nboot to SSH under TCG: {machine.wait_ssh():.0f} s")
        yield machine
    finally:
        machine.down()


@pytest.fixture(scope="module")
def state() -> dict:
    return {}


def test_flash_a_blank_router_then_verify_all_ok(lab_vm: RouterVM, state: dict) -> None:
    vm = lab_vm
    venue = prepare(vm)
    assert vm.internet is not None
    state["claim"] = claim = vm.internet.claim()
    deb = ROOT / "dist" / "plaza_0.1.0_amd64.deb"
    start = time.monotonic()
    code, lines, text = vm.provision(*flash_args(claim, *venue, "--package", str(deb)))
    flashed = time.monotonic() - start
    assert code == 0, text + journal(vm)
    assert list(steps(lines)) == FLASH_STEPS, text
    assert all(x["status"] == "ok" for x in lines if "step" in x), text
    assert lines[-1]["result"] == "ok" and lines[-1]["message"].startswith("enrolled as "), text
    code, lines = verify_until_ok(vm, claim)
    total = time.monotonic() - start
    found = by_check(lines)
    for name in ALL_OK:
        assert found.get(name, {}).get("status") == "ok", f"{name}: {found}\n{journal(vm)}"
    assert "verified" in found["portal-https"]["reason"]
    assert "the cloud saw device" in found["heartbeat"]["reason"]
    assert code == 0 and lines[-1] == {
        "host": WAN_ROUTER, "result": "ok", "exit": 0, "message": "all ok"
    }  # fmt: skip
    print(
        f"\nflash {flashed:.0f} s, verify until all ok {total - flashed:.0f} s, "
        f"blank router to all ok {total:.0f} s (emulated, TCG)"
    )


def test_a_phone_logs_in_through_the_wallet_and_is_online(lab_vm: RouterVM, state: dict) -> None:
    vm = lab_vm
    phone, ip = join(vm, 1)
    assert ip.startswith("198.19.0."), ip
    option = (vm.dir / "phone1.lease.opt114").read_text()
    assert option.strip(), "no RFC 8910 option 114 in the lease"
    # The gateway read that lease from dnsmasq's lease file (no script runs per DHCP event).
    known = vm.ssh(f"for i in $(seq 50); do plaza-ctl clients | grep -qwF '{ip}' && break; "
                   "sleep 0.2; done; plaza-ctl clients")  # fmt: skip
    assert ip in known.stdout.split(), known.stdout
    captive = phone.get(SITE, timeout=20)
    assert captive.status in (302, 303, 307, 511), (captive, journal(vm))
    assert PORTAL_HOST in captive.location, captive.location
    welcome = wallet_login(phone, PORTAL)
    assert welcome.status == 200, welcome
    online = phone.get(SITE, timeout=20)
    assert online.status == 200 and ONLINE_MARK in online.body, (online, journal(vm))
    state["phone"] = phone


def test_an_upgrade_keeps_the_phone_online(
    lab_vm: RouterVM, state: dict, newer_package: Path
) -> None:
    """Probes once a second through the upgrade (install, services restart); none may be lost:
    the gateway leaves its table in the kernel across the restart, networkd's NAT is untouched,
    and a probe's name lookup rides out dnsmasq's restart (the resolver retries)."""
    vm, phone = lab_vm, state["phone"]
    results: list[tuple[float, bool, str]] = []
    stop = threading.Event()

    def probe_loop() -> None:
        while not stop.is_set():
            started = time.monotonic()
            r = phone.get(SITE, timeout=8)
            ok = r.status == 200 and ONLINE_MARK in r.body
            results.append((started, ok, f"{r.status} {r.error} {r.location}"))
            stop.wait(max(0.0, 1.0 - (time.monotonic() - started)))

    thread = threading.Thread(target=probe_loop, daemon=True)
    thread.start()
    try:
        start = time.monotonic()
        code, lines, text = vm.provision(
            *flash_args(state["claim"], "--package", str(newer_package))
        )
        took = time.monotonic() - start
        time.sleep(3)  # a probe after the restart settled
    finally:
        stop.set()
        thread.join(timeout=20)
    lost = [r for r in results if not r[1]]
    print(f"\nupgrade {took:.0f} s, {len(results)} probes, {len(lost)} lost")
    assert code == 0, text + journal(vm)
    assert steps(lines)["install"]["status"] == "ok", text
    assert "already enrolled" in lines[-1]["message"], text
    version = newer_package.name.split("_")[1]
    installed = vm.ssh("dpkg-query -W -f='${Version} ${db:Status-Abbrev}' plaza").stdout
    assert installed.strip() == f"{version} ii", installed
    assert len(results) >= 10, results
    assert not lost, f"{len(lost)} of {len(results)} probes lost: {lost[:5]}\n{journal(vm)}"


def test_a_wrong_ssh_key_is_refused_with_what_to_do(
    lab_vm: RouterVM, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Another technician's key: exit 3 at connect, nothing run on the router."""
    other = tmp_path_factory.mktemp("key") / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    code, lines, text = lab_vm.provision("verify", WAN_ROUTER, key=other, timeout=120)
    assert code == 3, text
    failed = steps(lines)["connect"]
    assert failed["status"] == "fail" and "key" in (failed["message"] + failed["hint"]), text
