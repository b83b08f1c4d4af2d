"""A GTFS feed's fare files, read and checked (GTFS Fares v2; https://gtfs.org/schedule/reference/).

Pure: no database, no app. `load_feed(directory)` reads the files the fare engine needs and
refuses a feed it could not price correctly with a `FeedError` that names the file, the line
and the field (a missing file, a missing required column, a bad value, a reference to
something the feed does not define, a circular transfer rule). Reading everything up front
means a quote never meets a half-valid feed: the engine (cloud/transit/fares.py) can trust
every reference it follows.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path

# File -> (required columns, optional columns the engine reads).
FILES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "routes.txt": (
        ("route_id",),
        ("network_id", "agency_id", "route_short_name", "route_long_name"),
    ),
    "stops.txt": (("stop_id",), ("parent_station", "stop_name")),
    "networks.txt": (("network_id",), ("network_name",)),
    "route_networks.txt": (("network_id", "route_id"), ()),
    "areas.txt": (("area_id",), ("area_name",)),
    "stop_areas.txt": (("area_id", "stop_id"), ()),
    "timeframes.txt": (("timeframe_group_id", "service_id"), ("start_time", "end_time")),
    "fare_media.txt": (("fare_media_id", "fare_media_type"), ("fare_media_name",)),
    "fare_products.txt": (
        ("fare_product_id", "amount", "currency"),
        ("fare_product_name", "fare_media_id"),
    ),
    "fare_leg_rules.txt": (
        ("fare_product_id",),
        (
            "leg_group_id",
            "network_id",
            "from_area_id",
            "to_area_id",
            "from_timeframe_group_id",
            "to_timeframe_group_id",
            "rule_priority",
        ),
    ),
    "fare_transfer_rules.txt": (
        ("fare_transfer_type",),
        (
            "from_leg_group_id",
            "to_leg_group_id",
            "transfer_count",
            "duration_limit",
            "duration_limit_type",
            "fare_product_id",
        ),
    ),
}
OPTIONAL_FILES = {
    "agency.txt": (("agency_timezone",), ()),
    "calendar.txt": (
        (
            "service_id",
            "monday",
            "tuesday",
            "wednesday",
            "thursday",
            "friday",
            "saturday",
            "sunday",
            "start_date",
            "end_date",
        ),
        (),
    ),
    # The riders' names in other languages (cloud/transit/names.py reads them).
    "translations.txt": (
        ("table_name", "field_name", "language", "translation"),
        ("record_id", "record_sub_id", "field_value"),
    ),
}
DEFAULT_TIMEZONE = "Asia/Shanghai"
MAX_FILE_BYTES = 64 * 1024 * 1024
TIME_RE = re.compile(r"^(\d{1,2}):([0-5]\d):([0-5]\d)\Z")
CURRENCY_RE = re.compile(r"^[A-Z]{3}\Z")
DATE_RE = re.compile(r"^\d{8}\Z")


class FeedError(ValueError):
    """A feed that cannot be used; str() names the file, line and field."""

    def __init__(self, file: str, line: int | None, field_name: str | None, message: str) -> None:
        where = file + (f" line {line}" if line else "") + (f", {field_name}" if field_name else "")
        super().__init__(f"{where}: {message}")
        self.file, self.line, self.field = file, line, field_name


@dataclass(frozen=True)
class Row:
    """One CSV record and the line it was read from (1 is the header)."""

    line: int
    values: Mapping[str, str]

    def get(self, name: str) -> str:
        return (self.values.get(name) or "").strip()


@dataclass(frozen=True)
class Product:
    id: str
    amount: Decimal
    currency: str
    media_id: str
    name: str


@dataclass(frozen=True)
class LegRule:
    line: int
    group: str
    network: str
    from_area: str
    to_area: str
    from_timeframe: str
    to_timeframe: str
    product: str
    priority: int | None


@dataclass(frozen=True)
class TransferRule:
    line: int
    from_group: str
    to_group: str
    count: int | None  # -1: no limit; None: not given (from != to)
    duration: int | None
    duration_type: int | None
    kind: int  # 0: A + AB, 1: A + AB + B, 2: AB
    product: str


@dataclass(frozen=True)
class Timeframe:
    start: int  # seconds after local midnight
    end: int
    service_id: str


@dataclass
class Feed:
    """What the fare engine needs, with every reference already checked."""

    timezone: str = DEFAULT_TIMEZONE
    route_network: dict[str, str] = field(default_factory=dict)
    parent: dict[str, str] = field(default_factory=dict)
    stop_areas: dict[str, set[str]] = field(default_factory=dict)
    networks: set[str] = field(default_factory=set)
    areas: set[str] = field(default_factory=set)
    timeframes: dict[str, list[Timeframe]] = field(default_factory=dict)
    calendar: dict[str, tuple[tuple[bool, ...], str, str]] = field(default_factory=dict)
    media: dict[str, int] = field(default_factory=dict)
    products: dict[str, list[Product]] = field(default_factory=dict)
    leg_rules: list[LegRule] = field(default_factory=list)
    transfer_rules: list[TransferRule] = field(default_factory=list)

    def summary(self) -> dict[str, int | str]:
        return {
            "timezone": self.timezone,
            "routes": len(self.route_network),
            "networks": len(self.networks),
            "areas": len(self.areas),
            "fare_products": len(self.products),
            "fare_leg_rules": len(self.leg_rules),
            "fare_transfer_rules": len(self.transfer_rules),
        }


def read_table(name: str, text: str, required: tuple[str, ...]) -> list[Row]:
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    header = [h.strip() for h in (reader.fieldnames or [])]
    if not header:
        raise FeedError(name, 1, None, "empty file: no header line")
    if len(set(header)) != len(header):
        raise FeedError(name, 1, None, "a column is named twice")
    reader.fieldnames = header
    for column in required:
        if column not in header:
            raise FeedError(name, 1, column, "required column missing")
    rows = []
    for row in reader:
        line = reader.line_num
        if None in row:
            raise FeedError(name, line, None, "more values than columns")
        rows.append(Row(line, row))
    return rows


def _int(name: str, row: Row, column: str, low: int, high: int | None = None) -> int | None:
    text = row.get(column)
    if not text:
        return None
    if (
        not re.fullmatch(r"-?\d{1,9}", text)
        or int(text) < low
        or (high is not None and int(text) > high)
    ):
        limit = f"{low}..{high}" if high is not None else f"at least {low}"
        raise FeedError(name, row.line, column, f"{text!r} is not a whole number {limit}")
    return int(text)


def _time(name: str, row: Row, column: str, default: int) -> int:
    text = row.get(column)
    if not text:
        return default
    match = TIME_RE.match(text)
    if not match or int(match[1]) > 24 or (int(match[1]) == 24 and text[-5:] != "00:00"):
        raise FeedError(name, row.line, column, f"{text!r} is not a time HH:MM:SS up to 24:00:00")
    return int(match[1]) * 3600 + int(match[2]) * 60 + int(match[3])


def _ref(name: str, row: Row, column: str, known: Mapping | set, what: str) -> str:
    value = row.get(column)
    if value and value not in known:
        raise FeedError(name, row.line, column, f"unknown {what} {value!r}")
    return value


def _need(name: str, row: Row, column: str) -> str:
    value = row.get(column)
    if not value:
        raise FeedError(name, row.line, column, "empty, but required")
    return value


def read_files(directory: str | Path) -> dict[str, str]:
    """The feed's files as text; FeedError for a required one that is missing."""
    root = Path(directory)
    if not root.is_dir():
        raise FeedError(str(directory), None, None, "not a directory")
    texts = {}
    for name in (*FILES, *OPTIONAL_FILES):
        path = root / name
        if not path.is_file():
            if name in FILES:
                raise FeedError(name, None, None, "required file missing from the feed")
            continue
        if path.stat().st_size > MAX_FILE_BYTES:
            raise FeedError(name, None, None, "file larger than 64 MiB")
        try:
            texts[name] = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise FeedError(name, None, None, "not UTF-8 text") from None
    return texts


