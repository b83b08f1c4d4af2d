"""Churn: 100,000 deauthorize/authorize cycles across 10,000 clients through the control socket.

The venue is filled first: 10,000 synthetic stations (a lease event, then `auth`, as in
bench/scale.py), all authorized. Then cycle k takes station k mod 10,000 and ends its session
(`deauth`) and opens a new one (`auth`): the venue stays full while sessions come and go, so
every cycle writes the ended session's record, drops its kernel objects at the next accounting
poll and creates a new session's. Counted: failed calls (an `ok: false` answer or no answer),
crashes (the daemon's pid changed or is gone), the daemon's resident memory sampled every
10,000 cycles (flat, or growing?), and cycles per second. At the end the kernel must hold
exactly the 10,000 sessions' elements and objects: any more is a leak.
"""

from __future__ import annotations

import argparse
import os
import time

from benchlib import Check, Result, bench_lab, log, main, nsrun, percentile
from scale import daemon_pid, populate, rss, synthetic, wait_periodic

from gateway.control_client import ControlError

NAME = "churn"
LAB = "bchurn"
SAMPLE_EVERY = 10_000


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def kernel_counts(router_ns: str) -> dict[str, int]:
    """Elements of the IPv4 client set and counter objects in the kernel, counted with nft."""
    listing = nsrun(router_ns, "nft", "-j", "list", "counters", "table", "inet", "plaza")
    counters = listing.count('"counter": {')
    elements = nsrun(router_ns, "nft", "-j", "list", "set", "inet", "plaza", "auth4")
    import json

    items = json.loads(elements)["nftables"]
    found = next((i["set"].get("elem", []) for i in items if "set" in i), [])
    return {"auth4_elements": len(found), "counters": counters}


