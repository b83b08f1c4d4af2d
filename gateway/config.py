"""Gateway configuration: one TOML file, strictly validated before anything is touched.

Follows VyOS' get_config -> verify -> generate -> apply: `load()` refuses unknown keys and bad
values with a message naming the key, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway import config_toml, config_uci
from gateway.stations.policy import Access, Policy, PolicyError
from gateway.stations.policy import verify as verify_policy
from plaza.validators import HOSTNAME_RE, MAX_KBIT, MAX_MB, garden_name
from plaza.wallet.config import WalletConfig

IFNAME_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,15}\Z")


class ConfigError(ValueError):
    """A configuration problem, phrased for the person who wrote the file."""


@dataclass(frozen=True)
class LanConfig:
    interface: str = "br-lan"
    address: str = "198.19.0.1/24"  # router's LAN address and prefix (RFC 2544 range in the lab)
    dhcp_start: str = "198.19.0.100"
    dhcp_end: str = "198.19.0.250"
    lease_time: str = "12h"
    upstream_dns: tuple[str, ...] = ("192.0.2.53",)
    # The router's IPv6 address and /64 on the LAN; empty: no IPv6 on the LAN. Phones get
    # addresses by SLAAC from dnsmasq's router advertisements, and options (DNS, the RFC 8910
    # captive-portal API) by stateless DHCPv6.
    address6: str = ""
    lease_file: str = ""  # dnsmasq's lease file (the daemon watches it); "": in state_dir

    @property
    def ip(self) -> str:
        return str(ipaddress.ip_interface(self.address).ip)

    @property
    def ip6(self) -> str:
        return str(ipaddress.ip_interface(self.address6).ip) if self.address6 else ""

    @property
    def network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        return ipaddress.ip_interface(self.address).network


@dataclass(frozen=True)
class PortalConfig:
    hostname: str = "portal.plaza.test"
    port: int = 80  # where the portal itself is served on the LAN address
    https_port: int = 443  # the portal and the RFC 8908 API over TLS, when a certificate is set
    intercept_port: int = 8080  # where captive TCP/80 is redirected; every request gets a 302
    cert_file: str = ""  # PEM chain for `hostname`; empty: HTTP only (not for production)
    key_file: str = ""
    merchant_name: str = "Plaza Demo Café"
    merchant_name_zh: str = ""  # shown for zh-CN; empty: merchant_name
    terms: str = "Be kind. Fair use applies. We may show you offers from this venue."
    terms_zh: str = ""
    logo_url: str = ""  # https URL or a path under the portal's /static/
    brand_color: str = "#0b7a75"
    venue_info: str = ""  # text of the venue page (RFC 8908 venue-info-url)
    click_through: bool = False  # offer "accept terms and continue" besides the wallet login
    secret_key_file: str = ""  # empty: <state_dir>/portal.key, created on first run

    @property
    def tls(self) -> bool:
        return bool(self.cert_file)

    @property
    def url(self) -> str:
        """The portal's front page: where every intercepted request is redirected."""
        if self.tls:
            port = "" if self.https_port == 443 else f":{self.https_port}"
            return f"https://{self.hostname}{port}/"
        port = "" if self.port == 80 else f":{self.port}"
        return f"http://{self.hostname}{port}/"

    @property
    def api_url(self) -> str:
        """The RFC 8908 API URL carried in DHCP option 114 / DHCPv6 103 / RA 37."""
        return self.url + "api/captive"


@dataclass(frozen=True)
class OfferConfig:
    title: str
    text: str = ""
    title_zh: str = ""
    text_zh: str = ""
    url: str = ""  # https link for "see the offer"; shown, never redirected to


@dataclass(frozen=True)
class GardenConfig:
    """Walled garden: what a captive client may reach before login (by domain)."""

    domains: tuple[str, ...] = ()  # besides the wallet's own hosts, which are always in
    # Plain-HTTP hosts a captive phone must reach (OCSP/CRL responders): TCP/80 to their
    # addresses passes unredirected. Dedicated hosts only: plain HTTP cannot be checked by name.
    http_domains: tuple[str, ...] = ()
    # The command (an argv, run without a shell) that restarts the router's dnsmasq so it
    # reads the cloud's garden names (gateway/garden/venue.py). OpenWrt:
    # ["/etc/init.d/dnsmasq", "restart"]; systemd: ["systemctl", "restart", "dnsmasq"].
    # Empty: the names take effect at dnsmasq's next start.
    dnsmasq_restart: tuple[str, ...] = ()


