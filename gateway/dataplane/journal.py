"""The changes a firewall commits while a snapshot is being read in a worker thread.

A snapshot (kernel.Snapshot) reads the kernel while the daemon's thread keeps committing
logins and logouts; what was committed meanwhile must be replayed onto the reading, or left
out of a repair, or the reading would undo it. The kernel's firewall and its test double
(tests/fakes/firewall.py) keep this bookkeeping alike, so it lives here once.
"""

from __future__ import annotations

from gateway.dataplane.grants import Changes


class Journal:
    """Records commits only while at least one snapshot is open (nothing to keep otherwise).
    An entry is the `Changes` committed, or None for a whole-table replacement, after which
    nothing read before it can be trusted."""

    def __init__(self) -> None:
        self._entries: list[Changes | None] | None = None  # None: no snapshot open
        self._open = 0

    @property
    def active(self) -> bool:
        """Whether a snapshot is open (commits are being recorded)."""
        return self._entries is not None

    def record(self, changes: Changes | None) -> None:
        """A commit: `changes`, or None when the whole table was replaced."""
        if self._entries is not None:
            self._entries.append(changes)

    def open(self) -> int:
        """A snapshot opens; returns its mark, the position of the next commit."""
        if self._entries is None:
            self._entries = []
        self._open += 1
        return len(self._entries)

    def close(self) -> bool:
        """A snapshot closes; True when it was the last one, so what snapshots installed is
        the owner's to drop (its commits are no longer recorded)."""
        self._open -= 1
        if self._open:
            return False
        self._entries = None
        return True

    def since(self, mark: int) -> list[Changes | None]:
        """What was committed since `mark` (nothing when no snapshot is open)."""
        return self._entries[mark:] if self._entries else []