def load_feed(directory: str | Path) -> Feed:
    return parse_feed(read_files(directory))


def parse_feed(texts: Mapping[str, str]) -> Feed:
    """Check and index the files (name -> text). FeedError at the first problem."""
    spec = {**FILES, **OPTIONAL_FILES}
    for name in FILES:
        if name not in texts:
            raise FeedError(name, None, None, "required file missing from the feed")
    t = {
        name: read_table(name, text, spec[name][0]) for name, text in texts.items() if name in spec
    }
    feed = Feed()
    for row in t.get("agency.txt", [])[:1]:
        feed.timezone = _timezone(row) or DEFAULT_TIMEZONE
    _places(feed, t)
    _service(feed, t)
    _fares(feed, t)
    _transfers(feed, t["fare_transfer_rules.txt"])
    return feed


def _timezone(row: Row) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    zone = row.get("agency_timezone")
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise FeedError(
            "agency.txt", row.line, "agency_timezone", f"unknown zone {zone!r}"
        ) from None
    return zone


def _places(feed: Feed, t: dict[str, list[Row]]) -> None:
    for row in t["networks.txt"]:
        feed.networks.add(_need("networks.txt", row, "network_id"))
    for row in t["routes.txt"]:
        route = _need("routes.txt", row, "route_id")
        network = _ref("routes.txt", row, "network_id", feed.networks, "network")
        if network:
            feed.route_network[route] = network
        else:
            feed.route_network.setdefault(route, "")
    for row in t["route_networks.txt"]:
        network = _ref("route_networks.txt", row, "network_id", feed.networks, "network")
        route = _ref("route_networks.txt", row, "route_id", feed.route_network, "route")
        if not (network and route):
            raise FeedError("route_networks.txt", row.line, "route_id", "empty, but required")
        feed.route_network[route] = network
    stops = t["stops.txt"]
    ids = {_need("stops.txt", row, "stop_id") for row in stops}
    for row in stops:
        parent = _ref("stops.txt", row, "parent_station", ids, "stop")
        if parent:
            feed.parent[row.get("stop_id")] = parent
    for row in t["areas.txt"]:
        feed.areas.add(_need("areas.txt", row, "area_id"))
    for row in t["stop_areas.txt"]:
        area = _ref("stop_areas.txt", row, "area_id", feed.areas, "area")
        stop = _ref("stop_areas.txt", row, "stop_id", ids, "stop")
        if not (area and stop):
            raise FeedError(
                "stop_areas.txt",
                row.line,
                "area_id" if not area else "stop_id",
                "empty, but required",
            )
        feed.stop_areas.setdefault(stop, set()).add(area)


