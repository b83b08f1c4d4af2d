"""Cloud usage ingestion: records/s through the real HTTP path, PostgreSQL beside SQLite.

For each backend: a fresh database (PostgreSQL: a private cluster from lab/postgres.py with
default durability, fsync on), migrated; `plaza-cloud run` started as its own process on
127.0.0.1 (cheroot, so the server has its own interpreter and GIL); CLIENTS routers enrolled
through the API; then every router posts BATCHES batches of 1,000 records, each request
signed as the real uplink signs it, CLIENTS at a time. The figure is records stored / wall time
of the posting phase. Batch bodies are built before timing: the router's cost is not measured.
A second pass resends every batch (a lost acknowledgement): it must store nothing, and its
rate is shown for context. Counts are checked in the database afterwards: a record lost or
stored twice is an error, not a figure.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests
from benchlib import Check, Result, log, main
from sqlalchemy import func, select

from cloud import create_app, migrations
from cloud import db as cloud_db
from cloud.accounts import create_merchant, create_venue
from cloud.enrol import create_claim
from cloud.models import UsageRecord
from lab.postgres import running_cluster
from plaza import signing

NAME = "cloud_ingest"
TARGET_PG = 10_000  # records/s, issue 5
BATCH = 1000
USAGE = "/api/v1/device/usage"


def batch_body(device: int, batch: int) -> bytes:
    records = []
    for i in range(BATCH):
        seq = batch * BATCH + i
        t = 1_800_000_000.0 + seq
        records.append({
            "key": f"d{device}s{seq // 50}-{seq % 50}", "session_id": f"d{device}s{seq // 50}",
            "seq": seq % 50, "mac": f"02:00:00:{device:02x}:{(seq >> 8) & 255:02x}:{seq & 255:02x}",
            "ip": f"10.{device}.{(seq >> 8) & 255}.{seq & 255}", "started_at": t,
            "period_start": t, "period_end": t + 60, "final": False, "reason": None,
            "bytes_up": 1000 + i, "packets_up": 10, "bytes_down": 50_000 + i, "packets_down": 40,
            "total_bytes_up": 1000 * seq, "total_bytes_down": 50_000 * seq,
        })  # fmt: skip
    return json.dumps({"records": records}).encode()


@contextmanager
def cloud_server(url: str, instance: Path) -> Iterator[str]:
    """`plaza-cloud run` on a free loopback port; yields its base URL."""
    cmd = [sys.executable, "-m", "cloud.cli", "--database-url", url, "--instance", str(instance),
           "run", "--host", "127.0.0.1", "--port", "0"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        if not match:
            raise RuntimeError(f"plaza-cloud run did not start: {line}{proc.stdout.read(2000)}")
        threading.Thread(target=proc.stdout.read, daemon=True).start()  # drain its output
        yield f"http://127.0.0.1:{match.group(1)}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _post_all(base: str, routers: list[tuple[str, object]], bodies: list[list[bytes]],
              errors: list[str]) -> tuple[float, int, int]:  # fmt: skip
    """Every router posts its batches (one thread each); returns (seconds, accepted, dups)."""
    totals = [[0, 0] for _ in routers]

    def worker(n: int) -> None:
        device_id, key = routers[n]
        with requests.Session() as http:
            for body in bodies[n]:
                headers = signing.sign_request(key, device_id, "POST", USAGE, body,
                                               int(time.time()))  # fmt: skip
                headers["Content-Type"] = "application/json"
                response = http.post(base + USAGE, data=body, headers=headers, timeout=60)
                if response.status_code != 200:
                    errors.append(f"{response.status_code} {response.text[:200]}")
                    continue
                answer = response.json()
                totals[n][0] += answer["accepted"]
                totals[n][1] += answer["duplicates"]

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(len(routers))]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - started, sum(a for a, _ in totals), sum(d for _, d in totals)


def measure(url: str, clients: int, batches: int, result: Result, label: str) -> dict[str, float]:
    migrations.upgrade(url)
    with tempfile.TemporaryDirectory(prefix="plaza-cloud-bench-") as tmp:
        instance = Path(tmp) / "instance"
        app = create_app({"DATABASE_URL": url, "INSTANCE_PATH": str(instance)})
        with cloud_db.session(app) as db:
            merchant = create_merchant(db, "Bench", "bench@bench.example", "benchbench", 0.0)
            venue = create_venue(db, merchant.id, "Bench venue", time.time())
            codes = [create_claim(db, venue.id, time.time()) for _ in range(clients)]
            db.commit()
        bodies = [[batch_body(d, b) for b in range(batches)] for d in range(clients)]
        errors: list[str] = []
        with cloud_server(url, instance) as base:
            routers = []
            for code in codes:
                key = signing.new_key()
                answer = requests.post(base + "/api/v1/enrol", timeout=10, json={
                    "claim_code": code, "public_key": signing.public_b64(key),
                    "hostname": "bench", "version": "bench"})  # fmt: skip
                answer.raise_for_status()
                routers.append((answer.json()["device_id"], key))
            # One untimed batch per router warms connections and caches; its keys are not
            # among the measured ones.
            _post_all(base, routers, [[batch_body(100 + d, 0)] for d in range(clients)], errors)
            seconds, accepted, dups = _post_all(base, routers, bodies, errors)
            resend_seconds, re_accepted, re_dups = _post_all(base, routers, bodies, errors)
        with cloud_db.session(app) as db:
            stored = db.scalar(select(func.count()).select_from(UsageRecord)) or 0
        cloud_db.engine(app).dispose()
    expected = clients * batches * BATCH
    if accepted != expected or dups:
        errors.append(f"{label}: first pass accepted {accepted}, duplicates {dups}, "
                      f"expected {expected} and 0")  # fmt: skip
    if re_accepted or re_dups != expected:
        errors.append(f"{label}: resend accepted {re_accepted} (expected 0)")
    if stored != expected + clients * BATCH:
        errors.append(
            f"{label}: {stored} rows in the database, expected {expected + clients * BATCH}"
        )
    result.errors.extend(errors[:10])
    return {
        "records": expected,
        "seconds": round(seconds, 3),
        "records_per_s": round(expected / seconds),
        "resend_records_per_s": round(expected / resend_seconds),
    }


def run(clients: int = 4, batches: int = 25) -> Result:
    result = Result(NAME)
    figures: dict[str, dict[str, float]] = {}
    with running_cluster(database="plaza_bench", durable=True) as cluster:
        log(f"PostgreSQL: private cluster at {cluster.socket_dir} (fsync on)")
        figures["postgresql"] = measure(cluster.url, clients, batches, result, "postgresql")
    with tempfile.TemporaryDirectory(prefix="plaza-cloud-bench-sqlite-") as tmp:
        figures["sqlite"] = measure(f"sqlite:///{tmp}/bench.db", clients, batches, result, "sqlite")
    result.figures = {"clients": clients, "batch": BATCH, **figures}
    log(f"\n{clients} routers x {batches} batches x {BATCH} records, signed, over HTTP\n")
    log(f"{'':<28}{'PostgreSQL':>14}{'SQLite':>14}")
    for name, label in (("records_per_s", "new records/s"), ("resend_records_per_s",
                        "resent (duplicate) records/s"), ("seconds", "seconds (new)")):  # fmt: skip
        pg, lite = figures["postgresql"][name], figures["sqlite"][name]
        log(f"{label:<28}{pg:>14,}{lite:>14,}")
    result.checks = [
        Check(
            "PostgreSQL records/s",
            figures["postgresql"]["records_per_s"],
            "rec/s",
            TARGET_PG,
            higher_is_better=True,
        ),
        Check("SQLite records/s", figures["sqlite"]["records_per_s"], "rec/s"),
    ]
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=4, help="routers posting at once")
    parser.add_argument("--batches", type=int, default=25, help="batches of 1,000 per router")
    args = parser.parse_args()
    raise SystemExit(main(lambda: run(args.clients, args.batches)))
