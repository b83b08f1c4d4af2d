"""Booking contention on PostgreSQL: CLIENTS shoppers booking SLOTS slots at once, and the
inventory counted afterwards (issue 16: 100 clients, 10 slots, 0 double-booking).

A private PostgreSQL cluster (lab/postgres.py, fsync on), migrated; one venue, one resource
with SLOTS one-seat slots, CLIENTS distinct shoppers. Every client is a thread with its own
session from a pool of CONNECTIONS (default 40: the lab cluster allows 50), all released
together by a barrier, and holds slot `i % SLOTS` through `cloud.o2o.booking.hold`, the
function the shopper's page calls (the HTTP layer is not measured). Reported: the wall time
of the burst, holds made and refused, each client's latency (pool wait included), and the
database afterwards: bookings per slot (must be exactly 1 each), `taken` per slot (must
equal its bookings). `--rounds` repeats on fresh slots for a steadier
figure. Figures only: nothing here is asserted on time.
"""

from __future__ import annotations

import argparse
import threading
import time
from collections import Counter
from typing import Any

from benchlib import BENCH_NOW, Check, Result, add_shoppers, bench_postgres, bench_venue, log, main
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session, sessionmaker

from cloud.db import make_engine
from cloud.o2o import booking, booking_slots
from cloud.o2o.booking_models import Booking, BookingSlot

NAME = "booking_contention"
NOW = BENCH_NOW


def setup(url: str, slots: int, clients: int, rounds: int) -> tuple[list[list[str]], list[str]]:
    engine = make_engine(url)
    with Session(engine, expire_on_commit=False) as db:
        venue = bench_venue(db)
        resource = booking.create_resource(db, venue, booking.ResourceSpec(name="Table"), NOW)
        starts = [NOW + 3600 * (i + 1) for i in range(slots * rounds)]
        booking_slots.add_slots(db, resource, [(s, s + 3600) for s in starts])
        ids = list(db.scalars(select(BookingSlot.id).order_by(BookingSlot.starts_at)))
        people = add_shoppers(db, clients * rounds)
        db.commit()
    engine.dispose()
    return [ids[r * slots:(r + 1) * slots] for r in range(rounds)], people  # fmt: skip


def burst(factory: sessionmaker, slots: list[str], people: list[str]) -> dict[str, Any]:
    outcomes: Counter = Counter()
    latencies: list[float] = []
    lock = threading.Lock()
    ready = threading.Barrier(len(people) + 1)

    def one(i: int) -> None:
        ready.wait()
        began = time.perf_counter()
        with factory() as db:
            try:
                booking.hold(db, slots[i % len(slots)], people[i], NOW)
                outcome = "ok"
            except booking.BookingError as exc:
                outcome = exc.code
            took = time.perf_counter() - began
        with lock:
            outcomes[outcome] += 1
            latencies.append(took)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(people))]
    for thread in threads:
        thread.start()
    ready.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - began
    latencies.sort()
    return {"outcomes": dict(outcomes), "seconds": seconds, "p50_ms": latencies[len(latencies) // 2]
            * 1000, "max_ms": latencies[-1] * 1000}  # fmt: skip


def run(clients: int = 100, slots: int = 10, rounds: int = 5, connections: int = 40) -> Result:
    result = Result(NAME)
    with bench_postgres() as url:
        groups, people = setup(url, slots, clients, rounds)
        # The clients share CONNECTIONS connections, as an app's workers share a pool (the
        # lab cluster allows 50), all opened before the first burst.
        engine = create_engine(url, pool_size=connections, max_overflow=0,
                               pool_timeout=120)  # fmt: skip
        warm = [engine.connect() for _ in range(connections)]
        for conn in warm:
            conn.close()
        factory = sessionmaker(engine, expire_on_commit=False)
        bursts = [burst(factory, group, people[r * clients:(r + 1) * clients])
                  for r, group in enumerate(groups)]  # fmt: skip
        engine.dispose()
        check = make_engine(url)
        with Session(check) as db:
            per_slot = Counter(db.scalars(select(Booking.slot_id)))
            taken = {i: n for i, n in db.execute(select(BookingSlot.id, BookingSlot.taken))}
        check.dispose()
    all_slots = [s for group in groups for s in group]
    double = sum(max(0, per_slot.get(s, 0) - 1) for s in all_slots)
    empty = sum(1 for s in all_slots if per_slot.get(s, 0) == 0)
    mismatched = sum(1 for s in all_slots if taken.get(s) != per_slot.get(s, 0))
    ok = sum(b["outcomes"].get("ok", 0) for b in bursts)
    seconds = sorted(b["seconds"] for b in bursts)
    result.figures = {
        "clients": clients, "slots": slots, "rounds": rounds, "connections": connections,
        "outcomes": [b["outcomes"] for b in bursts],
        "burst_ms_median": round(seconds[len(seconds) // 2] * 1000, 1),
        "burst_ms": [round(s * 1000, 1) for s in seconds],
        "holds_per_s": round(clients / seconds[len(seconds) // 2]),
        "client_p50_ms": round(sorted(b["p50_ms"] for b in bursts)[len(bursts) // 2], 1),
        "client_max_ms": round(max(b["max_ms"] for b in bursts), 1),
        "bookings": ok, "double_booked": double, "empty_slots": empty, "taken_mismatch": mismatched,
    }  # fmt: skip
    f = result.figures
    log(f"\noutcomes per round: {f['outcomes']}")
    log(f"{clients} clients ({connections} connections) on {slots} slots, {rounds} rounds: "
        f"bookings {ok} "
        f"(expected {slots * rounds}), double-booked {double}, empty {empty}, "
        f"taken≠bookings {mismatched}")  # fmt: skip
    log(f"burst (all {clients} answered) median {f['burst_ms_median']} ms {f['burst_ms']}; "
        f"attempts/s {f['holds_per_s']:,}; per client p50 {f['client_p50_ms']} ms, "
        f"max {f['client_max_ms']} ms")  # fmt: skip
    answered = [sum(b["outcomes"].values()) for b in bursts]
    if any(n != clients for n in answered):
        result.errors.append(f"clients without an answer: {answered} of {clients}")
    if double or empty or mismatched or ok != slots * rounds:
        result.errors.append(f"inventory broken: {f}")
    result.checks = [
        Check("bookings made", ok, "bookings", None),
        Check("double-booking", double, "bookings", 0),
        Check("burst of 100 answered (median)", f["burst_ms_median"], "ms", None),
    ]
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=100, help="shoppers at once")
    parser.add_argument("--slots", type=int, default=10, help="one-seat slots they contend for")
    parser.add_argument("--rounds", type=int, default=5, help="bursts, each on fresh slots")
    parser.add_argument("--connections", type=int, default=40, help="the clients' pool")
    args = parser.parse_args()
    raise SystemExit(main(lambda: run(args.clients, args.slots, args.rounds, args.connections)))
