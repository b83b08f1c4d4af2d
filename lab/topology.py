"""The lab: a router, a fake internet and N phones in network namespaces on one machine.

    phoneN (eth0) --veth-- [lanN | br-lan]  router  [wan] --veth-- [eth0] internet
                           198.19.0.1/24            198.18.0.1/30  198.18.0.2/30
                           2001:db8:19::1/64        2001:db8:18::1 2001:db8:18::2
                                                                   lo: 192.0.2.53 (DNS)
                                                                       192.0.2.80 (web)
                                                                       2001:db8:2::80 (web)
                                                                       192.0.2.20 (wallet)
                                                                       2001:db8:2::53 (DNS)
                                                                       2001:db8:2::20 (wallet)

Dual stack: phones take IPv6 addresses by SLAAC (with temporary addresses, as phones do) from
the router's advertisements; the internet routes the LAN's /64 back to the router (no IPv6
NAT). Every address is from the benchmark/documentation ranges; no link touches the host's own
network, and the internet namespace has no default route, so nothing can leave the machine.
State (namespaces, processes) is written to /run/plaza-lab/<name>/state.json so that `down`
removes exactly what `up` made, even from another process or after a crash.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from gateway import config as gwconfig
from gateway.control_client import ControlClient, ControlError
from lab import cloud as labcloud
from lab import internet
from lab.pki import LabCA

RUN_ROOT = Path("/run/plaza-lab")
BIN = Path(sys.executable).parent
HERE = Path(__file__).parent

WAN_ROUTER = "198.18.0.1/30"
WAN_INTERNET = "198.18.0.2/30"
DNS_IP = "192.0.2.53"
WEB_IP = "192.0.2.80"
# The sandbox wallet's address (https://wallet.test, in the walled garden) and a neighbour on
# the same address that is not (as on a shared CDN): what the garden's SNI check tells apart.
WALLET_IP = "192.0.2.20"
WALLET_IP6 = "2001:db8:2::20"
OCSP_IP = "192.0.2.30"  # the stand-in OCSP responder, alone on its address (plain-HTTP garden)
WALLET_IP_HOSTS = ("wallet.test", "cdn-neighbour.test")
LAN_ADDRESS = "198.19.0.1/24"
LAN_ADDRESS6 = "2001:db8:19::1/64"
WAN_ROUTER6 = "2001:db8:18::1/64"
WAN_INTERNET6 = "2001:db8:18::2/64"
WEB_IP6 = "2001:db8:2::80"
DNS_IP6 = "2001:db8:2::53"
PORTAL_HOST = "portal.plaza.test"
VENUE_NAME = "Plaza Demo Café"
WALLET_HOST = "wallet.test"


class LabError(RuntimeError):
    pass


def sh(*args: str, check: bool = True, capture: bool = True) -> str:
    """Run a command; failures raise LabError with the command's own message."""
    proc = subprocess.run(args, capture_output=capture, text=True)
    if check and proc.returncode != 0:
        msg = (proc.stderr or proc.stdout or "").strip().splitlines()
        raise LabError(f"{' '.join(args)}: {msg[-1] if msg else f'exit {proc.returncode}'}")
    return proc.stdout if capture else ""


def nsexec(ns: str, *args: str, check: bool = True) -> str:
    return sh("ip", "netns", "exec", ns, *args, check=check)


@dataclass
class Phone:
    name: str
    netns: str
    mac: str
    ipv4: str | None = None


@dataclass
class LabState:
    name: str
    phones: list[Phone] = field(default_factory=list)
    pids: dict[str, int] = field(default_factory=dict)
    wallet_dialect: str = "oidc"  # which dialect the venue's portal speaks to the wallet
    cloud: bool = False  # the Plaza cloud runs on the fake internet and the router is enrolled

    @property
    def router(self) -> str:
        return f"{self.name}-router"

    @property
    def internet(self) -> str:
        return f"{self.name}-inet"

    def namespaces(self) -> list[str]:
        return [self.router, self.internet, *(p.netns for p in self.phones)]


