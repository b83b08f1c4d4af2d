"""Forwarding throughput of an authorized phone through Plaza and through a plain Linux router.

iperf3 TCP from the phone to a server in the fake internet, the arms interleaved round by round
in ABBA order (A B, B A, A B, ...: each round runs the arms forward, the next one backward, so
slow drift of the machine hits all alike and no arm always goes first). Arms, all on the same
lab topology in the same run:

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
`split` loads Plaza's table as it was on the morning of 2026-12-06, six base chains on a
forwarded packet's way instead of three (see `split()`; the queue hooks as they were too), and
`no-policy` one with no per-client policy (its cost at most), so a before/after comparison runs
side by side too: `--arms plaza,plain,split`.

Two figures per run, both printed for every arm and as ratios side by side: Gbit/s (what the
issue's target is about), and Gbit per CPU-second, the cost of forwarding a bit. The machine is
shared (two CPUs, other engineers' VMs under TCG): what it leaves us moves the Gbit/s by 20 % or
more from run to run, the cost per bit far less. The CPU-seconds are those of the iperf3 client
and server and of the ksoftirqd threads during the run: the router's forwarding runs in softirq,
in the context of whichever of them is on the CPU, and is charged to it (tick accounting). Both
iperf3 ends are pinned (client CPU 0, server CPU 1). Each figure also has its per-round ratio
(the two arms' runs of one round are adjacent in time: slower drift cancels), whose median and
interquartile range say whether a 3 % difference is resolved.

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
import resource
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

from gateway.dataplane import ruleset
from gateway.garden.queue import QueueHook, legacy_rules
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
    "split": (),  # Plaza's table on the morning of 2026-12-06: see VARIANTS
    "no-policy": (),
}
# Scratch arms that load a variant of `inet plaza` instead (the saved listing, edited).
SEEN_NOW = (
    "\t\tip saddr . ether saddr != @seen4 meta mark set meta mark | {d}\n"
    "\t\tip6 saddr . ether saddr != @seen6 meta mark set meta mark | {d}\n"
    "\t\tjump garden_classify\n"
)
SEEN_THEN = (
    "\t\tip saddr . ether saddr @seen4 return\n\t\tip6 saddr . ether saddr @seen6 return\n"
    "\t\tmeta mark set meta mark | {d}\n"
)
AUTH_GOTO = re.compile(r"(\t\tip6? saddr \. ether saddr @auth[46]) goto client_up[46]\n")
DOWN_VMAP = re.compile(r"\t\toifname \S+ meta nfproto vmap .*\n")


def split(table: str) -> str:
    """Plaza's table as it was on the morning of 2026-12-06 (the same rules, spread over more
    base chains): the garden's classification in a forward chain of its own before the queue
    hook (priority mangle - 5), the captive rules in `lan_forward` (priority filter) and the
    per-client policy in `client_policy` (filter + 10). With `legacy_rules()`'s queue hooks (the
    garden's on mangle FORWARD), a forwarded packet met six base chains instead of three."""
    lan = re.search(r'\t\tiifname "([^"]+)" jump from_lan\n', table)
    if lan is None:
        raise LabError("arm split: the table has no lan_forward of today's form")
    name, detect = lan.group(1), _hex(ruleset.MARK_DETECT)
    decided = _hex(ruleset.MARK_DECIDED)
    table = table.replace(SEEN_NOW.format(d=detect), SEEN_THEN.format(d=detect), 1)
    returns = (
        f'\t\tiifname != "{name}" return\n'
        "\t\tip saddr . ether saddr @auth4 return\n\t\tip6 saddr . ether saddr @auth6 return\n"
    )
    table = table.replace(
        "\tchain garden_classify {\n",
        "\tchain garden_classify {\n"
        "\t\ttype filter hook forward priority mangle - 5; policy accept;\n"
        f"{returns}\t\tct mark & {decided} != 0x00000000 return\n",
        1,
    ).replace(" fib daddr type != local meta mark set", " meta mark set")
    head, rest = table.split("\tchain lan_forward {\n", 1)
    policy, rest = rest.split("\tchain from_lan {\n", 1)
    down = DOWN_VMAP.search(policy)
    if down is None:
        raise LabError("arm split: no downstream policy rule in lan_forward")
    up = down.group(0).replace("oifname", "iifname").replace("_down", "_up")
    rest = AUTH_GOTO.sub(r"\1 accept\n", rest, count=2)
    captive, tail = rest.split("\t}\n", 1)
    return (
        f"{head}\tchain lan_forward {{\n"
        "\t\ttype filter hook forward priority filter; policy accept;\n"
        f'\t\tiifname != "{name}" return\n{captive}\t}}\n\n'
        "\tchain client_policy {\n"
        "\t\ttype filter hook forward priority filter + 10; policy accept;\n"
        f"{up}{down.group(0)}\t}}\n{tail}"
    )


