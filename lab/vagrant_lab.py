"""`plaza-lab vm up|down` and what the scenarios (lab/vagrant_scenarios.py) run on: the testers'
lab as real VMs (Vagrantfile, docs/vm-lab.md).

    phone VMs --plaza-lan-- router VM --plaza-wan--veth-- [vmlab-inet netns]: fake internet,
    (busybox udhcpc, curl)  (flashed by plaza-provision)  sandbox wallet, Plaza cloud, the ISP

libvirt and Vagrant run in the namespace plaza-virt (lab/libvirt.py). The internet is the one the
router image's end-to-end tests flash against (lab/vm_internet.py: the same web, DNS, wallet,
cloud and ISP, started by the same code, plus the cloud's push worker), in the namespace
vmlab-inet wired into the plaza-wan bridge by a veth. The router is brought into service the
technician's way: `plaza-provision flash --portal-cert/--portal-key` and `verify` over SSH from
the internet side; the only file put on it by hand is the lab CA (a venue's trust anchor).
"""

from __future__ import annotations

import contextlib
import json
import shlex
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from lab import cloud as labcloud
from lab import libvirt
from lab.phone import Phone
from lab.topology import DNS_IP, PORTAL_HOST
from lab.vm_internet import INTERNET_WAN, ROUTER_CA, ROUTER_WAN, VMInternet

ROOT = Path(__file__).resolve().parents[1]
INET_NS = "vmlab-inet"
WAN_VETH = "vmlab-wan"  # the internet's link in the plaza-wan bridge (plaza-virt's end)
RUN_DIR = Path("/run/plaza-lab/vmlab")
KEY = ROOT / "dist" / "plaza-lab-key"
BIN = Path(sys.executable).parent
PORTAL_URL = f"https://{PORTAL_HOST}/"
API_URL = PORTAL_URL + "api/captive"
LEASE = "/var/lib/plaza-phone/lease"  # a phone VM's (lab/vagrant/phone-setup.sh)
SSH_OPTIONS = (
    "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
    "-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR",
)  # fmt: skip


class VMLabError(RuntimeError):
    """A step of the VM lab failed; the message says which and what to do."""


def parse_domifaddr(text: str) -> str | None:
    """The first IPv4 address in `virsh domifaddr` output (the management NIC's lease)."""
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[2] == "ipv4":
            return parts[3].split("/")[0]
    return None


def parse_bridge(net_info: str) -> str:
    for line in net_info.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Bridge":
            return value.strip()
    raise VMLabError("no bridge in `virsh net-info`: is the lab's network up? plaza-lab vm up")


def _run(cmd: list[str], timeout: float = 120, stdin: str | None = None) -> str:
    done = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise VMLabError(f"{' '.join(cmd[:6])} ... exited {done.returncode}: "
                         f"{(done.stderr or done.stdout).strip()[-800:]}")  # fmt: skip
    return done.stdout


def virsh(*args: str) -> str:
    return _run(["virsh", "-c", "qemu:///system", *args])


def domain_id(machine: str) -> str:
    path = ROOT / ".vagrant" / "machines" / machine / "libvirt" / "id"
    if not path.exists():
        raise VMLabError(f"VM {machine} is not created: plaza-lab vm up")
    return path.read_text().strip()


def mgmt_ip(machine: str) -> str:
    ip = parse_domifaddr(virsh("domifaddr", domain_id(machine)))
    if ip is None:
        raise VMLabError(f"VM {machine} has no management address yet")
    return ip


def ssh(ip: str, command: str, timeout: float = 60, stdin: str | None = None) -> str:
    """`command` as root on a VM over the management network (from the libvirt namespace)."""
    argv = libvirt.in_netns("ssh", *SSH_OPTIONS, "-i", str(KEY), f"root@{ip}", command)
    return _run(argv, timeout=timeout, stdin=stdin)


class VMPhone(Phone):
    """A phone VM: lab/phone.py's curl client, run on the VM over SSH (its cookie jar there)."""

    def __init__(self, machine: str, ip: str) -> None:
        self.netns = machine
        self.ip = ip
        self._jar = Path("/root/plaza-phone.cookies")

    def close(self) -> None:
        subprocess.run(self.ssh_argv(f"rm -f {self._jar}"), capture_output=True, timeout=30)

    def ssh_argv(self, command: str) -> list[str]:
        return libvirt.in_netns("ssh", *SSH_OPTIONS, "-i", str(KEY), f"root@{self.ip}", command)

    def prefix(self) -> list[str]:
        return []

    def run(self, cmd: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
        argv = self.ssh_argv(shlex.join(cmd))
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout + 10)


