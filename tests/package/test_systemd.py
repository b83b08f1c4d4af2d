"""The package under a real systemd: a Debian 12 container (systemd-nspawn, its own network
namespace with a br-lan bridge) boots, the .deb is installed in it with dpkg, and the three
units run with their whole sandbox: Type=notify readiness, the portal as user plaza answering
on port 80, dnsmasq started from the generated config. An upgrade restarts the gateway with its
authorized client restored and still in the kernel table; remove stops everything.

PID 1 of the test machine need not be systemd: the container's is (`--register=no
--keep-unit`: no machined, no system bus needed on the host). Idle RSS under systemd and the
online `systemd-analyze security` scores are printed for the README.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.package.chroot import PACKAGES, base_tarball, unpack
from tests.package.conftest import Debs, need_root

pytestmark = [pytest.mark.package, pytest.mark.netns]

UNITS = ("plaza-gateway.service", "plaza-dnsmasq.service", "plaza-portal.service")
LAN_UNIT = """[Unit]
Description=the test router's LAN bridge
Before=plaza-gateway.service plaza-dnsmasq.service plaza-portal.service
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/sbin/ip link add br-lan type bridge
ExecStart=/usr/sbin/ip addr add 198.19.0.1/24 dev br-lan
ExecStart=/usr/sbin/ip link set br-lan up
[Install]
WantedBy=multi-user.target
"""


class Container:
    def __init__(self, root: Path, log: Path) -> None:
        self.root = root
        self.log = log.open("w")
        self.process = subprocess.Popen(
            ["systemd-nspawn", "--quiet", "--directory", str(root), "--boot",
             "--private-network", "--register=no", "--keep-unit", "--console=pipe"],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        self.leader = self._leader()

    def _leader(self) -> int:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"systemd-nspawn exited: {Path(self.log.name).read_text()}")
            children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
            pids = children.read_text().split() if children.exists() else []
            if pids:
                return int(pids[0])
            time.sleep(0.1)
        raise AssertionError("the container's init did not start")

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            ["nsenter", "-t", str(self.leader), "-a", *argv],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        if check and done.returncode != 0:
            raise AssertionError(f"{argv} exited {done.returncode}: {done.stdout}{done.stderr}")
        return done

    def wait_booted(self, timeout: float = 90) -> None:
        """Until init has finished booting (its socket appears a moment after it starts)."""
        deadline = time.monotonic() + timeout
        while True:
            done = self.run("systemctl", "is-system-running", "--wait", check=False)
            if done.stdout.strip() in ("running", "degraded"):
                return
            assert time.monotonic() < deadline, done.stdout + done.stderr
            time.sleep(0.3)

    def wait_active(self, units: tuple[str, ...], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.run("systemctl", "is-active", "--quiet", *units, check=False).returncode == 0:
                return
            time.sleep(0.3)
        states = self.run("systemctl", "--no-pager", "status", *units, check=False).stdout
        raise AssertionError(f"not active after {timeout} s:\n{states}")

    def main_pid(self, unit: str) -> int:
        return int(self.run("systemctl", "show", "-p", "MainPID", "--value", unit).stdout)

    def rss_mib(self, unit: str) -> float:
        status = self.run("cat", f"/proc/{self.main_pid(unit)}/status").stdout
        return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024  # type: ignore[union-attr]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # nspawn asks the container's init to halt
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


@pytest.fixture(scope="module")
def container(debs: Debs, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    need_root()
    if shutil.which("systemd-nspawn") is None:
        pytest.fail("systemd-nspawn is missing: make setup installs it (apt: systemd-container)")
    work = tmp_path_factory.mktemp("nspawn")
    tarball = base_tarball((*PACKAGES, "systemd", "dbus", "iproute2", "procps"))
    root = unpack(tarball, work / "root")
    (root / "etc/systemd/system/plaza-lan.service").write_text(LAN_UNIT)
    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    os.symlink("/etc/systemd/system/plaza-lan.service", wants / "plaza-lan.service")
    shutil.copy(debs.old, root / "root/old.deb")  # /tmp is a fresh tmpfs once booted
    shutil.copy(debs.new, root / "root/new.deb")
    box = Container(root, work / "console.log")
    try:
        box.wait_booted()
        yield box
    finally:
        box.stop()


def test_the_units_under_systemd(container: Container) -> None:
    box = container
    box.run("dpkg", "-i", "/root/old.deb")
    box.wait_active(UNITS)
    assert box.run("systemctl", "show", "-p", "Type", "--value", UNITS[0]).stdout.strip() == (
        "notify"
    )
    journal = box.run("journalctl", "-u", UNITS[0], "--no-pager").stdout
    assert "plaza-gateway: ready" in journal and "Started plaza-gateway.service" in journal
    portal = box.run(
        "python3", "-c",
        "import time, urllib.request as u\n"
        "for _ in range(100):  # Type=simple: active before it listens\n"
        "    try: print(u.urlopen('http://198.19.0.1/', timeout=10).status); break\n"
        "    except OSError: time.sleep(0.2)\n",
    )  # fmt: skip
    assert portal.stdout.strip() == "200"
    user = box.run("ps", "-o", "user=", "-p", str(box.main_pid("plaza-portal.service")))
    assert user.stdout.strip() == "plaza"
    assert box.run("stat", "-c", "%G", "/run/plaza/control.sock").stdout.strip() == "plaza"
    for unit in UNITS:
        print(f"idle RSS under systemd, {unit}: {box.rss_mib(unit):.1f} MiB")
    scores = box.run("systemd-analyze", "security", "--no-pager", *UNITS).stdout
    print(scores[scores.rfind("UNIT ") :])  # the summary table after the units' details
    for unit, target in (("plaza-gateway.service", 5.0), ("plaza-portal.service", 2.5)):
        score = float(re.search(rf"^{re.escape(unit)}\s+(\d+\.\d+)", scores, re.M).group(1))  # type: ignore[union-attr]
        assert score <= target, (unit, score)

    # The cloud adds a garden name: the sandboxed gateway restarts plaza-dnsmasq through
    # systemctl ([garden] dnsmasq_restart of the shipped config) so dnsmasq reads it.
    dnsmasq = box.main_pid("plaza-dnsmasq.service")
    box.run(
        "sh", "-c",
        """echo '{"version": 2, "config": {"garden": {"domains": ["shop.example.org"]}}}' """
        "> /var/lib/plaza/cloud-config.json",
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while box.main_pid("plaza-dnsmasq.service") in (dnsmasq, 0):
        assert time.monotonic() < deadline, box.run("journalctl", "--no-pager", "-n", "40").stdout
        time.sleep(0.3)
    journal = box.run("journalctl", "-u", UNITS[0], "--no-pager").stdout
    assert "dnsmasq restarted for the new walled garden" in journal
    fragment = box.run("cat", "/var/lib/plaza/dnsmasq.d/cloud-garden.conf").stdout
    assert "nftset=/shop.example.org/" in fragment

    # A phone takes a lease and is authorized; an upgrade restarts the gateway around it.
    box.run(  # a line in dnsmasq's lease file, as plaza-dnsmasq writes it: the gateway watches it
        "sh", "-c", "echo '0 02:00:00:00:00:01 198.19.0.100 phone *' "
        "> /var/lib/plaza/dnsmasq.leases",
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while "198.19.0.100" not in box.run("plaza-ctl", "clients").stdout:
        assert time.monotonic() < deadline, box.run("journalctl", "--no-pager", "-n", "40").stdout
        time.sleep(0.2)
    box.run("plaza-ctl", "auth", "198.19.0.100", "--minutes", "30")
    before = box.main_pid(UNITS[0])
    dnsmasq = box.main_pid("plaza-dnsmasq.service")
    box.run("dpkg", "-i", "/root/new.deb")
    box.wait_active(UNITS)
    assert box.main_pid(UNITS[0]) != before  # restarted by the postinst
    # The config Plaza generates for dnsmasq is the same: not restarted, so the LAN's DNS and
    # DHCP stay up through the upgrade (the VM end-to-end test lost phone probes to it).
    assert box.main_pid("plaza-dnsmasq.service") == dnsmasq
    journal = box.run("journalctl", "-u", UNITS[0], "--no-pager").stdout
    assert "1 authorized restored" in journal
    assert "198.19.0.100" in box.run("nft", "list", "table", "inet", "plaza").stdout
    clients = box.run("plaza-ctl", "clients", "--json").stdout
    assert '"state": "authorized"' in clients

    # A config left on trial by a power cut is put back by the boot-check unit, in its
    # sandbox (ReadWritePaths=/etc/plaza only): the kept previous one returns, the mark goes.
    config = "/etc/plaza/gateway.toml"
    keep = f"{{ cat {config}; echo '# the previous config'; }} > {config}.previous"
    box.run("sh", "-c", f"{keep} && echo /root/new.toml > {config}.pending")
    box.run("systemctl", "start", "plaza-boot-check.service")
    assert box.run("tail", "-n", "1", config).stdout == "# the previous config\n"
    assert box.run("test", "-e", f"{config}.pending", check=False).returncode == 1
    result = box.run("systemctl", "show", "-p", "Result", "--value", "plaza-boot-check.service")
    assert result.stdout.strip() == "success"

    # Remove: stopped, and Plaza's tables out of the kernel.
    box.run("dpkg", "-r", "plaza")
    for unit in UNITS:
        state = box.run("systemctl", "is-active", unit, check=False).stdout.strip()
        assert state in ("inactive", "failed"), (unit, state)
    assert "plaza" not in box.run("nft", "list", "tables").stdout
