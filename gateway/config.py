"""Gateway configuration: one TOML file, strictly validated before anything is touched.

Follows VyOS' get_config -> verify -> generate -> apply: `load()` refuses unknown keys and bad
values with a message naming the key, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

IFNAME_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,15}$")
HOSTNAME_RE = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
    r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$"
)


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

    @property
    def ip(self) -> str:
        return str(ipaddress.ip_interface(self.address).ip)

    @property
    def network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        return ipaddress.ip_interface(self.address).network


@dataclass(frozen=True)
class PortalConfig:
    hostname: str = "portal.plaza.test"
    port: int = 80  # where the portal itself is served on the LAN address
    intercept_port: int = 8080  # where captive TCP/80 is redirected; every request gets a 302
    merchant_name: str = "Plaza Demo Café"
    terms: str = "Be kind. Fair use applies. We may show you offers from this venue."
    secret_key_file: str = ""  # empty: <state_dir>/portal.key, created on first run

    @property
    def url(self) -> str:
        port = "" if self.port == 80 else f":{self.port}"
        return f"http://{self.hostname}{port}/"


@dataclass(frozen=True)
class SessionConfig:
    default_minutes: int = 60
    max_minutes: int = 1440


@dataclass(frozen=True)
class GatewayConfig:
    state_dir: str = "/var/lib/plaza"
    control_socket: str = "/run/plaza/control.sock"
    control_group: str = ""  # group allowed to use the control socket besides root
    log_level: str = "info"
    tick_seconds: float = 1.0


@dataclass(frozen=True)
class Config:
    gateway: GatewayConfig = field(default_factory=GatewayConfig)
    lan: LanConfig = field(default_factory=LanConfig)
    portal: PortalConfig = field(default_factory=PortalConfig)
    session: SessionConfig = field(default_factory=SessionConfig)

    @property
    def db_path(self) -> Path:
        return Path(self.gateway.state_dir) / "plaza.db"


SECTIONS: dict[str, type] = {
    "gateway": GatewayConfig,
    "lan": LanConfig,
    "portal": PortalConfig,
    "session": SessionConfig,
}


def _coerce(section: str, key: str, expected: Any, value: Any) -> Any:
    """Check one value against its field's type; tuples come from TOML arrays."""
    where = f"[{section}] {key}"
    if expected in ("int", int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if expected in ("float", float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if expected in ("str", str):
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if expected == "tuple[str, ...]":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: expected a list of strings, got {value!r}")
        return tuple(value)
    raise ConfigError(f"{where}: unsupported type {expected}")  # pragma: no cover


def from_dict(data: dict[str, Any]) -> Config:
    """Build a Config from parsed TOML, refusing unknown sections and keys."""
    built: dict[str, Any] = {}
    for section, value in data.items():
        cls = SECTIONS.get(section)
        if cls is None:
            raise ConfigError(f"unknown section [{section}] (known: {', '.join(sorted(SECTIONS))})")
        if not isinstance(value, dict):
            raise ConfigError(f"[{section}] must be a table")
        known = {f.name: f.type for f in fields(cls)}
        kwargs = {}
        for key, item in value.items():
            if key not in known:
                raise ConfigError(
                    f"unknown key '{key}' in [{section}] (known: {', '.join(sorted(known))})"
                )
            kwargs[key] = _coerce(section, key, known[key], item)
        built[section] = cls(**kwargs)
    config = Config(**built)
    verify(config)
    return config


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
    if not lan.upstream_dns:
        raise ConfigError("[lan] upstream_dns: at least one resolver is needed")
    for server in lan.upstream_dns:
        _check_ip("[lan] upstream_dns", server)
    if not HOSTNAME_RE.match(portal.hostname):
        raise ConfigError(f"[portal] hostname: not a valid host name: {portal.hostname!r}")
    _check_port("[portal] port", portal.port)
    _check_port("[portal] intercept_port", portal.intercept_port)
    if portal.port == portal.intercept_port:
        raise ConfigError("[portal] port and intercept_port must differ")
    if not portal.merchant_name.strip():
        raise ConfigError("[portal] merchant_name must not be empty")
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
    if gw.log_level not in ("debug", "info", "warning", "error"):
        raise ConfigError(
            f"[gateway] log_level: one of debug, info, warning, error; got {gw.log_level!r}"
        )
    if not 0.05 <= gw.tick_seconds <= 60:
        raise ConfigError("[gateway] tick_seconds must be between 0.05 and 60")


def load(path: str | Path) -> Config:
    """Read and validate a config file; every failure is a ConfigError naming the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        return from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def to_toml(config: Config) -> str:
    """Render a config back to TOML (the lab writes its router's config this way)."""
    out: list[str] = []
    for section in SECTIONS:
        obj = getattr(config, section)
        out.append(f"[{section}]")
        for f in fields(obj):
            value = getattr(obj, f.name)
            out.append(f"{f.name} = {_toml_value(value)}")
        out.append("")
    return "\n".join(out)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
