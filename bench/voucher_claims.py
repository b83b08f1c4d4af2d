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
from typing import Any

from benchlib import (
    BENCH_NOW,
    Check,
    Result,
    add_shoppers,
    bench_postgres,
    bench_venue,
    count_outcomes,
    log,
    main,
    merged,
    release_together,
)
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cloud.db import make_engine
from cloud.o2o import vouchers
from cloud.o2o.voucher_models import Voucher, VoucherTemplate

NAME = "voucher_claims"
TARGET = 1000  # claims/s, issue 16
NOW = BENCH_NOW


def setup(url: str, budget: int, claims: int) -> tuple[str, list[str]]:
    engine = make_engine(url)
    with Session(engine, expire_on_commit=False) as db:
        venue = bench_venue(db)
        spec = vouchers.TemplateSpec(title="10 off", kind="amount", amount_off=1000,
                                     budget=budget, valid_days=30)  # fmt: skip
        template = vouchers.create_template(db, venue, spec, venue.merchant_id, NOW)
        vouchers.change_state(db, template, "activate", venue.merchant_id, NOW)
        ids = add_shoppers(db, claims)
        db.commit()
    engine.dispose()
    return template.id, ids


def measure(url: str, clients: int, budget: int, for_update: bool) -> dict[str, Any]:
    claims = budget + budget // 5
    template, ids = setup(url, budget, claims)

    def claim(db: Session, shopper: str) -> None:
        if for_update:
            query = select(VoucherTemplate.id).where(VoucherTemplate.id == template)
            db.execute(query.with_for_update())
        vouchers.claim(db, template, shopper, NOW)

    shares = [(url, ids[i::clients], claim, vouchers.VoucherError) for i in range(clients)]
    counts, seconds = release_together(count_outcomes, shares)
    totals = merged(counts)
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
    with bench_postgres() as url:
        figures = measure(url, clients, budget, for_update)
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
