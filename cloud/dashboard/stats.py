"""What the venue page shows, each figure one SQL aggregate over one venue and one window.

A busy venue stores about a million usage records a month, so nothing here loops over rows
in Python: every query is a range on an index that starts with `venue_id` ((venue_id,
period_end) and (venue_id, mac, period_end) on usage, (venue_id, at) on presence), grouped in
the database, and returns at most a few dozen rows (one per hour or bucket) or a bounded list
(live clients). Times are unix seconds and hours are UTC hours, as everywhere in the cloud.

Definitions (shown on the page too):
- a visitor in an hour: a MAC with a presence `join` or a usage record ending in that hour;
- dwell: a session's last `period_end` minus its `started_at`, for sessions with a record in
  the window (a session still running counts with its length so far);
- returning: a visitor of the window who was also seen here (usage or join) in the
  RETURNING_LOOKBACK before the window started, i.e. on an earlier day;
- live: a MAC whose latest join has no later leave, or with usage in the last LIVE_RECENT
  seconds and no later leave, looking back LIVE_WINDOW.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    Float,
    Integer,
    and_,
    case,
    cast,
    exists,
    func,
    literal,
    null,
    or_,
    select,
    text,
    union,
    union_all,
)
from sqlalchemy.orm import Session, aliased

from cloud.models import Device, PresenceEvent, UsageRecord, Venue

HOUR = 3600
DAY = 24 * HOUR
HEARTBEAT_SECONDS = 30  # gateway/uplink/sync.py's default interval
ONLINE_SECONDS = 3 * HEARTBEAT_SECONDS  # two lost heartbeats are not yet "offline"
RETURNING_LOOKBACK = 30 * DAY
LIVE_WINDOW = 12 * HOUR
LIVE_RECENT = 5 * 60
LIVE_LIMIT = 200
SQLITE_MMAP_BYTES = 1 << 30
# Dwell buckets: upper bounds in minutes (the last is open-ended).
DWELL_EDGES_MIN = (5, 15, 30, 60, 120)
DWELL_LABELS = ("< 5 min", "5-15 min", "15-30 min", "30-60 min", "1-2 h", "> 2 h")


@dataclass(frozen=True)
class Window:
    """[start, start + hours h), hour-aligned; what every chart of one page covers."""

    start: float
    hours: int = 24

    @property
    def end(self) -> float:
        return self.start + self.hours * HOUR

    @classmethod
    def last_24h(cls, now: float) -> Window:
        """The 24 whole UTC hours ending with the current one."""
        return cls(start=(int(now) // HOUR + 1) * HOUR - DAY)

    @classmethod
    def day(cls, midnight_utc: float) -> Window:
        return cls(start=float(midnight_utc))


def _hour_of(db: Session, column: Any, start: float) -> Any:
    """The 0-based hour of `column` within a window starting at `start`. PostgreSQL rounds
    when casting a float to an integer, SQLite truncates (and may lack floor()), so each gets
    its own spelling of floor; inputs are never before `start`, where the two would differ."""
    offset = (column - start) / float(HOUR)
    if db.get_bind().dialect.name == "sqlite":
        return cast(offset, Integer)
    return cast(func.floor(offset), Integer)


def _usage_in(window: Window, venue_id: str, table: Any = UsageRecord) -> Any:
    return and_(
        table.venue_id == venue_id,
        table.period_end >= window.start,
        table.period_end < window.end,
    )


def _joins_in(start: float, end: float, venue_id: str) -> Any:
    return and_(
        PresenceEvent.venue_id == venue_id,
        PresenceEvent.at >= start,
        PresenceEvent.at < end,
        PresenceEvent.kind == "join",
    )


def visitors_per_hour(db: Session, venue_id: str, window: Window) -> list[int]:
    """Distinct MACs per hour, from joins and usage together (UNION removes a MAC counted
    by both in the same hour)."""
    hour = _hour_of(db, UsageRecord.period_end, window.start).label("h")
    from_usage = select(hour, UsageRecord.mac.label("mac")).where(_usage_in(window, venue_id))
    join_hour = _hour_of(db, PresenceEvent.at, window.start).label("h")
    from_joins = select(join_hour, PresenceEvent.mac.label("mac")).where(
        _joins_in(window.start, window.end, venue_id)
    )
    seen = union(from_usage, from_joins).subquery()
    rows = db.execute(select(seen.c.h, func.count()).group_by(seen.c.h))
    return _per_hour(window, rows)


def data_per_hour(db: Session, venue_id: str, window: Window) -> tuple[list[int], list[int]]:
    """(bytes up, bytes down) per hour, by the hour each record's period ended in. (Folding
    this into the visitors query as one pass with COUNT(DISTINCT) was measured: no faster on
    PostgreSQL, slower on SQLite, so two plain queries.)"""
    hour = _hour_of(db, UsageRecord.period_end, window.start).label("h")
    rows = db.execute(
        select(hour, func.sum(UsageRecord.bytes_up), func.sum(UsageRecord.bytes_down))
        .where(_usage_in(window, venue_id))
        .group_by(hour)
    ).all()
    up = _per_hour(window, ((h, u) for h, u, _ in rows))
    down = _per_hour(window, ((h, d) for h, _, d in rows))
    return up, down


def _per_hour(window: Window, rows: Any) -> list[int]:
    values = [0] * window.hours
    for h, value in rows:
        if h is not None and 0 <= int(h) < window.hours:
            values[int(h)] = int(value or 0)
    return values


@dataclass(frozen=True)
class Dwell:
    counts: list[int]  # sessions per DWELL_LABELS bucket
    sessions: int
    mean_seconds: float


def dwell(db: Session, venue_id: str, window: Window) -> Dwell:
    """Session lengths as a histogram, plus their mean. Sessions are (device, session_id):
    a session id is only unique on its router."""
    length = (func.max(UsageRecord.period_end) - func.min(UsageRecord.started_at)).label("d")
    sessions = (
        select(length)
        .where(_usage_in(window, venue_id))
        .group_by(UsageRecord.device_id, UsageRecord.session_id)
        .subquery()
    )
    bucket = case(
        *((sessions.c.d < edge * 60, i) for i, edge in enumerate(DWELL_EDGES_MIN)),
        else_=len(DWELL_EDGES_MIN),
    ).label("b")
    rows = db.execute(select(bucket, func.count(), func.sum(sessions.c.d)).group_by(bucket)).all()
    counts = [0] * len(DWELL_LABELS)
    total_seconds = 0.0
    for b, n, seconds in rows:
        counts[int(b)] = int(n)
        total_seconds += float(seconds or 0)
    n = sum(counts)
    return Dwell(counts, n, total_seconds / n if n else 0.0)


@dataclass(frozen=True)
class Returning:
    visitors: int
    returning: int

    @property
    def rate(self) -> float:
        return self.returning / self.visitors if self.visitors else 0.0


def returning(db: Session, venue_id: str, window: Window) -> Returning:
    """Visitors of the window, and how many of them were here before it. Earlier usage is an
    index probe per visitor on (venue_id, mac, period_end), tried first because most regulars
    are found there. Presence has no MAC index, so earlier joins are an uncorrelated IN: both
    databases read the venue's joins in the lookback once (a range on (venue_id, at)) into a
    hash or temporary index, and only visitors without earlier usage consult it. (Joining that
    set unconditionally cost 50-115 ms where this costs ~30 ms: bench/dashboard.py.)"""
    current = union(
        select(UsageRecord.mac.label("mac")).where(_usage_in(window, venue_id)),
        select(PresenceEvent.mac.label("mac")).where(_joins_in(window.start, window.end, venue_id)),
    ).subquery()
    since = window.start - RETURNING_LOOKBACK
    earlier = aliased(UsageRecord)
    used_before = exists().where(
        earlier.venue_id == venue_id,
        earlier.mac == current.c.mac,
        earlier.period_end >= since,
        earlier.period_end < window.start,
    )
    joined_before = current.c.mac.in_(
        select(PresenceEvent.mac).where(_joins_in(since, window.start, venue_id))
    )
    row = db.execute(
        select(
            func.count(),
            func.coalesce(func.sum(case((or_(used_before, joined_before), 1), else_=0)), 0),
        ).select_from(current)
    ).one()
    return Returning(visitors=int(row[0]), returning=int(row[1]))


def tune(db: Session) -> None:
    """Settings for the dashboard's read queries, applied before them.

    PostgreSQL: JIT off for this transaction. It compiles any plan whose cost estimate passes
    jit_above_cost, and on these ~30 ms aggregates compiling took ~24 ms of a 97 ms query.
    SQLite: memory-mapped reads for this connection (it stays in the pool with them). The
    indexes do not cover the columns summed, so a day's figures read ~30,000 rows by rowid;
    through mmap that is a memory access instead of a read() each, which halved the older
    days' queries (bench/dashboard.py). Only address space: the pages are the OS's cache."""
    name = db.get_bind().dialect.name
    if name == "postgresql":
        db.execute(text("SET LOCAL jit = off"))
    elif name == "sqlite":
        db.execute(text(f"PRAGMA mmap_size = {SQLITE_MMAP_BYTES}"))


@dataclass(frozen=True)
class LiveClient:
    mac: str
    joined_at: float | None
    last_seen: float
    bytes_up: int
    bytes_down: int


def live_clients(db: Session, venue_id: str, now: float) -> list[LiveClient]:
    """Who is at the venue now, most recently active first (at most LIVE_LIMIT + 1, so the
    page can say "more"). One pass over the venue's last LIVE_WINDOW of joins, leaves and
    usage, grouped by MAC; bytes are the MAC's usage within that window."""
    since = now - LIVE_WINDOW
    no_time = cast(null(), Float)
    zero = cast(literal(0), BigInteger)
    events = select(
        PresenceEvent.mac.label("mac"),
        case((PresenceEvent.kind == "join", PresenceEvent.at), else_=no_time).label("joined"),
        case((PresenceEvent.kind == "leave", PresenceEvent.at), else_=no_time).label("left"),
        no_time.label("seen"),
        zero.label("up"),
        zero.label("down"),
    ).where(
        PresenceEvent.venue_id == venue_id,
        PresenceEvent.at >= since,
        PresenceEvent.kind.in_(("join", "leave")),
    )
    usage = select(
        UsageRecord.mac.label("mac"),
        no_time.label("joined"),
        no_time.label("left"),
        UsageRecord.period_end.label("seen"),
        UsageRecord.bytes_up.label("up"),
        UsageRecord.bytes_down.label("down"),
    ).where(UsageRecord.venue_id == venue_id, UsageRecord.period_end >= since)
    both = union_all(events, usage).subquery()
    joined, left, seen = func.max(both.c.joined), func.max(both.c.left), func.max(both.c.seen)
    present = or_(
        and_(joined.is_not(None), or_(left.is_(None), left < joined)),
        and_(seen >= now - LIVE_RECENT, or_(left.is_(None), left < seen)),
    )
    last = func.coalesce(seen, joined)
    rows = db.execute(
        select(both.c.mac, joined, last, func.sum(both.c.up), func.sum(both.c.down))
        .group_by(both.c.mac)
        .having(present)
        .order_by(last.desc(), both.c.mac)
        .limit(LIVE_LIMIT + 1)
    ).all()
    return [
        LiveClient(mac, j, float(s or j or 0), int(up or 0), int(down or 0))
        for mac, j, s, up, down in rows
    ]