@dataclass(frozen=True)
class ReconnectConfig:
    """Returning shoppers: a signed, revocable token held by the wallet, not a MAC."""

    enabled: bool = True
    token_days: int = 90
    trust_mac: bool = False  # re-admit a known MAC without login; off by default, explicit


@dataclass(frozen=True)
class SessionConfig:
    default_minutes: int = 60
    max_minutes: int = 1440


@dataclass(frozen=True)
class PolicyConfig:
    """The venue's default limits per session (0 or empty: none) and who may be online.

    The session's length is [session] default_minutes; everything else a session may do is
    here. The portal or an operator may override any limit per client at `auth`.
    """

    idle_minutes: int = 0
    quota_up_mb: int = 0  # 1 MB = 1,000,000 bytes
    quota_down_mb: int = 0
    quota_total_mb: int = 0
    rate_up_kbit: int = 0  # 1 kbit = 1,000 bit/s
    rate_down_kbit: int = 0
    max_clients: int = 0  # authorized at once, trusted MACs not counted
    trusted_macs: tuple[str, ...] = ()  # always online, no portal, no limits (staff, the till)
    blocked_macs: tuple[str, ...] = ()  # never online

    def defaults(self, session_minutes: int) -> Policy:
        return Policy(
            session_minutes=session_minutes,
            idle_seconds=self.idle_minutes * 60,
            quota_up_mb=self.quota_up_mb,
            quota_down_mb=self.quota_down_mb,
            quota_total_mb=self.quota_total_mb,
            rate_up_kbit=self.rate_up_kbit,
            rate_down_kbit=self.rate_down_kbit,
        )

    def access(self) -> Access:
        return Access(
            trusted=frozenset(_mac(m) for m in self.trusted_macs),
            blocked=frozenset(_mac(m) for m in self.blocked_macs),
            max_clients=self.max_clients,
        )


@dataclass(frozen=True)
class AccountingConfig:
    """How often the kernel's per-client counters are read, and usage records are written."""

    poll_seconds: float = 5.0  # also how soon an idle or exhausted session is noticed
    interim_seconds: int = 300  # an interim usage record per session this often; 0: none


# -- [cloud]: the uplink to the Plaza cloud (gateway/uplink/, docs/cloud-protocol.md) --
# https only; plain http to the loopback address alone, for tests and a cloud on the same box.
CLOUD_URL_RE = re.compile(
    r"(https://[A-Za-z0-9.-]+(:\d{1,5})?|http://(127\.0\.0\.1|\[::1\])(:\d{1,5})?)"
    r"(/[A-Za-z0-9._~/-]*)?"
)


@dataclass(frozen=True)
class CloudConfig:
    """Where the router's uplink goes and how often. Enabled by enrolment, not by a switch:
    the uplink runs when `<state_dir>/cloud.json` exists (`plaza-gateway enrol` writes it)."""

    url: str = ""  # empty: the URL the router was enrolled with (cloud.json)
    ca_bundle: str = ""  # PEM trust anchors for the cloud's TLS; empty: the system store
    heartbeat_seconds: float = 30.0
    upload_seconds: float = 5.0  # at most one usage batch this often while records wait


def check_cloud_url(where: str, url: str) -> str:
    """The cloud base URL without a trailing slash, or a ConfigError naming `where`."""
    if not CLOUD_URL_RE.fullmatch(url):
        raise ConfigError(
            f"{where}: expected an https:// URL (http:// only to 127.0.0.1 or [::1]), got {url!r}"
        )
    return url.rstrip("/")


def verify_cloud(cloud: CloudConfig) -> None:
    if cloud.url:
        check_cloud_url("[cloud] url", cloud.url)
    if cloud.ca_bundle and not cloud.ca_bundle.startswith("/"):
        raise ConfigError(f"[cloud] ca_bundle: must be an absolute path: {cloud.ca_bundle!r}")
    if not 1 <= cloud.heartbeat_seconds <= 30:  # the dashboard: offline after 90 s of silence
        raise ConfigError(
            "[cloud] heartbeat_seconds must be between 1 and 30 (the cloud shows a router "
            "offline after 90 s without one)"
        )
    if not 0.5 <= cloud.upload_seconds <= 3600:
        raise ConfigError("[cloud] upload_seconds must be between 0.5 and 3600")


