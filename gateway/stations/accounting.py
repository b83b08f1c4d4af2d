"""Per-session usage from the kernel's counters, as pure bookkeeping: readings and `now` in,
usage records and decisions (idle, quota) out.

Why the numbers can be trusted across crashes and reloads:

- The kernel's per-session counters only grow, and they outlive the daemon. Each session keeps
  `reported`, the totals already written to the outbox, in the same database transaction as the
  records themselves. A record carries `total - reported`, so a daemon killed before the commit
  writes the same delta again later, and one killed after it never writes it twice.
- A counter that goes backwards was recreated (the table was deleted by hand, a counter reset):
  what it counted before joins `offset`, so totals stay continuous. What the old counter counted
  after the last reading is lost; the gateway carries counters over whenever it replaces the
  table itself (objects are created with `initial()`), so this is only for outside meddling.
- Totals never fall below `reported`, so a delta is never negative.
- A power cut loses the commits SQLite had not synced, and the kernel's counters with them:
  the traffic since then is not counted, never counted twice. For that, a record leaves the
  router only once it is on disk (outbox.Outbox.pending syncs the log before the uplink
  sends): a record sent and then forgotten would come back under its key with other figures.

What is counted: bytes and packets the gateway forwarded for the client, at the IP layer
(nftables counts `skb->len` in the forward hook: IP header and payload, no Ethernet header),
after the client's rate limit and quota had their say. Traffic to the router itself (DNS, the
portal, DHCP) is not counted: it is not the internet, and the portal must stay reachable when
the quota is used up.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType

# Slots, and no allocation when nothing moved: the poll observes every session's counters
# each time, 10,000 of them at a busy venue, and a meter lives as long as its session.


@dataclass(frozen=True, slots=True)
class Usage:
    """Bytes and packets in both directions ("up" is from the client)."""

    bytes_up: int = 0
    packets_up: int = 0
    bytes_down: int = 0
    packets_down: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.bytes_up + other.bytes_up,
            self.packets_up + other.packets_up,
            self.bytes_down + other.bytes_down,
            self.packets_down + other.packets_down,
        )

    def __sub__(self, other: Usage) -> Usage:
        return Usage(
            self.bytes_up - other.bytes_up,
            self.packets_up - other.packets_up,
            self.bytes_down - other.bytes_down,
            self.packets_down - other.packets_down,
        )

    def values(self) -> tuple[int, int, int, int]:
        return (self.bytes_up, self.packets_up, self.bytes_down, self.packets_down)

    def view(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


ZERO = Usage()
NO_QUOTAS: Mapping[str, Quota] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Quota:
    """One quota object as the kernel holds it: its size and how much of it is used."""

    limit: int
    used: int

    @property
    def left(self) -> int:
        return max(0, self.limit - self.used)

    @property
    def exhausted(self) -> bool:
        return self.used >= self.limit


@dataclass(frozen=True, slots=True)
class Reading:
    """What the kernel says about one session: counters, and its quotas by kind."""

    usage: Usage
    quotas: Mapping[str, Quota] = field(default_factory=lambda: NO_QUOTAS)


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """One line of the outbox: usage of a session over [period_start, period_end].

    `key` is unique per record and stable across retries (session id and sequence number), so
    the uplink can replay a batch and the cloud drops what it already has.
    """

    key: str
    session_id: str
    seq: int
    mac: str
    ip: str | None
    started_at: float
    period_start: float
    period_end: float
    final: bool
    reason: str | None
    delta: Usage
    total: Usage


@dataclass(slots=True)
class Meter:
    """The accounting state of one running session (in memory; `reported`, `seq` and
    `last_record_at` are persisted with each record)."""

    session_id: str
    mac: str
    ip: str | None
    started_at: float
    reported: Usage = ZERO
    seq: int = 0
    last_record_at: float = 0.0
    total: Usage = ZERO
    offset: Usage = ZERO
    last_kernel: Usage | None = None
    last_active: float = 0.0
    quotas: Mapping[str, Quota] = field(default_factory=lambda: NO_QUOTAS)
    closing: str | None = None  # the session ended for this reason; its final record is due
    ended_at: float | None = None

    def __post_init__(self) -> None:
        self.last_record_at = self.last_record_at or self.started_at
        self.last_active = self.last_active or self.started_at
        self.total = _at_least(self.total, self.reported)

    # -- readings --------------------------------------------------------------------------
    def observe(self, reading: Reading | None, now: float) -> None:
        """Take a kernel reading (None: the session's objects are missing right now)."""
        if reading is None:
            return
        kernel = reading.usage
        self.quotas = dict(reading.quotas) if reading.quotas else NO_QUOTAS
        if kernel == self.last_kernel:
            return  # nothing moved: total, offset and last activity are as they were
        if self.last_kernel is not None:
            went_back = Usage(*(
                last if k < last else 0
                for k, last in zip(kernel.values(), self.last_kernel.values(), strict=True)
            ))  # fmt: skip
            self.offset = self.offset + went_back
        total = _at_least(kernel + self.offset, self.reported)
        self.offset = total - kernel
        if total != self.total:
            self.last_active = now
        self.total = total
        self.last_kernel = kernel

    def initial(self) -> Usage:
        """Counter values for objects the gateway (re)creates: the kernel then continues
        exactly where the session's total is."""
        start = self.total - self.offset
        self.last_kernel = start
        return start

    # -- decisions -------------------------------------------------------------------------
    def idle_for(self, now: float) -> float:
        return max(0.0, now - self.last_active)

    def idle(self, idle_seconds: int, now: float) -> bool:
        """The counters have not moved for `idle_seconds` (either direction counts)."""
        return bool(idle_seconds) and self.idle_for(now) >= idle_seconds

    def exhausted(self) -> bool:
        """A quota of this session is used up: the kernel already drops its traffic."""
        return any(q.exhausted for q in self.quotas.values())

    def bytes_remaining(self) -> int | None:
        """What is left of the tightest quota (None: no quota), as RFC 8908 shows it."""
        return min((q.left for q in self.quotas.values()), default=None)

    def interim_due(self, interval: int, now: float) -> bool:
        return bool(interval) and now - self.last_record_at >= interval

    # -- records ---------------------------------------------------------------------------
    def record(self, now: float, final: bool = False, reason: str | None = None) -> UsageRecord:
        """The usage since the last record; the meter moves on as if it were written (the
        caller writes it in the same transaction as `reported`, or drops the meter)."""
        self.seq += 1
        rec = UsageRecord(
            key=f"{self.session_id}-{self.seq}",
            session_id=self.session_id,
            seq=self.seq,
            mac=self.mac,
            ip=self.ip,
            started_at=self.started_at,
            period_start=self.last_record_at,
            period_end=now,
            final=final,
            reason=reason,
            delta=self.total - self.reported,
            total=self.total,
        )
        self.reported = self.total
        self.last_record_at = now
        return rec

    def unrecord(self, rec: UsageRecord) -> None:
        """Undo `record()` when the record could not be written."""
        if rec.seq == self.seq:
            self.seq -= 1
            self.reported = self.reported - rec.delta
            self.last_record_at = rec.period_start


def _at_least(value: Usage, floor: Usage) -> Usage:
    if (
        value.bytes_up >= floor.bytes_up
        and value.packets_up >= floor.packets_up
        and value.bytes_down >= floor.bytes_down
        and value.packets_down >= floor.packets_down
    ):
        return value
    return Usage(*(max(v, f) for v, f in zip(value.values(), floor.values(), strict=True)))
