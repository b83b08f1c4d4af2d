"""What a merchant may see of people: no group under MIN_GROUP, and no device identifier that
outlives its day.

Small groups: every count of people (or of their acts: claims, redemptions, bookings,
tickets) is shown as "<5" when it is 1 to 4 and otherwise rounded DOWN to a multiple of 5
("at least"). Rounding is what keeps a hidden cell hidden: totals, other steps and other
tables are rounded the same way, so subtracting shown figures leaves a range at least 9 wide
(two floors each hide 0-4), which always contains all of 1-4 and never names one of them. A
plain "hide 1-4 and show the rest exactly" fails that: a row's exact total minus its exact
cells is the hidden cell. Zero is shown as 0 (nobody is not a group).

Device identifiers: the funnel counts devices across steps (a MAC, or the wallet user a step
is recorded under, resolved to the MAC the venue's router linked to that user) after hashing
them with the salt of their UTC day (`SaltBook`). A salt is random, held in this process's
memory only, and forgotten when its day is over; nothing hashed is stored, so the page's
per-day sets cannot be joined across days or to any table, and a device is "distinct" within
a day only (the window's totals add days: device-days).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading

MIN_GROUP = 5
DAY = 86400


def floor_count(n: int) -> int:
    """What a chart may draw for `n` people: 0 for 0-4, else `n` rounded down to MIN_GROUP."""
    return 0 if n < MIN_GROUP else n - n % MIN_GROUP


def shown(n: int) -> str:
    """The text for `n` people: "0", "<5", or "≥N" with N a multiple of 5."""
    if n <= 0:
        return "0"
    if n < MIN_GROUP:
        return f"<{MIN_GROUP}"
    return f"≥{floor_count(n):,}"


class SaltBook:
    """One random salt per UTC day, in memory, the past days' dropped as soon as a later day
    is asked for (or `forget_before` is called). Thread-safe: the page may run on threads."""

    def __init__(self) -> None:
        self._salts: dict[int, bytes] = {}
        self._lock = threading.Lock()

    def salt(self, day: int) -> bytes:
        with self._lock:
            if day not in self._salts:
                self._salts[day] = secrets.token_bytes(32)
            return self._salts[day]

    def forget_before(self, day: int) -> None:
        with self._lock:
            for old in [d for d in self._salts if d < day]:
                del self._salts[old]

    def held(self) -> list[int]:
        with self._lock:
            return sorted(self._salts)

    def pseudonym(self, day: int, device: str) -> str:
        return pseudonym(self.salt(day), device)


def pseudonym(salt: bytes, device: str) -> str:
    """HMAC-SHA-256 of the identifier under the salt: without the salt, not even a guess of
    the MAC can be checked against it."""
    return hmac.new(salt, device.encode(), hashlib.sha256).hexdigest()[:32]
