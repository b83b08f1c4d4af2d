"""`plaza-lab vm up|demo|down`: the testers' lab as real VMs (Vagrantfile, docs/vm-lab.md).

    phone VMs --plaza-lan-- router VM --plaza-wan--veth-- [vmlab-inet netns]: fake internet,
    (busybox udhcpc, curl)  (flashed by plaza-provision)  sandbox wallet, Plaza cloud, ISP DHCP

libvirt and Vagrant run in the namespace plaza-virt (lab/libvirt.py). The internet is the
namespace lab's own (lab/topology.py: the same web, DNS, wallet and cloud processes as
`plaza-lab up`), wired into the plaza-wan bridge by a veth; its dnsmasq hands the router's WAN
198.18.0.1, as lab/vm.py's does. The router is then brought into service the technician's way:
`plaza-provision flash` and `verify` over SSH from the internet side. The demo walks a phone VM
through the same steps, with the same tools (lab/phone.py's curl client, lab/shopper.py, lab/
probes.py, lab/demo.py's checks), as `plaza-lab demo` walks a phone namespace.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from lab import cloud as labcloud
from lab import libvirt, probes, shopper
from lab.demo import StepFailed, cloud_rows, expect, wait
from lab.internet import LAB_SITES, OCSP_HOST
from lab.phone import Phone
from lab.shopper import ShopperError
from lab.topology import DNS_IP, PORTAL_HOST, VENUE_NAME, WALLET_HOST, Lab, LabState, nsexec

ROOT = Path(__file__).resolve().parents[1]
NAME = "vmlab"
KEY = ROOT / "dist" / "plaza-lab-key"
BIN = Path(sys.executable).parent
ROUTER_WAN = "198.18.0.1"
INTERNET_WAN = "198.18.0.2"
LAB_ETC = "/etc/plaza/lab"  # on the router: the lab CA and the portal's certificate
PORTAL_URL = f"https://{PORTAL_HOST}/"
API_URL = PORTAL_URL + "api/captive"
SSH_OPTIONS = (
    "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
    "-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR",
)  # fmt: skip


class VMLabError(RuntimeError):
    """A step of the VM lab failed; the message says which and what to do."""


def venue_toml(wallet_client_id: str) -> str:
    """The router's config for `plaza-provision flash --venue-config`: the namespace lab's
    venue (lab/topology.py gateway_config) with the paths of the router's own files."""
    return f"""\
# The VM lab's venue (lab/vagrant_lab.py), flashed by plaza-provision.
[gateway]
state_dir = "/var/lib/plaza"
control_socket = "/run/plaza/control.sock"
control_group = "plaza"
metrics_listen = "127.0.0.1:9100"

[lan]
interface = "br-lan"
address = "198.19.0.1/24"
dhcp_start = "198.19.0.100"
dhcp_end = "198.19.0.250"
upstream_dns = ["{DNS_IP}"]

[portal]
hostname = "{PORTAL_HOST}"
cert_file = "{LAB_ETC}/portal.pem"
key_file = "{LAB_ETC}/portal.key"
merchant_name = "{VENUE_NAME}"

[wallet]
issuer = "https://{WALLET_HOST}"
client_id = "{wallet_client_id}"
ca_file = "{LAB_ETC}/ca.pem"

[garden]
http_domains = ["{OCSP_HOST}"]
dnsmasq_restart = ["systemctl", "restart", "plaza-dnsmasq.service"]

[cloud]
url = "{labcloud.CLOUD_URL}"
ca_bundle = "{LAB_ETC}/ca.pem"
heartbeat_seconds = 2
upload_seconds = 1

[accounting]
poll_seconds = 1
interim_seconds = 3
"""


