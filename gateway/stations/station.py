"""A station as the session table knows it, and the operations the table hands the daemon.

The words the session state machine (gateway/stations/sessions.py) and its users share: a
station's state, why a session ended, the refusal, address checks, the `Client` record, and
the operations (`Save`, `Allow`, `EndSession`, ...) the table returns for the gateway to apply,
database first, kernel second. Kept apart from the table so the state machine reads on its own
and the store, accounting and control modules can name a client without the rules.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import StrEnum

from gateway.stations.policy import Policy
from plaza.validators import MAC_RE


class State(StrEnum):
    CAPTIVE = "captive"
    AUTHORIZED = "authorized"


class Reason(StrEnum):
    """Why a session ended; reported with the usage record."""

    LOGOUT = "logout"
    ADMIN = "admin"
    SESSION_TIMEOUT = "session-timeout"
    IDLE_TIMEOUT = "idle-timeout"
    QUOTA = "quota"
    BLOCKED = "blocked"
    LEFT = "left"
    ADDRESS_TAKEN = "address-taken"
    ADDRESS_CHANGED = "address-changed"


class SessionError(ValueError):
    """A request that the state machine refuses; str() is shown to the operator."""


def normalize_mac(value: str) -> str:
    mac = value.strip().lower().replace("-", ":")
    if not MAC_RE.match(mac):
        raise SessionError(f"not a MAC address: {value!r}")
    if int(mac[:2], 16) & 1:
        raise SessionError(f"not a station MAC (multicast): {value!r}")
    return mac


def normalize_ip(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        raise SessionError(f"not an IP address: {value!r}") from None


@dataclass(slots=True)
class Client:
    mac: str
    ip: str | None = None  # the IPv4 address (DHCP lease or neighbour)
    ip6: tuple[str, ...] = ()  # IPv6 addresses seen for this MAC (SLAAC, ND), oldest first
    hostname: str = ""
    state: State = State.CAPTIVE
    session_id: str | None = None
    started_at: float | None = None
    expires_at: float | None = None
    first_seen: float = 0.0
    last_seen: float = 0.0
    last_login_at: float | None = None  # for the opt-in MAC trust only
    last_end_reason: str | None = None
    policy: Policy | None = None  # the running session's effective policy
    trusted: bool = False  # the running session was opened for a trusted MAC

    def addresses(self) -> tuple[str, ...]:
        return ((self.ip,) if self.ip else ()) + self.ip6

    def elements(self) -> list[tuple[str, str]]:
        return [(address, self.mac) for address in self.addresses()]

    def view(self, now: float) -> dict:
        remaining = None
        if self.state is State.AUTHORIZED and self.expires_at is not None:
            remaining = max(0, int(self.expires_at - now))
        return {
            "mac": self.mac,
            "ip": self.ip,
            "ipv6": list(self.ip6),
            "hostname": self.hostname,
            "state": str(self.state),
            "session_id": self.session_id,
            "started_at": self.started_at,
            "expires_at": self.expires_at,
            "seconds_remaining": remaining,
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "trusted": self.trusted,
            "policy": self.policy.view() if self.policy else None,
        }


# Operations returned to the daemon.
@dataclass(frozen=True)
class Allow:
    element: tuple[str, str]


@dataclass(frozen=True)
class Revoke:
    element: tuple[str, str]


@dataclass(frozen=True)
class Save:
    client: Client


@dataclass(frozen=True)
class EndSession:
    session_id: str
    mac: str
    ip: str | None
    started_at: float
    ended_at: float
    reason: Reason


@dataclass(frozen=True)
class Presence:
    """A station arrived (got its first address) or left (lost its last one): for the cloud's
    presence view and push (gateway/uplink/sync.py). Only the MAC: who the shopper is travels
    separately, and only if they opted in (the `shopper` control op)."""

    kind: str  # "join" | "leave"
    mac: str
    at: float


@dataclass(frozen=True)
class Forget:
    """(address, MAC) pairs a station no longer holds: the detector must notice them anew
    (gateway/stations/detect.py SeenSets) if they come back."""

    elements: tuple[tuple[str, str], ...]


Op = Allow | Revoke | Save | EndSession | Presence | Forget
