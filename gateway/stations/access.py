"""The venue's trusted and blocked MACs as changed at run time (plaza-ctl, the cloud).

The config file's `[policy] trusted_macs` / `blocked_macs` are the venue's standing lists; an
operator blocking an abusive phone or trusting a new till should not need to edit the file and
restart. Run-time entries are kept beside the database in `<state_dir>/access.json` (written
atomically: a daemon killed mid-write keeps the old lists) and added to the config's; what the
config lists can only be lifted by editing the config, so a restart never silently changes
who is let in.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

from gateway.files import write_atomic
from gateway.stations.policy import Access
from gateway.stations.station import SessionError, normalize_mac

log = logging.getLogger("plaza.access")

FILE = "access.json"
ACTIONS = ("block", "unblock", "trust", "untrust")
MAX_ENTRIES = 10_000


@dataclass
class RuntimeAccess:
    path: Path
    trusted: set[str] = field(default_factory=set)
    blocked: set[str] = field(default_factory=set)

    @classmethod
    def load(cls, state_dir: str | Path) -> RuntimeAccess:
        path = Path(state_dir) / FILE
        try:
            data = json.loads(path.read_text())
            lists = {
                key: {normalize_mac(m) for m in data.get(key, [])} for key in ("trusted", "blocked")
            }
        except FileNotFoundError:
            return cls(path)
        except (OSError, ValueError, SessionError, AttributeError, TypeError) as exc:
            log.error("ignoring unreadable %s (%s); the config's lists still apply", path, exc)
            return cls(path)
        return cls(path, lists["trusted"], lists["blocked"])

    def effective(self, config: Access) -> Access:
        return replace(
            config,
            trusted=frozenset(config.trusted | self.trusted),
            blocked=frozenset(config.blocked | self.blocked),
        )

    def change(self, action: str, mac: str, config: Access) -> None:
        """Apply one operator action; SessionError (a one-line reason) if it cannot be."""
        if action not in ACTIONS:
            raise SessionError(f"'action' must be one of {', '.join(ACTIONS)}")
        mac = normalize_mac(mac)
        listed = config.blocked if action in ("block", "unblock") else config.trusted
        target = self.blocked if action in ("block", "unblock") else self.trusted
        if action in ("unblock", "untrust"):
            if mac in listed:
                kind = "blocked_macs" if action == "unblock" else "trusted_macs"
                raise SessionError(f"{mac} is in the config's [policy] {kind}; edit it there")
            target.discard(mac)
        else:
            if len(target) >= MAX_ENTRIES:
                raise SessionError(f"at most {MAX_ENTRIES} run-time entries per list")
            target.add(mac)
            (self.trusted if action == "block" else self.blocked).discard(mac)
        self.save()

    def save(self) -> None:
        data = {"trusted": sorted(self.trusted), "blocked": sorted(self.blocked)}
        write_atomic(self.path, json.dumps(data).encode(), 0o600)

    def view(self, config: Access) -> dict[str, list[str]]:
        return {
            "trusted": sorted(config.trusted | self.trusted),
            "blocked": sorted(config.blocked | self.blocked),
            "runtime_trusted": sorted(self.trusted),
            "runtime_blocked": sorted(self.blocked),
        }
