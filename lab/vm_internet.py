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

import argparse
import contextlib
import functools
import json
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
ROUTER_WAN = "198.18.0.1"  # the router's WAN address, handed out by the ISP's DHCP
INTERNET_WAN = "198.18.0.2/30"  # the internet's end of the WAN link (the ISP)


class InternetError(RuntimeError):
    """A service of the VM's internet did not start."""


def isp_dnsmasq_conf(directory: Path, services: bool = True) -> str:
    """The ISP on the WAN (interface eth0 of the internet namespace): the router's WAN address
    by DHCP, and DNS. With the services, the lab's DNS has 192.0.2.53 (on lo, which dnsmasq
    adds to interface=): this one keeps off lo and forwards the lab's names there, so the router
    resolves cloud.test and wallet.test through its WAN's DNS as it would at a venue."""
    gateway = INTERNET_WAN.split("/")[0]
    return (
        "# The ISP: the router's WAN address by DHCP, and DNS for names on the lab internet.\n"
        "interface=eth0\nbind-interfaces\nno-resolv\nno-hosts\n"
        f"dhcp-range={ROUTER_WAN},{ROUTER_WAN},255.255.255.252,1h\n"
        f"dhcp-option=option:router,{gateway}\ndhcp-option=option:dns-server,{gateway}\n"
        f"dhcp-leasefile={directory / 'internet.leases'}\n"
        "address=/plaza.test/192.0.2.80\nlog-dhcp\n"
        + (f"except-interface=lo\nserver={DNS_IP}\n" if services else "")
    )


@dataclass
class RouterFile:
    path: str
    data: bytes
    mode: str = "0644"
    group: str = "root"


