"""Forwarding throughput of an authorized phone with Plaza's table in place and without it.

iperf3 TCP from the phone to a server in the fake internet, alternating "with" and "without"
runs (ABBA order per round pair, so slow drift of the machine hits both sides alike). The
gateway daemon is stopped for the whole measurement, in both arms: otherwise its reconciler
would reload the deleted table within seconds, and this way the only difference between the
arms is the `inet plaza` table in the kernel. The lab's upstream NAT table stays in both.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess

from benchlib import (
    Check,
    Result,
    bench_lab,
    log,
    main,
    netns_names,
    nsrun,
    phone_ipv4,
    wait_tcp_listen,
)

from lab.topology import Lab, LabError

NAME = "forwarding"
IPERF_PORT = 5201
TABLE = "inet plaza"
ARMS = ("with", "without")


def iperf(lab: Lab, seconds: float, omit: int) -> dict:
    """One iperf3 TCP run from the phone; receiver-side Gbit/s and the sender's retransmits."""
    phone = lab.state.phones[0].netns
    server = lab.status()["internet"]["web_ipv4"]
    cmd = ["iperf3", "-c", server, "-p", str(IPERF_PORT), "-t", f"{seconds:g}", "-O", str(omit)]
    if (os.cpu_count() or 1) >= 2:
        # Sender (and with it the router's forwarding, done in its softirq) on CPU 0, receiver
        # on CPU 1: far less run-to-run spread than letting the scheduler move them around.
        cmd += ["-A", "0,1"]
    proc = subprocess.run(
        ["ip", "netns", "exec", phone, *cmd, "-J"],
        capture_output=True,
        text=True,
        timeout=seconds + omit + 30,
    )
    try:
        report = json.loads(proc.stdout)
    except ValueError:
        why = proc.stderr.strip() or f"exit {proc.returncode}"
        raise LabError(f"iperf3 gave no JSON: {why}") from None
    if report.get("error"):
        raise LabError(f"iperf3: {report['error']}")
    end = report["end"]
    return {
        "gbps": end["sum_received"]["bits_per_second"] / 1e9,
        "retransmits": end["sum_sent"].get("retransmits", 0),
        "sender_cpu": round(end["cpu_utilization_percent"]["host_total"], 1),
        "receiver_cpu": round(end["cpu_utilization_percent"]["remote_total"], 1),
    }


class Table:
    """Plaza's kernel table, taken out and put back exactly as it was."""

    def __init__(self, router_ns: str) -> None:
        self.ns = router_ns
        self.saved = nsrun(router_ns, "nft", "list", "table", *TABLE.split())
        if "set auth4" not in self.saved:
            raise LabError("`nft list table inet plaza` has no auth4 set")

    def present(self) -> bool:
        try:
            nsrun(self.ns, "nft", "list", "table", *TABLE.split())
        except LabError:
            return False
        return True

    def remove(self) -> None:
        nsrun(self.ns, "nft", "delete", "table", *TABLE.split())

    def restore(self) -> None:
        if not self.present():
            nsrun(self.ns, "nft", "-f", "-", stdin=self.saved)
        now = nsrun(self.ns, "nft", "list", "table", *TABLE.split())
        if structure(now) != structure(self.saved):
            raise LabError("restored table differs from the saved listing")


def structure(listing: str) -> str:
    """A table listing without what traffic and time change: counter and quota values and
    the remaining lifetime of garden elements."""
    listing = re.sub(r"packets \d+ bytes \d+", "packets - bytes -", listing)
    listing = re.sub(r"used \d+ \w+", "used -", listing)
    return re.sub(r"expires [\dhms]+", "expires -", listing)


