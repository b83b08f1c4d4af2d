"""Enrolment: claiming this router for a venue with the one-time code the merchant got.

Why the router makes its key here and sends only the public half: the private key never leaves
the state dir (0600), so nobody, the cloud included, can sign as this router. The cloud's
public key comes back and is pinned (gateway/uplink/identity.py): commands must verify with it.
"""

from __future__ import annotations

import json
import logging
import socket
from dataclasses import asdict

from gateway.config import ConfigError, check_cloud_url
from gateway.files import write_atomic
from gateway.uplink import cloud_config
from gateway.uplink.identity import CLOUD_FILE, ID_RE, KEY_FILE, Identity, UplinkError
from gateway.uplink.transport import (
    API,
    CONNECT_TIMEOUT,
    READ_TIMEOUT,
    Refused,
    Transport,
    error,
    version,
)
from plaza import signing

log = logging.getLogger("plaza.uplink")


def enrol(
    transport: Transport,
    cloud_url: str,
    claim_code: str,
    *,
    force: bool = False,
    hostname: str = "",
) -> Identity:
    """Claim this router for a venue: a new Ed25519 key, its public half sent with the
    one-time claim code; the private key and what the cloud answered are kept in the state
    dir, and `transport` signs with them from now on. Refuses to replace an existing
    enrolment unless `force`."""
    state_dir = transport.state_dir
    try:
        base = check_cloud_url("cloud URL", cloud_url)
    except ConfigError as exc:
        raise UplinkError(str(exc)) from None
    claim_code = claim_code.strip()
    if not claim_code or len(claim_code) > 128 or not claim_code.isprintable():
        raise UplinkError("the claim code must be 1-128 printable characters")
    cloud_file = state_dir / CLOUD_FILE
    if cloud_file.exists() and not force:
        try:
            where = f" as {Identity.load(state_dir).device_id}"
        except UplinkError:
            where = ""
        raise UplinkError(f"already enrolled{where} ({cloud_file}); use --force to enrol again")
    key = signing.new_key()
    body = {
        "claim_code": claim_code,
        "public_key": signing.public_b64(key),
        "hostname": hostname or socket.gethostname(),
        "version": version(),
    }
    resp = transport.send(
        "POST",
        base + API + "/enrol",
        json.dumps(body).encode(),
        {"Content-Type": "application/json"},
        (CONNECT_TIMEOUT, READ_TIMEOUT),
    )
    if resp.status_code != 201:
        raise Refused(resp.status_code, f"enrolment refused: {error(resp)}")
    try:
        data = resp.json()
        identity = Identity(
            device_id=str(data["device_id"]),
            venue_id=str(data["venue_id"]),
            cloud_url=base,
            cloud_public_key=str(data["cloud_public_key"]),
        )
        signing.load_public(identity.cloud_public_key)
        if not ID_RE.fullmatch(identity.device_id):
            raise ValueError("malformed device_id")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UplinkError(f"enrolment answer not understood: {exc}") from None
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
    write_atomic(state_dir / KEY_FILE, signing.private_pem(key), 0o600)
    # Another venue's config must not linger, nor its version answer If-None-Match.
    (state_dir / cloud_config.FILE).unlink(missing_ok=True)
    write_atomic(cloud_file, json.dumps(asdict(identity), indent=2).encode() + b"\n", 0o644)
    transport.adopt(identity, key)
    log.info("enrolled as %s for venue %s at %s", identity.device_id, identity.venue_id, base)
    return identity
