"""The lab's internet services for the router VM (lab/vm.py): the same Plaza cloud, sandbox
wallet, web server and DNS as the namespace lab (lab/topology.py, lab/cloud.py, lab/wallet,
lab/internet.py), started in the VM's internet namespace so the image can be flashed, enrolled
and used by a phone end to end.

    [internet ns] lo: 192.0.2.53 DNS (the lab's names: cloud.test, wallet.test, sites)
                      192.0.2.80 web (lab.internet)   192.0.2.20 https://wallet.test
                      192.0.2.40 https://cloud.test (plaza-cloud run, SQLite, demo merchant)

The ISP's dnsmasq (lab/vm.py) forwards what it does not know to 192.0.2.53, so the router
resolves the lab's names through its WAN's DNS as it would at a venue. One lab CA signs the
cloud, the wallet and the portal; the router gets the CA as a file (`router_files`), as a venue's
IT would install its trust anchors, and the portal's chain and key through `plaza-provision flash
--portal-cert/--portal-key` (`portal_pair`), as a technician does.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from lab import cloud as labcloud
from lab.pki import LabCA
from lab.topology import (
    DNS_IP,
    DNS_IP6,
    PORTAL_HOST,
    VENUE_NAME,
    WALLET_IP,
    WALLET_IP6,
    WALLET_IP_HOSTS,
    WEB_IP,
    WEB_IP6,
    _internet_dns_conf,
    _trust_lab_ca,
)

BIN = Path(sys.executable).parent
# Where the router keeps the lab's trust anchor and the portal's certificate (venue config).
ROUTER_CA = "/etc/plaza/lab-ca.pem"
ROUTER_PORTAL_CERT = "/etc/plaza/portal.pem"
ROUTER_PORTAL_KEY = "/etc/plaza/portal.key"
SITE = "http://www.example.test/"  # a lab site; its page says FAKE-INTERNET-OK
ONLINE_MARK = "FAKE-INTERNET-OK"


class InternetError(RuntimeError):
    """A service of the VM's internet did not start."""


@dataclass
class RouterFile:
    path: str
    data: bytes
    mode: str = "0644"
    group: str = "root"


