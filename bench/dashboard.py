"""Merchant dashboard: venue page time with 1,000,000 usage records, PostgreSQL beside SQLite.

For each backend: a fresh database (PostgreSQL: a private cluster from lab/postgres.py with
default durability), migrated, then one merchant, one venue and one router, and 30 days of
that venue's history ending now, generated inside the database (PostgreSQL generate_series,
SQLite a recursive CTE; no rows cross the client): SESSIONS sessions spread evenly over the
30 days (one every ~32 s), each 1 to 24 five-minute usage records (mean 62 min), MACs drawn
from a pool of 20,000 so most shoppers come back, a join at each session's start and a leave
at its end. About 1,000,000 usage records and 160,000 presence events; then ANALYZE.

`plaza-cloud run` serves the app as its own process on 127.0.0.1 (cheroot, as in production
at small scale); the benchmark signs in over HTTP like a browser and fetches the venue page
(routers, live clients, all four charts) REQUESTS times, one at a time, alternating the
default "last 24 hours" view with a day picked from the 30. The figure is wall time per page
from request to last byte, p50 and p99. A page that is not a full 200 venue page is an error.
Also printed, for the write-up: each query's own time in-process (median of 5).
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
from benchlib import Check, Result, log, main, percentile
from cloud_ingest import cloud_server
from sqlalchemy import func, select, text

from cloud import create_app, migrations
from cloud import db as cloud_db
from cloud.accounts import create_merchant, create_venue
from cloud.dashboard import stats
from cloud.models import Device, PresenceEvent, UsageRecord
from lab.postgres import running_cluster

NAME = "dashboard"
TARGET_P99_MS = 300.0  # issue 5
SESSIONS = 80_000  # x mean 12.5 records = ~1,000,000 usage records
MAC_POOL = 20_000
SPAN = 30 * 86400
PERIOD = 300
REQUESTS = 100
EMAIL, PASSWORD = "bench@bench.example", "bench-bench-bench"

# Per session `s`: start, length in records (1..24; 7919 is prime to 24, so every length is
# equally common), and its shopper `m` out of MAC_POOL. The same arithmetic in both dialects.
PG_SESSIONS = """
SELECT s, :t0 + s * (CAST(:span AS double precision) / :sessions) AS start,
       1 + (s * 7919) % 24 AS len, (s * 2654435761) % :pool AS m
FROM generate_series(0, :sessions - 1) AS s
"""
PG_MAC = (
    "'02:00:00:' || lpad(to_hex((m >> 16) & 255), 2, '0') || ':' || "
    "lpad(to_hex((m >> 8) & 255), 2, '0') || ':' || lpad(to_hex(m & 255), 2, '0')"
)
PG_USAGE = f"""
INSERT INTO usage_records (device_id, venue_id, received_at, key, session_id, seq, mac, ip,
    started_at, period_start, period_end, final, reason, bytes_up, packets_up, bytes_down,
    packets_down, total_bytes_up, total_bytes_down)
SELECT :device, :venue, start + (r + 1) * {PERIOD}, 's' || s || '-' || r, 's' || s, r,
       {PG_MAC}, '10.0.0.2', start, start + r * {PERIOD}, start + (r + 1) * {PERIOD},
       r = len - 1, NULL, 20000 + (s * 31 + r * 17) % 50000, 40,
       200000 + (s * 131 + r * 71) % 2000000, 200, 0, 0
FROM ({PG_SESSIONS}) AS sessions, generate_series(0, len - 1) AS r
"""
PG_PRESENCE = f"""
INSERT INTO presence_events (device_id, venue_id, key, kind, mac, at)
SELECT :device, :venue, k || '-' || s, k, {PG_MAC}, CASE WHEN k = 'join' THEN start
       ELSE start + len * {PERIOD} END
FROM ({PG_SESSIONS}) AS sessions, (VALUES ('join'), ('leave')) AS kinds(k)
WHERE k = 'join' OR start + len * {PERIOD} < :now
"""

LITE_SESSIONS = """
WITH RECURSIVE n(s) AS (SELECT 0 UNION ALL SELECT s + 1 FROM n WHERE s < :sessions - 1),
sessions AS (
  SELECT s, :t0 + s * (:span * 1.0 / :sessions) AS start, 1 + (s * 7919) % 24 AS len,
         (s * 2654435761) % :pool AS m FROM n),
r24(r) AS (SELECT 0 UNION ALL SELECT r + 1 FROM r24 WHERE r < 23)
"""
LITE_MAC = "printf('02:00:00:%02x:%02x:%02x', (m >> 16) & 255, (m >> 8) & 255, m & 255)"
LITE_USAGE = f"""
INSERT INTO usage_records (device_id, venue_id, received_at, key, session_id, seq, mac, ip,
    started_at, period_start, period_end, final, reason, bytes_up, packets_up, bytes_down,
    packets_down, total_bytes_up, total_bytes_down)
{LITE_SESSIONS}
SELECT :device, :venue, start + (r + 1) * {PERIOD}, 's' || s || '-' || r, 's' || s, r,
       {LITE_MAC}, '10.0.0.2', start, start + r * {PERIOD}, start + (r + 1) * {PERIOD},
       r = len - 1, NULL, 20000 + (s * 31 + r * 17) % 50000, 40,
       200000 + (s * 131 + r * 71) % 2000000, 200, 0, 0
