"""Sign-in throttling: a few wrong passwords per (client address, e-mail), then a pause.

Kept in process memory, not in the database. That is a deliberate trade: a password guess
costs the attacker one request but the database one write if the counter lived there, and
the schema stays the router API's. The cost is that each cloud instance counts on its own,
so behind a load balancer with N instances an attacker gets up to N x MAX_FAILURES tries per
window (docs/scale-out.md: sticky routing of /dashboard/login, or a shared store, closes
that). The table is bounded: the oldest entries go first when it is full.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

MAX_FAILURES = 5
WINDOW_SECONDS = 15 * 60
MAX_ENTRIES = 10_000


@dataclass
class _Entry:
    failures: int
    first_at: float


class LoginLimiter:
    """Counts failed sign-ins per key within a fixed window that starts at the first
    failure. Time is passed in (the app clock), so tests move it instead of sleeping."""

    def __init__(
        self,
        max_failures: int = MAX_FAILURES,
        window: float = WINDOW_SECONDS,
        max_entries: int = MAX_ENTRIES,
    ) -> None:
        self.max_failures, self.window, self.max_entries = max_failures, window, max_entries
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def retry_after(self, key: tuple[str, str], now: float) -> int:
        """Seconds until `key` may try again; 0 when it may try now."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return 0
            if now - entry.first_at >= self.window:
                del self._entries[key]
                return 0
            if entry.failures < self.max_failures:
                return 0
            return max(1, int(entry.first_at + self.window - now + 0.999))

    def failed(self, key: tuple[str, str], now: float) -> None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or now - entry.first_at >= self.window:
                entry = self._entries[key] = _Entry(0, now)
            entry.failures += 1
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def succeeded(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._entries.pop(key, None)
