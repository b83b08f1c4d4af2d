"""The venue config the cloud manages, as the router keeps it: `<state_dir>/cloud-config.json`.

The uplink (gateway/uplink/sync.py) writes the file atomically whenever the merchant changes the
venue in the dashboard: {"version": n, "config": {"branding", "offers", "policy", "garden"}}. Three
readers act on it without a restart: the portal (branding and offers, portal/venue.py), the gateway
(default session policy, gateway/stations/venue_policy.py) and the daemon (walled garden,
gateway/garden/venue.py). Each holds its own instance of this one watcher, so "changed" means the
same to each: the file's identity (inode, size, mtime) moved; one stat() per check, a read only on
change. (One shared instance would save the daemon a stat() per tick, but then a change seen by one
reader would have to be handed to the other: not worth it.)
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

FILE = "cloud-config.json"
MAX_BYTES = 1024 * 1024


class CloudConfigFile:
    """Says when the file changed, and what it now holds."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._identity: tuple[int, int, int] | None = None
        self._checked = False
        self.document: dict[str, Any] | None = None  # the parsed file; None: absent or unusable
        self.error = ""  # why the present file is unusable ("" when it is fine or absent)

    def changed(self) -> bool:
        """True when the file appeared, changed or went away since the last call (and on the
        first call, whatever it found); `document` and `error` then describe the file."""
        problem = ""
        try:
            st = os.stat(self.path)
            identity: tuple[int, int, int] | None = (st.st_ino, st.st_size, st.st_mtime_ns)
        except FileNotFoundError:
            identity = None
        except OSError as exc:
            identity, problem = (-1, -1, -1), f"cannot stat: {exc.strerror}"
        if self._checked and identity == self._identity:
            return False
        self._checked, self._identity = True, identity
        self.document, self.error = None, problem
        if identity is None or problem:
            return True
        try:
            if identity[1] > MAX_BYTES:
                raise ValueError(f"larger than {MAX_BYTES} bytes")
            document = json.loads(self.path.read_bytes())
            if not isinstance(document, dict) or not isinstance(document.get("config"), dict):
                raise ValueError('not {"version": n, "config": {...}}')
        except (OSError, ValueError) as exc:
            self.error = str(exc)
            return True
        self.document = document
        return True

    @property
    def version(self) -> Any:
        return self.document.get("version") if self.document else None

    def section(self, name: str) -> Any:
        """One part of the venue config (`policy`, `garden`, ...); None if absent."""
        return self.document["config"].get(name) if self.document else None
