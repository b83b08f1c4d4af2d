"""Fare quotes per second: the GTFS Fares v2 engine (cloud/transit/fares.py) on the sample
city feed (tests/fixtures/gtfs_city), in one process, no database.

Journeys of one to four legs (bus, bus-to-bus transfers inside and outside the 90-minute
window, bus to metro across zones, evening fares) are built once and quoted QUOTES times;
the figure is quotes / wall time, and the mix's totals are checked against a first pass so
a fast wrong engine does not pass for a fast one.
"""

from __future__ import annotations

import argparse
import datetime as dt
import time
from pathlib import Path

from benchlib import Check, Result, log, main

from cloud.transit.fares import FareEngine, Leg
from cloud.transit.feed import load_feed

NAME = "transit_quotes"
FEED = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "gtfs_city"
ZONE = dt.timezone(dt.timedelta(hours=8))


def journeys() -> list[list[Leg]]:
    def at(hour: int, minute: int) -> dt.datetime:
        return dt.datetime(2026, 12, 7, hour, minute, tzinfo=ZONE)

    def bus(route: str, stop: str, hour: int, minute: int) -> Leg:
        return Leg(route, stop, None, at(hour, minute), at(hour, minute))

    metro = Leg("m1", "m_central", "m_harbour", at(8, 40), at(8, 55))
    return [
        [bus("b1", "s_square", 8, 0)],
        [bus("b1", "s_square", 8, 0), bus("b2", "s_harbour", 8, 30)],
        [bus("b1", "s_square", 8, 0), bus("b2", "s_harbour", 10, 0)],
        [bus("b1", "s_square", 8, 0), metro],
        [bus("b1", "s_square", 8, 0), bus("b2", "s_harbour", 8, 20), metro,
         bus("b1", "s_harbour", 21, 0)],
        [bus("b2", "s_harbour", 21, 30)],
    ]  # fmt: skip


def run(quotes: int) -> Result:
    result = Result(NAME)
    engine = FareEngine(load_feed(FEED))
    mix = journeys()
    expected = [engine.quote(j).total for j in mix]
    log(f"journey totals: {[str(t) for t in expected]}")
    began = time.perf_counter()
    for i in range(quotes):
        total = engine.quote(mix[i % len(mix)]).total
        if total != expected[i % len(mix)]:
            result.errors.append(f"quote {i} gave {total}, not {expected[i % len(mix)]}")
            break
    seconds = time.perf_counter() - began
    legs = sum(len(mix[i % len(mix)]) for i in range(quotes))
    rate = round(quotes / seconds)
    result.figures = {"quotes": quotes, "legs": legs, "seconds": round(seconds, 3),
                      "quotes_per_s": rate, "legs_per_s": round(legs / seconds)}  # fmt: skip
    log(f"{quotes:,} quotes ({legs:,} legs) in {seconds:.2f} s: {rate:,} quotes/s")
    result.checks = [
        Check("fare quotes/s", rate, "quotes/s", None, True),
        Check("legs priced/s", round(legs / seconds), "legs/s", None, True),
    ]
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quotes", type=int, default=50_000)
    args = parser.parse_args()
    raise SystemExit(main(lambda: run(args.quotes)))