class VMLab:
    """The VMs (through Vagrant), the internet, and what the scenarios do to them."""

    def __init__(self, phones: int = 2, out: Callable[[str], None] = print) -> None:
        self.phones = phones
        self.out = out
        # The same object in every process (`vm up`, then `vm demo`): its state is in RUN_DIR.
        self.internet = VMInternet(INET_NS, RUN_DIR, push=True)
        self._router_ip: str | None = None  # its management address, looked up once

    # -- up ---------------------------------------------------------------------------------

    def up(self) -> dict[str, float]:
        """libvirt, the VMs, the internet, the router flashed and verified, phones trusting
        the lab CA; returns the seconds each stage took."""
        problems = libvirt.preflight(1 + self.phones)
        if problems:
            raise VMLabError("; ".join(problems))
        times: dict[str, float] = {}
        t0 = time.monotonic()
        libvirt.start()
        machines = ["router", *(f"phone{i}" for i in range(1, self.phones + 1))]
        for machine in machines:  # one at a time: timed, and no parallel network creation
            t = time.monotonic()
            libvirt.vagrant("up", "--no-parallel", machine)
            times[f"vagrant up {machine}"] = time.monotonic() - t
        problems = libvirt.check_networks()
        if problems:
            raise VMLabError("; ".join(problems))
        t = time.monotonic()
        self.internet_up()
        times["internet"] = time.monotonic() - t
        t = time.monotonic()
        self.provision_router()
        times["flash + verify"] = time.monotonic() - t
        for i in range(1, self.phones + 1):
            self.trust_lab_ca(f"phone{i}")
        times["total"] = time.monotonic() - t0
        return times

    def trust_lab_ca(self, machine: str) -> None:
        """The phone's curl trusts the lab CA only (root's ~/.curlrc), as a phone namespace's
        own trust store holds it only (lab/topology.py); update-ca-certificates would take a
        minute under emulation."""
        pem = "/etc/ssl/certs/plaza-lab.pem"
        command = f"cat > {pem} && echo 'cacert = {pem}' > /root/.curlrc"
        ssh(mgmt_ip(machine), command, stdin=self.internet.ca.cert_path.read_text())

    def internet_up(self) -> None:
        """The namespace vmlab-inet on the plaza-wan bridge, then lab/vm_internet.py's ISP and
        services in it (what lab/vm.py's internet namespace runs for the end-to-end tests)."""
        self.internet_down()
        RUN_DIR.mkdir(parents=True, exist_ok=True)
        bridge = parse_bridge(virsh("net-info", "plaza-wan"))
        _run(["ip", "netns", "add", INET_NS])
        _run(["ip", "link", "add", WAN_VETH, "netns", libvirt.NETNS, "type", "veth",
              "peer", "eth0", "netns", INET_NS])  # fmt: skip
        _run(libvirt.in_netns("ip", "link", "set", WAN_VETH, "master", bridge, "up"))
        for args in (
            ("link", "set", "lo", "up"),
            ("addr", "add", f"{DNS_IP}/32", "dev", "lo"),
            ("addr", "add", INTERNET_WAN, "dev", "eth0"),
            ("link", "set", "eth0", "up"),
        ):
            _run(["ip", "netns", "exec", INET_NS, "ip", *args])
        self.internet.start_isp()
        self.internet.start()

    def internet_down(self) -> None:
        """The services (by their pid file), the namespace (its veth with it), its files."""
        self.internet.stop()
        subprocess.run(["ip", "netns", "del", INET_NS], capture_output=True, timeout=30)
        shutil.rmtree(Path("/etc/netns") / INET_NS, ignore_errors=True)
        shutil.rmtree(RUN_DIR, ignore_errors=True)

    def wan_link(self, up: bool) -> None:
        """The internet's link into plaza-wan up or down: for the router the whole internet
        (cloud, wallet, web, DNS) answers or vanishes at once, as `vagrant halt internet`
        would do to an internet VM; the router's own WAN port keeps its carrier."""
        _run(libvirt.in_netns("ip", "link", "set", WAN_VETH, "up" if up else "down"))

    def router_ssh(self, command: str, timeout: float = 60, stdin: str | None = None) -> str:
        """As the technician: from the internet, to the router's WAN address."""
        argv = ["ip", "netns", "exec", INET_NS, "ssh", *SSH_OPTIONS,
                "-i", str(KEY), f"root@{ROUTER_WAN}", command]  # fmt: skip
        return _run(argv, timeout=timeout, stdin=stdin)

    def wait_router(self, seconds: float = 240) -> float:
        """Seconds until the router answers SSH on its WAN address (its DHCP from the ISP)."""
        t0 = time.monotonic()
        while True:
            try:
                self.router_ssh("true", timeout=20)
                return time.monotonic() - t0
            except (VMLabError, subprocess.TimeoutExpired) as exc:
                if time.monotonic() - t0 > seconds:
                    raise VMLabError(f"the router answered no SSH in {seconds:.0f} s") from exc
                time.sleep(3)

    def provision(self, *argv: str, timeout: float = 600, stdin: str | None = None) -> str:
        """`plaza-provision ARGV` from the technician's laptop (the internet namespace)."""
        common = ["-i", str(KEY), "--known-hosts", str(RUN_DIR / "provision_known_hosts")]
        cmd = ["ip", "netns", "exec", INET_NS, str(BIN / "plaza-provision"), *argv, *common]
        return _run(cmd, timeout=timeout, stdin=stdin)

    def provision_router(self) -> None:
        """The lab CA as the venue's trust anchor, then `flash` (config, the portal's chain and
        key, the claim) and `verify`, re-run while the daemon's first heartbeat is due."""
        self.wait_router()
        for f in self.internet.router_files():
            self.router_ssh(f"install -m {f.mode} -g {f.group} /dev/stdin {shlex.quote(f.path)}",
                            stdin=f.data.decode())  # fmt: skip
        config = RUN_DIR / "venue.toml"
        config.write_text(self.internet.venue_config(quick_usage=True))
        chain, key = self.internet.portal_pair()
        claim = self.internet.claim()
        self.out(f"plaza-provision flash {ROUTER_WAN} (from the internet, as a technician)")
        done = self.provision(
            "flash", ROUTER_WAN, "--claim", "-", "--venue-config", str(config),
            "--portal-cert", str(chain), "--portal-key", str(key), "--cloud", labcloud.CLOUD_URL,
            "--rollback-timeout", "240", "--json", stdin=claim + "\n",
        )  # fmt: skip
        self.out(done.strip()[-600:])
        self.out(f"plaza-provision verify {ROUTER_WAN}")
        deadline = time.monotonic() + 300
        while True:
            try:
                self.out(self.provision(
                    "verify", ROUTER_WAN, "--cloud", labcloud.CLOUD_URL, "--claim", "-",
                    "--ca-bundle", str(self.internet.ca.cert_path), "--portal-ca", ROUTER_CA,
                    timeout=300, stdin=claim + "\n",
                ).strip())  # fmt: skip
                return
            except VMLabError as exc:
                if time.monotonic() > deadline:
                    raise
                self.out(f"verify not all ok yet, again in 5 s: {str(exc)[-300:]}")
                time.sleep(5)

    # -- what the scenarios read ---------------------------------------------------------------

    def router(self, command: str, timeout: float = 60, stdin: str | None = None) -> str:
        """`command` on the router over the management network (Vagrant's own way in), which
        an outage of the internet does not cut."""
        if self._router_ip is None:
            self._router_ip = mgmt_ip("router")
        return ssh(self._router_ip, command, timeout=timeout, stdin=stdin)

    def clients(self) -> dict[str, dict]:
        """The gateway's stations by MAC (`plaza-ctl clients --json` on the router)."""
        return {c["mac"]: c for c in json.loads(self.router("plaza-ctl clients --json"))}

    def deauth(self, mac: str) -> None:
        """End `mac`'s session if it has one (a scenario starts from a stranger)."""
        if self.gateway_state(mac) == "authorized":
            self.router(f"plaza-ctl deauth {shlex.quote(mac)}")

    def gateway_state(self, mac: str) -> str | None:
        client = self.clients().get(mac)
        return client["state"] if client else None

    def router_usage(self, mac: str) -> list[dict]:
        """The router's usage outbox for `mac` (sent_at None: not yet acknowledged)."""
        script = (
            "import json, sqlite3, sys\n"
            "db = sqlite3.connect('file:/var/lib/plaza/plaza.db?mode=ro', uri=True, timeout=10)\n"
            "db.row_factory = sqlite3.Row\n"
            "rows = db.execute('SELECT key, session_id, seq, bytes_down, total_bytes_down, "
            "final, sent_at FROM usage_outbox WHERE mac = ? ORDER BY id', (sys.argv[1],))\n"
            "print(json.dumps([dict(r) for r in rows]))\n"
        )
        return json.loads(self.router(f"python3 - {shlex.quote(mac)}", stdin=script))

    def cloud_usage(self, mac: str) -> list[dict]:
        """The cloud's usage records for `mac` (its SQLite file, read-only)."""
        path = labcloud.instance_dir(RUN_DIR) / "cloud.db"
        sql = ("SELECT key, session_id, seq, bytes_down, total_bytes_down FROM usage_records "
               "WHERE mac = ? ORDER BY id")  # fmt: skip
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            db.row_factory = sqlite3.Row
            return [dict(r) for r in db.execute(sql, (mac,))]

    def phone(self, machine: str) -> VMPhone:
        return VMPhone(machine, mgmt_ip(machine))

    def join(self, phone: VMPhone, seconds: float = 90) -> tuple[str, str]:
        """The phone (re)joins the LAN: its DHCP client starts afresh (releasing any lease);
        returns its MAC and address."""
        ssh(phone.ip, f"systemctl stop plaza-phone-dhcp.service; rm -f {LEASE}*; "
            "systemctl start plaza-phone-dhcp.service")  # fmt: skip
        t0 = time.monotonic()
        while not (ip := ssh(phone.ip, f"cat {LEASE} 2>/dev/null || true").strip()):
            if time.monotonic() - t0 > seconds:
                raise VMLabError(f"{phone.netns} got no address from the router in {seconds} s")
            time.sleep(1)
        return ssh(phone.ip, "cat /sys/class/net/eth0/address").strip(), ip

    def leave(self, phone: VMPhone) -> None:
        """The phone walks out: its DHCP client stops (udhcpc -R releases the lease) and its
        address goes (the client's deconfig script may be killed with its unit before it
        flushes it): the router's probe of the released address gets no answer."""
        ssh(phone.ip, "systemctl stop plaza-phone-dhcp.service; ip -4 addr flush dev eth0; "
            f"rm -f {LEASE}*")  # fmt: skip

    def set_mac(self, phone: VMPhone, mac: str) -> None:
        """The phone's LAN NIC takes another MAC, as a phone's MAC randomization does."""
        ssh(phone.ip, "ip link set eth0 down && ip -4 addr flush dev eth0 && "
            f"ip link set eth0 address {mac} && ip link set eth0 up")  # fmt: skip

    def power_cycle_router(self) -> float:
        """A hard power-off (`virsh destroy`: the guest writes nothing more) and a start;
        seconds until it answers SSH again."""
        domain = domain_id("router")
        virsh("destroy", domain)
        virsh("start", domain)
        self._router_ip = None  # a new lease on the management network, maybe
        return self.wait_router()

    # -- down -------------------------------------------------------------------------------

    def down(self, everything: bool = False) -> dict[str, list[str]]:
        """vagrant destroy -f, the internet namespace; `everything`: also the box's volume in
        libvirt's pool, the box, and the daemons. Returns what libvirt still holds."""
        if self._created():
            libvirt.start()  # a crashed run may have left VMs and no daemons
        if libvirt.running():
            for machine in sorted(self._created(), reverse=True):  # phones, then the router
                libvirt.vagrant("destroy", "-f", machine, check=False)
        self.internet_down()
        left = libvirt.leftovers() if libvirt.running() else {}
        if everything and libvirt.running():
            for volume in left.get("volumes", []):
                subprocess.run(["virsh", "-c", "qemu:///system", "vol-delete", volume,
                                "--pool", "default"], capture_output=True, timeout=60)  # fmt: skip
            for network in left.get("networks", []):
                for cmd in ("net-destroy", "net-undefine"):
                    subprocess.run(["virsh", "-c", "qemu:///system", cmd, network],
                                   capture_output=True, timeout=60)  # fmt: skip
            subprocess.run(["vagrant", "box", "remove", "--force", "--all", "plaza/router"],
                           capture_output=True, timeout=120)  # fmt: skip
            left = libvirt.leftovers()
            libvirt.stop()
        return left

    def _created(self) -> list[str]:
        machines = ROOT / ".vagrant" / "machines"
        return [p.parent.parent.name for p in machines.glob("*/libvirt/id")]


def decode_opt114(raw: str) -> str:
    """Option 114 as lab/udhcpc.sh saved it (busybox exports unknown options as hex)."""
    try:
        return bytes.fromhex(raw).decode()
    except ValueError:
        return raw
