"""Scale: a venue with 10,000 authorized clients against one with a single client, in one run.

Synthetic stations are made the way real ones are: through the running daemon's control
socket, a dnsmasq-style lease event (`lease`, action add) and then `auth`, so each one is a
session in the database, elements in the kernel's sets and maps, and counter objects the
accounting poll reads. They take addresses from 198.19.64.0/18 (the lab's benchmark range,
beyond its /24 LAN: nothing is ever sent to them). The lab's real phone is one of the 10,000.

Measured, with 1 client and with 10,000:
- forwarding: iperf3 TCP from the phone to the fake internet, blocks of runs in the order
  1, 10,000, 10,000, 1 (so slow drift of the machine hits both alike); ratio of medians;
- authorize -> first forwarded packet of the phone, and the control calls' round trips (the
  method of bench/authorize_latency.py), with the daemon's accounting poll running meanwhile;
- the daemon's resident memory (VmRSS, and its peak VmHWM, from /proc/<pid>/status);
- the accounting poll and a reconcile that compares the whole kernel (forced by a harmless
  commit of another table), as the daemon times them (metrics `plaza_periodic_last_seconds`):
  seconds in a worker thread (reading the kernel, comparing) and on the daemon's own thread;
  and an element deleted behind the daemon's back: how soon it is back, what the repairing
  reconcile cost;
- kill -9 of the daemon at 10,000 clients: seconds from its restart until it answers (it has
  restored the sessions and reconciled the kernel by then).
Also the `auth` round trip as the venue fills (per 1,000 clients) and `deauth` as it empties.
"""

from __future__ import annotations

import argparse
import ipaddress
import re
import signal
import statistics
import time

from authorize_latency import measure
from benchlib import Check, Result, bench_lab, log, main, nsrun, percentile, phone_ipv4, scrape
from benchlib import wait_tcp_listen as wait_listen
from forwarding import IPERF_PORT, iperf

from gateway.control_client import ControlClient, ControlError
from lab.topology import BIN, Lab, LabError

NAME = "scale"
LAB = "bscale"
SYNTH_NET = ipaddress.ip_network("198.19.64.0/18")


def synthetic(i: int) -> tuple[str, str]:
    """MAC and address of synthetic station i (locally administered, unicast)."""
    mac = f"02:5c:{(i >> 24) & 255:02x}:{(i >> 16) & 255:02x}:{(i >> 8) & 255:02x}:{i & 255:02x}"
    return mac, str(SYNTH_NET[i + 1])


