"""`plaza-lab vm up|down` and what the scenarios (lab/vagrant_scenarios.py) run on: the testers'
lab as real VMs (Vagrantfile, docs/vm-lab.md).

    phone VMs --plaza-lan-- router VM --plaza-wan-- internet VM: fake internet, sandbox
    (busybox udhcpc, curl)  (flashed by plaza-provision)  wallet, Plaza cloud, the ISP

libvirt and Vagrant run in the namespace plaza-virt (lab/libvirt.py). The internet is the one the
router image's end-to-end tests flash against (lab/vm_internet.py: the same web, DNS, wallet,
cloud and ISP, started by the same code, plus the cloud's push worker), in the VM `internet`
(or, with PLAZA_VM_INTERNET=namespace, a namespace of the host: lab/vagrant_internet.py). The
router is brought into service the technician's way: `plaza-provision flash --portal-cert/
--portal-key` and `verify` over SSH from the internet side; the only file put on it by hand is
the lab CA (a venue's trust anchor).
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from lab import browser, libvirt, vagrant_box, vagrant_inetbox, vagrant_internet
from lab import cloud as labcloud
from lab.browser import PhoneBrowser
from lab.phone import Phone
from lab.topology import PORTAL_HOST
from lab.vagrant_internet import SSH_OPTIONS, VMLabError, parse_bridge, socks_argv, ssh_argv
from lab.vagrant_internet import run as _run
from lab.vm_internet import ROUTER_CA, ROUTER_WAN, VMInternet

ROOT = Path(__file__).resolve().parents[1]
PORTAL_URL = f"https://{PORTAL_HOST}/"
API_URL = PORTAL_URL + "api/captive"
LEASE = "/var/lib/plaza-phone/lease"  # a phone VM's (lab/vagrant/phone-setup.sh)
SOCKS_PORT = 10800  # a phone's SOCKS tunnel in the libvirt namespace (VMLab.phone_browser)
__all__ = ["SSH_OPTIONS", "VMLabError", "parse_bridge"]  # re-exported for the scenarios


def parse_domifaddr(text: str) -> str | None:
    """The first IPv4 address in `virsh domifaddr` output (the management NIC's lease)."""
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[2] == "ipv4":
            return parts[3].split("/")[0]
    return None


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
    return _run(ssh_argv(ip, command), timeout=timeout, stdin=stdin)


class VMPhone(Phone):
    """A phone VM: lab/phone.py's curl client, run on the VM over SSH (its cookie jar there)."""

    def __init__(self, machine: str, ip: str) -> None:
        self.netns = machine
        self.ip = ip
        self._jar = Path("/root/plaza-phone.cookies")

    def close(self) -> None:
        subprocess.run(self.ssh_argv(f"rm -f {self._jar}"), capture_output=True, timeout=30)

    def ssh_argv(self, command: str) -> list[str]:
        return ssh_argv(self.ip, command)

    def prefix(self) -> list[str]:
        return []

    def run(self, cmd: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
        argv = self.ssh_argv(shlex.join(cmd))
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout + 10)


class VMLab:
    """The VMs (through Vagrant), the internet, and what the scenarios do to them."""

    def __init__(
        self, phones: int = 2, out: Callable[[str], None] = print, internet: str | None = None
    ) -> None:
        self.phones = phones
        self.out = out
        kind = internet or os.environ.get("PLAZA_VM_INTERNET", "vm")
        self.internet_vm = kind == "vm"
        # The same object in every process (`vm up`, then `vm demo`): its state is in the VM
        # or, for the namespace, under /run.
        self.internet = vagrant_internet.internet(kind, mgmt_ip)
        self._router_ip: str | None = None  # its management address, looked up once

    def machines(self) -> list[str]:
        """In the order `up` brings them: the internet first (the router's WAN DHCP at boot)."""
        phones = [f"phone{i}" for i in range(1, self.phones + 1)]
        return [*(["internet"] if self.internet_vm else []), "router", *phones]

    def stale_box(self) -> bool:
        """A box missing or older than its inputs (BoxError: the image itself is missing)."""
        return vagrant_box.is_stale() or (self.internet_vm and vagrant_inetbox.outdated())

    # -- up ---------------------------------------------------------------------------------

    def up(self) -> dict[str, float]:
        """libvirt, the VMs, the internet, the router flashed and verified, phones trusting
        the lab CA; returns the seconds each stage took."""
        try:
            stale = self.stale_box()
        except vagrant_box.BoxError as exc:
            raise VMLabError(str(exc)) from exc
        problems = libvirt.preflight(len(self.machines()), stale_box=stale)
        if problems:
            raise VMLabError("; ".join(problems))
        if self.internet_vm and vagrant_inetbox.is_stale():
            self.out("note: the code changed since the plaza/internet box was built; the internet "
                     "VM runs the box's: make vagrant-box to update it")  # fmt: skip
        times: dict[str, float] = {}
        t0 = time.monotonic()
        libvirt.start()
        for machine in self.machines():  # one at a time: timed, and no parallel network creation
            t = time.monotonic()
            if machine == "internet":
                self.internet.up()  # vagrant up internet, until its services listen
            else:
                libvirt.vagrant("up", "--no-parallel", machine)
            times[f"vagrant up {machine}"] = time.monotonic() - t
        problems = libvirt.check_networks()
        if problems:
            raise VMLabError("; ".join(problems))
        if not self.internet_vm:
            t = time.monotonic()
            self.internet.up()  # the namespace, into the plaza-wan bridge the router made
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
        ssh(mgmt_ip(machine), command, stdin=self.internet.ca_pem())

    @property
    def cut_name(self) -> str:
        """What the outage scenario does to the internet, in a tester's words."""
        return "vagrant halt internet" if self.internet_vm else "its link into plaza-wan cut"

    def wan_link(self, up: bool) -> float:
        """The internet away or back (`vagrant halt`/`up internet`, or the namespace's link
        into plaza-wan): for the router the whole internet (cloud, wallet, web, DNS) vanishes
        or answers at once. Seconds it took (back: until its services listen)."""
        return self.internet.cut(up)

    def router_ssh(self, command: str, timeout: float = 60, stdin: str | None = None) -> str:
        """As the technician: from the internet, to the router's WAN address."""
        argv = self.internet.laptop(["ssh", *SSH_OPTIONS, "-i", self.internet.key,
                                     f"root@{ROUTER_WAN}", command])  # fmt: skip
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
        """`plaza-provision ARGV` from the technician's laptop (on the internet)."""
        known = f"{self.internet.state}/provision_known_hosts"
        cmd = ["plaza-provision", *argv, "-i", self.internet.key, "--known-hosts", known]
        return _run(self.internet.laptop(cmd), timeout=timeout, stdin=stdin)

    def provision_router(self) -> None:
        """The lab CA as the venue's trust anchor, then `flash` (config, the portal's chain and
        key, the claim) and `verify`, re-run while the daemon's first heartbeat is due."""
        self.wait_router()
        state = self.internet.state  # VMInternet's directory, on the laptop
        self.router_ssh(f"install -m 0644 /dev/stdin {ROUTER_CA}", stdin=self.internet.ca_pem())
        config = f"{state}/venue.toml"
        venue = VMInternet(None, Path(state)).venue_config(quick_usage=True)
        self.internet.put(config, venue)
        chain, key = f"{state}/pki/portal.pem", f"{state}/pki/portal.key"
        claim = self.internet.claim()
        self.out(f"plaza-provision flash {ROUTER_WAN} (from the internet, as a technician)")
        done = self.provision(
            "flash", ROUTER_WAN, "--claim", "-", "--venue-config", config,
            "--portal-cert", chain, "--portal-key", key, "--cloud", labcloud.CLOUD_URL,
            "--rollback-timeout", "240", "--json", stdin=claim + "\n",
        )  # fmt: skip
        self.out(done.strip()[-600:])
        self.out(f"plaza-provision verify {ROUTER_WAN}")
        deadline = time.monotonic() + 300
        while True:
            try:
                self.out(self.provision(
                    "verify", ROUTER_WAN, "--cloud", labcloud.CLOUD_URL, "--claim", "-",
                    "--ca-bundle", f"{state}/pki/ca.pem", "--portal-ca", ROUTER_CA,
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
        """The cloud's usage records for `mac` (its SQLite file, read-only, where it runs)."""
        return self.internet.cloud_usage(mac)

    def phone(self, machine: str) -> VMPhone:
        return VMPhone(machine, mgmt_ip(machine))

    @contextlib.contextmanager
    def phone_browser(self, phone: VMPhone, shots_dir: str | Path) -> Iterator[PhoneBrowser]:
        """Chromium on the host whose every connection the phone VM makes: an SSH tunnel
        into the phone is its SOCKS5 proxy (names resolved by the phone, so by the router's
        DNS), and it trusts the lab CA as the phone's curl does. What the router sees is the
        phone: its MAC, its address, its captive state. The phone VMs carry no browser (it
        would double the box); this is the browser a tester watches them with."""
        with tempfile.TemporaryDirectory(prefix="plaza-vm-browser-") as tmp:
            ca = Path(tmp) / "ca.pem"
            ca.write_text(self.internet.ca_pem())
            tunnel = subprocess.Popen(
                socks_argv(phone.ip, SOCKS_PORT), stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            )  # fmt: skip
            try:
                self._wait_socks(tunnel)
                with browser.phone_browser(
                    libvirt.NETNS, ca, shots_dir, proxy=f"socks5://127.0.0.1:{SOCKS_PORT}"
                ) as seen:
                    yield seen
            finally:
                tunnel.terminate()
                tunnel.wait(timeout=10)

    @staticmethod
    def _wait_socks(tunnel: subprocess.Popen, seconds: float = 30) -> None:
        probe = libvirt.in_netns("bash", "-c", f"exec 3<>/dev/tcp/127.0.0.1/{SOCKS_PORT}")
        deadline = time.monotonic() + seconds
        while subprocess.run(probe, capture_output=True).returncode != 0:
            if tunnel.poll() is not None:
                error = (tunnel.stderr.read() if tunnel.stderr else "").strip()
                raise VMLabError(f"the SSH tunnel into the phone ended: {error or 'no reason'}")
            if time.monotonic() > deadline:
                raise VMLabError(f"the SSH tunnel into the phone did not listen in {seconds} s")
            time.sleep(0.2)

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
        """vagrant destroy -f, the internet (VM or namespace); `everything`: also the boxes'
        volumes in libvirt's pool, the boxes, and the daemons. Returns what libvirt holds."""
        if self._created():
            libvirt.start()  # a crashed run may have left VMs and no daemons
        if libvirt.running():
            for machine in sorted(self._created(), reverse=True):  # phones, router, internet
                libvirt.vagrant("destroy", "-f", machine, check=False)
        self.internet.down()
        vagrant_internet.NamespaceInternet().down()  # a namespace lab's, if one was left
        left = libvirt.leftovers() if libvirt.running() else {}
        if everything and libvirt.running():
            for volume in left.get("volumes", []):
                subprocess.run(["virsh", "-c", "qemu:///system", "vol-delete", volume,
                                "--pool", "default"], capture_output=True, timeout=60)  # fmt: skip
            for network in left.get("networks", []):
                for cmd in ("net-destroy", "net-undefine"):
                    subprocess.run(["virsh", "-c", "qemu:///system", cmd, network],
                                   capture_output=True, timeout=60)  # fmt: skip
            left = libvirt.leftovers()
            libvirt.stop()
        if everything:  # files of Vagrant's, libvirt or not (a run that failed before up)
            for box in (vagrant_box.BOX_NAME, vagrant_inetbox.BOX_NAME):
                subprocess.run(["vagrant", "box", "remove", "--force", "--all", box],
                               capture_output=True, timeout=120)  # fmt: skip
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
