"""HTTP prober for redirect_latency.py, run in a captive phone's namespace.

Like an OS connectivity probe: a new TCP connection per request, GET / with a Host header,
read the whole answer, close. Each answer must be a 302 whose Location is the portal URL.
Prints one JSON line: per-request latencies in ms (connect to last body byte) and errors.
Stdlib only.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import time


def probe(ip: str, host: str, timeout: float) -> tuple[int, str]:
    conn = http.client.HTTPConnection(ip, 80, timeout=timeout)
    try:
        conn.request(
            "GET",
            "/",
            headers={"Host": host, "User-Agent": "plaza-bench", "Connection": "close"},
        )
        response = conn.getresponse()
        response.read()
        return response.status, response.getheader("Location", "")
    finally:
        conn.close()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("ip")
    parser.add_argument("--host", required=True)
    parser.add_argument("--expect", required=True, help="the Location every answer must carry")
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args()
    latencies: list[float] = []
    errors: list[str] = []
    for i in range(args.warmup + args.count):
        t0 = time.perf_counter()
        try:
            status, location = probe(args.ip, args.host, args.timeout)
        except (OSError, http.client.HTTPException) as exc:
            problem = f"{type(exc).__name__}: {exc}"
        else:
            problem = ""
            if status != 302 or location != args.expect:
                problem = f"got {status} Location {location!r}"
        elapsed = time.perf_counter() - t0
        label = f"warm-up {i + 1}" if i < args.warmup else f"request {i - args.warmup + 1}"
        if problem:
            errors.append(f"{label}: {problem}")  # counted, warm-up included, never timed
        elif i >= args.warmup:
            latencies.append(round(elapsed * 1e3, 4))
    print(json.dumps({"latencies_ms": latencies, "errors": errors}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