FROM sessions JOIN r24 ON r < len
"""
LITE_PRESENCE = f"""
INSERT INTO presence_events (device_id, venue_id, key, kind, mac, at)
{LITE_SESSIONS}
SELECT :device, :venue, k || '-' || s, k, {LITE_MAC},
       CASE WHEN k = 'join' THEN start ELSE start + len * {PERIOD} END
FROM sessions, (SELECT 'join' AS k UNION ALL SELECT 'leave') AS kinds
WHERE k = 'join' OR start + len * {PERIOD} < :now
"""


def seed(url: str, sessions: int, now: float) -> dict[str, Any]:
    """Migrate, create the venue and its router, and generate the history; returns ids and
    counts."""
    migrations.upgrade(url)
    with tempfile.TemporaryDirectory(prefix="plaza-dash-seed-") as tmp:
        app = create_app({"DATABASE_URL": url, "INSTANCE_PATH": tmp, "SECRET_KEY": "seed"})
        with cloud_db.session(app) as db:
            merchant = create_merchant(db, "Bench Cafe", EMAIL, PASSWORD, now)
            venue = create_venue(db, merchant.id, "Bench Cafe Central", now)
            device = Device(venue_id=venue.id, public_key="A" * 44, hostname="bench-router",
                            version="0.4.1", enrolled_at=now - SPAN, last_heartbeat_at=now,
                            revoked=False,
                            health={"uptime": 86400, "load": [0.2, 0.2, 0.2],
                                    "clients": {"captive": 3, "authorized": 100},
                                    "version": "0.4.1", "config_version": 1})  # fmt: skip
            db.add(device)
            db.commit()
            params = {"device": device.id, "venue": venue.id, "t0": now - SPAN,
                      "span": SPAN, "sessions": sessions, "pool": MAC_POOL, "now": now}  # fmt: skip
            postgres = db.get_bind().dialect.name == "postgresql"
            started = time.perf_counter()
            db.execute(text(PG_USAGE if postgres else LITE_USAGE), params)
            db.execute(text(PG_PRESENCE if postgres else LITE_PRESENCE), params)
            db.commit()
            seconds = time.perf_counter() - started
            usage = db.scalar(select(func.count()).select_from(UsageRecord)) or 0
            presence = db.scalar(select(func.count()).select_from(PresenceEvent)) or 0
            venue_id = venue.id
            size = (
                db.scalar(text("SELECT pg_total_relation_size('usage_records')"))
                if postgres
                else None
            )
        # Fresh statistics for the planner, and on PostgreSQL the visibility map that
        # autovacuum keeps on an insert-only table (index-only scans skip the heap with it).
        engine = cloud_db.engine(app)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE" if postgres else "ANALYZE"))
        cloud_db.engine(app).dispose()
    return {"venue_id": venue_id, "usage": usage, "presence": presence,
            "seed_seconds": round(seconds, 1),
            # table + indexes per record, for docs/scale-out.md's sizing (PostgreSQL only)
            "bytes_per_record": round(size / usage) if size and usage else None}  # fmt: skip


def query_times(url: str, venue_id: str, now: float) -> dict[str, float]:
    """Each figure's query on its own, in-process, ms (median of 5): where the page's time
    goes."""
    with tempfile.TemporaryDirectory(prefix="plaza-dash-q-") as tmp:
        app = create_app({"DATABASE_URL": url, "INSTANCE_PATH": tmp, "SECRET_KEY": "q"})
        window = stats.Window.last_24h(now)
        calls: dict[str, Callable[[Any], Any]] = {
            "visitors_per_hour": lambda db: stats.visitors_per_hour(db, venue_id, window),
            "data_per_hour": lambda db: stats.data_per_hour(db, venue_id, window),
            "dwell": lambda db: stats.dwell(db, venue_id, window),
            "returning": lambda db: stats.returning(db, venue_id, window),
            "live_clients": lambda db: stats.live_clients(db, venue_id, now),
            "devices": lambda db: stats.devices(db, venue_id, now),
        }
        out = {}
        with cloud_db.session(app) as db:
            for name, call in calls.items():
                samples = []
                for _ in range(5):
                    stats.tune(db)  # as the page does (PostgreSQL: no JIT)
                    t = time.perf_counter()
                    call(db)
                    samples.append((time.perf_counter() - t) * 1000)
                    db.rollback()
                out[name] = round(statistics.median(samples), 1)
        cloud_db.engine(app).dispose()
    return out


def sign_in(http: requests.Session, base: str) -> None:
    page = http.get(f"{base}/dashboard/login", timeout=30)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    if not token:
        raise RuntimeError("no CSRF token on the sign-in page")
    answer = http.post(f"{base}/dashboard/login", timeout=30, allow_redirects=False,
                       data={"email": EMAIL, "password": PASSWORD,
                             "csrf_token": token.group(1)})  # fmt: skip
    if answer.status_code != 303:
        raise RuntimeError(f"sign-in failed: {answer.status_code}")


def time_pages(url: str, venue_id: str, requests_n: int, now: float,
               errors: list[str]) -> dict[str, Any]:  # fmt: skip
    """The venue page over HTTP, one request at a time; ms per page."""
    days = [time.strftime("%Y-%m-%d", time.gmtime(now - d * 86400)) for d in range(1, 30)]
    with (
        tempfile.TemporaryDirectory(prefix="plaza-dash-run-") as tmp,
        cloud_server(url, Path(tmp) / "instance") as base,
        requests.Session() as http,
    ):
        sign_in(http, base)
        page = f"{base}/dashboard/venues/{venue_id}"
        for _ in range(3):  # warm connections, caches and the template
            http.get(page, timeout=60)
        samples, sizes = [], []
        for i in range(requests_n):
            query = {} if i % 2 == 0 else {"day": days[(i * 7) % len(days)]}
            started = time.perf_counter()
            response = http.get(page, params=query, timeout=60)
            elapsed = (time.perf_counter() - started) * 1000
            if response.status_code != 200 or 'id="chart-returning"' not in response.text:
                errors.append(f"page {i}: {response.status_code} {response.text[:200]}")
                continue
            samples.append(elapsed)
            sizes.append(len(response.content))
    return {
        "requests": requests_n,
        "p50_ms": round(percentile(samples, 50), 1),
        "p99_ms": round(percentile(samples, 99), 1),
        "max_ms": round(max(samples, default=float("nan")), 1),
        "page_kb": round(statistics.median(sizes) / 1024, 1) if sizes else 0,
    }


def measure(url: str, label: str, sessions: int, requests_n: int,
            result: Result) -> dict[str, Any]:  # fmt: skip
    now = float(int(time.time()))
    log(f"{label}: seeding {sessions:,} sessions over 30 days ...")
    seeded = seed(url, sessions, now)
    log(f"{label}: {seeded['usage']:,} usage records, {seeded['presence']:,} presence events "
        f"in {seeded['seed_seconds']} s; {seeded['bytes_per_record'] or '-'} bytes/record "
        "with indexes")  # fmt: skip
    queries = query_times(url, seeded["venue_id"], time.time())
    log(f"{label}: query ms " + ", ".join(f"{k} {v}" for k, v in queries.items()))
    errors: list[str] = []
    pages = time_pages(url, seeded["venue_id"], requests_n, time.time(), errors)
    log(f"{label}: venue page p50 {pages['p50_ms']} ms, p99 {pages['p99_ms']} ms "
        f"({pages['page_kb']} kB)")  # fmt: skip
    result.errors.extend(f"{label}: {e}" for e in errors[:10])
    return {**seeded, "queries_ms": queries, **pages}


def run(sessions: int = SESSIONS, requests_n: int = REQUESTS) -> Result:
    result = Result(NAME)
    figures: dict[str, Any] = {}
    with running_cluster(database="plaza_dash", durable=True) as cluster:
        log(f"PostgreSQL: private cluster at {cluster.socket_dir}")
        figures["postgresql"] = measure(cluster.url, "postgresql", sessions, requests_n, result)
    with tempfile.TemporaryDirectory(prefix="plaza-dash-sqlite-") as tmp:
        figures["sqlite"] = measure(f"sqlite:///{tmp}/dash.db", "sqlite", sessions, requests_n,
                                    result)  # fmt: skip
    result.figures = {"sessions": sessions, **figures}
    pg, lite = figures["postgresql"], figures["sqlite"]
    log(f"\nvenue page (routers, live clients, 4 charts) over HTTP, {requests_n} requests\n")
    log(f"{'':<22}{'PostgreSQL':>14}{'SQLite':>14}")
    rows = (("usage", "usage records"), ("presence", "presence events"), ("p50_ms", "p50 ms"),
            ("p99_ms", "p99 ms"), ("max_ms", "max ms"))  # fmt: skip
    for key, label in rows:
        log(f"{label:<22}{pg[key]:>14,}{lite[key]:>14,}")
    result.checks = [
        Check("PostgreSQL venue page p99", pg["p99_ms"], "ms", TARGET_P99_MS),
        Check("SQLite venue page p99", lite["p99_ms"], "ms", TARGET_P99_MS),
        Check("PostgreSQL venue page p50", pg["p50_ms"], "ms"),
        Check("SQLite venue page p50", lite["p50_ms"], "ms"),
    ]
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=SESSIONS,
                        help="sessions to seed (x ~12.5 usage records each)")  # fmt: skip
    parser.add_argument("--requests", type=int, default=REQUESTS, help="pages timed per database")
    args = parser.parse_args()
    sys.exit(main(lambda: run(args.sessions, args.requests)))
