"""Forwarding throughput of an authorized phone through Plaza and through a plain Linux router.

iperf3 TCP from the phone to a server in the fake internet, the arms alternating in ABBA order
(each round runs the arms forward, the next one backward, so slow drift of the machine hits all
alike). Arms, all on the same lab topology in the same run:

- "plaza": the router as Plaza leaves it: `inet plaza`, the `bridge plaza_guard` table, the
  queue hooks (iptables-nft mangle rules, or the native `inet plaza_queue` table), the lab's
  upstream masquerade table.
- "plain": what a plain Linux router has: the bridge, IP forwarding and the one masquerade
  rule (`ip lab_upstream`), no other table. Every table Plaza adds is taken out, the
  iptables-nft ones included (an empty iptables table still hooks every packet).

The plain arm replaces the older "with / without the `inet plaza` table" comparison: that one
left the guard table in both arms and hid what it costs (and, as the stopped daemon takes its
queue hooks out, measured neither arm with them: this one puts them back), and a plain router
is the reference a router vendor compares against. Scratch arms for finding where
the cost is (`--arms plaza,plain,without,no-guard,no-queue`) take out one piece at a time;
`before` loads Plaza's table as it was before 2026-12-06 (see `before()`) and `no-policy` one
with no per-client policy chain (its cost at most), so a before/after comparison runs side by
side too: `--arms plaza,plain,before`.

Plaza sets no sysctl of its own; the ones that matter for forwarding (ip_forward, rp_filter,
bridge-nf-call-*) are printed in each arm so a reader can see the arms differ only in tables.
The gateway daemon is stopped for the whole measurement, in every arm: otherwise its
reconciler would reload a deleted table within seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import statistics
import subprocess
from collections.abc import Callable

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

from gateway.garden.queue import QueueHook
from lab.topology import Lab, LabError

NAME = "forwarding"
IPERF_PORT = 5201
UPSTREAM = "ip lab_upstream"  # the lab's masquerade: the plain router keeps it
PLAZA = "inet plaza"
GUARD = "bridge plaza_guard"
QUEUE = "inet plaza_queue"
XT = ("ip mangle", "ip6 mangle")  # iptables-nft's tables for the queue hooks
# Each arm: the tables taken out of the router for its runs ("plain": all but UPSTREAM).
ARMS: dict[str, tuple[str, ...] | None] = {
    "plaza": (),
    "plain": None,
    "without": (PLAZA,),
    "no-guard": (GUARD,),
    "no-queue": (QUEUE, *XT),
    "before": (),  # Plaza's table before 2026-12-06: see VARIANTS
    "no-policy": (),
}
# Scratch arms that load a variant of `inet plaza` instead (the saved listing, edited).
AUTH_RETURNS = (
    "\t\tip saddr . ether saddr @auth4 return\n\t\tip6 saddr . ether saddr @auth6 return\n"
)
FE80 = "\t\tip6 saddr fe80::/10 return\n"
POLICY_JUMP = re.compile(r"\t\t[io]ifname \S+ .*jump client_\w+.*\n")


def before(table: str) -> str:
    """Plaza's table as it was before 2026-12-06: authorized pairs returned from lan_antispoof
    only after the reverse-path (fib) lookup, and one policy chain per direction held both
    families' rules, so every packet walked the other family's too."""
    table = table.replace(AUTH_RETURNS, "", 1).replace(FE80, FE80 + AUTH_RETURNS, 1)
    head, policy = table.split("\tchain client_policy {\n", 1)
    lan = re.search(r'iifname "([^"]+)" meta nfproto', policy)
    if lan is None:
        return table  # already the old form
    chains = dict(re.findall(r"\tchain (client_\w+) \{\n(.*?)\t\}\n", policy, re.S))
    text = head + (
        "\tchain client_policy {\n"
        "\t\ttype filter hook forward priority filter + 10; policy accept;\n"
        f'\t\tiifname "{lan.group(1)}" jump client_up\n'
        f'\t\toifname "{lan.group(1)}" jump client_down\n\t}}\n'
    )
    for way in ("up", "down"):
        v4, v6 = chains[f"client_{way}4"].splitlines(), chains[f"client_{way}6"].splitlines()
        pairs = zip(v4, v6, strict=True)
        rules = "".join(f"{v4}\n{v6}\n" for v4, v6 in pairs)
        text += f"\n\tchain client_{way} {{\n{rules}\t}}\n"
    return text + "}\n"


VARIANTS: dict[str, Callable[[str], str]] = {
    "before": before,
    # no per-client policy or accounting at all: what the client_policy chain costs at most
    "no-policy": lambda t: POLICY_JUMP.sub("", t),
}
DEFAULT_ARMS = ("plaza", "plain")
SYSCTLS = (
    "net.ipv4.ip_forward",
    "net.ipv6.conf.all.forwarding",
    "net.ipv4.conf.all.rp_filter",
    "net.ipv4.conf.br-lan.rp_filter",
    "net.ipv4.conf.wan.rp_filter",
    "net.netfilter.nf_conntrack_acct",
    "net.bridge.bridge-nf-call-iptables",
    "net.bridge.bridge-nf-call-ip6tables",
)


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


def efficiency(run: dict) -> float:
    """Gbit forwarded per CPU-second of the two iperf3 processes. The router's forwarding runs
    in their softirq context and, with tick-based accounting (no IRQ_TIME_ACCOUNTING), is
    charged to them; so this is the cost of a byte, which other work on a shared machine
    changes far less than the throughput it leaves us."""
    cpu = (run["sender_cpu"] + run["receiver_cpu"]) / 100
    return run["gbps"] / cpu if cpu else float("nan")


class Router:
    """The router's tables, taken out per arm and put back exactly as they were.

    nft's own tables are saved as `nft list table` text; iptables-nft's tables hold xt
    expressions nft cannot load back, so they go through iptables-nft-save/-restore."""

    def __init__(self, ns: str) -> None:
        self.ns = ns
        self.tables = self.listed()
        if PLAZA not in self.tables or UPSTREAM not in self.tables:
            raise LabError(f"router tables {self.tables}: want {PLAZA} and {UPSTREAM}")
        self.saved = {t: nsrun(ns, "nft", "list", "table", *t.split())
                      for t in self.tables if t not in XT}  # fmt: skip
        self.xt = {t: nsrun(ns, f"{t.split()[0]}tables-nft-save", "-t", t.split()[1])
                   for t in self.tables if t in XT}  # fmt: skip
        self.ruleset = self.structure()
        self.patched = False
        if "set auth4" not in self.saved[PLAZA]:
            raise LabError(f"`nft list table {PLAZA}` has no auth4 set")

    def listed(self) -> list[str]:
        out = nsrun(self.ns, "nft", "list", "tables")
        return [line.removeprefix("table ").strip() for line in out.splitlines() if line.strip()]

    def structure(self) -> str:
        return structure(nsrun(self.ns, "nft", "list", "ruleset"))

    def remove(self, arm: str) -> None:
        if arm in VARIANTS:
            variant = VARIANTS[arm](self.saved[PLAZA])
            if variant == self.saved[PLAZA]:
                raise LabError(f"arm {arm}: the variant did not change the table")
            nsrun(self.ns, "nft", "-f", "-", stdin=f"delete table {PLAZA}\n{variant}")
            self.patched = True
        gone = ARMS[arm]
        for table in self.tables if gone is None else gone:
            if table != UPSTREAM and table in self.tables:
                nsrun(self.ns, "nft", "delete", "table", *table.split())

    def restore(self) -> None:
        if self.patched:
            nsrun(self.ns, "nft", "-f", "-", stdin=f"delete table {PLAZA}\n{self.saved[PLAZA]}")
            self.patched = False
        present = set(self.listed())
        for table, text in self.saved.items():
            if table not in present:
                nsrun(self.ns, "nft", "-f", "-", stdin=text)
        for table, text in self.xt.items():
            if table not in present:  # rule by rule: a restore would add every built-in chain
                family, name = table.split()
                for rule in text.splitlines():
                    if rule.startswith("-A "):
                        nsrun(self.ns, f"{family}tables-nft", "-w", "-t", name, *shlex.split(rule))
        if self.structure() != self.ruleset:
            raise LabError("restored ruleset differs from the saved listing")

    def describe(self, arm: str) -> str:
        """What the router has in this arm: tables, iptables rules, sysctls (printed once)."""
        lines = [f"[{arm}] nft tables: {', '.join(self.listed()) or '(none)'}"]
        for binary in ("iptables-nft-save", "ip6tables-nft-save"):
            rules = [r for r in nsrun(self.ns, binary).splitlines() if r.startswith("-A")]
            lines.append(f"[{arm}] {binary}: {'; '.join(rules) or '(no rules)'}")
        values = []
        for key in SYSCTLS:
            try:
                values.append(f"{key}={nsrun(self.ns, 'sysctl', '-n', key).strip()}")
            except LabError:
                values.append(f"{key}=(absent)")
        lines.append(f"[{arm}] sysctl: {' '.join(values)}")
        return "\n".join(lines)


def structure(listing: str) -> str:
    """A listing without what traffic and time change (counter and quota values, the remaining
    lifetime of set elements), its tables and chains sorted (a restored table is listed last,
    iptables-nft creates chains in the order rules come)."""
    listing = re.sub(r"packets \d+ bytes \d+", "packets - bytes -", listing)
    listing = re.sub(r"used \d+ \w+", "used -", listing)
    listing = re.sub(r"expires [\dhms]+", "expires -", listing)
    tables = []
    for table in re.split(r"\n(?=table )", listing.strip()):
        head, *chains = re.split(r"\n+(?=\tchain )", table.removesuffix("}").rstrip())
        tables.append("\n".join([head, *sorted(chains)]))
    return "\n".join(sorted(tables))


def run(
    rounds: int = 5, seconds: float = 4, omit: int = 1, arms: tuple[str, ...] = DEFAULT_ARMS
) -> Result:
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
        lab.stop("router-gateway")  # the kernel tables stay; nothing will reload them now
        # ... but a stopping daemon takes its queue hooks out: put them back for the plaza arm.
        QueueHook(run=_in_ns(lab.state.router)).install()
        router = Router(lab.state.router)
        try:
            for arm in arms:
                router.remove(arm)
                try:
                    log(router.describe(arm))
                finally:
                    router.restore()
            log(f"warm-up run ({seconds:g} s, {arms[0]})")
            iperf(lab, seconds, omit)
            for i in range(rounds):
                for arm in arms if i % 2 == 0 else arms[::-1]:
                    router.remove(arm)
                    try:
                        figures = iperf(lab, seconds, omit)
                    finally:
                        router.restore()
                    runs.append({"round": i + 1, "arm": arm, **figures})
                    log(
                        f"round {i + 1} {arm:>8}: {figures['gbps']:6.2f} Gbit/s"
                        f"  (retransmits {figures['retransmits']},"
                        f" cpu sender {figures['sender_cpu']}%,"
                        f" receiver {figures['receiver_cpu']}%)"
                    )
        finally:
            router.restore()
            lab.start_gateway()
        after = lab.control().client(ip)
        if after["state"] != "authorized":
            result.errors.append(f"phone not authorized after the gateway restart: {after}")
        if PLAZA not in router.listed():
            result.errors.append("plaza table missing after the gateway restart")
        lab.stop("bench-iperf3")
        others = [ns for ns in netns_names() if not ns.startswith(f"{lab.name}-")]

    medians = {arm: statistics.median(r["gbps"] for r in runs if r["arm"] == arm) for arm in arms}
    spread = {arm: _spread([r["gbps"] for r in runs if r["arm"] == arm]) for arm in arms}
    for arm in arms:
        values = [r["gbps"] for r in runs if r["arm"] == arm]
        log(f"median {arm:>8}: {medians[arm]:6.2f} Gbit/s  (runs: {_list(values)})")
    result.figures = {
        **{f"median_gbps_{arm}": round(medians[arm], 3) for arm in arms},
        **{f"spread_{arm}": round(spread[arm], 4) for arm in arms},
        "other_namespaces": others,
        "seconds_per_run": seconds,
        "omitted_seconds": omit,
        "runs": runs,
    }
    reference = "plain" if "plain" in arms else arms[-1]
    for arm in arms:
        if arm == reference:
            continue
        ratio = medians[arm] / medians[reference] if medians[reference] else float("nan")
        # Each round's runs are adjacent in time: their ratio cancels slow drift of the machine.
        pairs = [_gbps(runs, i, arm) / _gbps(runs, i, reference) for i in range(1, rounds + 1)]
        pair_ratio = statistics.median(pairs)
        log(f"ratio {arm}/{reference}: {ratio:.3f} (of medians); per round {_list(pairs, 3)},"
            f" median {pair_ratio:.3f}")  # fmt: skip
        result.figures[f"ratio_{arm}_{reference}"] = round(ratio, 4)
        result.figures[f"pair_ratio_{arm}_{reference}"] = round(pair_ratio, 4)
        result.figures[f"pair_ratios_{arm}_{reference}"] = [round(p, 4) for p in pairs]
        target = 0.97 if arm == "plaza" else None
        result.checks += [
            Check(f"forwarding ratio {arm}/{reference}", ratio, "", target, higher_is_better=True),
            Check(f"forwarding per-round ratio {arm}/{reference} (median)", pair_ratio, ""),
        ]
    result.checks += [Check(f"forwarding {arm} (median)", medians[arm], "Gbit/s") for arm in arms]
    cost = {arm: statistics.median(efficiency(r) for r in runs if r["arm"] == arm) for arm in arms}
    for arm in arms:
        result.figures[f"median_gbit_per_cpu_second_{arm}"] = round(cost[arm], 3)
        log(f"per CPU-second {arm:>8}: {cost[arm]:6.2f} Gbit (median)")
        if arm != reference:
            ratio = cost[arm] / cost[reference]
            result.figures[f"cpu_ratio_{arm}_{reference}"] = round(ratio, 4)
            result.checks.append(Check(f"Gbit per CPU-second {arm}/{reference}", ratio, ""))
    log("spread (max-min)/median: " + ", ".join(f"{a} {spread[a]:.1%}" for a in arms))
    if max(spread.values()) > 0.05:
        busy = f" (other namespaces present: {', '.join(others)})" if others else ""
        log(f"note: runs spread more than 5%: the machine was busy{busy}; ratio is noisy")
    return result


def _in_ns(ns: str) -> Callable[..., subprocess.CompletedProcess[str]]:
    """A QueueHook runner whose commands run in the router's namespace."""

    def run(cmd: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", ns, *cmd], input=stdin,
                              capture_output=True, text=True, timeout=10)  # fmt: skip

    return run