class Lab:
    def __init__(self, name: str = "plaza") -> None:
        if not name.replace("-", "").isalnum() or len(name) > 16:
            raise LabError(f"lab name must be short and alphanumeric: {name!r}")
        self.name = name
        self.run_dir = RUN_ROOT / name
        self.state = self._load() or LabState(name=name)

    # -- paths and config ------------------------------------------------------------------
    @property
    def state_file(self) -> Path:
        return self.run_dir / "state.json"

    @property
    def dnsmasq_pid_file(self) -> Path:
        return self.router_dir / "dnsmasq.pid"

    @property
    def router_dir(self) -> Path:
        return self.run_dir / "router"

    @property
    def gateway_config_path(self) -> Path:
        return self.router_dir / "gateway.toml"

    @property
    def pki_dir(self) -> Path:
        return self.run_dir / "pki"

    @property
    def ca(self) -> LabCA:
        return LabCA(self.pki_dir)

    @property
    def control_socket(self) -> str:
        return str(self.router_dir / "control.sock")

    def gateway_config(self) -> gwconfig.Config:
        return gwconfig.Config(
            gateway=gwconfig.GatewayConfig(
                state_dir=str(self.router_dir / "state"), control_socket=self.control_socket
            ),
            lan=gwconfig.LanConfig(
                interface="br-lan",
                address=LAN_ADDRESS,
                dhcp_start="198.19.0.100",
                dhcp_end="198.19.0.250",
                upstream_dns=(DNS_IP,),
                address6=LAN_ADDRESS6,
            ),
            portal=gwconfig.PortalConfig(
                hostname=PORTAL_HOST,
                cert_file=str(self.pki_dir / "portal.pem"),
                key_file=str(self.pki_dir / "portal.key"),
                merchant_name="Plaza Demo Café",
                merchant_name_zh="广场示范咖啡",
                venue_info="Level 1, Plaza Mall. Open 8:00-22:00.\nFree Wi-Fi for guests.",
                click_through=True,  # this demo venue also offers "accept and continue"
            ),
            wallet=self.wallet_config(),
            # The lab's stand-in for procd respawns dnsmasq (see _start_router_services), so
            # ending it is how the daemon restarts it for the cloud's garden names.
            garden=gwconfig.GardenConfig(
                http_domains=(internet.OCSP_HOST,),
                dnsmasq_restart=("pkill", "-TERM", "-F", str(self.dnsmasq_pid_file)),
            ),
            cloud=self.cloud_config(),
            # With the cloud, usage goes up every few seconds, so it is seen arriving.
            accounting=gwconfig.AccountingConfig(poll_seconds=1, interim_seconds=3)
            if self.state.cloud
            else gwconfig.AccountingConfig(),
            offers=(
                gwconfig.OfferConfig(
                    title="Flat white ¥12 until noon",
                    title_zh="中午前馥芮白 12 元",
                    text="Show this screen at the counter.",
                    text_zh="在柜台出示此页面即可。",
                ),
                gwconfig.OfferConfig(
                    title="Free pastry with any large drink", title_zh="大杯饮品送糕点"
                ),
            ),
        )

    def cloud_config(self) -> gwconfig.CloudConfig:
        """The router's uplink: the lab's cloud over HTTPS with the lab CA; heartbeats and
        uploads more often than a real venue needs, so tests and the demo see them quickly."""
        if not self.state.cloud:
            return gwconfig.CloudConfig()
        return gwconfig.CloudConfig(
            url=labcloud.CLOUD_URL, ca_bundle=str(self.ca.cert_path), heartbeat_seconds=2,
            upload_seconds=1,
        )  # fmt: skip

    @property
    def wallet_dir(self) -> Path:
        return self.run_dir / "wallet"

    def wallet_config(self) -> gwconfig.WalletConfig:
        """The portal's side of the sandbox wallet, in the dialect this lab was brought up with."""
        from lab.wallet import keys

        common = {"ca_file": str(self.pki_dir / "ca.pem")}
        if self.state.wallet_dialect == "alipay":
            return gwconfig.WalletConfig(
                dialect="alipay",
                app_id=keys.APP_ID,
                authorize_url=f"https://{WALLET_HOST}/oauth2/publicAppAuthorize.htm",
                gateway_url=f"https://{WALLET_HOST}/gateway.do",
                app_private_key_file=str(self.wallet_dir / "app-rsa2.key"),
                wallet_public_key_file=str(self.wallet_dir / "wallet-rsa2.pub"),
                **common,
            )
        return gwconfig.WalletConfig(
            issuer=f"https://{WALLET_HOST}", client_id=keys.CLIENT_ID, **common
        )

    def control(self) -> ControlClient:
        return ControlClient(self.control_socket)

    def _load(self) -> LabState | None:
        try:
            raw = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return None
        return LabState(
            name=raw["name"],
            phones=[Phone(**p) for p in raw["phones"]],
            pids=raw["pids"],
            wallet_dialect=raw.get("wallet_dialect", "oidc"),
            cloud=raw.get("cloud", False),
        )

    def _save(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self.state), indent=2))
        tmp.replace(self.state_file)

    def is_up(self) -> bool:
        return self.state_file.exists() and self.state.router in _netns_list()

    def netns_of(self, name: str) -> str:
        if name == "router":
            return self.state.router
        if name in ("internet", "inet"):
            return self.state.internet
        for phone in self.state.phones:
            if name in (phone.name, phone.netns):
                return phone.netns
        raise LabError(f"no such lab host: {name!r} (router, internet, phone1..)")

    # -- processes -------------------------------------------------------------------------
    def spawn(self, key: str, ns: str, *cmd: str, env: dict[str, str] | None = None) -> int:
        log = open(self.run_dir / f"{key}.log", "ab")  # noqa: SIM115 - owned by the child
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, *cmd],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )
        log.close()
        self.state.pids[key] = proc.pid
        self._save()
        return proc.pid

    def stop(self, key: str, sig: int = signal.SIGTERM) -> None:
        pid = self.state.pids.pop(key, None)
        self._save()
        if pid:
            _kill_and_reap(pid, sig)

    # -- up --------------------------------------------------------------------------------
    def up(
        self, phones: int = 1, wallet_dialect: str = "oidc", dhcp: bool = True, cloud: bool = False
    ) -> None:
        """Bring the lab up. `dhcp=False`: phones are wired but start no DHCP client (see
        `add_phone`), and `up` does not wait for leases. `cloud`: the Plaza cloud runs on the
        fake internet (lab/cloud.py) and the router enrols with it before its daemon starts."""
        if self.is_up():
            raise LabError(f"lab {self.name!r} is already up; run `plaza-lab down` first")
        if wallet_dialect not in ("oidc", "alipay"):
            raise LabError(f"wallet dialect must be oidc or alipay, not {wallet_dialect!r}")
        self.down()  # leftovers of a crashed run
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.router_dir.mkdir(parents=True, exist_ok=True)
        self.state = LabState(name=self.name, wallet_dialect=wallet_dialect, cloud=cloud)
        self._save()
        try:
            self._build_internet()
            self._build_router()
            self._start_router_services()
            for i in range(1, phones + 1):
                self.add_phone(i, dhcp=dhcp)
            if dhcp:
                self.wait_leases()
        except BaseException:
            self.down()
            raise

    def _build_internet(self) -> None:
        ns = self.state.internet
        sh("ip", "netns", "add", ns)
        nsexec(ns, "ip", "link", "set", "lo", "up")
        for ip in (DNS_IP, WEB_IP, WALLET_IP, OCSP_IP, labcloud.CLOUD_IP):
            nsexec(ns, "ip", "addr", "add", f"{ip}/32", "dev", "lo")
        for ip in (WEB_IP6, DNS_IP6, WALLET_IP6):
            nsexec(ns, "ip", "addr", "add", f"{ip}/128", "dev", "lo", "nodad")
        conf = self.run_dir / "internet-dns.conf"
        conf.write_text(_internet_dns_conf())
        # Services on the internet (the cloud's push worker calling the wallet) resolve there.
        etc = Path("/etc/netns") / ns
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "resolv.conf").write_text(f"nameserver {DNS_IP}\n")
        self.spawn(
            "internet-dns",
            ns,
            "dnsmasq",
            "--keep-in-foreground",
            f"--conf-file={conf}",
            f"--pid-file={self.run_dir / 'internet-dns.pid'}",
        )
        self.spawn(
            "internet-web",
            ns,
            str(BIN / "python"),
            "-m",
            "lab.internet",
            "--listen",
            f"{WEB_IP}:80",
            "--listen",
            f"[{WEB_IP6}]:80",
        )
        self.spawn(
            "internet-ocsp",
            ns,
            str(BIN / "python"), "-m", "lab.internet", "--listen", f"{OCSP_IP}:80",
        )  # fmt: skip
        self._start_wallet()
        cert, key = self.ca.issue("internet-web", [*internet.all_hosts(), WEB_IP, WEB_IP6])
        self.spawn(
            "internet-tls",
            ns,
            str(BIN / "python"),
            "-m",
            "lab.internet",
            "--listen",
            f"{WEB_IP}:443",
            "--listen",
            f"[{WEB_IP6}]:443",
            "--tls",
            str(cert),
            str(key),
        )

    def _start_wallet(self) -> None:
        """The sandbox wallet on the fake internet: both dialects, fresh keys per lab."""
        from lab.wallet import keys

        made = keys.provision(
            self.wallet_dir, f"https://{PORTAL_HOST}", cloud_base=labcloud.CLOUD_URL
        )
        self._wallet_push = made["push"]
        cert, key = self.ca.issue("wallet", [*made["hosts"], *WALLET_IP_HOSTS])
        self.spawn(
            "internet-wallet",
            self.state.internet,
            str(BIN / "python"), "-m", "lab.wallet.server", "--settings", made["settings"],
            "--listen", f"{WALLET_IP}:443", "--listen", f"[{WALLET_IP6}]:443",
            "--cert", str(cert), "--key", str(key),
            # Its payment notifies go to the lab cloud over HTTPS: trust the lab CA.
            env={"REQUESTS_CA_BUNDLE": str(self.ca.cert_path)},
        )  # fmt: skip

    def _start_cloud(self) -> None:
        """The Plaza cloud (API, dashboard) and its push worker on the fake internet, with
        the demo merchant and venue; the push worker sends through the sandbox wallet."""
        labcloud.bootstrap(self.run_dir, VENUE_NAME, PORTAL_HOST)
        self.serve_cloud()
        consent_env = self._cloud_env()
        push = self._wallet_push[self.state.wallet_dialect]
        env = {f"PLAZA_CLOUD_WALLET_{k.upper()}": str(v) for k, v in push.items()}
        env["PLAZA_CLOUD_WALLET_URL"] = env.pop("PLAZA_CLOUD_WALLET_BASE_URL")
        env.pop("PLAZA_CLOUD_WALLET_WALLET_PUBLIC_KEY_FILE", None)
        env.update(consent_env)
        env["PLAZA_CLOUD_WALLET_CA_BUNDLE"] = str(self.ca.cert_path)
        self.spawn("internet-cloud-push", self.state.internet,
                   *labcloud.push_command(self.run_dir), env=env)  # fmt: skip
        _wait_for(lambda: _tcp_open(self.state.internet, labcloud.CLOUD_IP, 443), 20,
                  "the cloud to listen")  # fmt: skip

    def _cloud_env(self) -> dict[str, str]:
        """The web instances check shoppers' consent proofs with the wallet's key; both cloud
        processes let the lab's own push services in (labcloud.ENV)."""
        key = self.wallet_dir / "wallet-rsa2.pub"  # lab.wallet.keys.provision's
        return {**labcloud.ENV, "PLAZA_CLOUD_WALLET_PUBLIC_KEY_FILE": str(key)}

    def serve_cloud(self) -> None:
        """The cloud's web instance on the fake internet (again, after a test stopped it)."""
        cert, key = self.ca.issue("cloud", [labcloud.CLOUD_HOST])
        serve = labcloud.serve_command(self.run_dir, cert, key)
        env = {**self._cloud_env(), **self._shop_env()}
        self.spawn("internet-cloud", self.state.internet, *serve, env=env)

    def _shop_env(self) -> dict[str, str]:
        """The shop (/plaza) signs shoppers in with the sandbox wallet (its OIDC client, PKCE,
        in either lab dialect) and takes payments through the wallet's trade API: the files
        `lab.wallet.keys.provision` wrote, named as cloud/o2o/settings.py reads them."""
        from lab.wallet import keys
        from lab.wallet.trade import seller_id

        names = {
            "URL": keys.ISSUER, "DIALECT": "oidc", "CLIENT_ID": keys.CLOUD_CLIENT_ID,
            "CLIENT_SECRET_FILE": self.wallet_dir / "cloud-client-secret",
            "APP_ID": keys.APP_ID, "APP_PRIVATE_KEY_FILE": self.wallet_dir / "app-rsa2.key",
            "SELLER_ID": seller_id(keys.APP_ID), "CA_BUNDLE": self.ca.cert_path,
        }  # fmt: skip
        env = {f"PLAZA_CLOUD_WALLET_{k}": str(v) for k, v in names.items()}
        return {**env, "PLAZA_CLOUD_PUBLIC_URL": labcloud.CLOUD_URL}

    def enrol_router(self) -> str:
        """Enrol the router with a fresh claim code, as a technician would; returns the
        device id. The daemon's uplink starts with its next start."""
        account = labcloud.bootstrap(self.run_dir, VENUE_NAME, PORTAL_HOST)
        code = labcloud.claim_code(self.run_dir, account.venue_id)
        proc = subprocess.run(
            ["ip", "netns", "exec", self.state.router, str(BIN / "plaza-gateway"), "--config",
             str(self.gateway_config_path), "enrol", "--cloud", labcloud.CLOUD_URL, "--claim", "-",
             "--ca-bundle", str(self.ca.cert_path), "--force"],
            input=code + "\n", capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        if proc.returncode != 0:
            raise LabError(f"router enrolment failed: {proc.stderr.strip() or proc.stdout}")
        return proc.stdout.strip().split()[-1]

    def _build_router(self) -> None:
        r, i = self.state.router, self.state.internet
        sh("ip", "netns", "add", r)
        nsexec(r, "ip", "link", "set", "lo", "up")
        sh("ip", "link", "add", "wan", "netns", r, "type", "veth", "peer", "eth0", "netns", i)
        nsexec(r, "ip", "addr", "add", WAN_ROUTER, "dev", "wan")
        nsexec(i, "ip", "addr", "add", WAN_INTERNET, "dev", "eth0")
        nsexec(r, "ip", "link", "set", "wan", "up")
        nsexec(i, "ip", "link", "set", "eth0", "up")
        nsexec(r, "ip", "route", "add", "default", "via", WAN_INTERNET.split("/")[0])
        nsexec(r, "ip", "addr", "add", WAN_ROUTER6, "dev", "wan", "nodad")
        nsexec(i, "ip", "addr", "add", WAN_INTERNET6, "dev", "eth0", "nodad")
        nsexec(r, "ip", "-6", "route", "add", "default", "via", WAN_INTERNET6.split("/")[0])
        lan6 = str(ipaddress.IPv6Interface(LAN_ADDRESS6).network)
        nsexec(i, "ip", "-6", "route", "add", lan6, "via", WAN_ROUTER6.split("/")[0])
        nsexec(r, "ip", "link", "add", "br-lan", "type", "bridge")
        nsexec(r, "ip", "addr", "add", LAN_ADDRESS, "dev", "br-lan")
        nsexec(r, "ip", "addr", "add", LAN_ADDRESS6, "dev", "br-lan", "nodad")
        nsexec(r, "ip", "link", "set", "br-lan", "up")
        nsexec(r, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        nsexec(r, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
        # As on OpenWrt: frames between LAN ports stay on the bridge, not in the IP firewall
        # (a host with br_netfilter loaded would send them through every inet table).
        for family in ("iptables", "ip6tables", "arptables"):
            nsexec(r, "sysctl", "-qw", f"net.bridge.bridge-nf-call-{family}=0", check=False)
        # The upstream firewall's job on a real router (OpenWrt's fw4): masquerade to the WAN.
        nat = "table ip lab_upstream {\n chain post {\n  type nat hook postrouting priority srcnat;"
        nat += ' policy accept;\n  oifname "wan" masquerade\n }\n}\n'
        (self.run_dir / "upstream.nft").write_text(nat)
        nsexec(r, "nft", "-f", str(self.run_dir / "upstream.nft"))

    def _start_router_services(self) -> None:
        r = self.state.router
        cfg = self.gateway_config()
        self.ca.issue("portal", [PORTAL_HOST])
        # The router's own resolver (the portal talks to the wallet) is the fake internet's.
        etc = Path("/etc/netns") / r
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "resolv.conf").write_text(f"nameserver {DNS_IP}\n")
        self.gateway_config_path.write_text(gwconfig.to_toml(cfg))
        conf_path = _dnsmasq_files(self, cfg)
        if self.state.cloud:
            self._start_cloud()
            self.enrol_router()
        self.start_gateway()
        # Respawned when it ends, as procd respawns OpenWrt's dnsmasq: the gateway restarts
        # it to make it read the cloud's walled-garden names (gateway/garden/venue.py).
        self.spawn(
            "router-dnsmasq",
            r,
            "sh",
            "-c",
            RESPAWN,
            "respawn",
            "dnsmasq",
            "--keep-in-foreground",
            f"--conf-file={conf_path}",
            f"--pid-file={self.dnsmasq_pid_file}",
            "--log-dhcp",
            "--log-facility=-",
        )
        self.spawn(
            "router-portal",
            r,
            str(BIN / "plaza-portal"),
            "run",
            "--config",
            str(self.gateway_config_path),
        )
        for port in (80, 443):
            _wait_for(
                lambda port=port: _tcp_open(r, LAN_ADDRESS.split("/")[0], port),
                10,
                f"portal to listen on {port}",
            )
        for ip, port in ((WEB_IP, 80), (WEB_IP, 443), (WALLET_IP, 443), (f"[{WALLET_IP6}]", 443),
                         (OCSP_IP, 80)):  # fmt: skip
            _wait_for(
                lambda ip=ip, port=port: _tcp_open(self.state.internet, ip, port),
                10,
                f"the fake internet to listen on {ip}:{port}",
            )

    def start_gateway(self) -> None:
        self.spawn(
            "router-gateway",
            self.state.router,
            str(BIN / "plaza-gateway"),
            "--config",
            str(self.gateway_config_path),
            "run",
        )
        self.wait_gateway()

    def wait_gateway(self, timeout: float = 10) -> None:
        def ready() -> bool:
            try:
                self.control().call("ping")
            except ControlError:
                return False
            return True

        _wait_for(ready, timeout, "gateway control socket")

    def add_phone(self, index: int, dhcp: bool = True) -> Phone:
        """Wire phone `index` to the router; `dhcp=False` leaves it without an address until
        `start_dhcp` (or a caller running `dhcp_command` itself) gets it one."""
        r = self.state.router
        name = f"phone{index}"
        ns = f"{self.name}-{name}"
        mac = f"02:50:4c:00:{index // 256:02x}:{index % 256:02x}"
        sh("ip", "netns", "add", ns)
        nsexec(ns, "ip", "link", "set", "lo", "up")
        port = f"lan{index}"
        sh("ip", "link", "add", "eth0", "netns", ns, "address", mac, "type", "veth",
           "peer", port, "netns", r)  # fmt: skip
        # As a phone: SLAAC with temporary (privacy) addresses besides the stable one.
        for key, value in (("use_tempaddr", "2"), ("optimistic_dad", "1"), ("accept_ra", "1")):
            nsexec(ns, "sysctl", "-qw", f"net.ipv6.conf.eth0.{key}={value}")
        nsexec(r, "ip", "link", "set", port, "master", "br-lan")
        nsexec(r, "ip", "link", "set", port, "up")
        nsexec(ns, "ip", "link", "set", "eth0", "up")
        etc = Path("/etc/netns") / ns
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "resolv.conf").write_text("")
        _trust_lab_ca(etc, self.ca.cert_path)
        phone = Phone(name=name, netns=ns, mac=mac)
        self.state.phones.append(phone)
        self._save()
        if dhcp:
            self.start_dhcp(phone)
        return phone

    def dhcp_command(self, phone: Phone, once: bool = False) -> tuple[list[str], dict[str, str]]:
        """The phone's DHCP client: command line (run it in `phone.netns`) and extra environment.
        `once`: exit as soon as bound, keeping the address (no release), or fail after 20 tries."""
        name = phone.name
        mode = ["-q", "-n"] if once else ["-R", "-A", "1"]
        cmd = [
            "busybox", "udhcpc", "-f", *mode, "-i", "eth0", "-x", f"hostname:{name}", "-O", "114",
            "-s", str(HERE / "udhcpc.sh"), "-t", "20", "-T", "1",
        ]  # fmt: skip
        env = {
            "PLAZA_RESOLV": str(Path("/etc/netns") / phone.netns / "resolv.conf"),
            "PLAZA_LEASE": str(self.run_dir / f"{name}.lease"),
        }
        return cmd, env

    def start_dhcp(self, phone: Phone) -> int:
        """Start the phone's long-running DHCP client (owned by the lab, stopped by `down`)."""
        cmd, env = self.dhcp_command(phone)
        return self.spawn(f"{phone.name}-dhcp", phone.netns, *cmd, env=env)

    def rejoin_with_new_mac(self, name: str, mac: str, timeout: float = 20) -> Phone:
        """Rejoin as a phone with MAC randomization does: release the lease, take a new MAC,
        ask DHCP again; returns the phone with its new MAC and address."""
        phone = next(p for p in self.state.phones if p.name == name)
        self.stop(f"{name}-dhcp")  # udhcpc -R releases the old lease as it exits
        lease = self.run_dir / f"{name}.lease"
        lease.unlink(missing_ok=True)
        for cmd in (
            ("link", "set", "eth0", "down"),
            ("-4", "addr", "flush", "dev", "eth0"),
            ("link", "set", "eth0", "address", mac),
            ("link", "set", "eth0", "up"),
        ):
            nsexec(phone.netns, "ip", *cmd)
        phone.mac, phone.ipv4 = mac, None
        self._save()
        self.start_dhcp(phone)
        self.wait_leases(timeout)
        return phone

    def wait_leases(self, timeout: float = 20) -> None:
        def leased() -> bool:
            return all((self.run_dir / f"{p.name}.lease").exists() for p in self.state.phones)

        _wait_for(leased, timeout, "every phone to get a DHCP lease")
        for phone in self.state.phones:
            phone.ipv4 = (self.run_dir / f"{phone.name}.lease").read_text().strip()
        self._save()

        def learned() -> bool:
            """The gateway has read every phone's lease (name included) from dnsmasq's file."""
            try:
                known = {c["mac"]: c for c in self.control().clients()}
            except ControlError:
                return False
            return all(
                p.mac in known
                and known[p.mac]["ip"] == p.ipv4
                and known[p.mac]["hostname"] == p.name
                for p in self.state.phones
            )

        _wait_for(learned, timeout, "the gateway to learn every phone's lease")
        if self.gateway_config().lan.address6:  # and their SLAAC addresses (RA, then DAD)
            _wait_for(
                lambda: all(ipv6_of(p) for p in self.state.phones),
                timeout,
                "every phone to configure IPv6 from the router's advertisements",
            )

    # -- status ----------------------------------------------------------------------------
    def status(self) -> dict:
        if not self.is_up():
            return {"up": False, "name": self.name}
        phones = []
        for p in self.state.phones:
            phones.append(
                {**asdict(p), "ipv4": _ipv4_of(p.netns, "eth0") or p.ipv4, "ipv6": ipv6_of(p)}
            )
        cfg = self.gateway_config()
        return {
            "up": True,
            "name": self.name,
            "router": {
                "netns": self.state.router,
                "lan_interface": "br-lan",
                "lan_ipv4": cfg.lan.ip,
                "lan_ipv6": cfg.lan.ip6,
                "control_socket": self.control_socket,
                "config": str(self.gateway_config_path),
            },
            "internet": {
                "netns": self.state.internet,
                "dns_ipv4": DNS_IP,
                "web_ipv4": WEB_IP,
                "web_ipv6": WEB_IP6,
                "web_url": f"http://{internet.LAB_SITES[0]}/",
                "sites": list(internet.LAB_SITES),
            },
            "phones": phones,
            "portal_url": cfg.portal.url,
            "captive_api_url": cfg.portal.api_url,
            "wallet_url": cfg.wallet.issuer + "/",
            "ca_cert": str(self.ca.cert_path),
            "cloud": self._cloud_status(),
            "pids": dict(self.state.pids),
        }

    def _cloud_status(self) -> dict | None:
        if not self.state.cloud:
            return None
        account = labcloud.bootstrap(self.run_dir, VENUE_NAME, PORTAL_HOST)
        enrolled = Path(self.gateway_config().gateway.state_dir) / "cloud.json"
        device = json.loads(enrolled.read_text())["device_id"] if enrolled.exists() else None
        return {
            "url": labcloud.CLOUD_URL,
            "dashboard_url": labcloud.CLOUD_URL + "/dashboard/",
            "merchant_email": labcloud.MERCHANT_EMAIL,
            "merchant_password": labcloud.MERCHANT_PASSWORD,
            "merchant_id": account.merchant_id,
            "venue_id": account.venue_id,
            "device_id": device,
            "database_url": f"sqlite:///{labcloud.instance_dir(self.run_dir) / 'cloud.db'}",
        }

    # -- down ------------------------------------------------------------------------------
    def down(self) -> list[str]:
        """Remove every namespace, link, process and file the lab made; safe to repeat."""
        removed: list[str] = []
        for key, pid in list(self.state.pids.items()):
            _kill_and_reap(pid, signal.SIGTERM)
            self.state.pids.pop(key, None)
        prefix = f"{self.name}-"
        for ns in _netns_list():
            if ns.startswith(prefix) and _is_lab_ns(ns[len(prefix) :]):
                for pid in _netns_pids(ns):
                    _kill_and_reap(pid, signal.SIGKILL)
                sh("ip", "netns", "del", ns, check=False)
                removed.append(ns)
        for etc in Path("/etc/netns").glob(f"{prefix}*"):
            if _is_lab_ns(etc.name[len(prefix) :]):
                shutil.rmtree(etc, ignore_errors=True)
        shutil.rmtree(self.run_dir, ignore_errors=True)
        self.state = LabState(name=self.name)
        return removed


def _trust_lab_ca(etc: Path, ca_cert: Path) -> None:
    """Give the phone its own /etc/ssl (mounted by `ip netns exec`) whose trust store holds the
    lab CA only, as a phone with the venue's CA installed; the host's store is not touched."""
    ssl = etc / "ssl"
    (ssl / "certs").mkdir(parents=True, exist_ok=True)
    if Path("/etc/ssl/openssl.cnf").exists():
        shutil.copy("/etc/ssl/openssl.cnf", ssl / "openssl.cnf")
    shutil.copy(ca_cert, ssl / "certs" / "ca-certificates.crt")


def _is_lab_ns(suffix: str) -> bool:
    return suffix in ("router", "inet") or (suffix.startswith("phone") and suffix[5:].isdigit())


def _netns_list() -> list[str]:
    out = sh("ip", "netns", "list", check=False)
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _netns_pids(ns: str) -> list[int]:
    out = sh("ip", "netns", "pids", ns, check=False)
    return [int(x) for x in out.split() if x.isdigit()]


def _kill_and_reap(pid: int, sig: int) -> None:
    """Signal the process group the lab started, then make sure it is gone."""
    for target in (lambda s: os.killpg(pid, s), lambda s: os.kill(pid, s)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            target(sig)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG)[0]:
                return
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.02)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise LabError(f"timed out after {timeout:.0f}s waiting for {what}")


