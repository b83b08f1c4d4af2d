"""Queue numbers taken per second on PostgreSQL, with the numbers checked afterwards.

A private PostgreSQL cluster (lab/postgres.py, default durability: fsync on), migrated; one
venue, one OPEN queue, and TAKES takes, every other one by a distinct signed-in shopper (the
phone's path: the one-live-ticket check first) and the rest from the kiosk (no shopper).
CLIENTS processes (each its own interpreter and connection) start together and take through
`cloud.o2o.queues.take`, the function the pages call; the HTTP layer in front is not
measured. The figure is takes / wall time of the taking phase. Afterwards the day's numbers
are read back: they must be exactly 1..TAKES (no gap, no duplicate), and the queue's counter
TAKES.

Every take commits synchronously (unlike a voucher claim): a number printed on a kiosk
ticket must survive a crash, or the counter would hand it out again (docs/decisions.md).
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
from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud.db import make_engine
from cloud.o2o import queues
from cloud.o2o.queue_models import QueueTicket, ServiceQueue

NAME = "queue_take"
TARGET = 100  # takes/s: a busy plaza's kiosks and phones at opening time, with room to spare
NOW = BENCH_NOW


def setup(url: str, takes: int) -> tuple[str, list[str | None]]:
    engine = make_engine(url)
    with Session(engine, expire_on_commit=False) as db:
        venue = bench_venue(db)
        spec = queues.QueueSpec(name="Customer service", prefix="A", time_zone="Asia/Shanghai")
        queue = queues.create_queue(db, venue.id, spec, NOW)
        ids = add_shoppers(db, takes // 2)
        db.commit()
    engine.dispose()
    who: list[str | None] = [None] * takes
    who[1::2] = ids[: len(who[1::2])]
    return queue.id, who


def measure(url: str, clients: int, takes: int) -> dict[str, Any]:
    queue, who = setup(url, takes)

    def take(db: Session, shopper: str | None) -> None:
        queues.take(db, queue, NOW, source="phone" if shopper else "kiosk", shopper_id=shopper)

    shares = [(url, who[i::clients], take, queues.QueueError) for i in range(clients)]
    counts, seconds = release_together(count_outcomes, shares)
    totals = merged(counts)
    engine = make_engine(url)
    with Session(engine) as db:
        numbers = sorted(db.scalars(select(QueueTicket.number)
                                    .where(QueueTicket.queue_id == queue)))  # fmt: skip
        last = db.get(ServiceQueue, queue).last_number  # type: ignore[union-attr]
    engine.dispose()
    return {"clients": clients, "takes": takes, "outcomes": totals, "seconds": round(seconds, 3),
            "takes_per_s": round(totals.get("ok", 0) / seconds), "stored": len(numbers),
            "last_number": last, "gaps": len(set(range(1, takes + 1)) - set(numbers)),
            "duplicates": len(numbers) - len(set(numbers))}  # fmt: skip


def run(clients: int = 4, takes: int = 2000) -> Result:
    result = Result(NAME)
    with bench_postgres() as url:
        figures = measure(url, clients, takes)
    result.figures = figures
    log(f"\n{takes:,} takes by {clients} clients: {figures['outcomes']}")
    log(f"takes/s {figures['takes_per_s']:,}   stored {figures['stored']:,}   last number "
        f"{figures['last_number']:,}   gaps {figures['gaps']}   duplicates "
        f"{figures['duplicates']}")  # fmt: skip
    if figures["gaps"] or figures["duplicates"] or figures["last_number"] != takes:
        result.errors.append(f"numbers broken: {figures}")
    if figures["outcomes"] != {"ok": takes}:
        result.errors.append(f"takes refused: {figures['outcomes']}")
    result.checks = [
        Check("PostgreSQL takes/s", figures["takes_per_s"], "takes/s", TARGET, True),
        Check("gaps + duplicates", figures["gaps"] + figures["duplicates"], "numbers", 0),
    ]
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=4, help="taking processes at once")
    parser.add_argument("--takes", type=int, default=2000, help="numbers taken in all")
    args = parser.parse_args()
    raise SystemExit(main(lambda: run(args.clients, args.takes)))
