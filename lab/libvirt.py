"""libvirt for the Vagrant lab, in its own network namespace, and the checks made before an `up`.

These machines have no systemd as PID 1, so nothing starts libvirt's daemons: `start()` runs
virtlogd and libvirtd inside the network namespace NETNS, so every bridge libvirt makes (the
lab's management, WAN and LAN networks) lives there and never touches the host's interfaces.
Vagrant must run in the same namespace (it SSHes to the guests over the management network):
`python -m lab.libvirt vagrant up --no-parallel` does both. The control socket is a file
(/run/libvirt/libvirt-sock), so `virsh` works from anywhere.

qemu runs as libvirt's own unprivileged user (Debian's default qemu.conf): the VMs boot from
their disks (volumes in libvirt's pool, chowned by libvirt), never from a kernel file of ours.

    python -m lab.libvirt start|stop|status|preflight|probe-kvm
    python -m lab.libvirt vagrant ARGS...     # vagrant inside the namespace, daemons started
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from xml.etree import ElementTree

ROOT = Path(__file__).resolve().parents[1]
NETNS = "plaza-virt"
SOCKET = Path("/run/libvirt/libvirt-sock")
PID_FILES = (Path("/run/libvirtd.pid"), Path("/run/virtlogd.pid"))
KERNEL = ROOT / "dist" / "plaza-router.vmlinuz"
VM_MEMORY_MB = 640  # each VM (the Vagrantfile's PLAZA_VM_MEMORY default)
HOST_MARGIN_MB = 1024  # what the host keeps for libvirt, vagrant and the lab's internet
MGMT_NETWORK = "plaza-mgmt"  # the Vagrantfile's names
BARE_NETWORKS = ("plaza-wan", "plaza-lan")
GEMS = Path("/usr/share/rubygems-integration/all/gems")


class LibvirtError(RuntimeError):
    """The lab's libvirt cannot be used; the message is one line that says what to do."""


