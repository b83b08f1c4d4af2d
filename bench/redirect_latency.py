"""Redirect latency: a captive phone's plain-HTTP GET to the portal's 302, as OS probes do.

A prober inside the phone's namespace opens a new TCP connection per request to the fake
internet's web address with Host www.example.test; nftables redirects it to the portal's
intercept listener, which must answer 302 with Location = the portal URL. Time is measured
from before connect to the last byte of the body, sequentially, after a short warm-up.
"""

from __future__ import annotations

import argparse
import json
import subprocess

from benchlib import HERE, PYTHON, Check, Result, bench_lab, log, main, percentile

from lab.topology import LabError

NAME = "redirect_latency"
HOST = "www.example.test"


def run(count: int = 500, warmup: int = 20) -> Result:
    result = Result(NAME)
    with bench_lab(phones=1) as lab:
        status = lab.status()
        phone = status["phones"][0]
        ip = phone["ipv4"]
        if lab.control().client(ip)["state"] != "captive":
            raise LabError("the phone should be captive")
        web, portal = status["internet"]["web_ipv4"], status["portal_url"]
        log(f"{count} requests (after {warmup} warm-up) to http://{web}/ Host {HOST}")
        proc = subprocess.run(
            ["ip", "netns", "exec", phone["netns"], PYTHON, str(HERE / "ns_http_probe.py"),
             web, "--host", HOST, "--expect", portal, "--count", str(count),
             "--warmup", str(warmup)],
            capture_output=True,
            text=True,
            timeout=60 + count,
        )  # fmt: skip
        if proc.returncode != 0 or not proc.stdout.strip():
            why = proc.stderr.strip().splitlines()
            raise LabError(f"HTTP prober failed: {why[-1] if why else proc.returncode}")
        report = json.loads(proc.stdout.strip().splitlines()[-1])
    latencies: list[float] = report["latencies_ms"]
    result.errors = report["errors"]
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    worst = max(latencies) if latencies else float("nan")
    log(
        f"302 to {portal}: p50 {p50:.3f} ms  p99 {p99:.3f} ms  max {worst:.3f} ms"
        f"  (ok {len(latencies)}, errors {len(result.errors)})"
    )
    result.figures = {
        "p50_ms": round(p50, 3),
        "p90_ms": round(percentile(latencies, 90), 3),
        "p99_ms": round(p99, 3),
        "max_ms": round(worst, 3),
        "ok": len(latencies),
        "errors": len(result.errors),
        "requests": count,
        "warmup": warmup,
        "portal_url": portal,
    }
    result.checks += [
        Check("captive GET -> 302 p50", p50, "ms"),
        Check("captive GET -> 302 p99", p99, "ms", 20, higher_is_better=False),
        Check("captive GET -> 302 errors", float(len(result.errors)), "", 0, False),
    ]
    return result


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=500, help="timed requests (default 500)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed requests first")
    return parser.parse_args(argv)


if __name__ == "__main__":
    args = parse()
    raise SystemExit(main(lambda: run(args.count, args.warmup)))
