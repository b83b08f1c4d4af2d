"""Taps ingested per second from signed reader batches on PostgreSQL (issue 17: >= 10,000/s).

A private PostgreSQL cluster (lab/postgres.py, fsync on), migrated; the sample city feed in
force; READERS bus readers enrolled through the real endpoint (claim code, Ed25519 key);
CARDS riders' cards. Each reader is its own process with its own cloud app (the WSGI app
in-process through Flask's test client: the HTTP parsing, signature check, nonce insert,
batch validation and the one multi-row INSERT ... ON CONFLICT (reader_id, seq) DO NOTHING
are measured; sockets are not). Readers start together and each POSTs BATCHES batches of
BATCH taps, signed like any device request, with charging left to the charge pass
(TRANSIT_CHARGE_ON_UPLOAD off: an offline day's backlog is stored at insert speed). The
figure is taps stored / wall time. Afterwards: the table holds exactly what was sent, a
batch sent again stores nothing; then the charge pass (`plaza-cloud transit charge`, in
process: fare quotes and ledger postings) charges the taps of CHARGE_CARDS cards, oldest
first, and its rate (taps charged / wall time) is shown beside the ingest rate, with the
books checked to balance and every charged tap posted once.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import tempfile
import time
from typing import Any

from benchlib import Check, Result, log, main
from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from cloud import create_app, migrations
from cloud import db as cloud_db
from cloud.accounts import create_merchant, create_venue
from cloud.db import make_engine
from cloud.o2o import ledger
from cloud.o2o.shoppers import Shopper
from cloud.transit import cards, taps
from cloud.transit.models import TransitCard, TransitTap
from lab.postgres import running_cluster
from plaza import signing

NAME = "transit_taps"
TARGET = 10_000  # taps/s, issue 17
CHARGE_TARGET = 5_000  # taps charged/s: a few thousand buses' taps a day, charged as they come
NOW = 1_800_000_000.0
PATH = "/api/v1/transit/taps"
CLOUD_KEY = signing.new_key()


def make_app(url: str, instance: str) -> Any:
    return create_app(
        {
            "DATABASE_URL": url,
            "INSTANCE_PATH": instance,
            "SECRET_KEY": "bench",
            "CLOUD_KEY": CLOUD_KEY,
            "CLOCK": time.time,
            "TRANSIT_CHARGE_ON_UPLOAD": False,
        }
    )


def setup(
    url: str, instance: str, readers: int, cards_n: int
) -> tuple[list[tuple[str, bytes]], list[str]]:
    engine = make_engine(url)
    with Session(engine, expire_on_commit=False) as db:
        merchant = create_merchant(db, "Transit", "ops@transit.example", "benchbenchbench", NOW)
        venue = create_venue(db, merchant.id, "City buses", NOW, "portal.example")
        cards.store_feed(db, venue.id, cards_feed(), NOW)
        db.commit()
        codes = [
            cards.reader_claim(db, venue.id, "b1", f"bus {i}", time.time()) for i in range(readers)
        ]
        db.commit()
        ids = [f"shp_{i:016x}" for i in range(cards_n)]
        db.execute(
            insert(Shopper),
            [
                {"id": i, "provider": "oidc", "subject": i, "created_at": NOW, "last_seen_at": NOW}
                for i in ids
            ],
        )
        card_ids = [f"tcd_{i:016x}" for i in range(cards_n)]
        db.execute(
            insert(TransitCard),
            [
                {"id": c, "shopper_id": s, "state": "active", "created_at": NOW}
                for c, s in zip(card_ids, ids, strict=True)
            ],
        )
        db.commit()
    engine.dispose()
    app = make_app(url, instance)
    client, enrolled = app.test_client(), []
    for code in codes:
        key = signing.new_key()
        answer = client.post(
            "/api/v1/enrol",
            json={"claim_code": code, "public_key": signing.public_b64(key), "hostname": "reader"},
        )
        assert answer.status_code == 201, answer.get_json()
        enrolled.append((answer.get_json()["device_id"], signing.private_pem(key)))
    cloud_db.engine(app).dispose()
    return enrolled, card_ids


def cards_feed() -> str:
    from pathlib import Path

    return str(Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "gtfs_city")


def batch_body(reader: int, first_seq: int, size: int, card_ids: list[str]) -> bytes:
    t0 = time.time() - 86400  # a day's backlog
    rows = [
        {
            "seq": first_seq + i,
            "card": card_ids[(reader * 7919 + first_seq + i) % len(card_ids)],
            "at": round(t0 + (first_seq + i) * 0.5, 3),
            "stop_id": "s_square",
        }
        for i in range(size)
    ]
    return json.dumps({"taps": rows}).encode()


def reader_proc(
    url: str,
    instance: str,
    reader: int,
    device: str,
    pem: bytes,
    batches: int,
    size: int,
    card_ids: list[str],
    start: Any,
    out: Any,
) -> None:
    app = make_app(url, instance)
    client, key = app.test_client(), signing.load_private(pem)
    bodies = [batch_body(reader, b * size, size, card_ids) for b in range(batches)]
    client.get(
        "/api/v1/transit/denylist",
        headers=signing.sign_request(
            key, device, "GET", "/api/v1/transit/denylist", b"", int(time.time())
        ),
    )  # warm
    start.wait()
    stored = 0
    for body in bodies:
        headers = signing.sign_request(key, device, "POST", PATH, body, int(time.time()))
        answer = client.post(
            PATH, data=body, headers={**headers, "Content-Type": "application/json"}
        )
        assert answer.status_code == 200, answer.get_data(as_text=True)
        stored += answer.get_json()["stored"]
    # The last batch again, as after a lost answer: nothing more is stored.
    headers = signing.sign_request(key, device, "POST", PATH, bodies[-1], int(time.time()))
    again = client.post(
        PATH, data=bodies[-1], headers={**headers, "Content-Type": "application/json"}
    )
    cloud_db.engine(app).dispose()
    out.put((stored, again.get_json()["stored"]))


def measure(
    url: str, readers: int, batches: int, size: int, cards_n: int, charge_cards: int
) -> dict[str, Any]:
    instance = tempfile.mkdtemp(prefix="plaza-bench-transit-")
    enrolled, card_ids = setup(url, instance, readers, cards_n)
    ctx = mp.get_context("fork")
    start, out = ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(
            target=reader_proc,
            args=(url, instance, i, dev, pem, batches, size, card_ids, start, out),
        )
        for i, (dev, pem) in enumerate(enrolled)
    ]
    for proc in procs:
        proc.start()
    time.sleep(3.0)  # every reader's app built, connected and waiting
    began = time.perf_counter()
    start.set()
    results = [out.get(timeout=900) for _ in procs]
    seconds = time.perf_counter() - began
    for proc in procs:
        proc.join()
    stored = sum(r[0] for r in results)
    resent = sum(r[1] for r in results)
    engine = make_engine(url)
    with Session(engine) as db:
        rows = db.scalar(select(func.count()).select_from(TransitTap)) or 0
        charge_began = time.perf_counter()
        charged = taps.charge_pending(db, time.time(), limit=charge_cards)
        charge_seconds = time.perf_counter() - charge_began
        balanced = ledger.check_balanced(db)
        postings = db.scalar(
            select(func.count()).select_from(ledger.LedgerPosting)
            .where(ledger.LedgerPosting.kind == "transit-fare")
        )  # fmt: skip
        with_fare = db.scalar(
            select(func.count()).where(TransitTap.state == "charged", TransitTap.fare != 0)
        )
    engine.dispose()
    sent = readers * batches * size
    return {
        "readers": readers,
        "batch": size,
        "sent": sent,
        "stored": stored,
        "rows": rows,
        "resent_stored": resent,
        "seconds": round(seconds, 3),
        "taps_per_s": round(stored / seconds),
        "charge_sample": charged,
        "charged_per_s": round(charged["charged"] / charge_seconds),
        "charge_seconds": round(charge_seconds, 3),
        "books_balance": balanced,
        "fare_postings": postings,
        "taps_with_fare": with_fare,
    }


def run(readers: int, batches: int, size: int, cards_n: int, charge_cards: int) -> Result:
    result = Result(NAME)
    with running_cluster(database="plaza_bench", durable=True) as cluster:
        log(f"PostgreSQL: private cluster at {cluster.socket_dir} (fsync on)")
        migrations.upgrade(cluster.url)
        figures = measure(cluster.url, readers, batches, size, cards_n, charge_cards)
    result.figures = figures
    log(
        f"\n{figures['sent']:,} taps from {readers} readers in batches of {size:,}: "
        f"{figures['taps_per_s']:,} taps/s ({figures['seconds']} s); rows {figures['rows']:,}; "
        f"a batch resent stored {figures['resent_stored']}\n"
        f"ingest {figures['taps_per_s']:,} taps/s | charge pass {figures['charged_per_s']:,} "
        f"taps/s ({figures['charge_sample']} in {figures['charge_seconds']} s; books balance: "
        f"{figures['books_balance']}; fare postings {figures['fare_postings']:,} for "
        f"{figures['taps_with_fare']:,} taps with a fare)"
    )
    if figures["rows"] != figures["sent"] or figures["stored"] != figures["sent"]:
        result.errors.append(f"taps lost or doubled: {figures}")
    if figures["resent_stored"]:
        result.errors.append("a batch sent again was stored again")
    if not figures["books_balance"] or figures["fare_postings"] != figures["taps_with_fare"]:
        result.errors.append(f"the charge pass broke the books: {figures}")
    result.checks = [
        Check("taps ingested/s (PostgreSQL)", figures["taps_per_s"], "taps/s", TARGET, True),
        Check("taps lost or doubled", abs(figures["rows"] - figures["sent"]), "taps", 0),
        Check(
            "taps charged/s (PostgreSQL)", figures["charged_per_s"], "taps/s", CHARGE_TARGET, True
        ),
    ]
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readers", type=int, default=2, help="reader processes at once")
    parser.add_argument("--batches", type=int, default=50, help="batches per reader")
    parser.add_argument("--batch", type=int, default=2000, help="taps per batch (max 5000)")
    parser.add_argument("--cards", type=int, default=20_000)
    parser.add_argument(
        "--charge-cards", type=int, default=10_000, help="cards the charge pass charges"
    )
    args = parser.parse_args()
    raise SystemExit(
        main(lambda: run(args.readers, args.batches, args.batch, args.cards, args.charge_cards))
    )