@dataclass(frozen=True)
class DeviceRow:
    id: str
    hostname: str
    version: str
    online: bool
    last_heartbeat_at: float | None
    uptime: float | None
    load: float | None
    clients_authorized: int | None
    clients_captive: int | None
    config_version: int | None
    presence_refused: int = 0  # opt-ins sent without the wallet's consent (cloud/presence.py)
    presence_refused_reason: str | None = None


def devices(db: Session, venue_id: str, now: float) -> list[DeviceRow]:
    """The venue's active routers with their last health report. A handful per venue, so
    reading the health JSON here is cheap."""
    rows = db.scalars(
        select(Device)
        .where(Device.venue_id == venue_id, Device.revoked.is_(False))
        .order_by(Device.enrolled_at, Device.id)
    )
    out = []
    for d in rows:
        health = d.health or {}
        load = health.get("load")
        clients = health.get("clients") or {}
        out.append(
            DeviceRow(
                id=d.id,
                hostname=d.hostname,
                version=str(health.get("version") or d.version or ""),
                online=d.last_heartbeat_at is not None
                and now - d.last_heartbeat_at < ONLINE_SECONDS,
                last_heartbeat_at=d.last_heartbeat_at,
                uptime=health.get("uptime"),
                load=load[0] if isinstance(load, list) and load else None,
                clients_authorized=clients.get("authorized"),
                clients_captive=clients.get("captive"),
                config_version=health.get("config_version"),
                presence_refused=d.presence_refused or 0,
                presence_refused_reason=d.presence_refused_reason,
            )
        )
    return out


@dataclass(frozen=True)
class VenueRow:
    id: str
    name: str
    devices: int
    online: int
    config_version: int


def venues(db: Session, merchant_id: str, now: float) -> list[VenueRow]:
    """The merchant's venues with device counts, in one grouped query."""
    active = and_(Device.venue_id == Venue.id, Device.revoked.is_(False))
    online = case((Device.last_heartbeat_at > now - ONLINE_SECONDS, 1), else_=0)
    rows = db.execute(
        select(
            Venue.id,
            Venue.name,
            func.count(Device.id),
            func.coalesce(func.sum(online), 0),
            Venue.config_version,
        )
        .outerjoin(Device, active)
        .where(Venue.merchant_id == merchant_id)
        .group_by(Venue.id, Venue.name, Venue.config_version)
        .order_by(Venue.name, Venue.id)
    ).all()
    return [VenueRow(v, name, int(n), int(on), int(ver)) for v, name, n, on, ver in rows]