def _service(feed: Feed, t: dict[str, list[Row]]) -> None:
    days = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
    for row in t.get("calendar.txt", []):
        flags = tuple(_int("calendar.txt", row, d, 0, 1) == 1 for d in days)
        start, end = row.get("start_date"), row.get("end_date")
        for column, value in (("start_date", start), ("end_date", end)):
            if not DATE_RE.match(value):
                raise FeedError("calendar.txt", row.line, column, f"{value!r} is not YYYYMMDD")
        feed.calendar[_need("calendar.txt", row, "service_id")] = (flags, start, end)
    for row in t["timeframes.txt"]:
        group = _need("timeframes.txt", row, "timeframe_group_id")
        service = _need("timeframes.txt", row, "service_id")
        if feed.calendar and service not in feed.calendar:
            raise FeedError(
                "timeframes.txt", row.line, "service_id", f"unknown service {service!r}"
            )
        start = _time("timeframes.txt", row, "start_time", 0)
        end = _time("timeframes.txt", row, "end_time", 86400)
        if bool(row.get("start_time")) != bool(row.get("end_time")) or end <= start:
            raise FeedError(
                "timeframes.txt",
                row.line,
                "end_time",
                "start_time and end_time go together, end after start",
            )
        feed.timeframes.setdefault(group, []).append(Timeframe(start, end, service))


