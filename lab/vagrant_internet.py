"""The Vagrant lab's internet, in one of two places: the `internet` VM (the default) or a network
namespace of the host wired into plaza-wan (PLAZA_VM_INTERNET=namespace, the former lab).

Both run the same services, started by the same code (lab/vm_internet.py: web, DNS, sandbox
wallet, Plaza cloud and its push worker, the ISP), as the router image's end-to-end tests
(tests/vm) do in their namespace. What differs is only where a command runs (`laptop`: the
technician's laptop on the WAN, from which `plaza-provision` reaches the router), how the
internet goes away for the outage scenario (`cut`), and where the cloud's records are read.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from lab import libvirt
from lab.topology import DNS_IP
from lab.vm_internet import INTERNET_WAN, VMInternet

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
KEY = ROOT / "dist" / "plaza-lab-key"
RUN_DIR = Path("/run/plaza-lab/vmlab")  # the host's files for the lab (and the namespace's)
INET_NS = "vmlab-inet"
WAN_VETH = "vmlab-wan"  # the namespace's link in the plaza-wan bridge (plaza-virt's end)
VM_STATE = "/var/lib/plaza-lab"  # lab/vagrant_inetbox.py STATE
VM_BIN = "/opt/plaza-lab/venv/bin"
VM_KEY = "/root/plaza-lab-key"  # the technician's key on the internet VM
SSH_OPTIONS = (
    "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
    "-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR",
)  # fmt: skip


class VMLabError(RuntimeError):
    """A step of the VM lab failed; the message says which and what to do."""


def run(cmd: list[str], timeout: float = 120, stdin: str | None = None) -> str:
    done = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise VMLabError(f"{' '.join(cmd[:6])} ... exited {done.returncode}: "
                            f"{(done.stderr or done.stdout).strip()[-800:]}")  # fmt: skip
    return done.stdout


def ssh_argv(ip: str, command: str) -> list[str]:
    """`command` as root on a VM over the management network (from the libvirt namespace)."""
    return libvirt.in_netns("ssh", *SSH_OPTIONS, "-i", str(KEY), f"root@{ip}", command)


def socks_argv(ip: str, port: int) -> list[str]:
    """An SSH tunnel into a VM as a SOCKS5 proxy on 127.0.0.1:`port` of the libvirt
    namespace: every connection through it is made by the VM, names resolved by the VM."""
    return libvirt.in_netns(
        "ssh", *SSH_OPTIONS, "-i", str(KEY), "-N", "-D", f"127.0.0.1:{port}",
        "-o", "ExitOnForwardFailure=yes", "-o", "ServerAliveInterval=10", f"root@{ip}",
    )  # fmt: skip


def parse_bridge(net_info: str) -> str:
    for line in net_info.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Bridge":
            return value.strip()
    raise VMLabError("no bridge in `virsh net-info`: is the lab's network up? plaza-lab vm up")


class Internet(Protocol):
    key: str  # the technician's SSH key, on the laptop
    state: str  # the internet's directory (VMInternet's), on the laptop

    def up(self) -> None: ...
    def down(self) -> None: ...
    def cut(self, up: bool) -> float: ...
    def laptop(self, cmd: list[str]) -> list[str]: ...
    def put(self, path: str, data: str) -> None: ...
    def ca_pem(self) -> str: ...
    def claim(self) -> str: ...
    def cloud_usage(self, mac: str) -> list[dict]: ...


class InternetVM:
    """The `internet` VM (box plaza/internet, lab/vagrant_inetbox.py): its unit runs
    `python -m lab.vm_internet serve`; the technician's laptop is the VM itself (it has the
    project's plaza-provision and, once up, the lab key)."""

    key = VM_KEY
    state = VM_STATE

    def __init__(self, mgmt_ip: Callable[[str], str]) -> None:
        self._mgmt_ip = mgmt_ip  # machine -> its management address (lab/vagrant_lab.py)
        self._ip: str | None = None

    def _ssh(self, command: str, timeout: float = 120, stdin: str | None = None) -> str:
        if self._ip is None:
            self._ip = self._mgmt_ip("internet")
        return run(ssh_argv(self._ip, command), timeout=timeout, stdin=stdin)

    def up(self) -> None:
        self.boot()
        self.put(VM_KEY, KEY.read_text(), mode="0600")

    def boot(self) -> float:
        """`vagrant up internet` (creates or starts it), then until its services listen."""
        t0 = time.monotonic()
        libvirt.vagrant("up", "--no-parallel", "internet")
        self._ip = None  # a new lease on the management network, maybe
        self.wait_ready()
        return time.monotonic() - t0

    def wait_ready(self, seconds: float = 600) -> None:
        """Until the unit says its services are up (it logs once all of them listen)."""
        t0 = time.monotonic()
        check = (f"test -s {VM_STATE}/pki/ca.pem && journalctl -b -u plaza-lab-internet "
                 "--no-pager -o cat | grep -q '^internet up'")  # fmt: skip
        while True:
            try:
                self._ssh(check, timeout=30)
                return
            except (VMLabError, subprocess.TimeoutExpired) as exc:
                if time.monotonic() - t0 > seconds:
                    log = self._log()
                    raise VMLabError(f"the internet VM's services not up in {seconds:.0f} s: "
                                        f"{log}") from exc  # fmt: skip
                self._ip = None
                time.sleep(3)

    def _log(self) -> str:
        try:
            return self._ssh("journalctl -b -u plaza-lab-internet --no-pager -n 20; "
                             f"tail -n 5 {VM_STATE}/internet-*.log")[-2000:]  # fmt: skip
        except (VMLabError, subprocess.TimeoutExpired) as exc:
            return str(exc)

    def down(self) -> None:
        """Nothing of its own on the host: `vagrant destroy` (lab/vagrant_lab.py) ends it."""
        shutil.rmtree(RUN_DIR, ignore_errors=True)

    def cut(self, up: bool) -> float:
        """`vagrant halt internet` (a clean shutdown: the cloud's database is written) or
        `vagrant up internet` and its services; seconds it took."""
        if up:
            return self.boot()
        t0 = time.monotonic()
        libvirt.vagrant("halt", "internet")
        return time.monotonic() - t0

    def laptop(self, cmd: list[str]) -> list[str]:
        if self._ip is None:
            self._ip = self._mgmt_ip("internet")
        return ssh_argv(self._ip, f"PATH={VM_BIN}:$PATH {shlex.join(cmd)}")

    def put(self, path: str, data: str, mode: str = "0644") -> None:
        self._ssh(f"install -D -m {mode} /dev/stdin {shlex.quote(path)}", stdin=data)

    def ca_pem(self) -> str:
        return self._ssh(f"cat {VM_STATE}/pki/ca.pem")

    def claim(self) -> str:
        return self._ssh(f"{VM_BIN}/python3 -m lab.vm_internet claim --dir {VM_STATE}").strip()

    def cloud_usage(self, mac: str) -> list[dict]:
        out = self._ssh(f"{VM_BIN}/python3 -m lab.vm_internet cloud-usage {shlex.quote(mac)} "
                        f"--dir {VM_STATE}")  # fmt: skip
        return json.loads(out)


