"""Image-baked enrolment, the router's half: on first boot, a router built with the merchant's
fleet secret and a venue tag asks the cloud to join (cloud/fleet.py) and waits, asking again
every `interval` seconds, until the merchant approves it in the dashboard; then it holds an
identity exactly as `plaza-gateway enrol` leaves it (device.key, cloud.json).

The key is made once and kept while waiting (`fleet-pending.key`, 0600), so a reboot asks
with the same key and stays one row in the merchant's list. Run by
`plaza-provision-agent fleet-enrol` from plaza-fleet-enrol.service, beside the gateway (which
runs in its local mode meanwhile) rather than before it: a router waits for approval for as
long as the merchant takes.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gateway.files import write_atomic
from gateway.uplink.identity import CLOUD_FILE, ID_RE, KEY_FILE, Identity
from plaza import signing
from provisioning.errors import CLAIM_REFUSED, CLOUD_UNREACHABLE, ProvisionError

PENDING_KEY = "fleet-pending.key"
Post = Callable[[str, dict[str, Any]], tuple[int, dict[str, Any]]]  # url, body -> status, json


@dataclass
class FleetEnrolment:
    state_dir: Path
    cloud_url: str
    secret: str
    venue_tag: str
    post: Post
    clock: Callable[[], float]
    sleep: Callable[[float], None]
    version: str = ""
    hostname: str = ""

    def key(self) -> Any:
        path = self.state_dir / PENDING_KEY
        try:
            return signing.load_private(path.read_bytes())
        except FileNotFoundError:
            key = signing.new_key()
            self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
            write_atomic(path, signing.private_pem(key), 0o600)
            return key

    def once(self) -> Identity | None:
        """One ask: the identity once approved, None while pending or the cloud is away."""
        key = self.key()
        body = {
            "fleet_secret": self.secret,
            "public_key": signing.public_b64(key),
            "venue_tag": self.venue_tag,
            "hostname": self.hostname or socket.gethostname(),
            "version": self.version,
        }
        try:
            status, answer = self.post(self.cloud_url.rstrip("/") + "/api/v1/enrol/fleet", body)
        except OSError:
            return None
        if status == 202 or status >= 500:
            return None
        if status != 201:
            raise ProvisionError(
                CLAIM_REFUSED,
                f"the cloud refused this router ({status}): {answer.get('error', '')}",
                "ask the merchant: a refused router, or an image with an old fleet secret",
            )
        identity = Identity(
            device_id=str(answer.get("device_id", "")),
            venue_id=str(answer.get("venue_id", "")),
            cloud_url=self.cloud_url.rstrip("/"),
            cloud_public_key=str(answer.get("cloud_public_key", "")),
        )
        signing.load_public(identity.cloud_public_key)
        if not ID_RE.fullmatch(identity.device_id):
            raise ProvisionError(CLOUD_UNREACHABLE, "the cloud's answer is not understood")
        write_atomic(self.state_dir / KEY_FILE, signing.private_pem(key), 0o600)
        cloud_json = json.dumps(asdict(identity), indent=2).encode() + b"\n"
        write_atomic(self.state_dir / CLOUD_FILE, cloud_json, 0o644)
        os.unlink(self.state_dir / PENDING_KEY)
        return identity

    def run(self, interval: float = 30.0, timeout: float = 0.0, most: float = 0.0) -> Identity:
        """Ask until approved (timeout 0: for ever, as a first-boot service does). With `most`
        above `interval` the wait doubles after each ask up to `most`: a router left waiting
        for days (or a fleet booted at once against a cloud that is down) asks less and less
        often, while one approved in its first minutes still joins within a few asks."""
        if (self.state_dir / CLOUD_FILE).exists():
            return Identity.load(self.state_dir)
        start, wait = self.clock(), interval
        while True:
            identity = self.once()
            if identity is not None:
                return identity
            if timeout and self.clock() - start >= timeout:
                raise ProvisionError(
                    CLOUD_UNREACHABLE,
                    f"not approved after {timeout:.0f} s (or the cloud did not answer)",
                    "the merchant approves it in the dashboard under Routers waiting",
                )
            self.sleep(wait)
            wait = min(wait * 2, most) if most > interval else interval