def _run(*cmd: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if check and done.returncode != 0:
        raise LibvirtError(f"{' '.join(cmd)} exited {done.returncode}: {done.stderr.strip()}")
    return done


def in_netns(*cmd: str) -> list[str]:
    return ["ip", "netns", "exec", NETNS, *cmd]


# -- preflight: each check returns None or a one-line error that says what to do -----------


def check_tools(which: Callable[[str], str | None] = shutil.which, gems: Path = GEMS) -> str | None:
    for tool, package in (
        ("libvirtd", "libvirt-daemon-system"),
        ("virsh", "libvirt-clients"),
        ("vagrant", "vagrant"),
        ("qemu-system-x86_64", "qemu-system-x86"),
    ):
        if which(tool) is None:
            return f"{tool} missing: apt-get install vagrant vagrant-libvirt {package}"
    if not any(gems.glob("vagrant-libvirt-*")):
        return "the vagrant-libvirt plugin is missing: apt-get install vagrant-libvirt"
    return None


def check_memory(vms: int, meminfo: str, vm_mb: int = VM_MEMORY_MB) -> str | None:
    """Enough MemAvailable for `vms` VMs of vm_mb each plus the host's margin."""
    fields = dict(line.split(":", 1) for line in meminfo.splitlines() if ":" in line)
    try:
        available_mb = int(fields["MemAvailable"].split()[0]) // 1024
    except (KeyError, ValueError, IndexError):
        return "cannot read MemAvailable from /proc/meminfo"
    need = vms * vm_mb + HOST_MARGIN_MB
    if available_mb < need:
        return (
            f"too little memory: {vms} VM(s) of {vm_mb} MB need {need} MB, {available_mb} MB "
            "available; set PLAZA_PHONES lower or free memory"
        )
    return None


def check_box(stale: bool) -> str | None:
    if stale:
        return ("the plaza/router or plaza/internet box is missing or older than its inputs "
                "(the router image, the lab's code): make vagrant-box")  # fmt: skip
    return None


def kvm_usable(kernel: Path = KERNEL, seconds: float = 8) -> bool:
    """True when KVM boots a 64-bit kernel: qemu -accel kvm reaches "Linux version" on the
    serial console. Here /dev/kvm exists but qemu aborts setting an MSR (nested KVM that does
    not run 64-bit guests), so the existence of /dev/kvm says nothing."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK) or not kernel.exists():
        return False
    cmd = [
        "qemu-system-x86_64", "-accel", "kvm", "-cpu", "host", "-m", "128", "-kernel", str(kernel),
        "-append", "console=ttyS0 panic=-1", "-display", "none", "-serial", "stdio", "-no-reboot",
    ]  # fmt: skip
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds)
        out = done.stdout
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode(errors="replace") if exc.stdout else ""
    return "Linux version" in out


def driver() -> str:
    """libvirt's domain type for the VMs: "kvm" when it works, else "qemu" (TCG)."""
    return "kvm" if kvm_usable() else "qemu"


def preflight(vms: int, stale_box: bool | None = None) -> list[str]:
    """Every failed check's one-line message (empty: good to go)."""
    if stale_box is None:
        from lab import vagrant_box

        try:
            stale_box = vagrant_box.is_stale()
        except vagrant_box.BoxError as exc:
            return [str(exc)]
    meminfo = Path("/proc/meminfo").read_text()
    checks = (check_tools(), check_memory(vms, meminfo), check_box(stale_box))
    return [c for c in checks if c]


def network_problems(name: str, xml: str) -> list[str]:
    """What is wrong with one of the lab's libvirt networks (`virsh net-dumpxml`): none may
    forward (nothing leaves the machine); the WAN and LAN are bare bridges (no address, no
    libvirt DHCP: the ISP's and the router's dnsmasq serve them); the management network hands
    addresses (Vagrant finds its VMs by their leases)."""
    root = ElementTree.fromstring(xml)
    problems = []
    if root.find("forward") is not None:
        mode = root.find("forward").get("mode", "nat")
        problems.append(f"network {name} forwards ({mode}): it must be isolated")
    has_dhcp = root.find("ip/dhcp") is not None
    if name == MGMT_NETWORK and not has_dhcp:
        problems.append(f"network {name} has no DHCP: Vagrant cannot find its VMs")
    if name in BARE_NETWORKS and (root.find("ip") is not None or has_dhcp):
        problems.append(f"network {name} has an address or DHCP: it must be a bare bridge")
    return problems


def check_networks() -> list[str]:
    """network_problems() of each of the lab's networks that exists."""
    problems = []
    for name in (MGMT_NETWORK, *BARE_NETWORKS):
        done = _run("virsh", "-c", "qemu:///system", "net-dumpxml", name, check=False)
        if done.returncode == 0:
            problems += network_problems(name, done.stdout)
    return problems


# -- the daemons ----------------------------------------------------------------------------


def _pid(path: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        pid = int(path.read_text().strip())
        if Path(f"/proc/{pid}").exists():
            return pid
    return None


def running() -> bool:
    return all(_pid(p) for p in PID_FILES) and SOCKET.exists()


def start(timeout: float = 30) -> None:
    """The namespace and both daemons (idempotent)."""
    if running():
        return
    if NETNS not in _run("ip", "netns", "list").stdout.split():
        _run("ip", "netns", "add", NETNS)
    _run(*in_netns("ip", "link", "set", "lo", "up"))
    if not _pid(PID_FILES[1]):
        _run(*in_netns("virtlogd", "-d"))
    if not _pid(PID_FILES[0]):
        _run(*in_netns("libvirtd", "-d"))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        virsh = ("virsh", "-c", "qemu:///system", "version")
        if SOCKET.exists() and _run(*virsh, check=False).returncode == 0:
            return
        time.sleep(0.5)
    raise LibvirtError(f"libvirtd did not answer within {timeout:.0f} s (see /var/log/libvirt)")


def stop() -> None:
    """Both daemons and the namespace (idempotent). The VMs must be destroyed first."""
    for path in PID_FILES:
        pid = _pid(path)
        if pid:
            os.kill(pid, signal.SIGTERM)
            for _ in range(100):
                if not Path(f"/proc/{pid}").exists():
                    break
                time.sleep(0.1)
    if NETNS in _run("ip", "netns", "list", check=False).stdout.split():
        _run("ip", "netns", "del", NETNS, check=False)


def leftovers() -> dict[str, list[str]]:
    """What libvirt still holds of the lab: domains, networks and volumes (empty lists when
    clean). Debian's inactive "default" network is libvirt's own and is not counted."""

    def names(*args: str) -> list[str]:
        out = _run("virsh", "-c", "qemu:///system", *args, "--name", check=False).stdout
        return [n.strip() for n in out.splitlines() if n.strip()]

    pools = names("pool-list", "--all")
    volumes = []
    for pool in pools:
        out = _run("virsh", "-c", "qemu:///system", "vol-list", pool, check=False).stdout
        volumes += [line.split()[0] for line in out.splitlines()[2:] if line.strip()]
    return {
        "domains": names("list", "--all"),
        "networks": [n for n in names("net-list", "--all") if n != "default"],
        "volumes": volumes,
    }


def vagrant_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("PLAZA_LIBVIRT_DRIVER", driver())
    env["VAGRANT_DEFAULT_PROVIDER"] = "libvirt"
    return env


def vagrant(*args: str, check: bool = True, timeout: float = 3600) -> int:
    """`vagrant ARGS` in the namespace, from the repository (its Vagrantfile), daemons up."""
    start()
    done = subprocess.run(
        in_netns("vagrant", *args), cwd=ROOT, env=vagrant_env(), timeout=timeout, check=False
    )
    if check and done.returncode != 0:
        raise LibvirtError(f"vagrant {' '.join(args)} exited {done.returncode}")
    return done.returncode


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    command = args.pop(0) if args else "status"
    try:
        if command == "start":
            start()
        elif command == "stop":
            stop()
        elif command == "status":
            print(f"libvirt in netns {NETNS}: {'running' if running() else 'stopped'}")
            if running():
                for kind, items in leftovers().items():
                    print(f"  {kind}: {', '.join(items) or '-'}")
        elif command == "probe-kvm":
            print(driver())
        elif command == "preflight":
            vms = 2 + int(os.environ.get("PLAZA_PHONES", "2"))  # internet, router, phones
            problems = preflight(vms)
            for p in problems:
                print(f"vm-lab: {p}", file=sys.stderr)
            return 1 if problems else 0
        elif command == "vagrant":
            return vagrant(*args, check=False)
        else:
            print(f"unknown command {command!r}: {__doc__.splitlines()[-2].strip()}")
            return 2
    except LibvirtError as exc:
        print(f"vm-lab: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
