"""The router image (dist/plaza-router.qcow2) booted under QEMU, wired to a fake internet and
a LAN where phone namespaces can join: the lab's router namespace played by a real VM.

    [internet ns]  eth0 --veth-- br-wan --tap wan0-- VM eth0 (WAN, DHCP from the internet)
    198.18.0.2/30                                    VM eth1 --tap lan0-- br-lan --veth-- phones
    lo: 192.0.2.53 (DNS)          [host ns: the bridges, taps and QEMU]

QEMU, its taps and both bridges live in their own network namespace ("host"), so nothing is
ever bridged to the machine's real interfaces and nothing leaves it; the internet namespace
has no default route. The internet runs dnsmasq as the ISP: the router's WAN address by DHCP
(198.18.0.1, the lab's WAN_ROUTER) and DNS. QEMU runs in software emulation (TCG; this
machine's KVM does not run 64-bit guests) with `-snapshot`: a run never changes the image;
or, with `overlay`, on a qcow2 overlay over the image that keeps what the router wrote across
`power_cut()` (QEMU killed) and `power_on()`, as a real disk would.
SSH reaches the router from the internet side, as a technician's laptop on the WAN would.
With `services=True` the internet also runs the lab's cloud, sandbox wallet, web server and DNS
(lab/vm_internet.py) and the ISP's DNS forwards to it: what the end-to-end test flashes against.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lab.vm_internet import INTERNET_WAN, ROUTER_WAN, VMInternet, isp_dnsmasq_conf

ROOT = Path(__file__).resolve().parents[1]
DIST = ROOT / "dist"
IMAGE = DIST / "plaza-router.qcow2"
KERNEL = DIST / "plaza-router.vmlinuz"
INITRD = DIST / "plaza-router.initrd"
KEY = DIST / "plaza-lab-key"
# Same as provisioning/image/build.py KERNEL_ARGS (the disk's extlinux boots with these).
KERNEL_ARGS = "root=LABEL=plaza-root ro console=ttyS0,115200 net.ifnames=0"

WAN_ROUTER = ROUTER_WAN  # the lab's WAN_ROUTER, handed out by the ISP (lab/vm_internet.py)
WAN_INTERNET = INTERNET_WAN
DNS_IP = "192.0.2.53"
LAN_ROUTER = "198.19.0.1/24"  # the image's br-lan address
PROBE_NET = "198.51.100.0/24"  # reached by the technician's laptop through the router's LAN
WAN_MAC = "52:54:00:50:4c:01"
LAN_MAC = "52:54:00:50:4c:02"
SSH_OPTIONS = (
    "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
    "-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR",
)  # fmt: skip


class VMError(RuntimeError):
    """The VM or its wiring could not be started, or it did not answer in time."""


def _sh(*args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, capture_output=True, text=True, check=False, timeout=timeout)
    if check and done.returncode != 0:
        raise VMError(f"{' '.join(args)} exited {done.returncode}: {done.stderr.strip()}")
    return done


@dataclass
class RouterVM:
    """One boot of the image: `up()`, `wait_ssh()`, `ssh(...)`, `down()` (also on error)."""

    name: str = "plazavm"
    image: Path = IMAGE
    key: Path = KEY
    memory_mb: int = 1024
    run_dir: Path = Path("/run/plaza-vm")
    udhcpc_script: Path = ROOT / "lab" / "udhcpc.sh"  # the lab phones' DHCP event script
    # True: QEMU loads dist/'s kernel and initrd (the tests' way: no emulated BIOS and
    # bootloader); False: the disk boots alone through its MBR and extlinux, as a user's would.
    direct_kernel: bool = True
    overlay: Path | None = None  # a qcow2 over `image` that keeps writes (made if missing)
    services: bool = False  # the lab's cloud, wallet, web and DNS on the internet

    def __post_init__(self) -> None:
        self.host_ns = f"{self.name}-host"
        self.internet_ns = f"{self.name}-inet"
        self.dir = self.run_dir / self.name
        self.console = self.dir / "console.log"
        self.pid_file = self.dir / "qemu.pid"
        self.phones: list[str] = []
        self.internet: VMInternet | None = None

    # -- wiring ---------------------------------------------------------------------------

    def _ns(self, ns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return _sh("ip", "netns", "exec", ns, *args, check=check)

    def _wire(self) -> None:
        h, i = self.host_ns, self.internet_ns
        for ns in (h, i):
            _sh("ip", "netns", "add", ns)
            self._ns(ns, "ip", "link", "set", "lo", "up")
        for br in ("br-wan", "br-lan"):
            self._ns(h, "ip", "link", "add", br, "type", "bridge")
            self._ns(h, "ip", "link", "set", br, "up")
        for tap, br in (("wan0", "br-wan"), ("lan0", "br-lan")):
            self._ns(h, "ip", "tuntap", "add", "dev", tap, "mode", "tap")
            self._ns(h, "ip", "link", "set", tap, "master", br)
            self._ns(h, "ip", "link", "set", tap, "up")
        _sh("ip", "link", "add", "wan-i", "netns", h, "type", "veth", "peer", "eth0", "netns", i)
        self._ns(h, "ip", "link", "set", "wan-i", "master", "br-wan")
        self._ns(h, "ip", "link", "set", "wan-i", "up")
        self._ns(i, "ip", "addr", "add", WAN_INTERNET, "dev", "eth0")
        self._ns(i, "ip", "addr", "add", f"{DNS_IP}/32", "dev", "lo")
        self._ns(i, "ip", "link", "set", "eth0", "up")
        conf = self.dir / "internet-dnsmasq.conf"
        conf.write_text(isp_dnsmasq_conf(self.dir, self.services))  # as the Vagrant lab's ISP
        self._ns(
            i, "dnsmasq", f"--conf-file={conf}", f"--pid-file={self.dir / 'internet-dnsmasq.pid'}",
            f"--log-facility={self.dir / 'internet-dnsmasq.log'}",
        )  # fmt: skip
        if self.services:
            self.internet = VMInternet(i, self.dir)
            self.internet.start()

    def add_phone(self, index: int) -> str:
        """A phone namespace wired to the VM's LAN (eth0, no address yet); returns its netns."""
        ns = f"{self.name}-phone{index}"
        _sh("ip", "netns", "add", ns)
        self._ns(ns, "ip", "link", "set", "lo", "up")
        port = f"lan-p{index}"
        mac = f"02:50:4c:00:00:{index:02x}"
        _sh("ip", "link", "add", "eth0", "netns", ns, "address", mac, "type", "veth",
            "peer", port, "netns", self.host_ns)  # fmt: skip
        self._ns(self.host_ns, "ip", "link", "set", port, "master", "br-lan")
        self._ns(self.host_ns, "ip", "link", "set", port, "up")
        self._ns(ns, "ip", "link", "set", "eth0", "up")
        if self.internet is not None:
            self.internet.trust_in(ns)
        self.phones.append(ns)
        return ns

    def laptop_on_lan(self, address: str = "198.19.0.50/24", probe_net: str = PROBE_NET) -> None:
        """The technician's laptop (the internet namespace, on the WAN for SSH) joins the LAN
        too with a second NIC, as a laptop on the venue's Wi-Fi: `probe_net` is routed through
        the router's LAN, so `plaza-provision verify --lan-probe http://<probe_net host>/`
        tests the captive redirect a phone meets (the laptop's own addresses stay local)."""
        _sh("ip", "link", "add", "lan-tech", "netns", self.internet_ns, "type", "veth",
            "peer", "lan-t", "netns", self.host_ns)  # fmt: skip
        self._ns(self.host_ns, "ip", "link", "set", "lan-t", "master", "br-lan")
        self._ns(self.host_ns, "ip", "link", "set", "lan-t", "up")
        self._ns(self.internet_ns, "ip", "addr", "add", address, "dev", "lan-tech")
        self._ns(self.internet_ns, "ip", "link", "set", "lan-tech", "up")
        router = LAN_ROUTER.split("/")[0]
        self._ns(
            self.internet_ns, "ip", "route", "add", probe_net, "via", router, "dev", "lan-tech"
        )

    # -- the VM ---------------------------------------------------------------------------

    def qemu_command(self) -> list[str]:
        return [
            "qemu-system-x86_64", "-accel", "tcg", "-cpu", "max", "-smp", "2",
            "-m", str(self.memory_mb), "-display", "none", "-no-reboot",
            *(() if self.overlay else ("-snapshot",)),
            "-drive", f"file={self.overlay or self.image},if=virtio,format=qcow2",
            *(("-kernel", str(KERNEL), "-initrd", str(INITRD), "-append", KERNEL_ARGS)
              if self.direct_kernel else ()),
            "-nic", f"tap,ifname=wan0,script=no,downscript=no,model=virtio-net-pci,mac={WAN_MAC}",
            "-nic", f"tap,ifname=lan0,script=no,downscript=no,model=virtio-net-pci,mac={LAN_MAC}",
            "-serial", f"file:{self.console}", "-pidfile", str(self.pid_file), "-daemonize",
        ]  # fmt: skip

    def up(self) -> None:
        for path in (self.image, KERNEL, INITRD, self.key):
            if not path.exists():
                raise VMError(f"{path} missing: run `make router-image` first")
        self.down()  # leftovers of a crashed run
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.overlay is not None and not self.overlay.exists():
            _sh("qemu-img", "create", "-q", "-f", "qcow2", "-b", str(self.image.resolve()),
                "-F", "qcow2", str(self.overlay))  # fmt: skip
        try:
            self._wire()
            self._ns(self.host_ns, *self.qemu_command())
        except BaseException:
            self.down()
            raise

    def power_cut(self) -> None:
        """Kill QEMU at once (SIGKILL): the guest's unwritten data is lost, as in a power cut;
        what it had written stays in the overlay. The wiring and the internet stay up."""
        pid = self.pid()
        if pid is None:
            raise VMError("no QEMU to cut")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        for _ in range(100):
            if not Path(f"/proc/{pid}").exists():
                break
            time.sleep(0.1)
        self.pid_file.unlink(missing_ok=True)

    def power_on(self) -> None:
        """Boot QEMU again on the same taps (after `power_cut`); `wait_ssh()` next."""
        if self.running():
            raise VMError("QEMU is still running")
        self._ns(self.host_ns, *self.qemu_command())

    def ssh(
        self, command: str, check: bool = True, timeout: float = 60, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """`command` run as root on the router over SSH with the baked key (from the WAN)."""
        argv = ["ssh", *SSH_OPTIONS, "-i", str(self.key), f"root@{WAN_ROUTER}", command]
        done = subprocess.run(
            ["ip", "netns", "exec", self.internet_ns, *argv], input=input,
            capture_output=True, text=True, check=False, timeout=timeout,
        )  # fmt: skip
        if check and done.returncode != 0:
            raise VMError(f"ssh {command!r} exited {done.returncode}: {done.stderr.strip()}")
        return done

    def provision(
        self,
        *argv: str,
        timeout: float = 900,
        on_line: Callable[[dict], None] | None = None,
        key: Path | None = None,
    ) -> tuple[int, list[dict], str]:
        """`plaza-provision ARGV --json` from the technician's laptop (the internet namespace)
        with the baked key and this boot's known_hosts: (exit code, JSON lines, all output).
        `on_line` sees each JSON line as it comes (to act in the middle of a flash); `key`:
        another SSH key than the baked one."""
        tool = Path(sys.executable).parent / "plaza-provision"
        known = str(self.dir / "known_hosts")
        extra = ["-i", str(key or self.key), "--known-hosts", known, "--json"]
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.internet_ns, str(tool), *argv, *extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        lines, text = [], []
        try:
            assert proc.stdout is not None
            for raw in proc.stdout:
                text.append(raw)
                if raw.startswith("{"):
                    with contextlib.suppress(ValueError):
                        lines.append(json.loads(raw))
                        if on_line is not None:
                            on_line(lines[-1])
            code = proc.wait()
        finally:
            timer.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        return code, lines, "".join(text)

    def put(self, path: str, data: bytes, mode: str = "0644", group: str = "root") -> None:
        """Write `path` on the router (root-owned, `group`, `mode`) over SSH."""
        quoted = shlex.quote(path)
        self.ssh(
            f"install -m {mode} -g {group} /dev/stdin {quoted}", input=data.decode(), timeout=60
        )

    def port_open(self, port: int = 22) -> bool:
        probe = (
            "import socket,sys\ntry:\n socket.create_connection"
            f"(('{WAN_ROUTER}',{port}),2).close()\nexcept OSError:\n sys.exit(1)"
        )
        return self._ns(self.internet_ns, "python3", "-c", probe, check=False).returncode == 0

    def wait_ssh(self, timeout: float = 240) -> float:
        """Seconds from now until a command runs over SSH; VMError with the console's tail."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if not self.running():
                raise VMError(f"QEMU exited during boot:\n{self.console_tail()}")
            if self.port_open() and self.ssh("true", check=False).returncode == 0:
                return time.monotonic() - start
            time.sleep(2)
        raise VMError(f"no SSH after {timeout:.0f} s:\n{self.console_tail()}")

    def console_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.console.read_text(errors="replace").splitlines()[-lines:])
        return "(no console output)"

    def pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError):
            return int(self.pid_file.read_text().strip())
        return None

    def running(self) -> bool:
        pid = self.pid()
        return pid is not None and Path(f"/proc/{pid}").exists()

    def down(self) -> None:
        """Stop QEMU, the internet's services and dnsmasq (by their pid files), remove every
        namespace and its /etc/netns files. The overlay, if any, is kept."""
        VMInternet(self.internet_ns, self.dir).stop()
        self.internet = None
        for pid_file in (self.pid_file, self.dir / "internet-dnsmasq.pid"):
            with contextlib.suppress(OSError, ValueError):
                pid = int(pid_file.read_text().strip())
                os.kill(pid, signal.SIGTERM)
                for _ in range(50):
                    if not Path(f"/proc/{pid}").exists():
                        break
                    time.sleep(0.1)
        names = _sh("ip", "netns", "list", check=False).stdout.split()
        for ns in names:
            if ns.startswith(f"{self.name}-"):
                _sh("ip", "netns", "del", ns, check=False)
        for etc in Path("/etc/netns").glob(f"{self.name}-*"):
            shutil.rmtree(etc, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(self.dir)
        self.phones.clear()
