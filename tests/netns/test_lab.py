"""The lab's own contract: isolated from the host, and `down` leaves nothing behind."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from gateway.control_client import ControlError
from lab.topology import Lab, nsexec
from tests.netns.conftest import _need_root, running_lab, unique_name

BIN = Path(sys.executable).parent


def test_up_down_leaves_nothing_and_repeats() -> None:
    _need_root()
    lab = Lab(unique_name("d"))
    lab.up(phones=1)
    pids = list(lab.state.pids.values())
    namespaces = lab.state.namespaces()
    try:
        internet = lab.state.internet
        routes = nsexec(internet, "ip", "route", "show")
        assert "default" not in routes  # the fake internet cannot route anywhere else
        links = nsexec(lab.state.router, "ip", "-o", "link", "show")
        assert {line.split(":")[1].strip().split("@")[0] for line in links.splitlines()} == {
            "lo", "wan", "br-lan", "lan1",
        }  # fmt: skip
    finally:
        lab.down()
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not any(ns in listed for ns in namespaces)
    assert not any(Path(f"/etc/netns/{ns}").exists() for ns in namespaces)
    assert not lab.run_dir.exists()
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or _zombie(pid)
    assert lab.down() == []  # idempotent


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


def test_neighbour_events_learn_a_station_without_dhcp() -> None:
    """A phone with a static address is learned from netlink as soon as it talks."""
    _need_root()
    lab = Lab(unique_name("n"))
    lab.up(phones=1)
    try:
        old_ip = lab.state.phones[0].ipv4
        lab.stop("phone1-dhcp")  # udhcpc -R releases its lease: the gateway forgets the IP
        # The release reaches the daemon through dnsmasq's lease file, asynchronously (a lease
        # must be missing from it for a second: gateway/stations/lease_watch.py), and counts
        # only once a re-probe of the phone's MAC at that address has gone unanswered (~3 s:
        # anyone can forge a release). Until then the station still holds its old address,
        # and a neighbour entry (a claim anyone can forge) never moves a station's address:
        # wait for the release first.
        _wait_forgotten(lab, old_ip, seconds=15)
        ns = lab.netns_of("phone1")
        nsexec(ns, "ip", "addr", "flush", "dev", "eth0")
        nsexec(ns, "ip", "addr", "add", "198.19.0.60/24", "dev", "eth0")
        nsexec(ns, "ping", "-c", "1", "-W", "1", "198.19.0.1", check=False)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                client = lab.control().client("198.19.0.60")
                break
            except ControlError:
                time.sleep(0.05)
        else:
            raise AssertionError("the gateway never learned 198.19.0.60 from netlink")
        assert client["mac"] == lab.state.phones[0].mac
        assert client["hostname"] == "phone1"  # the same station, now at its new address
    finally:
        lab.down()


def _wait_forgotten(lab: Lab, ip: str | None, seconds: float = 5) -> None:
    deadline = time.monotonic() + seconds
    while ip and time.monotonic() < deadline:
        try:
            lab.control().client(ip)
        except ControlError:
            return
        time.sleep(0.05)
    raise AssertionError(f"the gateway never processed the release of {ip}")


def test_demo_runs_and_exits_zero() -> None:
    _need_root()
    name = unique_name("m")
    r = subprocess.run(
        [str(BIN / "plaza-lab"), "--name", name, "demo"],
        capture_output=True, text=True, timeout=120, env={**os.environ},
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Demo passed" in r.stdout
    assert name not in subprocess.run(["ip", "netns"], capture_output=True, text=True).stdout


def test_plaza_ctl_reaches_the_lab_gateway_without_settings() -> None:
    """A tester's `plaza-lab ctl ...` and `plaza-lab exec router -- plaza-ctl ...` reach the
    lab's daemon with no PLAZA_CONTROL_SOCKET and no virtualenv on PATH; status names the
    socket."""
    with running_lab("c", phones=2) as lab:
        macs = [p.mac for p in lab.state.phones]
        env = {k: v for k, v in os.environ.items() if k != "PLAZA_CONTROL_SOCKET"}
        env["PATH"] = "/usr/sbin:/usr/bin:/sbin:/bin"  # as a tester's root shell has it

        def lab_cli(*args: str) -> str:
            r = subprocess.run([str(BIN / "plaza-lab"), "--name", lab.name, *args],
                               capture_output=True, text=True, timeout=60, env=env)  # fmt: skip
            assert r.returncode == 0, (args, r.stdout, r.stderr)
            return r.stdout

        assert f"control  {lab.control_socket}" in lab_cli("status")
        listed = lab_cli("ctl", "clients")
        assert all(mac in listed for mac in macs), listed
        via_exec = lab_cli("exec", "router", "--", "plaza-ctl", "clients")
        assert all(mac in via_exec for mac in macs), via_exec
        assert "authorized" in lab_cli("ctl", "auth", macs[0], "--minutes", "5")
        assert lab.control().client(macs[0])["state"] == "authorized"