@dataclass
class VMInternet:
    """`start()` the services in namespace `ns` (state under `directory`), `stop()` them; the
    pids are kept in a file so a later run can end a crashed run's processes. `ns` None: in
    this machine's own namespace (the Vagrant lab's internet VM, `serve` below)."""

    ns: str | None
    directory: Path
    account: labcloud.CloudAccount | None = None
    # The cloud's push worker too (the offer pushed to a returning shopper's wallet: the
    # Vagrant lab's demo); the end-to-end tests do without its polling.
    push: bool = False
    # Seconds each service has to listen: the internet VM starts them under emulation, the
    # cloud's imports alone a minute and more of a shared CPU there.
    listen_seconds: float = 60
    pids: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.pid_file = self.directory / "internet-services.pids"

    @functools.cached_property
    def ca(self) -> LabCA:
        return LabCA(self.directory / "pki")  # made on first use (start), never by stop()

    def _in(self, *cmd: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns, *cmd] if self.ns else list(cmd)

    def _ns(self, *args: str) -> None:
        done = subprocess.run(self._in(*args), capture_output=True, text=True, check=False)
        if done.returncode != 0 and "File exists" not in done.stderr:  # a restart: addresses kept
            raise InternetError(f"{' '.join(args)}: {done.stderr.strip()}")

    def _spawn(self, key: str, *cmd: str, env: dict[str, str] | None = None) -> None:
        with open(self.directory / f"{key}.log", "ab") as log:
            proc = subprocess.Popen(
                self._in(*cmd),
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
        etc = Path("/etc/netns") / self.ns if self.ns else Path("/etc")
        etc.mkdir(parents=True, exist_ok=True)  # the technician's laptop and the cloud resolve here
        (etc / "resolv.conf").unlink(missing_ok=True)  # a VM's may be a link to resolved's
        (etc / "resolv.conf").write_text(f"nameserver {DNS_IP}\n")
        conf = self.directory / "internet-dns.conf"
        conf.write_text(_internet_dns_conf())
        self._spawn("internet-dns", "dnsmasq", "--keep-in-foreground", f"--conf-file={conf}",
                    f"--pid-file={self.directory / 'internet-dns.pid'}")  # fmt: skip
        self._spawn("internet-web", str(BIN / "python"), "-m", "lab.internet",
                    "--listen", f"{WEB_IP}:80")  # fmt: skip
        made = self._wallet_keys()
        self._push_settings = made["push"]["oidc"]
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
        if self.push:
            self._spawn("internet-cloud-push", *labcloud.push_command(self.directory),
                        env={**env, **self._push_env()})  # fmt: skip
        self.ca.issue("portal", [PORTAL_HOST])
        for ip, port in ((DNS_IP, 53), (WEB_IP, 80), (WALLET_IP, 443), (labcloud.CLOUD_IP, 443)):
            self._wait_listen(ip, port, self.listen_seconds)

    def _wallet_keys(self) -> dict:
        """The wallet's keys and settings, made once: an internet VM booting again (the outage
        scenario) keeps the keys the router and the cloud already know."""
        saved = self.directory / "wallet" / "made.json"
        if saved.exists():
            return json.loads(saved.read_text())
        from lab.wallet import keys

        made = keys.provision(self.directory / "wallet", f"https://{PORTAL_HOST}")
        saved.write_text(json.dumps(made, default=str))
        return json.loads(saved.read_text())

    def _push_env(self) -> dict[str, str]:
        """The push worker's wallet settings, as lab/topology.py's _start_cloud passes them."""
        env = {f"PLAZA_CLOUD_WALLET_{k.upper()}": str(v) for k, v in self._push_settings.items()}
        env["PLAZA_CLOUD_WALLET_URL"] = env.pop("PLAZA_CLOUD_WALLET_BASE_URL")
        env.pop("PLAZA_CLOUD_WALLET_WALLET_PUBLIC_KEY_FILE", None)
        env["PLAZA_CLOUD_WALLET_CA_BUNDLE"] = str(self.ca.cert_path)
        return env

    def start_isp(self) -> None:
        """The ISP's dnsmasq on the namespace's eth0 (isp_dnsmasq_conf), ended by stop()."""
        conf = self.directory / "isp-dnsmasq.conf"
        conf.write_text(isp_dnsmasq_conf(self.directory))
        self._spawn("internet-isp", "dnsmasq", "--keep-in-foreground", f"--conf-file={conf}")

    def _wait_listen(self, ip: str, port: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = subprocess.run(
                self._in("ss", "-Hln", f"src {ip}:{port}"),
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

    def venue_config(self, quick_usage: bool = False) -> str:
        """The router's gateway.toml for this lab: the package's defaults for the LAN, plus the
        portal's certificate, the sandbox wallet and the lab cloud (heartbeats every 5 s).
        `quick_usage`: usage measured every second, an interim record every 3 s and uploads
        every second, as the namespace lab with its cloud does, so scenarios see it arrive."""
        quick = (
            "upload_seconds = 1\n\n[accounting]\npoll_seconds = 1\ninterim_seconds = 3\n"
            if quick_usage
            else ""
        )
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
            "heartbeat_seconds = 5\n" + quick
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


def serve(directory: Path, push: bool = True) -> int:
    """The internet VM's service (lab/vagrant_internet.py's box runs it as a systemd unit): the
    ISP on eth0 and every service above in the VM's own namespace, the same code as the
    namespace for tests/vm. Returns when a service ends (the unit restarts them all) or on
    SIGTERM."""
    directory.mkdir(parents=True, exist_ok=True)
    internet = VMInternet(None, directory, push=push, listen_seconds=600)
    # A former boot's pids mean nothing now; systemd ended a former run's with its cgroup.
    internet.pid_file.unlink(missing_ok=True)
    internet._ns("ip", "addr", "add", f"{DNS_IP}/32", "dev", "lo")
    stopping: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, _frame: stopping.append(signum))
    try:
        internet.start_isp()
        internet.start()
        print(f"internet up: web, DNS, wallet, cloud{', push' if push else ''}, ISP", flush=True)
        while not stopping:
            for pid in internet.pids:
                with contextlib.suppress(ChildProcessError):
                    if os.waitpid(pid, os.WNOHANG)[0]:
                        print(f"a service ended (pid {pid}): restarting", flush=True)
                        return 1
            time.sleep(1)
        return 0
    finally:
        internet.stop()


def cloud_usage(directory: Path, mac: str) -> list[dict]:
    """The cloud's usage records for `mac` (its SQLite file, read-only)."""
    import sqlite3

    path = labcloud.instance_dir(directory) / "cloud.db"
    sql = ("SELECT key, session_id, seq, bytes_down, total_bytes_down FROM usage_records "
           "WHERE mac = ? ORDER BY id")  # fmt: skip
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute(sql, (mac,))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The lab's internet in this machine (a VM).")
    parser.add_argument("action", choices=("serve", "claim", "cloud-usage"))
    parser.add_argument("mac", nargs="?", help="cloud-usage: the phone's MAC")
    parser.add_argument("--dir", type=Path, default=Path("/var/lib/plaza-lab"))
    parser.add_argument("--no-push", dest="push", action="store_false")
    args = parser.parse_args(argv)
    if args.action == "serve":
        return serve(args.dir, args.push)
    if args.action == "claim":
        account = labcloud.bootstrap(args.dir, VENUE_NAME, PORTAL_HOST)  # kept: account.json
        print(labcloud.claim_code(args.dir, account.venue_id))
    else:
        print(json.dumps(cloud_usage(args.dir, args.mac)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