def _list(values: list[float], digits: int = 2) -> str:
    return ", ".join(f"{v:.{digits}f}" for v in values)


def _gbps(runs: list[dict], round_: int, arm: str) -> float:
    return next(r["gbps"] for r in runs if r["round"] == round_ and r["arm"] == arm)


def _spread(values: list[float]) -> float:
    return (max(values) - min(values)) / statistics.median(values)


def _arms(text: str) -> tuple[str, ...]:
    arms = tuple(a.strip() for a in text.split(",") if a.strip())
    unknown = [a for a in arms if a not in ARMS]
    if unknown or len(arms) < 2:
        raise argparse.ArgumentTypeError(f"two or more of {', '.join(ARMS)}")
    return arms


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="runs per arm (default 5)")
    parser.add_argument("--seconds", type=float, default=4, help="measured seconds per run")
    parser.add_argument("--omit", type=int, default=1, help="warm-up seconds iperf3 omits")
    names = ", ".join(ARMS)
    parser.add_argument("--arms", type=_arms, default=DEFAULT_ARMS,
                        help=f"comma-separated, of {names} (default plaza,plain)")  # fmt: skip
    return parser.parse_args(argv)


if __name__ == "__main__":
    args = parse()
    raise SystemExit(main(lambda: run(args.rounds, args.seconds, args.omit, args.arms)))
