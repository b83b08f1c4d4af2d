"""UDP sender for authorize_latency.py, run in the phone's namespace.

Sends a small datagram to HOST:PORT every INTERVAL_US microseconds until stdin closes or
MAX_SECONDS pass, then prints one JSON line: datagrams sent, send errors, and the achieved
intervals (mean, p99, max), which bound the resolution of the latency measured with it.

mode "spin" busy-waits between sends (exact pacing, one core busy); mode "sleep" sleeps with
the timer slack lowered to 1 µs (the CPU stays mostly free, pacing is looser). Stdlib only.
"""

from __future__ import annotations

import ctypes
import json
import select
import socket
import sys
import time

PR_SET_TIMERSLACK = 29


def main() -> int:
    host, port = sys.argv[1], int(sys.argv[2])
    interval = float(sys.argv[3]) / 1e6
    max_seconds = float(sys.argv[4])
    mode = sys.argv[5] if len(sys.argv) > 5 else "spin"
    if mode == "sleep":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_TIMERSLACK, 1000, 0, 0, 0)  # 1 µs instead of the default 50 µs
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    payload = b"plaza-bench"
    target = (host, port)
    stdin = sys.stdin.fileno()
    clock = time.perf_counter
    start = clock()
    end = start + max_seconds
    next_send = start
    sent = errors = 0
    gaps = [0] * 64  # histogram of intervals in 25 µs buckets; the last bucket is "longer"
    longest = 0.0
    last = start
    print("sending", flush=True)
    while True:
        now = clock()
        if mode == "spin":
            while now < next_send:
                now = clock()
        elif next_send - now > 0:
            time.sleep(next_send - now)
            now = clock()
        try:
            sock.sendto(payload, target)
        except OSError:
            errors += 1
        sent += 1
        if sent > 1:
            gap = now - last
            longest = max(longest, gap)
            gaps[min(63, int(gap / 25e-6))] += 1
        last = now
        next_send = max(next_send + interval, now)  # no catch-up bursts after a stall
        if sent % 512 == 0 and (now >= end or select.select([stdin], [], [], 0)[0]):
            break
    elapsed = clock() - start
    total = sum(gaps)
    running, p99 = 0, 0.0
    for i, n in enumerate(gaps):
        running += n
        if running >= 0.99 * total:
            p99 = (i + 1) * 25e-6
            break
    report = {
        "sent": sent,
        "errors": errors,
        "seconds": round(elapsed, 3),
        "mean_interval_us": round(elapsed / max(1, sent - 1) * 1e6, 1),
        "p99_interval_us_upper": round(p99 * 1e6, 1),
        "max_interval_us": round(longest * 1e6, 1),
        "mode": mode,
    }
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
