"""The fare of a journey under GTFS Fares v2 (https://gtfs.org/schedule/reference/): pure.

Each leg is matched to fare leg rules (cloud/transit/feed.py checked the feed):

- without `rule_priority` in the feed, by the reference's exclusion rule per field: a rule
  naming the leg's network (or one of the from/to stop's areas, a stop inheriting its parent
  station's) wins; only if no rule names it does an empty field match. Timeframes match when
  the leg's departure (from) / arrival (to), in the feed's local time, falls in a timeframe
  of the group (start inclusive, end exclusive) on a day its service runs;
- with `rule_priority`, an empty field matches anything and only the highest priority rules
  are kept.

Of the products the kept rules offer, the cheapest is the leg's. Consecutive legs are then
joined by fare transfer rules into sub-journeys: exact (from, to) leg groups first, else an
empty field for a group not listed; `transfer_count` picks the smallest limit at or above
the sub-journey's count (-1: none); `duration_limit` is measured from the sub-journey's
first leg (departure for types 0 and 1, arrival for 2 and 3: decisions.md says why) to this
leg's departure (1, 2) or arrival (0, 3). The cost follows the reference's table: type 0
A + AB, type 1 A + AB + B, type 2 AB; later transfers S + BC (+ C for type 1).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from cloud.transit.feed import Feed, Product, TransferRule

UNLIMITED = 10**9


class FareError(ValueError):
    """A journey the feed cannot price; str() says which leg and why."""


@dataclass(frozen=True)
class Leg:
    route_id: str
    from_stop_id: str
    to_stop_id: str | None  # None: a tap-on only reader does not know where the rider got off
    departure: dt.datetime
    arrival: dt.datetime


@dataclass(frozen=True)
class PricedLeg:
    leg: Leg
    group: str
    product: Product
    amount: Decimal  # what this leg added to the total
    transfer: TransferRule | None


@dataclass(frozen=True)
class Quote:
    total: Decimal
    currency: str
    legs: tuple[PricedLeg, ...]

    def as_json(self) -> dict[str, Any]:
        return {
            "total": {"amount": money(self.total), "currency": self.currency},
            "legs": [
                {
                    "route_id": p.leg.route_id,
                    "from_stop_id": p.leg.from_stop_id,
                    "to_stop_id": p.leg.to_stop_id,
                    "leg_group_id": p.group,
                    "fare_product_id": p.product.id,
                    "amount": money(p.amount),
                    "currency": self.currency,
                    "transfer": None
                    if p.transfer is None
                    else {
                        "from_leg_group_id": p.transfer.from_group,
                        "to_leg_group_id": p.transfer.to_group,
                        "fare_transfer_type": p.transfer.kind,
                        "fare_product_id": p.transfer.product,
                    },
                }
                for p in self.legs
            ],
        }


def money(amount: Decimal) -> str:
    return f"{amount.quantize(Decimal('0.01')):f}"


def parse_time(text: Any, where: str) -> dt.datetime:
    """ISO 8601 with a UTC offset (a naive time would be read in someone's guessed zone)."""
    try:
        value = dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        raise FareError(f"{where}: {text!r} is not an ISO 8601 time") from None
    if value.tzinfo is None:
        raise FareError(f"{where}: {text!r} has no UTC offset")
    return value


def legs_from_json(data: Any) -> list[Leg]:
    if not isinstance(data, dict) or not isinstance(data.get("legs"), list) or not data["legs"]:
        raise FareError('the journey must be {"legs": [...]} with at least one leg')
    legs = []
    for i, item in enumerate(data["legs"]):
        where = f"legs[{i}]"
        if not isinstance(item, dict):
            raise FareError(f"{where}: not an object")
        for name in ("route_id", "from_stop_id", "departure"):
            if not isinstance(item.get(name), str) or not item[name]:
                raise FareError(f"{where}.{name}: missing")
        departure = parse_time(item["departure"], f"{where}.departure")
        arrival = parse_time(item.get("arrival") or item["departure"], f"{where}.arrival")
        if arrival < departure:
            raise FareError(f"{where}: arrives before it departs")
        to_stop = item.get("to_stop_id")
        legs.append(
            Leg(item["route_id"], item["from_stop_id"], to_stop or None, departure, arrival)
        )
    return legs


class FareEngine:
    """Quotes against one checked feed."""

    def __init__(self, feed: Feed) -> None:
        self.feed = feed
        self.zone = ZoneInfo(feed.timezone)
        self.prioritised = any(rule.priority is not None for rule in feed.leg_rules)
        self.named = {
            "network": {r.network for r in feed.leg_rules},
            "from_area": {r.from_area for r in feed.leg_rules},
            "to_area": {r.to_area for r in feed.leg_rules},
        }
        self.listed_from = {r.from_group for r in feed.transfer_rules if r.from_group}
        self.listed_to = {r.to_group for r in feed.transfer_rules if r.to_group}

    # -- legs ----------------------------------------------------------------------------------

    def areas(self, stop: str | None) -> set[str]:
        if stop is None:
            return set()
        found = set(self.feed.stop_areas.get(stop, ()))
        parent = self.feed.parent.get(stop)
        if parent:
            found |= self.feed.stop_areas.get(parent, set())
        return found

    def in_timeframe(self, group: str, when: dt.datetime) -> bool:
        local = when.astimezone(self.zone)
        seconds = local.hour * 3600 + local.minute * 60 + local.second
        for frame in self.feed.timeframes.get(group, ()):
            if frame.start <= seconds < frame.end and self.runs(frame.service_id, local.date()):
                return True
        return False

    def runs(self, service_id: str, day: dt.date) -> bool:
        found = self.feed.calendar.get(service_id)
        if found is None:
            return True  # a feed without calendar.txt: every service runs every day
        flags, start, end = found
        return flags[day.weekday()] and start <= day.strftime("%Y%m%d") <= end

    def match(self, i: int, leg: Leg) -> tuple[str, Product]:
        if leg.route_id not in self.feed.route_network:
            raise FareError(f"legs[{i}]: unknown route {leg.route_id!r}")
        network = self.feed.route_network[leg.route_id]
        values = {
            "network": {network},
            "from_area": self.areas(leg.from_stop_id),
            "to_area": self.areas(leg.to_stop_id),
        }
        rules = list(self.feed.leg_rules)
        if self.prioritised:
            rules = [
                r
                for r in rules
                if all(not getattr(r, f) or getattr(r, f) in v for f, v in values.items())
            ]
        else:
            for name, mine in values.items():
                exact = mine & self.named[name]
                rules = [
                    r
                    for r in rules
                    if (getattr(r, name) in exact if exact else not getattr(r, name))
                ]
        rules = [
            r
            for r in rules
            if (not r.from_timeframe or self.in_timeframe(r.from_timeframe, leg.departure))
            and (not r.to_timeframe or self.in_timeframe(r.to_timeframe, leg.arrival))
        ]
        if self.prioritised and rules:
            top = max(r.priority or 0 for r in rules)
            rules = [r for r in rules if (r.priority or 0) == top]
        offers = [(p.amount, r.group, p) for r in rules for p in self.feed.products[r.product]]
        if not offers:
            raise FareError(
                f"legs[{i}]: no fare leg rule matches route {leg.route_id} from "
                f"{leg.from_stop_id} at {leg.departure.isoformat()}"
            )
        _, group, product = min(offers, key=lambda o: (o[0], o[1], o[2].id))
        return group, product

    # -- transfers -----------------------------------------------------------------------------

    def transfer(
        self, before: str, after: str, count: int, first: Leg, leg: Leg
    ) -> TransferRule | None:
        if not (before and after):
            return None  # a leg outside every leg group never transfers
        key = (
            before if before in self.listed_from else "",
            after if after in self.listed_to else "",
        )
        fitting = []
        for rule in self.feed.transfer_rules:
            if (rule.from_group, rule.to_group) != key:
                continue
            if rule.duration is not None:
                start = first.departure if rule.duration_type in (0, 1) else first.arrival
                end = leg.departure if rule.duration_type in (1, 2) else leg.arrival
                if (end - start).total_seconds() > rule.duration:
                    continue
            limit = UNLIMITED if rule.count in (None, -1) else rule.count
            if limit >= count:
                fitting.append((limit, rule))
        if not fitting:
            return None
        smallest = min(limit for limit, _ in fitting)
        chosen = [rule for limit, rule in fitting if limit == smallest]
        return min(chosen, key=lambda r: (self.cost(r.product), r.line))

    def cost(self, product_id: str) -> Decimal:
        if not product_id:
            return Decimal(0)
        return min(p.amount for p in self.feed.products[product_id])

    def quote(self, legs: list[Leg]) -> Quote:
        if not legs:
            raise FareError("a journey has at least one leg")
        priced: list[PricedLeg] = []
        currencies: set[str] = set()
        total = Decimal(0)
        first: Leg | None = None
        count = 0
        previous_group = ""
        for i, leg in enumerate(legs):
            if i and leg.departure < legs[i - 1].departure:
                raise FareError(f"legs[{i}]: departs before the leg before it")
            group, product = self.match(i, leg)
            currencies.add(product.currency)
            rule = None
            if first is not None:
                rule = self.transfer(previous_group, group, count + 1, first, leg)
            if rule is None:
                first, count, added = leg, 0, product.amount
            else:
                count += 1
                transfer = self.cost(rule.product)
                for p in self.feed.products.get(rule.product, ()):
                    currencies.add(p.currency)
                if rule.kind == 2 and count == 1:
                    added = transfer - priced[-1].amount  # AB replaces A
                elif rule.kind == 1:
                    added = transfer + product.amount
                else:
                    added = transfer
            total += added
            priced.append(PricedLeg(leg, group, product, added, rule))
            previous_group = group
        if len(currencies) != 1:
            raise FareError(f"the journey mixes currencies: {sorted(currencies)}")
        return Quote(total, currencies.pop(), tuple(priced))
