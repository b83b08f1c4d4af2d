"""What one session may do (time, idle time, data, bandwidth), and who may have a session at all.

Pure values and decisions: the venue's defaults come from `[policy]`, the portal or an operator
may override any of them per client at `auth`, and the result is stored with the session so a
running session keeps what it was granted when the venue's defaults change. The kernel enforces
the data and bandwidth parts (gateway/dataplane/ruleset.py); the session table enforces the rest.

Units are the ones data plans use: 1 MB = 1,000,000 bytes, 1 kbit/s = 1,000 bit/s.
0 means "no limit" everywhere.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from plaza.validators import MAX_KBIT, MAX_MB

MB = 1_000_000
MAX_IDLE_SECONDS = 7 * 86400
# A policer needs room for a burst or TCP never reaches the rate: 100 ms worth of the rate,
# and never less than ten full-size Ethernet frames (measured: see gateway/dataplane/ruleset.py).
BURST_SECONDS = 0.1
MIN_BURST_BYTES = 15_140


class PolicyError(ValueError):
    """A policy that cannot be applied; str() names the field for the operator."""


@dataclass(frozen=True, slots=True)
class Policy:
    """The effective limits of one session. `session_minutes` 0: no time limit (trusted)."""

    session_minutes: int = 60
    idle_seconds: int = 0
    quota_up_mb: int = 0
    quota_down_mb: int = 0
    quota_total_mb: int = 0
    rate_up_kbit: int = 0
    rate_down_kbit: int = 0

    # -- what the kernel needs --------------------------------------------------------------
    @property
    def quota_up_bytes(self) -> int:
        return self.quota_up_mb * MB

    @property
    def quota_down_bytes(self) -> int:
        return self.quota_down_mb * MB

    @property
    def quota_total_bytes(self) -> int:
        return self.quota_total_mb * MB

    @property
    def rate_up_bytes(self) -> int:
        """Bytes per second (the unit nft's `limit` takes)."""
        return self.rate_up_kbit * 125

    @property
    def rate_down_bytes(self) -> int:
        return self.rate_down_kbit * 125

    @property
    def has_quota(self) -> bool:
        return bool(self.quota_up_mb or self.quota_down_mb or self.quota_total_mb)

    def view(self) -> dict[str, int]:
        """The effective policy as the control API shows it (0 = unlimited)."""
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> Policy | None:
        """Read a stored policy; keys this version does not know are ignored (downgrade)."""
        if not text:
            return None
        data = json.loads(text)
        known = {f.name for f in fields(cls)}
        return intern(cls(**{k: int(v) for k, v in data.items() if k in known}))


_INTERNED: dict[Policy, Policy] = {}
MAX_INTERNED = 4096


def intern(policy: Policy) -> Policy:
    """One shared object per distinct policy: at a venue most sessions have the same
    limits, and 10,000 sessions need not hold 10,000 equal copies."""
    found = _INTERNED.get(policy)
    if found is not None:
        return found
    if len(_INTERNED) >= MAX_INTERNED:  # every session its own limits: sharing does not pay
        _INTERNED.clear()
    _INTERNED[policy] = policy
    return policy


# A trusted MAC (staff devices, the till) is exempt from every limit.
UNLIMITED = Policy(session_minutes=0)

# Overrides the control API accepts at `auth`: request key -> (Policy field, multiplier, max).
OVERRIDES: dict[str, tuple[str, int, int]] = {
    "minutes": ("session_minutes", 1, 0),  # max: the venue's [session] max_minutes
    "idle_minutes": ("idle_seconds", 60, MAX_IDLE_SECONDS // 60),
    "idle_seconds": ("idle_seconds", 1, MAX_IDLE_SECONDS),
    "quota_up_mb": ("quota_up_mb", 1, MAX_MB),
    "quota_down_mb": ("quota_down_mb", 1, MAX_MB),
    "quota_total_mb": ("quota_total_mb", 1, MAX_MB),
    "rate_up_kbit": ("rate_up_kbit", 1, MAX_KBIT),
    "rate_down_kbit": ("rate_down_kbit", 1, MAX_KBIT),
}


def overrides_from(request: Mapping[str, Any], max_minutes: int) -> dict[str, int]:
    """Pick and check the policy overrides of an `auth` request; the values are Policy fields.

    Every value must be a whole number; 0 lifts a limit, except for `minutes` which must be
    between 1 and the venue's maximum (a shopper never gets an endless session by request).
    """
    found: dict[str, int] = {}
    for key, (name, scale, top) in OVERRIDES.items():
        value = request.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise PolicyError(f"'{key}' must be an integer")
        if key == "minutes":
            if not 1 <= value <= max_minutes:
                raise PolicyError(f"minutes must be between 1 and {max_minutes}")
        elif not 0 <= value <= top:
            raise PolicyError(f"'{key}' must be between 0 (no limit) and {top}")
        if name in found:
            raise PolicyError("give either 'idle_minutes' or 'idle_seconds', not both")
        found[name] = value * scale
    return found


def effective(base: Policy, overrides: Mapping[str, int]) -> Policy:
    """`base` (the venue's defaults, or the running session's policy) with overrides applied.

    A quota that the total makes unreachable is refused; an idle time longer than a short
    session given per client is not (it simply does not fire), only in the venue's defaults.
    """
    policy = replace(base, **overrides)
    verify(policy, "", idle=False)
    return policy


def verify(policy: Policy, where: str, idle: bool = True) -> None:
    """Limits that contradict each other are refused rather than silently never firing."""
    prefix = f"{where} " if where else ""
    for direction in ("up", "down"):
        part = getattr(policy, f"quota_{direction}_mb")
        if part and policy.quota_total_mb and part > policy.quota_total_mb:
            raise PolicyError(
                f"{prefix}quota_{direction}_mb ({part}) is larger than quota_total_mb "
                f"({policy.quota_total_mb}): it could never be reached"
            )
    if idle and policy.session_minutes and policy.idle_seconds >= policy.session_minutes * 60:
        raise PolicyError(
            f"{prefix}idle timeout ({policy.idle_seconds} s) is not shorter than the session "
            f"({policy.session_minutes} min): it could never fire"
        )


def burst_bytes(rate_bytes: int) -> int:
    """The policer's bucket for a rate in bytes per second."""
    return max(int(rate_bytes * BURST_SECONDS), MIN_BURST_BYTES)


@dataclass(frozen=True)
class Access:
    """Who may be online: trusted MACs always (no portal), blocked never, and at most
    `max_clients` others at once (0: no limit). Trusted MACs do not count: the till must get
    online on a busy day."""

    trusted: frozenset[str] = frozenset()
    blocked: frozenset[str] = frozenset()
    max_clients: int = 0

    def refuse(self, mac: str, online: int, already_authorized: bool) -> str | None:
        """Why `mac` may not be authorized now (None: it may). `online`: authorized clients
        that count towards the limit."""
        if mac in self.blocked:
            return f"{mac} is blocked by the venue ([policy] blocked_macs)"
        if already_authorized or mac in self.trusted:
            return None
        if self.max_clients and online >= self.max_clients:
            return (
                f"the venue's limit of {self.max_clients} clients online is reached; "
                "try again later"
            )
        return None
