"""Run every benchmark, print one summary table, and store the results as JSON.

Each benchmark brings up its own lab ("bench"; the join storm's is "storm") and takes it down,
so one failing cannot leave state that skews the next. Figures are compared with their targets
for the table only: a missed target is reported, never an error. The exit code is non-zero only
if a benchmark broke (raised, or counted errors such as wrong answers or lost packets).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import authorize_latency
import churn
import cloud_ingest
import dashboard
import detection
import fhir_slots
import forwarding
import idle_memory
import join_storm
import payment_notify
import queue_take
import redirect_latency
import router_install
import scale
import voucher_claims
from benchlib import HERE, LAB_NAME, Result, log, netns_names

RESULTS = HERE / "results" / "latest.json"

BENCHMARKS: list[tuple[str, Callable[[], Result]]] = [
    (forwarding.NAME, forwarding.run),
    (authorize_latency.NAME, authorize_latency.run),
    (redirect_latency.NAME, redirect_latency.run),
    (join_storm.NAME, join_storm.run),
    (cloud_ingest.NAME, cloud_ingest.run),
    (dashboard.NAME, dashboard.run),
    (payment_notify.NAME, payment_notify.run),
    (voucher_claims.NAME, voucher_claims.run),
    (queue_take.NAME, queue_take.run),
    (fhir_slots.NAME, fhir_slots.run),
    (scale.NAME, scale.run),
    (churn.NAME, churn.run),
    (detection.NAME, detection.run),
    (router_install.NAME, router_install.run),
    (idle_memory.NAME, idle_memory.run),
]
# join_storm, scale, churn, detection and idle_memory bring up labs of their own
LAB_PREFIXES = (
    f"{LAB_NAME}-", f"{join_storm.LAB}-", f"{scale.LAB}-", f"{churn.LAB}-", f"{detection.LAB}-",
    f"{idle_memory.LAB}-",
)  # fmt: skip


def table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def summary(results: list[Result]) -> str:
    rows = [["benchmark", "figure", "value", "target", "vs target"]]
    for result in results:
        for check in result.checks:
            verdict = {None: "-", True: "pass", False: "MISS"}[check.passed]
            rows.append(
                [result.name, check.figure, check.value_text(), check.target_text(), verdict]
            )
        if result.errors:
            rows.append([result.name, "errors", str(len(result.errors)), "0", "BROKEN"])
    return table(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", help="run only this benchmark (repeatable)")
    parser.add_argument("--output", type=Path, default=RESULTS, help="where to write the JSON")
    args = parser.parse_args(argv)
    started = time.monotonic()
    results: list[Result] = []
    for name, run in BENCHMARKS:
        if args.only and name not in args.only:
            continue
        log(f"\n=== {name} ===")
        t0 = time.monotonic()
        try:
            result = run()
        except Exception as exc:
            traceback.print_exc()
            result = Result(name, errors=[f"benchmark raised {type(exc).__name__}: {exc}"])
        result.seconds = time.monotonic() - t0
        results.append(result)
    leftover = [ns for ns in netns_names() if ns.startswith(LAB_PREFIXES)]
    log(f"\n=== summary ({time.monotonic() - started:.0f} s) ===")
    log(summary(results))
    if leftover:
        log(f"warning: namespaces left behind: {', '.join(leftover)}")
    for result in results:
        for error in result.errors[:5]:
            log(f"{result.name}: error: {error}")
    document = {
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": {
            "kernel": platform.release(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        },
        "results": [r.as_dict() for r in results],
        "leftover_namespaces": leftover,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(document, indent=2) + "\n")
    log(f"results written to {args.output}")
    broken = any(r.errors for r in results) or bool(leftover)
    return 1 if broken else 0


if __name__ == "__main__":
    raise SystemExit(main())
