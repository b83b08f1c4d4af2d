"""The router-local half of `plaza-provision verify`, run ON the router by
`plaza-provision-agent check`. Each check says what it proves and, when it fails, what to do.

What these can and cannot prove, honestly:
- nft: the `inet plaza` table is in the kernel (the gateway loaded its ruleset).
- dhcp-option-114: the config makes dnsmasq announce the RFC 8910 API URL, the file the
  running dnsmasq was started with carries it, and something listens on UDP 67; it is NOT a
  DHCP exchange with a client (that needs a LAN-side probe: the VM end-to-end test does one).
- portal-https: a TLS handshake to the LAN address with the portal's host name as SNI, the
  chain verified against the router's trust store (or `--portal-ca`) and the name checked.
- enrolled: the router holds an identity (cloud.json); whether the cloud sees its heartbeats
  is asked of the cloud by the laptop (provisioning/cloud_status.py).
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

Line = dict[str, str]


def line(name: str, ok: bool, reason: str) -> Line:
    return {"check": name, "status": "ok" if ok else "fail", "reason": reason}


def udp_listening(
    port: int, proc_files: tuple[str, ...] = ("/proc/net/udp", "/proc/net/udp6")
) -> bool:
    want = f":{port:04X}"
    for name in proc_files:
        try:
            rows = Path(name).read_text().splitlines()[1:]
        except OSError:
            continue
        if any(row.split()[1].endswith(want) for row in rows if len(row.split()) > 1):
            return True
    return False


def nft_check() -> Line:
    proc = subprocess.run(
        ["nft", "list", "table", "inet", "plaza"], capture_output=True, text=True, check=False
    )
    if proc.returncode == 0:
        return line("nft", True, "table inet plaza is loaded")
    return line(
        "nft",
        False,
        "table inet plaza is not loaded: is plaza-gateway running? "
        f"journalctl -u plaza-gateway ({proc.stderr.strip()[:120]})",
    )


RUN_CONF = (
    "/run/plaza-dnsmasq/plaza-dnsmasq.conf"  # written by plaza-dnsmasq.service's ExecStartPre
)


def dhcp_check(
    config: Any, run_conf: Path = Path(RUN_CONF), listening: Callable[[int], bool] | None = None
) -> Line:
    """Option 114 in the config, in the file the running dnsmasq was started with, and UDP 67
    served."""
    from gateway.stations import dnsmasq

    option = dnsmasq.capport_lines(config)
    if not option:
        return line(
            "dhcp-option-114",
            False,
            "the portal has no certificate ([portal] cert_file), "
            "so no https API URL can be announced: set one in the venue config",
        )
    try:
        started_with = run_conf.read_text()
    except OSError:
        return line(
            "dhcp-option-114",
            False,
            f"{run_conf} is missing: plaza-dnsmasq has not "
            "started (systemctl status plaza-dnsmasq)",
        )
    if option[0] not in started_with:
        return line(
            "dhcp-option-114",
            False,
            "the running dnsmasq was started with an older config: systemctl restart plaza-dnsmasq",
        )
    if not (listening or udp_listening)(67):
        return line(
            "dhcp-option-114",
            False,
            "nothing listens on UDP 67: start plaza-dnsmasq (systemctl status plaza-dnsmasq)",
        )
    return line(
        "dhcp-option-114",
        True,
        f"in the running dnsmasq's config ({option[0]}) and UDP 67 is served; no DHCP "
        "exchange was made from the LAN",
    )


def tls_check(config: Any, cafile: str = "", timeout: float = 5.0) -> Line:
    """Verified as a phone would: the router's system trust store (what public CAs phones
    trust), or `cafile` for a lab CA; never the cloud's ca_bundle, which says nothing about
    what phones accept."""
    portal = config.portal
    if not portal.cert_file:
        return line(
            "portal-https",
            False,
            "[portal] cert_file is empty: the portal is HTTP "
            "only; set a certificate for " + portal.hostname,
        )
    context = ssl.create_default_context(cafile=cafile or None)
    address = (config.lan.ip, portal.https_port)
    try:
        with (
            socket.create_connection(address, timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=portal.hostname) as tls,
        ):
            cert = tls.getpeercert() or {}
    except ssl.SSLCertVerificationError as exc:
        return line(
            "portal-https",
            False,
            f"the certificate does not verify for "
            f"{portal.hostname}: {exc.verify_message}; install a chain for that name",
        )
    except (OSError, ssl.SSLError) as exc:
        return line(
            "portal-https",
            False,
            f"no TLS answer on {address[0]}:{address[1]}: {exc}; systemctl status plaza-portal",
        )
    return line(
        "portal-https", True, f"{portal.hostname} verified, valid until {cert.get('notAfter', '?')}"
    )


def enrolled_check(config: Any) -> Line:
    path = Path(config.gateway.state_dir) / "cloud.json"
    try:
        identity = json.loads(path.read_text())
    except (OSError, ValueError):
        return line(
            "enrolled",
            False,
            "the router holds no enrolment: run plaza-provision flash with a claim code",
        )
    return line(
        "enrolled",
        True,
        f"device {identity.get('device_id')} of venue "
        f"{identity.get('venue_id')} at {identity.get('cloud_url')}",
    )


def router_checks(config_path: Path, root: str = "", portal_ca: str = "") -> list[Line]:
    from gateway import config as configmod

    try:
        config = configmod.load(str(config_path))
    except (configmod.ConfigError, OSError) as exc:
        return [line("config", False, f"{config_path}: {exc}")]
    return [
        line("config", True, f"{config_path} is valid"),
        nft_check(),
        dhcp_check(config, Path(root + RUN_CONF) if root not in ("", "/") else Path(RUN_CONF)),
        tls_check(config, portal_ca),
        enrolled_check(config),
    ]