def rss(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of a process, in kB."""
    found = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":")
                found[key] = int(value.split()[0])
    return found


def daemon_pid(lab: Lab) -> int:
    pid = lab.state.pids["router-gateway"]
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        if b"plaza-gateway" not in f.read():
            raise LabError(f"pid {pid} is not the gateway daemon")
    return pid


def _runs(page: dict[str, float], task: str) -> float:
    return page.get(f'plaza_periodic_runs_total{{task="{task}"}}', 0.0)


def wait_periodic(lab: Lab, task: str, timeout: float = 20) -> dict[str, float]:
    """Wait for the next `task` (poll or reconcile) to finish; its thread and loop seconds."""
    before = _runs(scrape(lab), task)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.25)
        page = scrape(lab)
        if _runs(page, task) > before:
            return {
                where: page[f'plaza_periodic_last_seconds{{task="{task}",where="{where}"}}']
                for where in ("thread", "loop")
            }
    raise LabError(f"no {task} finished within {timeout:g} s")


def foreign_commit(lab: Lab) -> None:
    """A commit by someone else (a table made and dropped): the daemon's next reconcile
    must compare the whole kernel, as it would after any outside change."""
    probe = "add table inet bscale_probe\ndelete table inet bscale_probe\n"
    nsrun(lab.state.router, "nft", "-f", "-", stdin=probe)


def periodic_figures(lab: Lab, label: str) -> dict[str, dict[str, float]]:
    poll = wait_periodic(lab, "poll")
    foreign_commit(lab)
    reconcile = wait_periodic(lab, "reconcile")
    for task, f in (("accounting poll", poll), ("reconcile (compare, no drift)", reconcile)):
        log(
            f"{label}: {task}: {f['thread'] * 1e3:7.1f} ms reading the kernel (worker thread), "
            f"{f['loop'] * 1e3:7.1f} ms on the daemon's thread"
        )
    return {"poll": poll, "reconcile": reconcile}


def populate(control: ControlClient, start: int, count: int, errors: list[str]) -> list[float]:
    """Lease and authorize synthetic stations start..start+count-1; the auth round trips."""
    calls = []
    for i in range(start, start + count):
        mac, ip = synthetic(i)
        try:
            control.call("lease", action="add", mac=mac, ip=ip, hostname=f"synth{i}")
            t0 = time.perf_counter()
            client = control.auth(mac)
            calls.append(time.perf_counter() - t0)
            if client["state"] != "authorized":
                errors.append(f"synthetic {i}: not authorized: {client['state']}")
        except ControlError as exc:
            errors.append(f"synthetic {i}: {exc}")
    return calls


def depopulate(control: ControlClient, count: int, errors: list[str]) -> list[float]:
    calls = []
    for i in range(count):
        t0 = time.perf_counter()
        try:
            control.deauth(synthetic(i)[0])
        except ControlError as exc:
            errors.append(f"deauth synthetic {i}: {exc}")
            continue
        calls.append(time.perf_counter() - t0)
    return calls


def _ms(values: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(percentile(values, 50) * 1e3, 3),
        "p99_ms": round(percentile(values, 99) * 1e3, 3),
        "max_ms": round(max(values) * 1e3, 3) if values else float("nan"),
        "n": len(values),
    }


def throughput_block(lab: Lab, arm: str, rounds: int, seconds: float, omit: int) -> list[dict]:
    runs = []
    for i in range(rounds):
        figures = iperf(lab, seconds, omit)
        runs.append({"arm": arm, **figures})
        log(
            f"  {arm:>6} clients, run {i + 1}: {figures['gbps']:6.2f} Gbit/s "
            f"(retransmits {figures['retransmits']})"
        )
    return runs


def run(
    clients: int = 10_000,
    rounds: int = 3,
    seconds: float = 4,
    omit: int = 1,
    latency_runs: int = 300,
) -> Result:
    result = Result(NAME)
    errors = result.errors
    synth = clients - 1  # the real phone is the last of them
    big = f"{clients:,}"
    figures: dict = {"clients": clients}
    with bench_lab(phones=1, name=LAB) as lab:
        ip = phone_ipv4(lab)
        control = lab.control()
        web = lab.status()["internet"]["web_ipv4"]
        lab.spawn("bench-iperf3", lab.state.internet, "iperf3", "-s", "-B", web,
                  "-p", str(IPERF_PORT))  # fmt: skip
        wait_listen(lab.state.internet, web, IPERF_PORT)
        pid = daemon_pid(lab)
        figures["rss_kb_start"] = rss(pid)
        log(f"daemon pid {pid}, RSS {figures['rss_kb_start']['VmRSS'] / 1024:.1f} MB at start")

        log("\n-- 1 client --")
        figures["latency_1"] = measure(lab, ip, latency_runs, errors=errors, label="[1] ")
        control.auth(ip)
        iperf(lab, seconds, omit)  # warm-up, not counted
        runs = throughput_block(lab, "1", rounds, seconds, omit)
        figures["periodic_1"] = periodic_figures(lab, "[1]")
        figures["rss_kb_1"] = rss(pid)

        log(f"\n-- filling the venue to {big} clients through the control socket --")
        t0 = time.monotonic()
        auth_calls = populate(control, 0, synth, errors)
        fill_seconds = time.monotonic() - t0
        ping = control.call("ping")
        if ping["authorized"] != clients:
            errors.append(f"{ping['authorized']} authorized after filling, not {clients}")
        per_k = [
            _ms(auth_calls[k : k + 1000])
            for k in range(0, len(auth_calls), 1000)  # the venue filling, 1,000 at a time
        ]
        log(
            f"{synth:,} leases + auths in {fill_seconds:.1f} s "
            f"({2 * synth / fill_seconds:.0f} calls/s); auth round trip by 1,000 clients:"
        )
        for k, f in enumerate(per_k):
            log(
                f"  {k * 1000 + 1:>6}-{min((k + 1) * 1000, synth):>6}: p50 {f['p50_ms']:.2f} ms,"
                f" p99 {f['p99_ms']:.2f} ms, max {f['max_ms']:.2f} ms"
            )
        figures["fill"] = {"seconds": round(fill_seconds, 1), "auth_call_by_1000": per_k}
        figures["rss_kb_filled"] = rss(pid)

        log(f"\n-- {big} clients --")
        runs += throughput_block(lab, big, rounds, seconds, omit)
        figures["periodic_big"] = periodic_figures(lab, f"[{big}]")
        figures["drift_repair"] = drift_repair(lab, synthetic(7), errors)
        control.deauth(ip)
        figures["latency_big"] = measure(lab, ip, latency_runs, errors=errors, label=f"[{big}] ")
        control.auth(ip)
        runs += throughput_block(lab, big, rounds, seconds, omit)
        figures["rss_kb_big"] = rss(pid)
        figures["restart_s"] = restart(lab, clients, errors)
        pid = daemon_pid(lab)
        wait_periodic(lab, "poll")
        figures["rss_kb_after_restart"] = rss(pid)

        log(f"\n-- back to 1 client (deauthorizing {synth:,}) --")
        deauth_calls = depopulate(control, synth, errors)
        figures["empty_deauth_call"] = _ms(deauth_calls)
        wait_periodic(lab, "poll")  # the ended sessions' final records and objects
        runs += throughput_block(lab, "1", rounds, seconds, omit)
        figures["rss_kb_end"] = rss(pid)
        lab.stop("bench-iperf3")

    figures["runs"] = runs
    one = [r["gbps"] for r in runs if r["arm"] == "1"]
    many = [r["gbps"] for r in runs if r["arm"] == big]
    ratio = statistics.median(many) / statistics.median(one)
    blocks = [
        statistics.median(many[:rounds]) / statistics.median(one[:rounds]),
        statistics.median(many[rounds:]) / statistics.median(one[rounds:]),
    ]
    figures["throughput"] = {
        "median_gbps_1": round(statistics.median(one), 3),
        "median_gbps_big": round(statistics.median(many), 3),
        "ratio": round(ratio, 4),
        "block_ratios": [round(b, 4) for b in blocks],
    }
    report(figures, one, many, ratio, blocks, big)
    result.figures = figures
    l1, lb = figures["latency_1"], figures["latency_big"]
    p1, pb = figures["periodic_1"], figures["periodic_big"]
    drift = figures["drift_repair"]
    result.checks += [
        Check(f"throughput ratio {big}/1 clients", ratio, "", 0.97, higher_is_better=True),
        Check("throughput, 1 client (median)", statistics.median(one), "Gbit/s"),
        Check(f"throughput, {big} clients (median)", statistics.median(many), "Gbit/s"),
        Check(
            "authorize -> first packet p99, 1 client",
            l1["auth_to_first_packet"]["p99_ms"],
            "ms",
            10,
        ),
        Check(
            f"authorize -> first packet p99, {big}", lb["auth_to_first_packet"]["p99_ms"], "ms", 10
        ),
        Check(f"authorize -> first packet p50, {big}", lb["auth_to_first_packet"]["p50_ms"], "ms"),
        Check(f"auth control call p99, {big}", lb["auth_call"]["p99_ms"], "ms"),
        Check(f"daemon RSS, {big} clients", figures["rss_kb_big"]["VmRSS"] / 1024, "MB", 64),
        Check("daemon RSS, 1 client", figures["rss_kb_1"]["VmRSS"] / 1024, "MB"),
        Check(f"daemon peak RSS (VmHWM), {big}", figures["rss_kb_big"]["VmHWM"] / 1024, "MB"),
        Check(f"accounting poll, {big}: daemon thread", pb["poll"]["loop"] * 1e3, "ms"),
        Check(f"accounting poll, {big}: kernel read", pb["poll"]["thread"] * 1e3, "ms"),
        Check(f"reconcile, {big}: compare in worker", pb["reconcile"]["thread"] * 1e3, "ms"),
        Check(f"reconcile, {big}: daemon thread", pb["reconcile"]["loop"] * 1e3, "ms"),
        Check(f"repairing reconcile, {big}: daemon thread", drift["loop"] * 1e3, "ms"),
        Check(f"drift repaired after, {big}", drift["seconds"], "s"),
        Check("accounting poll, 1 client: daemon thread", p1["poll"]["loop"] * 1e3, "ms"),
        Check(f"restart (SIGKILL) to answering, {big}", figures["restart_s"], "s", 1),
    ]
    return result


def drift_repair(lab: Lab, station: tuple[str, str], errors: list[str]) -> dict[str, float]:
    """Delete one client's element behind the daemon's back: seconds until it is back, and
    what the repairing reconcile cost."""
    mac, ip = station
    element = f"{{ {ip} . {mac} }}"
    before = _runs(scrape(lab), "reconcile-full")
    nsrun(lab.state.router, "nft", "delete", "element", "inet", "plaza", "auth4", element)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 30:
        time.sleep(0.1)
        try:
            nsrun(lab.state.router, "nft", "get", "element", "inet", "plaza", "auth4", element)
        except LabError:
            continue
        seconds = time.monotonic() - t0
        page = scrape(lab)
        cost = {
            where: page[f'plaza_periodic_last_seconds{{task="reconcile-full",where="{where}"}}']
            for where in ("thread", "loop")
        }
        if _runs(page, "reconcile-full") <= before:
            errors.append("the element came back without a repairing reconcile")
        log(
            f"element deleted behind the daemon's back: back after {seconds:.2f} s; the "
            f"repairing reconcile: {cost['thread'] * 1e3:.1f} ms comparing in the worker thread, "
            f"{cost['loop'] * 1e3:.1f} ms repairing on the daemon's thread"
        )
        return {"seconds": round(seconds, 2), **cost}
    errors.append("a deleted client element was not put back within 30 s")
    return {"seconds": float("nan"), "thread": float("nan"), "loop": float("nan")}


def restart(lab: Lab, clients: int, errors: list[str]) -> float:
    """kill -9 the daemon and start it again: seconds from the start until it answers
    (it has restored its sessions and reconciled the kernel by then)."""
    lab.stop("router-gateway", signal.SIGKILL)
    t0 = time.monotonic()
    lab.spawn(
        "router-gateway",
        lab.state.router,
        str(BIN / "plaza-gateway"),
        "--config",
        str(lab.gateway_config_path),
        "run",
    )
    lab.wait_gateway(timeout=60)
    seconds = time.monotonic() - t0
    ping = lab.control().call("ping")
    log(
        f"daemon killed (SIGKILL) and restarted: answering after {seconds:.2f} s with "
        f"{ping['authorized']:,} authorized"
    )
    if ping["authorized"] != clients:
        errors.append(f"{ping['authorized']} authorized after the restart, not {clients}")
    return round(seconds, 2)


def report(figures: dict, one: list, many: list, ratio: float, blocks: list, big: str) -> None:
    log("\n-- summary --")
    log(f"throughput, 1 client:     {', '.join(f'{g:.2f}' for g in one)} Gbit/s")
    log(f"throughput, {big} clients: {', '.join(f'{g:.2f}' for g in many)} Gbit/s")
    log(f"ratio of medians {big}/1: {ratio:.3f}; per block pair: "
        f"{', '.join(f'{b:.3f}' for b in blocks)}")  # fmt: skip
    for key in ("rss_kb_start", "rss_kb_1", "rss_kb_filled", "rss_kb_big",
                "rss_kb_after_restart", "rss_kb_end"):  # fmt: skip
        kb = figures[key]
        label = re.sub(r"^rss_kb_", "", key)
        log(f"RSS {label:<14} {kb['VmRSS'] / 1024:6.1f} MB (peak {kb['VmHWM'] / 1024:6.1f} MB)")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=10_000, help="clients (default 10000)")
    parser.add_argument("--rounds", type=int, default=3, help="iperf3 runs per block")
    parser.add_argument("--seconds", type=float, default=4, help="measured seconds per run")
    parser.add_argument("--omit", type=int, default=1, help="warm-up seconds iperf3 omits")
    parser.add_argument("--latency-runs", type=int, default=300, help="authorize runs per arm")
    return parser.parse_args(argv)


if __name__ == "__main__":
    args = parse()
    raise SystemExit(
        main(lambda: run(args.clients, args.rounds, args.seconds, args.omit, args.latency_runs))
    )
