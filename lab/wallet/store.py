"""In-memory, thread-safe records: expiring codes, tokens and seen nonces; passes; messages.

The sandbox forgets everything on restart, like a wallet whose codes live seconds. `take`
removes atomically, which is what makes a code single-use even when two requests race for it.
Time comes from an injected clock so tests can expire a code without sleeping. Passes do not
expire (a merchant's link carries its own expiry) but are capped per user; so are messages, but
there the oldest make room, as in any inbox.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
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


@dataclass(frozen=True)
class WalletPass:
    """A link a merchant saved in a user's wallet, e.g. a one-tap Wi-Fi reconnect link."""

    title: str
    link: str  # checked against the merchant's registered origin when it was saved
    client: str  # the merchant app's registered name, shown beside the title
    added_at: float


class PassLimitError(Exception):
    """The user's wallet already holds as many passes as it may."""


class PassBook:
    """Each wallet user's passes, newest first, at most `limit` each, one per link.

    Saving a link that is already there replaces that pass rather than adding a second one, so
    a merchant that re-issues its link (a shopper opting in again) does not fill the wallet.
    A full wallet refuses instead of silently dropping the oldest pass the user chose to keep.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._passes: dict[str, list[WalletPass]] = {}
        self._lock = threading.Lock()

    def add(self, login: str, item: WalletPass) -> None:
        """Save `item` for `login`; PassLimitError if that would be one pass too many."""
        with self._lock:
            kept = [p for p in self._passes.get(login, []) if p.link != item.link]
            if len(kept) >= self.limit:
                raise PassLimitError(f"at most {self.limit} passes")
            self._passes[login] = [item, *kept]

    def for_user(self, login: str) -> list[WalletPass]:
        with self._lock:
            return list(self._passes.get(login, []))

    def remove(self, login: str, link: str) -> bool:
        """Delete the pass with this link; False if there was none."""
        with self._lock:
            before = self._passes.get(login, [])
            after = [p for p in before if p.link != link]
            self._passes[login] = after
            return len(after) != len(before)


@dataclass(frozen=True)
class WalletMessage:
    """A message a merchant app pushed to a user's wallet: an offer, a one-tap connect link."""

    id: str  # random: the inbox's tap URL, so one user cannot guess another's messages
    title: str
    body: str
    link: str  # https only; what a tap opens
    client: str  # the sending app's registered name, shown as the sender
    sent_at: float
    opened_at: float | None = None


class Inbox:
    """Each wallet user's messages, newest first, at most `limit` each.

    Unlike passes, which the user chose to keep, messages arrive unasked: a full inbox drops its
    oldest message rather than refusing the merchant, so a chatty app cannot lock the user out of
    new messages and the sender never learns how full someone's wallet is.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._messages: dict[str, list[WalletMessage]] = {}
        self._lock = threading.Lock()

    def add(self, login: str, item: WalletMessage) -> None:
        with self._lock:
            self._messages[login] = [item, *self._messages.get(login, [])][: self.limit]

    def for_user(self, login: str) -> list[WalletMessage]:
        with self._lock:
            return list(self._messages.get(login, []))

    def open(self, login: str, message_id: str, now: float) -> WalletMessage | None:
        """The user's message with this id, marked opened (first time only); None if absent."""
        with self._lock:
            held = self._messages.get(login, [])
            for i, item in enumerate(held):
                if item.id == message_id:
                    if item.opened_at is None:
                        held[i] = item = replace(item, opened_at=now)
                    return item
        return None