def isp_dnsmasq_conf(leases: Path) -> str:
    """The ISP on the WAN: the router's address by DHCP, the fake internet's DNS (DHCP only:
    the internet's own dnsmasq answers DNS on 192.0.2.53)."""
    return (
        "# The ISP: the router's WAN address by DHCP (lab/vagrant_lab.py).\n"
        "interface=eth0\nbind-interfaces\nport=0\nno-resolv\nno-hosts\n"
        f"dhcp-range={ROUTER_WAN},{ROUTER_WAN},255.255.255.252,1h\n"
        f"dhcp-option=option:router,{INTERNET_WAN}\ndhcp-option=option:dns-server,{DNS_IP}\n"
        f"dhcp-leasefile={leases}\nlog-dhcp\n"
    )


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
    def __init__(self, phones: int = 2, out: Callable[[str], None] = print) -> None:
        self.phones = phones
        self.out = out
        self.internet = Lab(NAME)  # only its internet half is used

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
        ssh(mgmt_ip(machine), command, stdin=self.ca_pem())

    def ca_pem(self) -> str:
        return self.internet.ca.cert_path.read_text()

    def internet_up(self) -> None:
        lab = self.internet
        lab.down()
        lab.run_dir.mkdir(parents=True, exist_ok=True)
        lab.router_dir.mkdir(parents=True, exist_ok=True)
        lab.state = LabState(name=NAME, wallet_dialect="oidc", cloud=True)
        lab._save()
        lab._build_internet()
        lab._start_cloud()
        inet = lab.state.internet
        bridge = parse_bridge(virsh("net-info", "plaza-wan"))
        _run(["ip", "link", "add", "vmlab-wan", "netns", libvirt.NETNS, "type", "veth",
              "peer", "eth0", "netns", inet])  # fmt: skip
        _run(libvirt.in_netns("ip", "link", "set", "vmlab-wan", "master", bridge, "up"))
        nsexec(inet, "ip", "addr", "add", f"{INTERNET_WAN}/30", "dev", "eth0")
        nsexec(inet, "ip", "link", "set", "eth0", "up")
        conf = lab.run_dir / "isp-dnsmasq.conf"
        conf.write_text(isp_dnsmasq_conf(lab.run_dir / "isp.leases"))
        lab.spawn("internet-isp", inet, "dnsmasq", "--keep-in-foreground", f"--conf-file={conf}")

    def router_ssh(self, command: str, timeout: float = 60, stdin: str | None = None) -> str:
        """As the technician: from the internet, to the router's WAN address."""
        argv = ["ip", "netns", "exec", self.internet.state.internet, "ssh", *SSH_OPTIONS,
                "-i", str(KEY), f"root@{ROUTER_WAN}", command]  # fmt: skip
        return _run(argv, timeout=timeout, stdin=stdin)

    def provision_router(self) -> None:
        from lab.wallet import keys

        lab = self.internet
        deadline = time.monotonic() + 180
        while True:  # the router's WAN asks the ISP by DHCP, which only now answers
            try:
                self.router_ssh("true", timeout=20)
                break
            except (VMLabError, subprocess.TimeoutExpired) as exc:
                if time.monotonic() > deadline:
                    raise VMLabError("the router's WAN got no address in 180 s") from exc
                time.sleep(3)
        cert, key = lab.ca.issue("portal", [PORTAL_HOST, "198.19.0.1"])
        self.router_ssh(f"install -d -m 755 {LAB_ETC}")
        for name, text, mode in (
            ("ca.pem", self.ca_pem(), "644"),
            ("portal.pem", cert.read_text(), "644"),
            ("portal.key", key.read_text(), "640"),
        ):
            self.router_ssh(
                f"cat > {LAB_ETC}/{name} && chmod {mode} {LAB_ETC}/{name} && "
                f"chgrp plaza {LAB_ETC}/{name}",
                stdin=text,
            )
        account = labcloud.bootstrap(lab.run_dir, VENUE_NAME, PORTAL_HOST)
        claim = labcloud.claim_code(lab.run_dir, account.venue_id)
        with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
            f.write(venue_toml(keys.CLIENT_ID))
        known = lab.run_dir / "provision_known_hosts"
        common = ["-i", str(KEY), "--known-hosts", str(known)]
        inet = ["ip", "netns", "exec", lab.state.internet]
        self.out(f"plaza-provision flash {ROUTER_WAN} (from the internet, as a technician)")
        self.out(_run([*inet, str(BIN / "plaza-provision"), "flash", ROUTER_WAN, "--claim", "-",
                       "--venue-config", f.name, "--cloud", labcloud.CLOUD_URL, "--json",
                       *common], timeout=600, stdin=claim + "\n").strip()[-600:])  # fmt: skip
        Path(f.name).unlink()
        self.out(f"plaza-provision verify {ROUTER_WAN}")
        self.out(_run([*inet, str(BIN / "plaza-provision"), "verify", ROUTER_WAN, "--cloud",
                       labcloud.CLOUD_URL, "--claim", "-", "--ca-bundle", str(lab.ca.cert_path),
                       "--portal-ca", f"{LAB_ETC}/ca.pem", *common],
                      timeout=300, stdin=claim + "\n").strip())  # fmt: skip

    # -- the demo -----------------------------------------------------------------------------

    def gateway_state(self, mac: str) -> str | None:
        clients = json.loads(self.router_ssh("plaza-ctl clients --json"))
        return next((c["state"] for c in clients if c["mac"] == mac), None)

    def demo(self, machine: str = "phone1") -> bool:
        """join -> captive -> wallet login -> online -> usage in the cloud -> logout."""
        phone = VMPhone(machine, mgmt_ip(machine))
        site = f"http://{LAB_SITES[0]}/"
        android = next(x for x in probes.PROBES if x.os == "Android")
        step = 0

        def say(title: str, detail: str) -> None:
            nonlocal step
            step += 1
            self.out(f"[{step}] {title}\n    {detail}")

        def probe() -> str:
            r = phone.get(android.url)
            return android.rule(probes.Answer(r.status or None, r.body, r.location))

        try:
            # The phone joins now: its DHCP client starts afresh (a lease it took while the
            # router was still blank has no option 114; udhcpc -R releases it on the way out).
            ssh(phone.ip, "rm -f /var/lib/plaza-phone/lease*; "
                "systemctl restart plaza-phone-dhcp.service")  # fmt: skip
            ip = wait(lambda: ssh(phone.ip, "cat /var/lib/plaza-phone/lease 2>/dev/null").strip(),
                      90)  # fmt: skip
            expect(bool(ip), f"{machine} got no address from the router's DHCP in 90 s")
            mac = ssh(phone.ip, "cat /sys/class/net/eth0/address").strip()
            raw = ssh(phone.ip, "cat /var/lib/plaza-phone/lease.opt114").strip()
            url114 = decode_opt114(raw)
            expect(url114 == API_URL, f"DHCP option 114 carried {url114!r}, expected {API_URL!r}")
            state = wait(lambda: self.gateway_state(mac), 20)
            expect(state == "captive", f"a new phone must start captive, the gateway says {state}")
            say("Phone VM joins the LAN",
                f"{machine} ({mac}) got {ip} from the router VM's dnsmasq (busybox udhcpc) with "
                f"option 114 = {url114}; the gateway sees it as {state}.")  # fmt: skip

            r = phone.get(API_URL)
            doc = json.loads(r.body) if r.ok and r.status == 200 else {}
            expect(doc.get("captive") is True, f"API answered {r.status or r.error}")
            verdict = probe()
            expect(verdict == probes.CAPTIVE, f"Android's probe says {verdict}")
            r = phone.get(site)
            expect(r.status == 302 and r.location == PORTAL_URL, f"GET {site} -> {r.status}")
            say(
                "Captive: the API, the OS probe and any page lead to the portal",
                f"API captive=true; {android.url} -> captive; GET {site} -> 302 {r.location}",
            )

            t0 = time.monotonic()
            authorize_url = shopper.start_login(phone, PORTAL_URL)
            callback = shopper.approve_login(phone, authorize_url, PORTAL_URL, "alice", "1234")
            welcome = shopper.finish_login(phone, PORTAL_URL, callback)
            state = self.gateway_state(mac)
            expect(state == "authorized" and "Alice Wang" in welcome.body, f"gateway: {state}")
            say("Shopper logs in with the sandbox wallet",
                f"portal -> {WALLET_HOST} (Alice approves) -> callback -> /welcome: online as "
                f"Alice Wang in {(time.monotonic() - t0) * 1000:.0f} ms")  # fmt: skip

            verdict = probe()
            r = phone.get(site)
            expect(verdict == probes.ONLINE, f"after login Android's probe says {verdict}")
            expect(r.status == 200 and "FAKE-INTERNET-OK" in r.body, f"GET {site} -> {r.status}")
            say("Online through the router VM", f"probe -> online; GET {site} -> 200")

            phone.get(site + "bytes/2000000", timeout=60)
            sql = "SELECT count(*), coalesce(sum(bytes_down), 0) FROM usage_records WHERE mac = ?"
            got = wait(lambda: (row := cloud_rows(self.internet, sql, mac)[0])[1] > 2_000_000
                       and row, 40)  # fmt: skip
            expect(bool(got), "no usage reached the cloud")
            say(
                "Usage arrives in the cloud",
                f"{got[0]} usage record(s), {got[1] / 1e6:.1f} MB down, from the router VM",
            )

            r = phone.logout(PORTAL_URL)
            expect(r.status == 303, f"logout answered {r.status or r.error}")
            r = phone.get(site)
            expect(r.status == 302, f"after logout expected 302, got {r.status or r.error}")
            say("Shopper logs out and is captive again", f"GET {site} -> 302 to the portal")
            self.out("VM demo passed: join -> captive -> wallet login -> online -> usage -> logout")
            return True
        except (StepFailed, ShopperError, VMLabError) as exc:
            self.out(f"[{step + 1}] FAILED: {exc}")
            return False
        finally:
            phone.close()

    # -- down -------------------------------------------------------------------------------

    def down(self, everything: bool = False) -> dict[str, list[str]]:
        """vagrant destroy -f, the internet namespace; `everything`: also the box's volume in
        libvirt's pool, the box, and the daemons. Returns what libvirt still holds."""
        if self._created():
            libvirt.start()  # a crashed run may have left VMs and no daemons
        if libvirt.running():
            for machine in sorted(self._created(), reverse=True):  # phones, then the router
                libvirt.vagrant("destroy", "-f", machine, check=False)
        self.internet.down()
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
