"""Voucher claims per second on PostgreSQL, with the budget invariant checked afterwards.

A private PostgreSQL cluster (lab/postgres.py, default durability: fsync on), migrated; one
venue, one ACTIVATED template with a budget of BUDGET, and CLAIMS distinct shoppers (a fifth
more than the budget, so the end of the run is a race for the last vouchers). CLIENTS
processes (each its own interpreter and its own connection, so the figure is the database's
and the claim code's, not one GIL's) start together and claim through
`cloud.o2o.vouchers.claim`, the function the shopper's page calls; the HTTP layer in front
is not measured. The figure is successful claims / wall time of the claiming phase.
Afterwards the database is counted: vouchers stored, the template's `issued`, and
over-issue (vouchers beyond the budget), which must be 0.

`--for-update` runs the same claims with the template row locked first (`SELECT ... FOR
UPDATE`, held for the whole claim) instead of the conditional UPDATE alone: the alternative
docs/decisions.md compares.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time
from typing import Any

from benchlib import Check, Result, log, main
from sqlalchemy import create_engine, func, insert, select
from sqlalchemy.orm import Session

from cloud import migrations
from cloud.accounts import create_merchant, create_venue
from cloud.db import make_engine
from cloud.o2o import vouchers
from cloud.o2o.shoppers import Shopper
from cloud.o2o.voucher_models import Voucher, VoucherTemplate
from lab.postgres import running_cluster

NAME = "voucher_claims"
TARGET = 1000  # claims/s, issue 16
NOW = 1_800_000_000.0


def setup(url: str, budget: int, claims: int) -> tuple[str, list[str]]:
    engine = make_engine(url)
    with Session(engine, expire_on_commit=False) as db:
        merchant = create_merchant(db, "Bench", "bench@example.com", "benchbenchbench", NOW)
        venue = create_venue(db, merchant.id, "Bench plaza", NOW, "portal.example")
        db.commit()
        spec = vouchers.TemplateSpec(title="10 off", kind="amount", amount_off=1000,
                                     budget=budget, valid_days=30)  # fmt: skip
        template = vouchers.create_template(db, venue, spec, merchant.id, NOW)
        vouchers.change_state(db, template, "activate", merchant.id, NOW)
        ids = [f"shp_{i:016x}" for i in range(claims)]
        rows = [{"id": i, "provider": "oidc", "subject": i, "created_at": NOW,
                 "last_seen_at": NOW} for i in ids]  # fmt: skip
        db.execute(insert(Shopper), rows)
        db.commit()
    engine.dispose()
    return template.id, ids


def client(url: str, template: str, shoppers: list[str], for_update: bool, start: Any,
           out: Any) -> None:  # fmt: skip
    engine = create_engine(url, pool_size=1, max_overflow=0)  # one connection, kept
    counts: dict[str, int] = {}
    with Session(engine, expire_on_commit=False) as db:
        db.execute(select(1))
        db.commit()  # connected before the start
        start.wait()
        for shopper in shoppers:
            try:
                if for_update:
                    query = select(VoucherTemplate.id).where(VoucherTemplate.id == template)
                    db.execute(query.with_for_update())
                vouchers.claim(db, template, shopper, NOW)
                outcome = "ok"
            except vouchers.VoucherError as exc:
                db.rollback()
                outcome = exc.code
            counts[outcome] = counts.get(outcome, 0) + 1
    engine.dispose()
    out.put(counts)


def measure(url: str, clients: int, budget: int, for_update: bool) -> dict[str, Any]:
    claims = budget + budget // 5
    template, ids = setup(url, budget, claims)
    ctx = mp.get_context("fork")
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=client, args=(url, template, ids[i::clients], for_update, start,
                                              out)) for i in range(clients)]  # fmt: skip
    for proc in procs:
        proc.start()
    time.sleep(1.0)  # every client connected and waiting
    began = time.perf_counter()
    start.set()
    totals: dict[str, int] = {}
    for _ in procs:
        for outcome, n in out.get(timeout=600).items():
            totals[outcome] = totals.get(outcome, 0) + n
    seconds = time.perf_counter() - began
    for proc in procs:
        proc.join()
    engine = make_engine(url)
    with Session(engine) as db:
        stored = db.scalar(select(func.count()).where(Voucher.template_id == template)) or 0
        issued = db.get(VoucherTemplate, template).issued  # type: ignore[union-attr]
    engine.dispose()
    return {"clients": clients, "budget": budget, "attempts": claims, "outcomes": totals,
            "seconds": round(seconds, 3), "claims_per_s": round(totals.get("ok", 0) / seconds),
            "stored": stored, "issued": issued,
            "over_issue": max(0, stored - budget, issued - budget)}  # fmt: skip


def run(clients: int = 4, budget: int = 20_000, for_update: bool = False) -> Result:
    result = Result(NAME)
    with running_cluster(database="plaza_bench", durable=True) as cluster:
        log(f"PostgreSQL: private cluster at {cluster.socket_dir} (fsync on)")
        migrations.upgrade(cluster.url)
        figures = measure(cluster.url, clients, budget, for_update)
    result.figures = {"lock": "for update" if for_update else "conditional update", **figures}
    log(f"\n{figures['attempts']:,} claims by {clients} clients on a budget of {budget:,} "
        f"({result.figures['lock']}): {figures['outcomes']}")  # fmt: skip
    log(f"claims/s {figures['claims_per_s']:,}   stored {figures['stored']:,}   issued "
        f"{figures['issued']:,}   over-issue {figures['over_issue']}")  # fmt: skip
    if figures["over_issue"] or figures["stored"] != figures["issued"]:
        result.errors.append(f"budget broken: {figures}")
    if figures["outcomes"].get("ok", 0) != min(budget, figures["attempts"]):
        result.errors.append(f"claims lost: {figures['outcomes']}")
    result.checks = [
        Check("PostgreSQL claims/s", figures["claims_per_s"], "claims/s", TARGET, True),
        Check("over-issue", figures["over_issue"], "vouchers", 0),
    ]
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=4, help="claiming processes at once")
    parser.add_argument("--budget", type=int, default=20_000, help="the template's budget")
    parser.add_argument("--for-update", action="store_true", help="lock the row first instead")
    args = parser.parse_args()
    raise SystemExit(main(lambda: run(args.clients, args.budget, args.for_update)))
