"""Authorize latency: from the control socket's `auth` call to the first forwarded packet.

The phone sends a small UDP datagram to the fake internet every INTERVAL µs the whole time;
while it is captive the router rejects them. Per run: the listener in the internet namespace
is armed once no datagram has arrived for a quiet window (so the phone is really captive),
t0 = monotonic(), `auth(phone)`, and the listener reports the monotonic time t1 of the first
datagram that got through; t1 - t0 is the figure. Then `deauth` and the next run.
CLOCK_MONOTONIC is one clock across network namespaces, so t0 and t1 compare directly.
The figure includes up to one send interval of waiting for the next datagram; the sender's
achieved intervals are printed so that resolution is known.
"""

from __future__ import annotations

import argparse
import json
import time

from benchlib import Check, Helper, Result, bench_lab, log, main, percentile, phone_ipv4

from lab.topology import Lab, LabError

NAME = "authorize_latency"
PORT = 40404


def _ms(values: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(percentile(values, 50) * 1e3, 3),
        "p99_ms": round(percentile(values, 99) * 1e3, 3),
        "max_ms": round(max(values) * 1e3, 3) if values else float("nan"),
        "mean_ms": round(sum(values) / len(values) * 1e3, 3) if values else float("nan"),
        "n": len(values),
    }


def _show(label: str, figures: dict[str, float]) -> None:
    log(
        f"{label:<38} p50 {figures['p50_ms']:7.3f} ms  p99 {figures['p99_ms']:7.3f} ms"
        f"  max {figures['max_ms']:7.3f} ms  (n={figures['n']})"
    )


def run(
    runs: int = 300, interval_us: float = 50, quiet_ms: float = 10, mode: str = "spin"
) -> Result:
    result = Result(NAME)
    with bench_lab(phones=1) as lab:
        figures = measure(lab, phone_ipv4(lab), runs, interval_us, quiet_ms, mode, result.errors)
    result.figures = figures
    a, c = figures["auth_to_first_packet"], figures["auth_call"]
    result.checks += [
        Check("authorize -> first packet p50", a["p50_ms"], "ms"),
        Check("authorize -> first packet p99", a["p99_ms"], "ms", 10, higher_is_better=False),
        Check("auth control call p50", c["p50_ms"], "ms"),
        Check("auth control call p99", c["p99_ms"], "ms"),
        Check("ping control call p99", figures["ping_call"]["p99_ms"], "ms"),
    ]
    return result


def measure(
    lab: Lab,
    ip: str,
    runs: int = 300,
    interval_us: float = 50,
    quiet_ms: float = 10,
    mode: str = "spin",
    errors: list[str] | None = None,
    label: str = "",
) -> dict:
    """`runs` authorize -> first forwarded packet measurements of the phone at `ip` (captive
    when called, captive again after); figures as a dict, failures appended to `errors`.
    Shared with bench/scale.py, which runs it at 1 and at 10,000 clients."""
    errors = [] if errors is None else errors
    latencies: list[float] = []
    auth_calls: list[float] = []
    deauth_calls: list[float] = []
    pings: list[float] = []
    web = lab.status()["internet"]["web_ipv4"]
    control = lab.control()
    phone_ns = next(p.netns for p in lab.state.phones if p.ipv4 == ip)
    if control.client(ip)["state"] != "captive":
        raise LabError("the phone should start captive")
    listener = Helper(lab.state.internet, "ns_udp_listener.py", web, str(PORT))
    sender: Helper | None = None
    report = ""
    try:
        if listener.readline() != "ready":
            raise LabError("UDP listener did not start")
        # Bounded: the sender stops by itself even if this process dies without closing it.
        budget = 30 + runs * 0.2
        sender = Helper(
            phone_ns,
            "ns_udp_sender.py",
            web,
            str(PORT),
            f"{interval_us:g}",
            f"{budget:g}",
            mode,
        )
        if sender.readline() != "sending":
            raise LabError("UDP sender did not start")
        time.sleep(0.2)
        listener.send("count")
        leaked = listener.readline()
        if leaked != "count 0":
            raise LabError(f"datagrams from a captive phone reached the internet: {leaked}")

        for _ in range(200):
            t0 = time.monotonic()
            control.call("ping")
            pings.append(time.monotonic() - t0)

        log(
            f"{label}{runs} runs, datagram every {interval_us:g} µs ({mode}), quiet {quiet_ms:g} ms"
        )
        for i in range(runs):
            listener.send(f"arm {quiet_ms:g}")
            line = listener.readline(timeout=3)
            if line != "armed":
                errors.append(f"run {i + 1}: listener not armed: {line}")
                _make_captive(control, ip)
                continue
            t0 = time.monotonic()
            control.auth(ip)
            t_auth = time.monotonic()
            auth_calls.append(t_auth - t0)
            try:
                line = listener.readline(timeout=2)
            except LabError:
                errors.append(f"run {i + 1}: no datagram within 2 s of auth")
                listener.send("disarm")
                while listener.readline() != "disarmed":
                    pass
            else:
                t1 = float(line.split()[1])
                latencies.append(t1 - t0)
            t2 = time.monotonic()
            control.deauth(ip)
            deauth_calls.append(time.monotonic() - t2)
        listener.send("count")
        arrived = int(listener.readline().split()[1])
    finally:
        if sender is not None:
            report = sender.close()
        listener.close()
    stats = json.loads(report.strip().splitlines()[-1])

    figures = {
        "auth_to_first_packet": _ms(latencies),
        "auth_call": _ms(auth_calls),
        "deauth_call": _ms(deauth_calls),
        "ping_call": _ms(pings),
        "sender": stats,
        "datagrams_forwarded": arrived,
        "runs": runs,
        "quiet_ms": quiet_ms,
    }
    _show(f"{label}auth call -> first forwarded packet", figures["auth_to_first_packet"])
    _show(f"{label}auth control call (round trip)", figures["auth_call"])
    _show(f"{label}deauth control call (round trip)", figures["deauth_call"])
    _show(f"{label}ping control call (round trip)", figures["ping_call"])
    log(
        f"{label}sender: {stats['sent']} datagrams, {stats['errors']} send errors, mean interval "
        f"{stats['mean_interval_us']} µs, p99 <= {stats['p99_interval_us_upper']} µs, "
        f"max {stats['max_interval_us']} µs; {arrived} forwarded"
    )
    if stats["sent"] == 0:
        errors.append("the sender sent nothing")
    return figures


def _make_captive(control, ip: str) -> None:
    """After a failed arm: the phone may be authorized by mistake; put it back."""
    if control.client(ip)["state"] == "authorized":
        control.deauth(ip)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300, help="authorize runs (default 300)")
    parser.add_argument("--interval-us", type=float, default=50, help="send interval, µs")
    parser.add_argument("--quiet-ms", type=float, default=10, help="silence before arming, ms")
    parser.add_argument("--mode", choices=("spin", "sleep"), default="spin", help="sender pacing")
    return parser.parse_args(argv)


if __name__ == "__main__":
    args = parse()
    raise SystemExit(main(lambda: run(args.runs, args.interval_us, args.quiet_ms, args.mode)))