@dataclass(frozen=True)
class GatewayConfig:
    enabled: bool = True  # false: `run` and the portal refuse to start (UCI ships '0')
    state_dir: str = "/var/lib/plaza"
    control_socket: str = "/run/plaza/control.sock"
    control_group: str = ""  # group allowed to use the control socket besides root
    log_level: str = "info"
    metrics_listen: str = "127.0.0.1:9100"  # Prometheus GET /metrics; "off" to disable
    tick_seconds: float = 1.0


@dataclass(frozen=True)
class Config:
    gateway: GatewayConfig = field(default_factory=GatewayConfig)
    lan: LanConfig = field(default_factory=LanConfig)
    portal: PortalConfig = field(default_factory=PortalConfig)
    session: SessionConfig = field(default_factory=SessionConfig)
    wallet: WalletConfig = field(default_factory=WalletConfig)
    garden: GardenConfig = field(default_factory=GardenConfig)
    reconnect: ReconnectConfig = field(default_factory=ReconnectConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    accounting: AccountingConfig = field(default_factory=AccountingConfig)
    cloud: CloudConfig = field(default_factory=CloudConfig)
    offers: tuple[OfferConfig, ...] = ()

    @property
    def db_path(self) -> Path:
        return Path(self.gateway.state_dir) / "plaza.db"


SECTIONS: dict[str, type] = {
    "gateway": GatewayConfig,
    "lan": LanConfig,
    "portal": PortalConfig,
    "session": SessionConfig,
    "wallet": WalletConfig,
    "garden": GardenConfig,
    "reconnect": ReconnectConfig,
    "policy": PolicyConfig,
    "accounting": AccountingConfig,
    "cloud": CloudConfig,
}
LISTS: dict[str, type] = {"offers": OfferConfig}  # arrays of tables: [[offers]]


def from_dict(data: dict[str, Any]) -> Config:
    """Build a Config from parsed TOML, refusing unknown sections and keys."""
    built: dict[str, Any] = {}
    for section, value in data.items():
        if section in LISTS:
            if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
                raise ConfigError(f"[[{section}]] must be an array of tables")
            built[section] = tuple(
                _build(f"{section}[{i}]", LISTS[section], v) for i, v in enumerate(value)
            )
            continue
        cls = SECTIONS.get(section)
        if cls is None:
            known = ", ".join(sorted([*SECTIONS, *LISTS]))
            raise ConfigError(f"unknown section [{section}] (known: {known})")
        if not isinstance(value, dict):
            raise ConfigError(f"[{section}] must be a table")
        built[section] = _build(section, cls, value)
    config = Config(**built)
    verify(config)
    return config


def _build(section: str, cls: type, value: dict[str, Any]) -> Any:
    try:
        return config_toml.build(section, cls, value)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _check_ip(where: str, value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        raise ConfigError(f"{where}: not an IP address: {value!r}") from None


def _check_port(where: str, value: int) -> None:
    if not 1 <= value <= 65535:
        raise ConfigError(f"{where}: port out of range 1-65535: {value}")


def verify(config: Config) -> None:
    """Cross-field checks that types alone cannot express."""
    lan, portal, session, gw = config.lan, config.portal, config.session, config.gateway
    if not IFNAME_RE.match(lan.interface):
        raise ConfigError(f"[lan] interface: not a valid interface name: {lan.interface!r}")
    try:
        iface = ipaddress.ip_interface(lan.address)
    except ValueError:
        raise ConfigError(f"[lan] address: expected ADDRESS/PREFIX, got {lan.address!r}") from None
    if iface.version != 4 or "/" not in lan.address:
        raise ConfigError(f"[lan] address: expected an IPv4 ADDRESS/PREFIX, got {lan.address!r}")
    for key in ("dhcp_start", "dhcp_end"):
        ip = _check_ip(f"[lan] {key}", getattr(lan, key))
        if ip not in iface.network:
            raise ConfigError(f"[lan] {key}: {ip} is outside the LAN {iface.network}")
    if int(ipaddress.ip_address(lan.dhcp_start)) > int(ipaddress.ip_address(lan.dhcp_end)):
        raise ConfigError("[lan] dhcp_start is after dhcp_end")
    if not re.fullmatch(r"\d+[smhd]?|infinite", lan.lease_time):
        raise ConfigError(
            f"[lan] lease_time: expected e.g. '12h' or '3600', got {lan.lease_time!r}"
        )
    if lan.address6:
        try:
            iface6 = ipaddress.IPv6Interface(lan.address6)
        except ValueError:
            iface6 = None
        if iface6 is None or "/" not in lan.address6 or iface6.network.prefixlen != 64:
            raise ConfigError(
                f"[lan] address6: expected an IPv6 ADDRESS/64 (SLAAC needs a /64), "
                f"got {lan.address6!r}"
            )
        if iface6.ip.is_link_local or iface6.ip.is_multicast:
            raise ConfigError(f"[lan] address6: must be a global or ULA address: {lan.address6}")
    lease = lan.lease_file  # also written into dnsmasq's config: one printable absolute path
    if lease and (not lease.startswith("/") or lease.endswith("/") or not lease.isprintable()):
        raise ConfigError(f"[lan] lease_file: must be a file's absolute path, got {lease!r}")
    if not lan.upstream_dns:
        raise ConfigError("[lan] upstream_dns: at least one resolver is needed")
    for server in lan.upstream_dns:
        _check_ip("[lan] upstream_dns", server)
    if not HOSTNAME_RE.match(portal.hostname):
        raise ConfigError(f"[portal] hostname: not a valid host name: {portal.hostname!r}")
    _check_port("[portal] port", portal.port)
    _check_port("[portal] intercept_port", portal.intercept_port)
    if not portal.merchant_name.strip():
        raise ConfigError("[portal] merchant_name must not be empty")
    _check_port("[portal] https_port", portal.https_port)
    if len({portal.port, portal.https_port, portal.intercept_port}) != 3:
        raise ConfigError("[portal] port, https_port and intercept_port must all differ")
    if bool(portal.cert_file) != bool(portal.key_file):
        raise ConfigError("[portal] cert_file and key_file go together")
    if not re.fullmatch(r"#[0-9a-fA-F]{6}", portal.brand_color):
        raise ConfigError(f"[portal] brand_color: expected #rrggbb, got {portal.brand_color!r}")
    if portal.logo_url and not re.fullmatch(r"(https://|/static/)[^\s\"'<>]+", portal.logo_url):
        raise ConfigError("[portal] logo_url: expected an https:// URL or a /static/ path")
    if len(portal.api_url.encode()) > 255:
        raise ConfigError("[portal] hostname too long: the API URL must fit DHCP's 255 bytes")
    for i, offer in enumerate(config.offers):
        if not offer.title.strip():
            raise ConfigError(f"[[offers]] #{i + 1}: title must not be empty")
        if offer.url and not offer.url.startswith("https://"):
            raise ConfigError(f"[[offers]] #{i + 1}: url must be https://")
    verify_wallet(config.wallet)
    verify_cloud(config.cloud)
    for domain in config.garden.http_domains:
        if not HOSTNAME_RE.match(domain):
            raise ConfigError(f"[garden] http_domains: not a host name: {domain!r}")
    for domain in config.garden.domains:
        if garden_name(domain) is None:
            raise ConfigError(f"[garden] domains: not a domain name: {domain!r}")
    restart = config.garden.dnsmasq_restart
    if restart and (len(restart) > 16 or not all(a and "\0" not in a for a in restart)):
        raise ConfigError("[garden] dnsmasq_restart: a command as a list of 1 to 16 words")
    if not 1 <= config.reconnect.token_days <= 400:
        raise ConfigError("[reconnect] token_days must be between 1 and 400")
    if session.default_minutes < 1:
        raise ConfigError("[session] default_minutes must be at least 1")
    if session.max_minutes < session.default_minutes:
        raise ConfigError("[session] max_minutes must be >= default_minutes")
    if not gw.state_dir.startswith("/"):
        raise ConfigError(f"[gateway] state_dir: must be an absolute path: {gw.state_dir!r}")
    if not gw.control_socket.startswith("/"):
        raise ConfigError(
            f"[gateway] control_socket: must be an absolute path: {gw.control_socket!r}"
        )
    from gateway.listen import parse_listen

    try:
        parse_listen(gw.metrics_listen)
    except ValueError as exc:
        raise ConfigError(f"[gateway] metrics_listen: {exc}") from None
    if gw.log_level not in ("debug", "info", "warning", "error"):
        raise ConfigError(
            f"[gateway] log_level: one of debug, info, warning, error; got {gw.log_level!r}"
        )
    if not 0.05 <= gw.tick_seconds <= 60:
        raise ConfigError("[gateway] tick_seconds must be between 0.05 and 60")
    verify_policy_section(config)
    acct = config.accounting
    if not 0.2 <= acct.poll_seconds <= 60:
        raise ConfigError("[accounting] poll_seconds must be between 0.2 and 60")
    if acct.interim_seconds and not acct.poll_seconds <= acct.interim_seconds <= 86400:
        raise ConfigError(
            "[accounting] interim_seconds must be 0 (final records only) or between "
            "poll_seconds and 86400"
        )


def _mac(value: str) -> str:
    """A station MAC in the form the kernel lists it (lower case, colons)."""
    mac = value.strip().lower().replace("-", ":")
    if not re.fullmatch(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}", mac) or int(mac[:2], 16) & 1:
        raise ConfigError(f"not a station MAC address: {value!r}")
    return mac


def verify_policy_section(config: Config) -> None:
    """Limits in range, MAC lists well-formed, and no policy that contradicts another."""
    pol = config.policy
    limits = {
        "idle_minutes": 7 * 24 * 60,
        "quota_up_mb": MAX_MB,
        "quota_down_mb": MAX_MB,
        "quota_total_mb": MAX_MB,
        "rate_up_kbit": MAX_KBIT,
        "rate_down_kbit": MAX_KBIT,
        "max_clients": 1_000_000,
    }
    for key, top in limits.items():
        if not 0 <= getattr(pol, key) <= top:
            raise ConfigError(f"[policy] {key} must be between 0 (no limit) and {top}")
    seen: dict[str, str] = {}
    for key in ("trusted_macs", "blocked_macs"):
        for value in getattr(pol, key):
            try:
                mac = _mac(value)
            except ConfigError as exc:
                raise ConfigError(f"[policy] {key}: {exc}") from None
            if mac in seen:
                if seen[mac] == key:
                    raise ConfigError(f"[policy] {key}: {mac} is listed twice")
                raise ConfigError(
                    f"[policy] {mac} is in both trusted_macs and blocked_macs; pick one"
                )
            seen[mac] = key
    try:
        verify_policy(pol.defaults(config.session.default_minutes), "[policy]")
    except PolicyError as exc:
        raise ConfigError(str(exc)) from None


def verify_wallet(wallet: WalletConfig) -> None:
    if wallet.dialect not in ("oidc", "alipay"):
        raise ConfigError(f"[wallet] dialect: 'oidc' or 'alipay', got {wallet.dialect!r}")
    for key in ("issuer", "authorize_url", "gateway_url"):
        url = getattr(wallet, key)
        if not re.fullmatch(r"https://[A-Za-z0-9.-]+(:\d+)?(/\S*)?", url):
            raise ConfigError(f"[wallet] {key}: must be an https:// URL, got {url!r}")
    if wallet.dialect == "oidc" and not wallet.client_id:
        raise ConfigError("[wallet] client_id is required for dialect 'oidc'")
    if wallet.dialect == "alipay":
        if wallet.alipay_scope not in ("auth_base", "auth_user"):
            raise ConfigError("[wallet] alipay_scope: 'auth_base' or 'auth_user'")
        for key in ("app_id", "app_private_key_file", "wallet_public_key_file"):
            if not getattr(wallet, key):
                raise ConfigError(f"[wallet] {key} is required for dialect 'alipay'")


def wallet_hosts(wallet: WalletConfig) -> list[str]:
    """The wallet's host names: always in the walled garden."""
    from urllib.parse import urlsplit

    oidc = wallet.dialect == "oidc"
    urls = [wallet.issuer] if oidc else [wallet.authorize_url, wallet.gateway_url]
    return sorted({urlsplit(u).hostname or "" for u in urls} - {""})


def load(path: str | Path) -> Config:
    """Read and validate a config file, TOML or UCI (which: config_uci.is_uci); every failure
    is a ConfigError naming the file."""
    path = Path(path)
    is_uci = config_uci.is_uci(path)
    try:
        data = config_uci.read(path, SECTIONS, LISTS) if is_uci else config_toml.read(path)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    try:
        return from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {config_uci.rename(str(exc)) if is_uci else exc}") from None


def to_toml(config: Config) -> str:
    """Render a config back to TOML (the lab writes its router's config this way)."""
    return config_toml.dump(config, SECTIONS, LISTS)