def _hex(mark: int) -> str:
    return f"0x{mark:08x}"


VARIANTS: dict[str, Callable[[str], str]] = {
    "split": split,
    # no per-client policy or accounting at all: what the client policy costs at most
    "no-policy": lambda t: DOWN_VMAP.sub("", AUTH_GOTO.sub(r"\1 accept\n", t)),
}
# Arms whose queue hooks are another release's (gateway/garden/queue.py legacy_rules).
LEGACY_HOOKS = ("split",)
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


def iperf(lab: Lab, seconds: float, omit: int, server: int) -> dict:
    """One iperf3 TCP run from the phone: receiver-side Gbit/s, the sender's retransmits, and
    the CPU the run took (see `cpu_seconds`): `server` is the iperf3 server's pid."""
    phone = lab.state.phones[0].netns
    address = lab.status()["internet"]["web_ipv4"]
    cmd = ["iperf3", "-c", address, "-p", str(IPERF_PORT), "-t", f"{seconds:g}", "-O", str(omit)]
    if (os.cpu_count() or 1) >= 2:
        # Sender (and with it the router's forwarding, done in its softirq) on CPU 0, receiver
        # on CPU 1: far less run-to-run spread than letting the scheduler move them around.
        cmd += ["-A", "0,1"]
    others = [server, *softirq_threads()]
    ticks = sum(task_ticks(pid) for pid in others)
    child = _children_cpu()
    proc = subprocess.run(
        ["ip", "netns", "exec", phone, *cmd, "-J"],
        capture_output=True,
        text=True,
        timeout=seconds + omit + 30,
    )
    # the client's own CPU (it is this process's only child reaped meanwhile), then the rest
    cpu = _children_cpu() - child
    cpu += (sum(task_ticks(pid) for pid in others) - ticks) / TICKS
    try:
        report = json.loads(proc.stdout)
    except ValueError:
        why = proc.stderr.strip() or f"exit {proc.returncode}"
        raise LabError(f"iperf3 gave no JSON: {why}") from None
    if report.get("error"):
        raise LabError(f"iperf3: {report['error']}")
    end = report["end"]
    # every byte the CPU figure paid for: the omitted warm-up's too
    sent = sum(interval["sum"]["bytes"] for interval in report["intervals"])
    return {
        "gbps": end["sum_received"]["bits_per_second"] / 1e9,
        "retransmits": end["sum_sent"].get("retransmits", 0),
        "sender_cpu": round(end["cpu_utilization_percent"]["host_total"], 1),
        "receiver_cpu": round(end["cpu_utilization_percent"]["remote_total"], 1),
        "cpu_seconds": round(cpu, 3),
        "gbit_per_cpu_second": round(sent * 8 / 1e9 / cpu, 4) if cpu > 0 else float("nan"),
    }


TICKS = os.sysconf("SC_CLK_TCK")