@dataclass
class VMInternet:
    """`start()` the services in namespace `ns` (state under `directory`), `stop()` them; the
    pids are kept in a file so a later run can end a crashed run's processes."""

    ns: str
    directory: Path
    account: labcloud.CloudAccount | None = None
    pids: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.pid_file = self.directory / "internet-services.pids"

    @functools.cached_property
    def ca(self) -> LabCA:
        return LabCA(self.directory / "pki")  # made on first use (start), never by stop()

    def _ns(self, *args: str) -> None:
        done = subprocess.run(
            ["ip", "netns", "exec", self.ns, *args], capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise InternetError(f"{' '.join(args)}: {done.stderr.strip()}")

    def _spawn(self, key: str, *cmd: str, env: dict[str, str] | None = None) -> None:
        with open(self.directory / f"{key}.log", "ab") as log:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", self.ns, *cmd],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, env={**os.environ, **(env or {})},
            )  # fmt: skip
        self.pids.append(proc.pid)
        with open(self.pid_file, "a") as f:
            f.write(f"{proc.pid}\n")

    def start(self) -> None:
        for ip in (WEB_IP, WALLET_IP, labcloud.CLOUD_IP):  # DNS_IP: lab/vm.py adds it
            self._ns("ip", "addr", "add", f"{ip}/32", "dev", "lo")
        for ip in (WEB_IP6, DNS_IP6, WALLET_IP6):  # the lab's DNS config listens on DNS_IP6
            self._ns("ip", "addr", "add", f"{ip}/128", "dev", "lo", "nodad")
        etc = Path("/etc/netns") / self.ns  # the technician's laptop and the cloud resolve here
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "resolv.conf").write_text(f"nameserver {DNS_IP}\n")
        conf = self.directory / "internet-dns.conf"
        conf.write_text(_internet_dns_conf())
        self._spawn("internet-dns", "dnsmasq", "--keep-in-foreground", f"--conf-file={conf}",
                    f"--pid-file={self.directory / 'internet-dns.pid'}")  # fmt: skip
        self._spawn("internet-web", str(BIN / "python"), "-m", "lab.internet",
                    "--listen", f"{WEB_IP}:80")  # fmt: skip
        from lab.wallet import keys

        made = keys.provision(self.directory / "wallet", f"https://{PORTAL_HOST}")
        cert, key = self.ca.issue("wallet", [*made["hosts"], *WALLET_IP_HOSTS])
        self._spawn(
            "internet-wallet",
            str(BIN / "python"), "-m", "lab.wallet.server", "--settings", made["settings"],
            "--listen", f"{WALLET_IP}:443", "--cert", str(cert), "--key", str(key),
        )  # fmt: skip
        self.account = labcloud.bootstrap(self.directory, VENUE_NAME, PORTAL_HOST)
        cert, key = self.ca.issue("cloud", [labcloud.CLOUD_HOST])
        env = {
            **labcloud.ENV,
            "PLAZA_CLOUD_WALLET_PUBLIC_KEY_FILE": str(self.directory / "wallet/wallet-rsa2.pub"),
        }
        serve = labcloud.serve_command(self.directory, cert, key)
        self._spawn("internet-cloud", *serve, env=env)
        self.ca.issue("portal", [PORTAL_HOST])
        for ip, port in ((DNS_IP, 53), (WEB_IP, 80), (WALLET_IP, 443), (labcloud.CLOUD_IP, 443)):
            self._wait_listen(ip, port)

    def _wait_listen(self, ip: str, port: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = subprocess.run(
                ["ip", "netns", "exec", self.ns, "ss", "-Hln", f"src {ip}:{port}"],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            if out.stdout.strip():
                return
            time.sleep(0.2)
        logs = {p.name: p.read_text()[-800:] for p in self.directory.glob("internet-*.log")}
        raise InternetError(f"nothing listens on {ip}:{port} after {timeout:.0f} s: {logs}")

    def claim(self) -> str:
        """A fresh claim code for the demo venue (the operator CLI, as the dashboard would)."""
        assert self.account is not None, "start() first"
        return labcloud.claim_code(self.directory, self.account.venue_id)

    def router_files(self) -> list[RouterFile]:
        """The venue's file the router needs before flash: the lab CA (to trust the cloud and
        the wallet; a real venue's are public CAs the router already trusts)."""
        return [RouterFile(ROUTER_CA, self.ca.cert_path.read_bytes())]

    def portal_pair(self) -> tuple[Path, Path]:
        """The portal's chain and key on the laptop, for `flash --portal-cert/--portal-key`
        (which installs them at ROUTER_PORTAL_CERT/KEY, as the venue config names them)."""
        pki = self.directory / "pki"
        return pki / "portal.pem", pki / "portal.key"

    def venue_config(self) -> str:
        """The router's gateway.toml for this lab: the package's defaults for the LAN, plus the
        portal's certificate, the sandbox wallet and the lab cloud (heartbeats every 5 s)."""
        return (
            "# The VM lab's venue (lab/vm_internet.py).\n"
            '[gateway]\nstate_dir = "/var/lib/plaza"\ncontrol_socket = "/run/plaza/control.sock"\n'
            'control_group = "plaza"\nmetrics_listen = "127.0.0.1:9100"\n\n'
            '[lan]\ninterface = "br-lan"\naddress = "198.19.0.1/24"\n'
            'dhcp_start = "198.19.0.100"\ndhcp_end = "198.19.0.250"\n'
            f'upstream_dns = ["{DNS_IP}"]\n\n'
            f'[portal]\nhostname = "{PORTAL_HOST}"\ncert_file = "{ROUTER_PORTAL_CERT}"\n'
            f'key_file = "{ROUTER_PORTAL_KEY}"\nmerchant_name = "{VENUE_NAME}"\n\n'
            '[wallet]\nissuer = "https://wallet.test"\nclient_id = "plaza-portal"\n'
            f'ca_file = "{ROUTER_CA}"\n\n'
            '[garden]\ndnsmasq_restart = ["systemctl", "restart", "plaza-dnsmasq.service"]\n\n'
            f'[cloud]\nurl = "{labcloud.CLOUD_URL}"\nca_bundle = "{ROUTER_CA}"\n'
            "heartbeat_seconds = 5\n"
        )

    def trust_in(self, ns: str) -> None:
        """Namespace `ns` (a phone) trusts the lab CA only, with an empty resolv.conf that
        its DHCP client fills (lab/udhcpc.sh)."""
        etc = Path("/etc/netns") / ns
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "resolv.conf").write_text("")
        _trust_lab_ca(etc, self.ca.cert_path)

    def stop(self) -> None:
        """End every service this or a crashed run started (by the pid file)."""
        pids = set(self.pids)
        with contextlib.suppress(OSError, ValueError):
            pids |= {int(x) for x in self.pid_file.read_text().split()}
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        for pid in pids:
            while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)
                time.sleep(0.05)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
        self.pids.clear()
        self.pid_file.unlink(missing_ok=True)