def run(cycles: int = 100_000, clients: int = 10_000) -> Result:
    result = Result(NAME)
    failed: list[str] = []
    samples: list[dict] = []
    cycle_calls: list[float] = []
    with bench_lab(phones=0, name=LAB) as lab:
        control = lab.control()
        pid = daemon_pid(lab)
        log(f"filling the venue: {clients:,} stations, leased and authorized")
        t0 = time.monotonic()
        populate(control, 0, clients, failed)
        log(f"filled in {time.monotonic() - t0:.1f} s; {len(failed)} failed calls")
        wait_periodic(lab, "poll")
        first = rss(pid)
        samples.append({"cycles": 0, "rss_kb": first["VmRSS"], "hwm_kb": first["VmHWM"]})
        log(f"RSS before churning: {first['VmRSS'] / 1024:.1f} MB; {cycles:,} cycles")
        started = time.monotonic()
        crashed = False
        for k in range(cycles):
            mac = synthetic(k % clients)[0]
            t0 = time.perf_counter()
            for op in ("deauth", "auth"):
                try:
                    control.call(op, client=mac)
                except ControlError as exc:
                    failed.append(f"cycle {k} {op} {mac}: {exc}")
                    if not alive(pid):
                        crashed = True
                        break
            cycle_calls.append(time.perf_counter() - t0)
            if crashed:
                log(f"the daemon (pid {pid}) is gone after {k} cycles")
                break
            if (k + 1) % SAMPLE_EVERY == 0:
                now = rss(pid)
                elapsed = time.monotonic() - started
                samples.append(
                    {
                        "cycles": k + 1,
                        "rss_kb": now["VmRSS"],
                        "hwm_kb": now["VmHWM"],
                        "seconds": round(elapsed, 1),
                    }
                )
                recent = cycle_calls[-SAMPLE_EVERY:]
                log(
                    f"{k + 1:>7,} cycles in {elapsed:6.1f} s ({(k + 1) / elapsed:5.0f}/s): RSS "
                    f"{now['VmRSS'] / 1024:5.1f} MB (peak {now['VmHWM'] / 1024:5.1f}); "
                    f"cycle p50 {percentile(recent, 50) * 1e3:.2f} ms "
                    f"p99 {percentile(recent, 99) * 1e3:.2f} ms; failed calls {len(failed)}"
                )
        seconds = time.monotonic() - started
        done = len(cycle_calls)
        same = alive(pid) and daemon_pid(lab) == pid
        end: dict = {}
        if same:
            wait_periodic(lab, "poll")  # ended sessions' final records and objects
            wait_periodic(lab, "poll")
            ping = control.call("ping")
            end = {**kernel_counts(lab.state.router), "authorized": ping["authorized"]}
            last = rss(pid)
            samples.append(
                {"cycles": done, "rss_kb": last["VmRSS"], "hwm_kb": last["VmHWM"], "end": True}
            )
            log(
                f"after the churn: {end['authorized']:,} authorized, "
                f"{end['auth4_elements']:,} auth4 elements, {end['counters']:,} counters "
                f"(expected {clients:,}, {clients:,}, {2 * clients:,})"
            )
            if end != {"auth4_elements": clients, "counters": 2 * clients, "authorized": clients}:
                result.errors.append(f"kernel or sessions differ from {clients} clients: {end}")

    crashes = 0 if same else 1
    rate = done / seconds if seconds else float("nan")
    series = [s["rss_kb"] / 1024 for s in samples]
    growth = series[-1] - series[0]
    # After the first 20,000 cycles (~30 s) interim records and batches of final records
    # have run; the first full comparison during churn (every 60 s) comes at ~40,000. Growth
    # from 20,000 on is what would add up over days, so a comparison's step counts against
    # the bar (it did, until gateway/ops/memory.py fixed glibc's mmap threshold).
    settled = series[min(2, len(series) - 1)]
    creep = series[-1] - settled
    log(f"RSS series (MB, every {SAMPLE_EVERY:,} cycles): {', '.join(f'{v:.1f}' for v in series)}")
    log(
        f"memory: first {series[0]:.1f} MB, last {series[-1]:.1f} MB ({growth:+.1f} MB); "
        f"from {2 * SAMPLE_EVERY:,} cycles on {creep:+.1f} MB: "
        f"{'memory flat' if abs(creep) <= 2 else 'memory NOT flat'} (after the warm-up)"
    )
    log(f"{done:,} cycles in {seconds:.1f} s: {rate:.0f} cycles/s; crashes {crashes}; "
        f"failed calls {len(failed)}")  # fmt: skip
    for line in failed[:10]:
        log(f"  failed: {line}")
    result.errors += failed
    if crashes:
        result.errors.append(f"the daemon (pid {pid}) crashed or was replaced")
    result.figures = {
        "cycles": done,
        "clients": clients,
        "seconds": round(seconds, 1),
        "cycles_per_s": round(rate, 1),
        "crashes": crashes,
        "failed_calls": len(failed),
        "rss_samples": samples,
        "rss_growth_mb": round(growth, 2),
        "rss_growth_after_warmup_mb": round(creep, 2),
        "cycle_ms": {
            "p50": round(percentile(cycle_calls, 50) * 1e3, 3),
            "p99": round(percentile(cycle_calls, 99) * 1e3, 3),
            "max": round(max(cycle_calls) * 1e3, 3) if cycle_calls else None,
        },
        "end": end,
    }
    result.checks += [
        Check("crashes", crashes, "", 0),
        Check("failed calls", len(failed), "", 0),
        Check("RSS growth first -> last sample", growth, "MB", 2),
        Check(f"RSS growth from {2 * SAMPLE_EVERY:,} cycles to the last", creep, "MB", 2),
        Check("RSS at the end", series[-1], "MB", 64),
        Check("cycles per second (deauth + auth)", rate, "/s"),
        Check("cycle p99 (deauth + auth round trips)", result.figures["cycle_ms"]["p99"], "ms"),
    ]
    return result


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=100_000, help="cycles (default 100000)")
    parser.add_argument("--clients", type=int, default=10_000, help="clients (default 10000)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    args = parse()
    raise SystemExit(main(lambda: run(args.cycles, args.clients)))
