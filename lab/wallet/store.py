"""In-memory, thread-safe, expiring records: codes, tokens, seen nonces.

The sandbox forgets everything on restart, like a wallet whose codes live seconds. `take`
removes atomically, which is what makes a code single-use even when two requests race for it.
Time comes from an injected clock so tests can expire a code without sleeping.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Expiring(Generic[T]):
    def __init__(self, seconds: float, clock: Callable[[], float]) -> None:
        self.seconds = seconds
        self.clock = clock
        self._items: dict[str, tuple[float, T]] = {}
        self._lock = threading.Lock()

    def put(self, key: str, value: T, seconds: float | None = None) -> None:
        now = self.clock()
        with self._lock:
            for stale in [k for k, (until, _) in self._items.items() if until <= now]:
                del self._items[stale]
            self._items[key] = (now + (self.seconds if seconds is None else seconds), value)

    def get(self, key: str) -> T | None:
        with self._lock:
            item = self._items.get(key)
        if item is None or item[0] <= self.clock():
            return None
        return item[1]

    def take(self, key: str) -> T | None:
        """Remove and return a live record: exactly one caller ever gets it."""
        with self._lock:
            item = self._items.pop(key, None)
        if item is None or item[0] <= self.clock():
            return None
        return item[1]

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not None