def _tcp_open(ns: str, ip: str, port: int) -> bool:
    out = nsexec(ns, "ss", "-Hltn", f"src {ip}:{port}", check=False)
    return bool(out.strip())


def ipv6_of(phone: Phone) -> list[str]:
    """The phone's global IPv6 addresses (SLAAC stable and temporary), usable ones only."""
    out = nsexec(phone.netns, "ip", "-j", "-6", "addr", "show", "dev", "eth0", "scope", "global",
                 check=False)  # fmt: skip
    try:
        return [
            a["local"]
            for iface in json.loads(out or "[]")
            for a in iface.get("addr_info", [])
            if "local" in a
            and not a.get("tentative")
            and not a.get("dadfailed")
            and not a.get("deprecated")
        ]
    except ValueError:
        return []


def _ipv4_of(ns: str, dev: str) -> str | None:
    out = nsexec(ns, "ip", "-j", "-4", "addr", "show", "dev", dev, check=False)
    try:
        for iface in json.loads(out or "[]"):
            for a in iface.get("addr_info", []):
                return a["local"]
    except ValueError:
        return None
    return None


def _internet_dns_conf() -> str:
    lines = [
        "# The fake internet's DNS: authoritative for the lab's names and the OS probe hosts.",
        f"listen-address={DNS_IP},{DNS_IP6}",
        "bind-interfaces",
        "no-resolv",
        "no-hosts",
        "no-dhcp-interface=",
        *(f"host-record={host},{WEB_IP},{WEB_IP6}" for host in internet.all_hosts()),
        *(f"host-record={host},{WALLET_IP},{WALLET_IP6}" for host in WALLET_IP_HOSTS),
        f"host-record={labcloud.CLOUD_HOST},{labcloud.CLOUD_IP}",
        f"host-record={internet.OCSP_HOST},{OCSP_IP}",
        # Windows' DNS probe (NCSI) expects this exact answer.
        "host-record=dns.msftncsi.com,131.107.255.255",
        "address=/#/",
    ]
    return "\n".join(lines) + "\n"


# A service supervisor in one line of sh: run "$@" again whenever it ends (after a breath, so
# a command that cannot start does not spin); SIGTERM ends the loop and the service with it.
RESPAWN = (
    "trap 'kill \"$child\" 2>/dev/null; exit 0' TERM INT; "
    'while :; do "$@" & child=$!; wait "$child"; sleep 0.2; done'
)


def _dnsmasq_files(lab: Lab, cfg: gwconfig.Config) -> Path:
    from gateway.stations import dnsmasq

    return dnsmasq.write(cfg, lab.router_dir)
