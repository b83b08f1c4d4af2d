"""Who this router is to the cloud: what enrolment wrote in the state dir, and the uplink's
one exception.

Two files, apart: `cloud.json` (device id, venue, cloud URL and the cloud's pinned public key;
readable, the portal signs its push subscription against it) and `device.key` (the router's
Ed25519 private key, 0600). Why this is a module of its own: the portal reads the identity
(portal/push.py) and must not pull in the uplink's HTTP client, so it imports only this, one of
the gateway's public seams (tests/unit/test_imports.py).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.config import check_cloud_url
from plaza import signing

KEY_FILE = "device.key"
CLOUD_FILE = "cloud.json"
ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")  # device and command ids as the cloud makes them


class UplinkError(Exception):
    """The uplink could not do something; str() is one line without secrets."""

    status: int | None = None


class NotEnrolled(UplinkError):
    """No `cloud.json`: the uplink stays off until `plaza-gateway enrol`."""


@dataclass(frozen=True)
class Identity:
    """What enrolment established (`<state_dir>/cloud.json`; the private key is apart)."""

    device_id: str
    venue_id: str
    cloud_url: str
    cloud_public_key: str  # base64 of the 32 raw bytes: pinned, commands must verify with it

    @classmethod
    def load(cls, state_dir: Path) -> Identity:
        path = state_dir / CLOUD_FILE
        try:
            data = json.loads(path.read_text())
            identity = cls(**{k: str(data[k]) for k in cls.__dataclass_fields__})
            signing.load_public(identity.cloud_public_key)
            check_cloud_url(str(path), identity.cloud_url)
        except FileNotFoundError:
            raise NotEnrolled(f"not enrolled: no {path} (run plaza-gateway enrol)") from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UplinkError(f"{path}: unreadable or incomplete: {exc}") from None
        return identity


def load_key(state_dir: Path) -> Any:
    """The router's private key (`<state_dir>/device.key`), or UplinkError naming the file."""
    path = state_dir / KEY_FILE
    try:
        return signing.load_private(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise UplinkError(f"{path}: unusable device key: {exc}") from None