def _fares(feed: Feed, t: dict[str, list[Row]]) -> None:
    for row in t["fare_media.txt"]:
        media = _need("fare_media.txt", row, "fare_media_id")
        feed.media[media] = _int("fare_media.txt", row, "fare_media_type", 0, 4) or 0
    for row in t["fare_products.txt"]:
        name = "fare_products.txt"
        product = _need(name, row, "fare_product_id")
        try:
            amount = Decimal(_need(name, row, "amount"))
        except InvalidOperation:
            raise FeedError(
                name, row.line, "amount", f"{row.get('amount')!r} is not a number"
            ) from None
        if not amount.is_finite():
            raise FeedError(name, row.line, "amount", "not a finite amount")
        currency = _need(name, row, "currency")
        if not CURRENCY_RE.match(currency):
            raise FeedError(name, row.line, "currency", f"{currency!r} is not an ISO 4217 code")
        media = _ref(name, row, "fare_media_id", feed.media, "fare media")
        feed.products.setdefault(product, []).append(
            Product(product, amount, currency, media, row.get("fare_product_name"))
        )
    for row in t["fare_leg_rules.txt"]:
        name = "fare_leg_rules.txt"
        feed.leg_rules.append(
            LegRule(
                line=row.line,
                group=row.get("leg_group_id"),
                network=_ref(name, row, "network_id", feed.networks, "network"),
                from_area=_ref(name, row, "from_area_id", feed.areas, "area"),
                to_area=_ref(name, row, "to_area_id", feed.areas, "area"),
                from_timeframe=_ref(
                    name, row, "from_timeframe_group_id", feed.timeframes, "timeframe group"
                ),
                to_timeframe=_ref(
                    name, row, "to_timeframe_group_id", feed.timeframes, "timeframe group"
                ),
                product=_ref(name, row, "fare_product_id", feed.products, "fare product")
                or _need(name, row, "fare_product_id"),
                priority=_int(name, row, "rule_priority", 0),
            )
        )


def _transfers(feed: Feed, rows: list[Row]) -> None:
    name = "fare_transfer_rules.txt"
    groups = {rule.group for rule in feed.leg_rules if rule.group}
    for row in rows:
        from_group = _ref(name, row, "from_leg_group_id", groups, "leg group")
        to_group = _ref(name, row, "to_leg_group_id", groups, "leg group")
        count = _int(name, row, "transfer_count", -1)
        if count == 0:
            raise FeedError(name, row.line, "transfer_count", "0 is not allowed (-1 or 1 and up)")
        same = bool(from_group) and from_group == to_group
        if same and count is None:
            raise FeedError(name, row.line, "transfer_count", "required when from = to group")
        if not same and count is not None:
            raise FeedError(name, row.line, "transfer_count", "forbidden when from != to group")
        duration = _int(name, row, "duration_limit", 1)
        kind = _int(name, row, "duration_limit_type", 0, 3)
        if (duration is None) != (kind is None):
            raise FeedError(
                name,
                row.line,
                "duration_limit_type",
                "required with duration_limit, forbidden without",
            )
        transfer_type = _int(name, row, "fare_transfer_type", 0, 2)
        if transfer_type is None:
            raise FeedError(name, row.line, "fare_transfer_type", "empty, but required")
        product = _ref(name, row, "fare_product_id", feed.products, "fare product")
        feed.transfer_rules.append(
            TransferRule(
                row.line, from_group, to_group, count, duration, kind, transfer_type, product
            )
        )
    _no_cycles(feed.transfer_rules)


def _no_cycles(rules: list[TransferRule]) -> None:
    """A chain of transfer rules that leads back to its first leg group with no time limit
    on any of them (and, for a group to itself, no transfer_count limit) lets one fare ride
    forever: refused, naming the rule that closes the circle."""
    unbounded = [r for r in rules if r.duration is None and r.from_group and r.to_group]
    edges: dict[str, list[TransferRule]] = {}
    for rule in unbounded:
        if rule.from_group == rule.to_group:
            if rule.count == -1:
                raise FeedError(
                    "fare_transfer_rules.txt",
                    rule.line,
                    "to_leg_group_id",
                    f"circular transfer rule: {rule.from_group} -> "
                    f"{rule.to_group} with no transfer_count or duration_limit",
                )
            continue
        edges.setdefault(rule.from_group, []).append(rule)
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(group: str, path: list[str]) -> None:
        state[group] = 1
        for rule in edges.get(group, []):
            if state.get(rule.to_group) == 1:
                circle = " -> ".join([*path[path.index(rule.to_group) :], rule.to_group])
                raise FeedError(
                    "fare_transfer_rules.txt",
                    rule.line,
                    "to_leg_group_id",
                    f"circular transfer rule: {circle} with no duration_limit",
                )
            if rule.to_group not in state:
                visit(rule.to_group, [*path, rule.to_group])
        state[group] = 2

    for group in sorted(edges):
        if group not in state:
            visit(group, [group])