def run(rounds: int = 5, seconds: float = 4, omit: int = 1) -> Result:
    result = Result(NAME)
    runs: list[dict] = []
    with bench_lab(phones=1) as lab:
        ip = phone_ipv4(lab)
        client = lab.control().auth(ip)
        if client["state"] != "authorized":
            raise LabError(f"phone not authorized: {client}")
        web = lab.status()["internet"]["web_ipv4"]
        lab.spawn("bench-iperf3", lab.state.internet, "iperf3", "-s", "-B", web,
                  "-p", str(IPERF_PORT))  # fmt: skip
        wait_tcp_listen(lab.state.internet, web, IPERF_PORT)
        lab.stop("router-gateway")  # the kernel table stays; nothing will reload it now
        table = Table(lab.state.router)
        try:
            log(f"warm-up run ({seconds:g} s, with the table)")
            iperf(lab, seconds, omit)
            for i in range(rounds):
                order = ARMS if i % 2 == 0 else ARMS[::-1]
                for arm in order:
                    if arm == "without":
                        table.remove()
                    try:
                        figures = iperf(lab, seconds, omit)
                    finally:
                        table.restore()
                    runs.append({"round": i + 1, "arm": arm, **figures})
                    log(
                        f"round {i + 1} {arm:>7} table: {figures['gbps']:6.2f} Gbit/s"
                        f"  (retransmits {figures['retransmits']},"
                        f" cpu sender {figures['sender_cpu']}%,"
                        f" receiver {figures['receiver_cpu']}%)"
                    )
        finally:
            table.restore()
            lab.start_gateway()
        after = lab.control().client(ip)
        if after["state"] != "authorized":
            result.errors.append(f"phone not authorized after the gateway restart: {after}")
        if not table.present():
            result.errors.append("plaza table missing after the gateway restart")
        lab.stop("bench-iperf3")
        others = [ns for ns in netns_names() if not ns.startswith(f"{lab.name}-")]

    with_ = [r["gbps"] for r in runs if r["arm"] == "with"]
    without = [r["gbps"] for r in runs if r["arm"] == "without"]
    med_with, med_without = statistics.median(with_), statistics.median(without)
    ratio = med_with / med_without if med_without else float("nan")
    # Each round's two runs are adjacent in time: their ratio cancels slow drift of the machine.
    pairs = [_gbps(runs, i, "with") / _gbps(runs, i, "without") for i in range(1, rounds + 1)]
    pair_ratio = statistics.median(pairs)
    spread = {arm: _spread([r["gbps"] for r in runs if r["arm"] == arm]) for arm in ARMS}
    log(f"median with table:    {med_with:6.2f} Gbit/s  (runs: {_list(with_)})")
    log(f"median without table: {med_without:6.2f} Gbit/s  (runs: {_list(without)})")
    log(f"ratio with/without:   {ratio:.3f} (ratio of medians)")
    log(f"per-round ratios:     {_list(pairs, 3)}; median {pair_ratio:.3f}")
    log(f"spread (max-min)/median: with {spread['with']:.1%}, without {spread['without']:.1%}")
    if max(spread.values()) > 0.05:
        busy = f" (other namespaces present: {', '.join(others)})" if others else ""
        log(f"note: runs spread more than 5%: the machine was busy{busy}; ratio is noisy")
    result.figures = {
        "median_gbps_with": round(med_with, 3),
        "median_gbps_without": round(med_without, 3),
        "ratio": round(ratio, 4),
        "median_pair_ratio": round(pair_ratio, 4),
        "pair_ratios": [round(p, 4) for p in pairs],
        "spread_with": round(spread["with"], 4),
        "spread_without": round(spread["without"], 4),
        "other_namespaces": others,
        "seconds_per_run": seconds,
        "omitted_seconds": omit,
        "runs": runs,
    }
    result.checks += [
        Check("forwarding ratio with/without table", ratio, "", 0.97, higher_is_better=True),
        Check("forwarding per-round ratio (median)", pair_ratio, ""),
        Check("forwarding with table (median)", med_with, "Gbit/s"),
        Check("forwarding without table (median)", med_without, "Gbit/s"),
    ]
    return result


def _list(values: list[float], digits: int = 2) -> str:
    return ", ".join(f"{v:.{digits}f}" for v in values)


def _gbps(runs: list[dict], round_: int, arm: str) -> float:
    return next(r["gbps"] for r in runs if r["round"] == round_ and r["arm"] == arm)


def _spread(values: list[float]) -> float:
    return (max(values) - min(values)) / statistics.median(values)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="runs per arm (default 5)")
    parser.add_argument("--seconds", type=float, default=4, help="measured seconds per run")
    parser.add_argument("--omit", type=int, default=1, help="warm-up seconds iperf3 omits")
    return parser.parse_args(argv)


if __name__ == "__main__":
    args = parse()
    raise SystemExit(main(lambda: run(args.rounds, args.seconds, args.omit)))
