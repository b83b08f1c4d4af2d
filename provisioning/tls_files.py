"""The portal's certificate and key, carried by `flash --portal-cert/--portal-key`.

Why flash carries them: `verify` asks for the portal on HTTPS with a certificate the phones
trust, and without this a technician had to copy two files by hand before flashing (the
first thing a default-config captive portal gets wrong). Why they are checked on the laptop,
before anything is copied: a key that is not the certificate's, a certificate that expired
or names another host would pass the copy and then leave the portal unable to start, or the
phones' sign-in sheets showing a certificate warning. They go where the venue config's
`[portal] cert_file` and `key_file` say (so the config and the files cannot disagree); the key
is readable only by root and the group that reads the config (the portal's), like the config.
"""

from __future__ import annotations

import shlex
import tomllib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from provisioning.errors import USAGE, ProvisionError

DEFAULT_HOSTNAME = "portal.plaza.test"  # gateway.config.PortalConfig's default


@dataclass(frozen=True)
class PortalTLS:
    """A checked certificate chain and its key, and where the router's config wants them."""

    chain: bytes
    key: bytes
    cert_file: str
    key_file: str
    hostname: str


def _refuse(message: str, hint: str) -> ProvisionError:
    return ProvisionError(USAGE, message, hint)


def destinations(venue_config: Path | None) -> tuple[str, str, str]:
    """(hostname, cert_file, key_file) from the venue config's [portal] table."""
    if venue_config is None:
        raise _refuse(
            "--portal-cert needs --venue-config",
            "the venue config's [portal] cert_file and key_file say where the files go",
        )
    try:
        portal = tomllib.loads(venue_config.read_text()).get("portal", {})
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise _refuse(f"{venue_config}: {exc}", "fix the venue config (TOML)") from exc
    cert_file, key_file = portal.get("cert_file", ""), portal.get("key_file", "")
    if not (isinstance(cert_file, str) and cert_file and isinstance(key_file, str) and key_file):
        raise _refuse(
            f"{venue_config}: [portal] names no cert_file and key_file",
            'add e.g. cert_file = "/etc/plaza/portal.pem" and key_file = "/etc/plaza/portal.key"',
        )
    hostname = portal.get("hostname", DEFAULT_HOSTNAME)
    return str(hostname), cert_file, key_file


def covers(names: list[str], hostname: str) -> bool:
    """RFC 6125: an exact DNS name, or a wildcard standing for exactly the left-most label."""
    host = hostname.lower().rstrip(".")
    for name in (n.lower().rstrip(".") for n in names):
        if name == host:
            return True
        if name.startswith("*.") and "." in host and host.split(".", 1)[1] == name[2:]:
            return True
    return False


def load(
    cert_path: Path, key_path: Path, venue_config: Path | None, now: datetime | None = None
) -> PortalTLS:
    """Read and check the pair against the venue config's portal host name; ProvisionError
    (exit 2) saying what is wrong with which file."""
    hostname, cert_file, key_file = destinations(venue_config)
    try:
        chain, key_pem = cert_path.read_bytes(), key_path.read_bytes()
    except OSError as exc:
        raise _refuse(f"{exc.filename}: {exc.strerror}", "check the path") from exc
    try:
        certs = x509.load_pem_x509_certificates(chain)
    except ValueError as exc:
        raise _refuse(f"{cert_path}: not a PEM certificate chain", "export it as PEM") from exc
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError as exc:
        raise _refuse(f"{key_path}: the key is encrypted", "the portal starts unattended: "
                      "give it the key without a passphrase") from exc  # fmt: skip
    except ValueError as exc:
        raise _refuse(f"{key_path}: not a PEM private key", "export it as PEM") from exc
    leaf = certs[0]
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if leaf.public_key().public_bytes(*spki) != key.public_key().public_bytes(*spki):
        raise _refuse(
            f"{key_path} is not the key of {cert_path}",
            "give the key the certificate was issued for (the first certificate in the chain)",
        )
    now = now or datetime.now(UTC)
    if now >= leaf.not_valid_after_utc:
        raise _refuse(
            f"{cert_path} expired on {leaf.not_valid_after_utc:%Y-%m-%d}", "renew the certificate"
        )
    if now < leaf.not_valid_before_utc:
        raise _refuse(
            f"{cert_path} is valid only from {leaf.not_valid_before_utc:%Y-%m-%d %H:%M} UTC",
            "check the laptop's clock, or wait",
        )
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = san.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        names = []
    if not covers(names, hostname):
        raise _refuse(
            f"{cert_path} is for {', '.join(names) or 'no DNS name'}, not {hostname}",
            "the venue config's [portal] hostname must be one of the certificate's names",
        )
    return PortalTLS(chain, key_pem, cert_file, key_file, hostname)


def install_commands(spool_chain: str, spool_key: str, tls: PortalTLS, config: str) -> str:
    """Shell commands that put the uploaded files in place: the chain world-readable, the key
    0640 with the group of the router's config (the portal's group), then the spool removed.
    The paths are the venue config's as they stand: they are where the portal will open them."""
    chain, key = tls.cert_file, tls.key_file
    q = shlex.quote
    return (
        f"install -D -m 0644 {q(spool_chain)} {q(chain)} && "
        f"install -D -m 0640 {q(spool_key)} {q(key)} && "
        f"chgrp --reference={q(config)} {q(key)}; rc=$?; rm -f {q(spool_chain)} {q(spool_key)}; "
        "exit $rc"
    )