def task_ticks(pid: int) -> int:
    """User + system clock ticks of a task so far (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15 of stat(5)


def softirq_threads() -> list[int]:
    """The ksoftirqd threads: softirq work the kernel defers (under load it does, more or less
    from run to run) is charged to them instead of to the iperf3 processes."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as f:
                    if f.read().startswith("ksoftirqd/"):
                        found.append(int(entry))
            except OSError:
                continue
    return found


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


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
        self.legacy = False
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
        if arm in LEGACY_HOOKS:  # the older release's queue rules instead of today's
            self.legacy = True
            for table in XT:
                if table in self.tables:
                    nsrun(self.ns, "nft", "delete", "table", *table.split())
                    family = table.split()[0]
                    for rule in legacy_rules():
                        nsrun(self.ns, f"{family}tables-nft", "-w", "-t", "mangle", "-A", *rule)

    def restore(self) -> None:
        if self.patched:
            nsrun(self.ns, "nft", "-f", "-", stdin=f"delete table {PLAZA}\n{self.saved[PLAZA]}")
            self.patched = False
        present = set(self.listed())
        if self.legacy:  # a legacy arm's queue rules: today's put back as saved
            for table in XT:
                if table in present:
                    nsrun(self.ns, "nft", "delete", "table", *table.split())
                    present.discard(table)
            self.legacy = False
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
    rounds: int = 5,
    seconds: float = 4,
    omit: int = 1,
    arms: tuple[str, ...] = DEFAULT_ARMS,
    perf: bool = False,
) -> Result:
    result = Result(NAME)
    runs: list[dict] = []
    with bench_lab(phones=1) as lab:
        ip = phone_ipv4(lab)
        client = lab.control().auth(ip)
        if client["state"] != "authorized":
            raise LabError(f"phone not authorized: {client}")
        web = lab.status()["internet"]["web_ipv4"]
        server = lab.spawn("bench-iperf3", lab.state.internet, "iperf3", "-s", "-B", web,
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
            iperf(lab, seconds, omit, server)
            for i in range(rounds):
                for arm in arms if i % 2 == 0 else arms[::-1]:
                    router.remove(arm)
                    try:
                        record = _perf_record(seconds) if perf else None
                        figures = iperf(lab, seconds, omit, server)
                        if record is not None:
                            share, symbols = _perf_share(record)
                            figures["netfilter_share"] = share
                            figures["netfilter_symbols"] = symbols
                    finally:
                        router.restore()
                    runs.append({"round": i + 1, "arm": arm, **figures})
                    log(
                        f"round {i + 1} {arm:>9}: {figures['gbps']:6.2f} Gbit/s"
                        f" {figures['gbit_per_cpu_second']:6.2f} Gbit/CPU-s"
                        f"  (cpu {figures['cpu_seconds']:.2f} s,"
                        f" retransmits {figures['retransmits']},"
                        f" cpu sender {figures['sender_cpu']}%,"
                        f" receiver {figures['receiver_cpu']}%"
                        + (f", netfilter {figures['netfilter_share']:.1%})" if perf else ")")
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

    reference = "plain" if "plain" in arms else arms[-1]
    result.figures = {
        "other_namespaces": others,
        "seconds_per_run": seconds,
        "omitted_seconds": omit,
        "rounds": rounds,
        "reference": reference,
        "runs": runs,
    }
    log(f"{'arm':>9} {'Gbit/s':>8} {'spread':>7} {'Gbit/CPU-s':>11} {'spread':>7}")
    for arm in arms:
        gbps = [r["gbps"] for r in runs if r["arm"] == arm]
        cost = [r["gbit_per_cpu_second"] for r in runs if r["arm"] == arm]
        log(f"{arm:>9} {statistics.median(gbps):8.2f} {_spread(gbps):7.1%}"
            f" {statistics.median(cost):11.3f} {_spread(cost):7.1%}")  # fmt: skip
        result.figures[f"median_gbps_{arm}"] = round(statistics.median(gbps), 3)
        result.figures[f"spread_{arm}"] = round(_spread(gbps), 4)
        result.figures[f"median_gbit_per_cpu_second_{arm}"] = round(statistics.median(cost), 4)
        result.figures[f"cpu_spread_{arm}"] = round(_spread(cost), 4)
        result.checks.append(Check(f"forwarding {arm} (median)", statistics.median(gbps), "Gbit/s"))
    keys = [("gbps", "Gbit/s"), ("gbit_per_cpu_second", "Gbit/CPU-s")]
    if perf:
        # A bit's CPU cost is R + N (N in netfilter, share s = N / (R + N)); R, the rest of the
        # path, is the same in every arm, so the speed a CPU-bound router gets is (1 - s) / R:
        # arm / reference = (1 - s_arm) / (1 - s_reference).
        keys.append(("perf_speed", "by perf"))
        for r in runs:
            r["perf_speed"] = 1 - r["netfilter_share"]
        for arm in arms:
            shares = [r["netfilter_share"] for r in runs if r["arm"] == arm]
            median = statistics.median(shares)
            result.figures[f"median_netfilter_share_{arm}"] = round(median, 4)
            listed = ", ".join(f"{x:.1%}" for x in shares)
            log(f"{arm:>9} netfilter share of the forwarding CPU: median {median:.1%} ({listed})")
            mine = [r["netfilter_symbols"] for r in runs if r["arm"] == arm]
            names = {name for symbols in mine for name in symbols}
            top = sorted(((statistics.median(m.get(n, 0.0) for m in mine), n) for n in names),
                         reverse=True)[:10]  # fmt: skip
            log("          " + ", ".join(f"{n} {v:.2%}" for v, n in top))
    log(f"{'ratio':>16} {'of medians':>11} {'per round: median':>18} {'IQR':>13}")
    for arm in arms:
        if arm == reference:
            continue
        for key, label in keys:
            mine = statistics.median(r[key] for r in runs if r["arm"] == arm)
            theirs = statistics.median(r[key] for r in runs if r["arm"] == reference)
            ratio = mine / theirs if theirs else float("nan")
            # Each round's runs are adjacent in time: their ratio cancels slow drift.
            pairs = [_value(runs, i, arm, key) / _value(runs, i, reference, key)
                     for i in range(1, rounds + 1)]  # fmt: skip
            low, high = _quartiles(pairs)
            pair = statistics.median(pairs)
            log(f"{arm + '/' + reference:>9} {label:>10}: {ratio:6.3f} {pair:12.3f}"
                f"       {low:.3f}-{high:.3f}")  # fmt: skip
            prefix = {"gbps": "", "gbit_per_cpu_second": "cpu_", "perf_speed": "perf_"}[key]
            stem = f"{prefix}{arm}_{reference}"
            result.figures[f"ratio_{stem}"] = round(ratio, 4)
            result.figures[f"pair_ratio_{stem}"] = round(pair, 4)
            result.figures[f"pair_ratio_iqr_{stem}"] = [round(low, 4), round(high, 4)]
            result.figures[f"pair_ratios_{stem}"] = [round(p, 4) for p in pairs]
            target = 0.97 if arm == "plaza" and key == "gbps" else None
            result.checks += [
                Check(f"forwarding {label} ratio {arm}/{reference}", ratio, "", target,
                      higher_is_better=True),
                Check(f"forwarding {label} per-round ratio {arm}/{reference} (median)", pair, ""),
            ]  # fmt: skip
    spread = {arm: _spread([r["gbps"] for r in runs if r["arm"] == arm]) for arm in arms}
    if max(spread.values()) > 0.05:
        busy = f" (other namespaces present: {', '.join(others)})" if others else ""
        log(f"note: Gbit/s spread more than 5%: the machine was busy{busy}; read Gbit/CPU-s")
    return result


# Kernel functions of netfilter (hooks, nft, conntrack, NAT, xtables, queue); the route lookup
# (fib_*) is not among them: a plain router does it too.
NETFILTER = re.compile(r"(__)?(nf_|nft_|nfqnl_|ipt_|ip6t_|xt_|ipv[46]_conntrack|hash_conntrack)")


def _perf_record(seconds: float) -> tuple[subprocess.Popen[bytes], str]:
    """Sample every CPU while the run is under way (cpu-clock: no hardware counters here)."""
    path = f"/tmp/plaza-forwarding-{os.getpid()}.perf"
    cmd = ["perf", "record", "-a", "-F", "1999", "-o", path, "--", "sleep", f"{seconds:g}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, path


def _perf_share(record: tuple[subprocess.Popen[bytes], str]) -> tuple[float, dict[str, float]]:
    """The share of the forwarding path's samples (the iperf3 processes, in whose softirq the
    router forwards, and ksoftirqd) spent in netfilter: a ratio within one run, so other work
    on the machine cancels out of it, as it does not out of Gbit/s."""
    proc, path = record
    proc.wait(timeout=60)
    report = subprocess.run(
        ["perf", "report", "-i", path, "--stdio", "--no-children", "--sort", "sym", "-q",
         "--comm", "iperf3,ksoftirqd/0,ksoftirqd/1", "--percent-limit", "0"],
        capture_output=True, text=True, timeout=120,
    ).stdout  # fmt: skip
    os.unlink(path)
    symbols: dict[str, float] = {}
    for line in report.splitlines():
        match = re.match(r"\s*([\d.]+)%\s+\[[kH.]\]\s+(\S+)", line)
        if match and NETFILTER.match(match.group(2)):
            symbols[match.group(2)] = float(match.group(1)) / 100
    return sum(symbols.values()), symbols


def _in_ns(ns: str) -> Callable[..., subprocess.CompletedProcess[str]]:
    """A QueueHook runner whose commands run in the router's namespace."""

    def run(cmd: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", ns, *cmd], input=stdin,
                              capture_output=True, text=True, timeout=10)  # fmt: skip

    return run


def _value(runs: list[dict], round_: int, arm: str, key: str) -> float:
    return next(r[key] for r in runs if r["round"] == round_ and r["arm"] == arm)


def _quartiles(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return values[0], values[0]
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], q[2]


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
    parser.add_argument("--perf", action="store_true",
                        help="sample each run with perf: netfilter's share of the CPU")  # fmt: skip
    return parser.parse_args(argv)


if __name__ == "__main__":
    args = parse()
    raise SystemExit(main(lambda: run(args.rounds, args.seconds, args.omit, args.arms, args.perf)))
