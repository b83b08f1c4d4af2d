"""The venue's default session policy as the merchant set it in the cloud.

An enrolled router's uplink writes the venue's cloud-managed config to
`<state_dir>/cloud-config.json` (gateway/uplink/sync.py); its `policy` (session and idle minutes,
total quota, rates) replaces the `[policy]`/`[session]` defaults of the TOML for sessions
opened from then on (running sessions keep the policy they started with, as a shopper was
told at login). The rest of `[policy]` stays the router's: per-direction quotas, trusted and
blocked MACs, the client limit, the longest session (`[session] max_minutes`: a longer cloud
session is cut to it, not refused). A missing, malformed or contradictory file leaves the TOML
defaults in force and is logged once per change of the file.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from gateway.stations.policy import Policy, PolicyError, intern, verify
from gateway.uplink.cloud_config import FILE, CloudConfigFile

log = logging.getLogger("plaza.venue_policy")

FIELDS = {
    "session_minutes": "session_minutes",
    "idle_minutes": "idle_seconds",
    "quota_total_mb": "quota_total_mb",
    "rate_down_kbit": "rate_down_kbit",
    "rate_up_kbit": "rate_up_kbit",
}


class VenuePolicy:
    """Watches the cloud config file (one stat per call) and says when the defaults change."""

    def __init__(self, state_dir: str | Path, base: Policy, max_minutes: int) -> None:
        self.file = CloudConfigFile(Path(state_dir) / FILE)
        self.base = base
        self.max_minutes = max_minutes
        self._first = True
        self.version: int | None = None

    def check(self) -> Policy | None:
        """The new defaults if the file changed since the last call (the TOML's if it was
        removed or is unusable), else None."""
        first, self._first = self._first, False
        if not self.file.changed():
            return None
        if self.file.document is None and not self.file.error:  # no file (any more)
            return None if first else self.base
        try:
            if self.file.error:
                raise PolicyError(self.file.error)
            policy = self._policy(self.file.section("policy") or {})
            self.version = self.file.version
        except (TypeError, AttributeError, PolicyError) as exc:
            log.error("cloud venue policy not used (%s); the router's own defaults apply", exc)
            return self.base
        log.info("venue policy from the cloud (config version %s): %s", self.version, policy)
        return policy

    def _policy(self, cloud: dict) -> Policy:
        changes = {}
        for key, field in FIELDS.items():
            if key not in cloud:
                continue
            value = cloud[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise PolicyError(f"{key} must be a whole number >= 0")
            changes[field] = value * 60 if key == "idle_minutes" else value
        policy = replace(self.base, **changes)
        if policy.session_minutes < 1:
            raise PolicyError("session_minutes must be at least 1")
        if policy.session_minutes > self.max_minutes:  # the venue's wish, within this router's cap
            log.warning(
                "cloud session length %d min is over this router's [session] max_minutes; "
                "sessions get %d min",
                policy.session_minutes,
                self.max_minutes,
            )
            policy = replace(policy, session_minutes=self.max_minutes)
        verify(policy, "cloud policy")
        return intern(policy)