class NamespaceInternet:
    """The namespace vmlab-inet on the plaza-wan bridge (a veth), with lab/vm_internet.py's ISP
    and services in it; the technician's laptop is that namespace."""

    key = str(KEY)
    state = str(RUN_DIR)

    def __init__(self) -> None:
        self.internet = VMInternet(INET_NS, RUN_DIR, push=True)

    def up(self) -> None:
        self.down()
        RUN_DIR.mkdir(parents=True, exist_ok=True)
        bridge = parse_bridge(run(["virsh", "-c", "qemu:///system", "net-info", "plaza-wan"]))
        run(["ip", "netns", "add", INET_NS])
        run(["ip", "link", "add", WAN_VETH, "netns", libvirt.NETNS, "type", "veth",
             "peer", "eth0", "netns", INET_NS])  # fmt: skip
        run(libvirt.in_netns("ip", "link", "set", WAN_VETH, "master", bridge, "up"))
        for args in (
            ("link", "set", "lo", "up"),
            ("addr", "add", f"{DNS_IP}/32", "dev", "lo"),
            ("addr", "add", INTERNET_WAN, "dev", "eth0"),
            ("link", "set", "eth0", "up"),
        ):
            run(["ip", "netns", "exec", INET_NS, "ip", *args])
        self.internet.start_isp()
        self.internet.start()

    def down(self) -> None:
        """The services (by their pid file), the namespace (its veth with it), its files."""
        self.internet.stop()
        subprocess.run(["ip", "netns", "del", INET_NS], capture_output=True, timeout=30)
        shutil.rmtree(Path("/etc/netns") / INET_NS, ignore_errors=True)
        shutil.rmtree(RUN_DIR, ignore_errors=True)

    def cut(self, up: bool) -> float:
        """The internet's link into plaza-wan up or down: for the router everything beyond its
        WAN answers or vanishes at once; the router's own WAN port keeps its carrier."""
        t0 = time.monotonic()
        run(libvirt.in_netns("ip", "link", "set", WAN_VETH, "up" if up else "down"))
        return time.monotonic() - t0

    def laptop(self, cmd: list[str]) -> list[str]:
        tool = BIN / cmd[0]  # plaza-provision: the host's, beside this interpreter
        return ["ip", "netns", "exec", INET_NS, str(tool) if tool.exists() else cmd[0], *cmd[1:]]

    def put(self, path: str, data: str, mode: str = "0644") -> None:
        Path(path).write_text(data)
        Path(path).chmod(int(mode, 8))

    def ca_pem(self) -> str:
        return self.internet.ca.cert_path.read_text()

    def claim(self) -> str:
        return self.internet.claim()

    def cloud_usage(self, mac: str) -> list[dict]:
        from lab.vm_internet import cloud_usage

        return cloud_usage(RUN_DIR, mac)


def internet(kind: str, mgmt_ip: Callable[[str], str]) -> Internet:
    """PLAZA_VM_INTERNET: "vm" (the default) or "namespace"."""
    if kind == "vm":
        return InternetVM(mgmt_ip)
    if kind == "namespace":
        return NamespaceInternet()
    raise VMLabError(f"PLAZA_VM_INTERNET={kind!r}: say vm or namespace")
