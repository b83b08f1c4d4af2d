"""FHIR Slot search latency with 100,000 slots on PostgreSQL (issue 17: p99 <= 50 ms).

A private PostgreSQL cluster (lab/postgres.py), migrated; one hospital with SCHEDULES
doctors' schedules (booking resources of kind appointment) holding SLOTS slots in all (a
schedule's 20-minute slots over the days it needs), one in three taken. The searches go
through the whole API in process (Flask's test client: routing, parameter checks, the query,
the FHIR JSON and the Bundle; not the network), in three shapes a phone sends, REQUESTS in
all, the shapes interleaved, each search a random day:

- `schedule + start=<day> + status=free` (a doctor's free times on a day),
- `start=ge<day>&start=lt<day+1> + status=free + _count=100` (any doctor that day),
- `schedule + start=ge<instant> + _count=20` (the next times from now).

Figures: p50 / p99 / max per shape and over all; the target is on the overall p99.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import statistics
import tempfile
import time
from typing import Any

from benchlib import Check, Result, log, main
from sqlalchemy import insert, text
from sqlalchemy.orm import Session

from cloud import create_app, migrations
from cloud import db as cloud_db
from cloud.accounts import create_merchant, create_venue
from cloud.db import make_engine
from cloud.o2o.booking_models import BookingResource, BookingSlot
from lab.postgres import running_cluster

NAME = "fhir_slots"
TARGET_MS = 50.0
NOW = 1_800_000_000.0
STEP = 20 * 60  # a slot's length
PER_DAY = 22  # slots a day per schedule (08:00-12:00, 13:30-17:00)


def setup(url: str, schedules: int, slots: int) -> tuple[list[str], int]:
    """The hospital; (schedule ids, days covered)."""
    engine = make_engine(url)
    per_schedule = slots // schedules
    days = -(-per_schedule // PER_DAY)
    with Session(engine, expire_on_commit=False) as db:
        merchant = create_merchant(db, "Bench", "bench@example.com", "benchbenchbench", NOW)
        venue = create_venue(db, merchant.id, "Bench hospital", NOW, "portal.example")
        db.commit()
        ids = [f"brs_{i:016x}" for i in range(schedules)]
        db.execute(insert(BookingResource), [
            {"id": rid, "venue_id": venue.id, "name": f"Clinic {i % 8}: Dr {i}",
             "kind": "appointment", "capacity": 1, "slot_minutes": 20,
             "hours": [["08:00", "12:00"], ["13:30", "17:00"]], "weekdays": "1234567",
             "tz": "UTC", "deposit": 0, "hold_minutes": 10, "cancel_cutoff_minutes": 120,
             "state": "ACTIVE", "created_at": NOW, "updated_at": NOW}
            for i, rid in enumerate(ids)])  # fmt: skip
        first = NOW - NOW % 86400
        rows: list[dict[str, Any]] = []
        serial = 0
        for rid in ids:
            for n in range(per_schedule):
                day, k = divmod(n, PER_DAY)
                start = first + day * 86400 + 8 * 3600 + k * STEP + (3600 * 1.5 if k >= 12 else 0)
                rows.append({"id": f"bsl_{serial:016x}", "resource_id": rid, "starts_at": start,
                             "ends_at": start + STEP, "capacity": 1,
                             "taken": 1 if serial % 3 == 0 else 0})  # fmt: skip
                serial += 1
        for i in range(0, len(rows), 10_000):
            db.execute(insert(BookingSlot), rows[i : i + 10_000])
        db.commit()
        db.execute(text("ANALYZE"))
        db.commit()
    engine.dispose()
    return ids, days


def day_text(offset: int) -> str:
    return (dt.date.fromtimestamp(NOW - NOW % 86400) + dt.timedelta(days=offset)).isoformat()


def measure(url: str, schedules: int, slots: int, requests: int) -> dict[str, Any]:
    ids, days = setup(url, schedules, slots)
    with tempfile.TemporaryDirectory() as instance:
        app = create_app({"DATABASE_URL": url, "INSTANCE_PATH": instance, "SECRET_KEY": "b"})
        client = app.test_client()
        rng = random.Random(17)

        def one(shape: int) -> str:
            schedule = rng.choice(ids).replace("_", "-", 1)
            offset = rng.randrange(days)
            if shape == 0:
                return f"/fhir/r4/Slot?schedule={schedule}&start={day_text(offset)}&status=free"
            if shape == 1:
                return (f"/fhir/r4/Slot?start=ge{day_text(offset)}&start=lt"
                        f"{day_text(offset + 1)}&status=free&_count=100")  # fmt: skip
            at = dt.datetime.fromtimestamp(NOW + offset * 86400, dt.UTC).strftime(
                "%Y-%m-%dT%H:%M:%SZ")  # fmt: skip
            return f"/fhir/r4/Slot?schedule={schedule}&start=ge{at}&_count=20"

        for shape in (0, 1, 2) * 20:  # warm the pool and the caches
            assert client.get(one(shape)).status_code == 200
        times: dict[int, list[float]] = {0: [], 1: [], 2: []}
        found = 0
        for n in range(requests):
            shape = n % 3
            path = one(shape)
            began = time.perf_counter()
            response = client.get(path)
            times[shape].append((time.perf_counter() - began) * 1000)
            assert response.status_code == 200, response.get_data(as_text=True)
            found += len(response.get_json().get("entry", []))
        cloud_db.engine(app).dispose()

    def figures(values: list[float]) -> dict[str, float]:
        ordered = sorted(values)
        return {"p50": round(statistics.median(ordered), 2),
                "p99": round(ordered[max(0, int(len(ordered) * 0.99) - 1)], 2),
                "max": round(ordered[-1], 2)}  # fmt: skip

    every = times[0] + times[1] + times[2]
    return {"slots": slots, "schedules": schedules, "days": days, "requests": requests,
            "slots_returned": found, "schedule_day_free": figures(times[0]),
            "any_doctor_day_free": figures(times[1]), "next_20": figures(times[2]),
            "all": figures(every)}  # fmt: skip


def run(schedules: int = 50, slots: int = 100_000, requests: int = 3000) -> Result:
    result = Result(NAME)
    with running_cluster(database="plaza_bench", durable=True) as cluster:
        log(f"PostgreSQL: private cluster at {cluster.socket_dir}")
        migrations.upgrade(cluster.url)
        figures = measure(cluster.url, schedules, slots, requests)
    result.figures = figures
    log(f"\n{slots:,} slots in {schedules} schedules over {figures['days']} days; "
        f"{requests:,} searches, {figures['slots_returned']:,} slots returned")  # fmt: skip
    for shape in ("schedule_day_free", "any_doctor_day_free", "next_20", "all"):
        f = figures[shape]
        log(f"{shape:>20}: p50 {f['p50']:6.2f} ms   p99 {f['p99']:6.2f} ms   "
            f"max {f['max']:6.2f} ms")  # fmt: skip
    result.checks = [
        Check("Slot search p99", figures["all"]["p99"], "ms", TARGET_MS),
        Check("Slot search p50", figures["all"]["p50"], "ms"),
    ]
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schedules", type=int, default=50)
    parser.add_argument("--slots", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args()
    raise SystemExit(main(lambda: run(args.schedules, args.slots, args.requests)))
