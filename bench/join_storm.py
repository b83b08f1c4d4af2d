"""Join storm: many phones join the Wi-Fi at once and log in through the sandbox wallet.

The lab "storm" is built with N phones wired to the router but without DHCP clients. One helper
per phone (ns_wallet_login.py, in the phone's namespace) starts before the storm and waits for
"go"; all get "go" within a few milliseconds. Each then runs its DHCP client until bound (the
phone's own clock starts at its lease), logs in through the wallet as a browser would, and polls
the fake internet until it answers. The figure per phone is lease -> online; p50/p99/max over
the phones, and every phone that did not get online is an error, with its reason.

One extra phone logs in alone before the storm (not counted; `--no-warmup` skips it) so the
portal has imported its wallet client and cached the wallet's discovery document and keys, as a
portal that has been running would have; its lease -> online is printed as the uncontended
baseline. CPU time of the lab's processes during the storm is printed to show where time goes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import subprocess
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import router_cpu
from benchlib import Check, Helper, Result, log, main, netns_names, percentile, scrape

from lab.topology import Lab, LabError
from portal.login import CALLBACK

NAME = "join_storm"
LAB = "storm"
MAX_PHONES = 150  # the lab's DHCP range holds 151 addresses; one is the warm-up phone
USERS = (("alice", "1234", "Alice Wang"), ("bob", "5678", "Bob Li"), ("mei", "2468", "王美"))
SETTLE_SECONDS = 2.0  # after the helpers start, before "go": let their start-up CPU die down
QUIET_PCT = 10.0  # ... and wait for a second with the machine less busy than this
AUTHORIZE_PATH = {"oidc": "authorize", "alipay": "oauth2/publicAppAuthorize.htm"}
# Consecutive marks each helper reports, and what happens between one and the next.
SEGMENTS = (
    ("go", "lease", "DHCP (go -> lease; not in the figure)"),
    ("lease", "portal_302", "GET portal /login/wallet -> 302"),
    ("portal_302", "consent_200", "GET wallet consent page"),
    ("consent_200", "approve_302", "POST approve -> 302"),
    ("approve_302", "callback_303", "GET portal callback -> 303"),
    ("callback_303", "welcome_200", "GET /welcome"),
    ("welcome_200", "online", "first 200 from the internet"),
)


def _seconds(values: list[float]) -> dict[str, float]:
    return {
        "p50_s": round(percentile(values, 50), 4),
        "p99_s": round(percentile(values, 99), 4),
        "max_s": round(max(values), 4) if values else float("nan"),
        "n": len(values),
    }


def _counts(values: list[int]) -> dict[str, float]:
    return {
        "p50": percentile(values, 50),
        "max": max(values) if values else math.nan,
        "total": sum(values),
    }


def helper_config(lab: Lab, status: dict, index: int, budget: float) -> dict[str, Any]:
    phone = lab.state.phones[index - 1]
    cmd, env = lab.dhcp_command(phone, once=True)
    user, pin, name = USERS[(index - 1) % len(USERS)]
    portal, dialect = status["portal_url"], lab.state.wallet_dialect
    return {
        "phone": phone.name,
        "udhcpc": cmd,
        "env": env,
        "ca": status["ca_cert"],
        "portal": portal,
        "authorize": status["wallet_url"] + AUTHORIZE_PATH[dialect],
        "callback": portal + CALLBACK[dialect],
        "site": status["internet"]["web_url"],
        "user": user,
        "pin": pin,
        "name": name,
        "budget": budget,
    }


def start_helpers(lab: Lab, status: dict, indexes: range, budget: float) -> list[Helper]:
    helpers = []
    for i in indexes:
        phone = lab.state.phones[i - 1]
        cfg = helper_config(lab, status, i, budget)
        helpers.append(Helper(phone.netns, "ns_wallet_login.py", json.dumps(cfg)))
        helpers[-1].name = phone.name
    return helpers


def wait_ready(helpers: list[Helper], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for helper in helpers:
        line = helper.readline(timeout=max(deadline - time.monotonic(), 0.5))
        if line != "ready":
            raise LabError(f"phone helper did not start: {line!r}")


def collect(helpers: list[Helper], deadline: float) -> list[dict[str, Any]]:
    reports = []
    for helper in helpers:
        try:
            line = helper.readline(timeout=max(deadline - time.monotonic(), 0.5))
            reports.append(json.loads(line))
        except (LabError, ValueError) as exc:
            reports.append(
                {"phone": helper.name, "ok": False, "step": "report", "marks": {},
                 "reason": "no report in time", "detail": str(exc)}
            )  # fmt: skip
    return reports


def stop_helpers(helpers: list[Helper], timeout: float = 3.0) -> None:
    """Close every helper's stdin, give them `timeout` in all, then kill what is left."""
    for helper in helpers:
        with contextlib.suppress(OSError):
            if helper.proc.stdin is not None:
                helper.proc.stdin.close()
        helper.proc.stdin = None
    deadline = time.monotonic() + timeout
    for helper in helpers:
        try:
            helper.proc.wait(timeout=max(deadline - time.monotonic(), 0.05))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(helper.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            helper.proc.communicate(timeout=2)


# -- DHCP ------------------------------------------------------------------------------------------
def ensure_no_ping(lab: Lab) -> bool:
    """Restart the router's dnsmasq with --no-ping unless its config already has it.

    By default dnsmasq pings an address (up to 3 s) before offering it, one address at a time:
    three phones joining together got leases after 3, 6 and 9 s; in a 100-phone storm the
    leases came after ~15 s and 4 of the DHCP clients gave up (`--dhcp-ping` shows it). That
    is not the storm this benchmark is about, so unless Plaza's generated config already says
    `no-ping` the running command line is restarted with the flag. True if restarted.
    """
    pid = lab.state.pids["router-dnsmasq"]
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").decode().split("\0")
    conf = next(a.split("=", 1)[1] for a in argv if a.startswith("--conf-file="))
    if "no-ping" in (line.strip() for line in Path(conf).read_text().splitlines()):
        return False
    lab.stop("router-dnsmasq")
    lab.spawn("router-dnsmasq", lab.state.router, *argv, "--no-ping")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        out = subprocess.run(
            ["ip", "netns", "exec", lab.state.router, "ss", "-Hlun", "sport = :67"],
            capture_output=True,
            text=True,
        ).stdout
        if out.strip():
            return True
        time.sleep(0.05)
    raise LabError("dnsmasq did not come back with --no-ping")


# -- where the CPU goes ------------------------------------------------------------------------
CLK_TCK = router_cpu.CLK_TCK


def cpu_by_process(lab: Lab) -> dict[str, float]:
    """CPU seconds so far (own + reaped children) of every process in the router and internet
    namespaces: the router's per part (bench/router_cpu.py), the rest per lab process."""
    table = {}
    for ns in (lab.state.router, lab.state.internet):
        table.update(router_cpu.processes(ns))
    return dict(router_cpu.charge(lab.state.pids, table))


TCP_COUNTERS = (
    ("TcpExt", "ListenOverflows"),  # a SYN or handshake-completing ACK found the accept queue full
    ("TcpExt", "ListenDrops"),
    ("Tcp", "RetransSegs"),
    ("TcpExt", "TCPTimeouts"),
)


def tcp_counters(ns: str) -> dict[str, int]:
    """The namespace's own TCP counters (/proc/net/{snmp,netstat} are per network namespace)."""
    out = subprocess.run(
        ["ip", "netns", "exec", ns, "cat", "/proc/net/snmp", "/proc/net/netstat"],
        capture_output=True,
        text=True,
    ).stdout.splitlines()
    table: dict[tuple[str, str], int] = {}
    for head, values in zip(out[::2], out[1::2], strict=False):
        names, numbers = head.split()[1:], values.split()[1:]
        prefix = head.split(":")[0]
        for name, number in zip(names, numbers, strict=False):
            with contextlib.suppress(ValueError):
                table[(prefix, name)] = int(number)
    return {name: table.get((prefix, name), 0) for prefix, name in TCP_COUNTERS}


def outside_cpu(lab: Lab) -> dict[int, tuple[str, float]]:
    """CPU seconds so far of every process outside the lab's namespaces: other labs and tests on
    this machine, and this benchmark itself. Own time only: a shell that reaps a long test run
    during the storm would otherwise be charged the whole run."""
    lab_inodes = set()
    for ns in lab.state.namespaces():
        with contextlib.suppress(OSError):
            lab_inodes.add(f"net:[{os.stat(f'/run/netns/{ns}').st_ino}]")
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.readlink(entry / "ns" / "net") in lab_inodes:
                continue
            raw = (entry / "stat").read_text()
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        comm = raw[raw.index("(") + 1 : raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2 :].split()
        label = " ".join(a.decode(errors="replace") for a in args[:4] if a)[:70] or f"[{comm}]"
        found[int(entry.name)] = (label, sum(int(x) for x in fields[11:13]) / CLK_TCK)
    return found


def top_outside(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]
) -> list[tuple[str, float]]:
    deltas = [
        (label, seconds - before.get(pid, (label, 0.0))[1])
        for pid, (label, seconds) in after.items()
    ]
    return sorted((d for d in deltas if d[1] > 0), key=lambda d: -d[1])


def late_hooks(lab: Lab, limit: float = 20.0) -> dict[str, float]:
    """dnsmasq runs its lease script once per lease, one at a time: under load they lag behind
    the storm. Wait until dnsmasq's and the hooks' CPU time stops growing; return the CPU
    seconds so far of every part then (the router's share of the storm, hooks included)."""
    keys, last, still = (router_cpu.DNSMASQ, router_cpu.HOOKS), -1.0, 0
    deadline = time.monotonic() + limit
    processes = cpu_by_process(lab)
    while time.monotonic() < deadline and still < 3:
        processes = cpu_by_process(lab)
        now = sum(processes.get(k, 0.0) for k in keys)
        still = still + 1 if now == last else 0
        last = now
        time.sleep(0.3)
    return processes


def lease_events(lab: Lab) -> Counter[str]:
    """Lease events the gateway has had so far, by action when read from dnsmasq's lease file
    (gateway/stations/lease_watch.py), as `hook` when a lease hook sent them."""
    found: Counter[str] = Counter()
    for key, value in scrape(lab).items():
        if key.startswith("plaza_lease_events_total{"):
            found[key.split('"')[1]] += int(value)
        elif key.startswith('plaza_control_requests_total{op="lease"'):
            found["hook"] += int(value)
    return found


MACHINE_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def machine_cpu() -> dict[str, float]:
    """Seconds each CPU state has accumulated, summed over all CPUs (/proc/stat)."""
    values = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    return {k: int(v) / CLK_TCK for k, v in zip(MACHINE_FIELDS, values, strict=False)}


@dataclass
class Snapshot:
    """What the clocks and counters said at one moment, to subtract from a later one."""

    t: float
    processes: dict[str, float]
    machine: dict[str, float]
    tcp: dict[str, dict[str, int]]
    outside: dict[int, tuple[str, float]]

    @classmethod
    def take(cls, lab: Lab) -> Snapshot:
        spaces = {"router": lab.state.router, "internet": lab.state.internet}
        return cls(
            time.monotonic(),
            cpu_by_process(lab),
            machine_cpu(),
            {k: tcp_counters(ns) for k, ns in spaces.items()},
            outside_cpu(lab),
        )


def wait_quiet(limit: float) -> tuple[float, dict[str, float]]:
    """Sleep SETTLE_SECONDS, then on until a second passes with the machine under QUIET_PCT busy
    (other tests share it), or `limit` seconds. Returns (seconds waited, /proc/stat at the start
    of the last window)."""
    started = time.monotonic()
    time.sleep(SETTLE_SECONDS)
    while True:
        a = Snapshot(time.monotonic(), {}, machine_cpu(), {}, {})
        time.sleep(1.0)
        b = Snapshot(time.monotonic(), {}, machine_cpu(), {}, {})
        waited = time.monotonic() - started
        if busy_pct(a, b) < QUIET_PCT or waited >= limit:
            if waited >= limit:
                log(f"machine still {busy_pct(a, b)}% busy after {limit:g} s; storming anyway")
            return round(waited, 1), a.machine


def busy_pct(a: Snapshot, b: Snapshot) -> float:
    d = {k: b.machine[k] - a.machine[k] for k in a.machine}
    total = sum(d.values())
    return round(100 * (total - d["idle"] - d["iowait"]) / total, 1) if total else math.nan


# -- the run -----------------------------------------------------------------------------------
def run(
    phones: int = 100,
    budget: float = 60.0,
    wallet: str = "oidc",
    warmup: bool = True,
    dhcp_ping: bool = False,
    quiet_wait: float = 60.0,
) -> Result:
    if not 1 <= phones <= MAX_PHONES:
        raise ValueError(f"--phones must be 1..{MAX_PHONES}")
    result = Result(NAME)
    lab = Lab(LAB)
    if lab.is_up():
        log(f"lab {LAB!r} was left up by an earlier run; taking it down first")
    lab.down()
    helpers: list[Helper] = []
    warm: list[Helper] = []
    figures: dict[str, Any] = {"phones": phones, "wallet": wallet, "budget_s": budget}
    try:
        t0 = time.monotonic()
        lab.up(phones=phones + int(warmup), wallet_dialect=wallet, dhcp=False)
        figures["lab_up_s"] = round(time.monotonic() - t0, 2)
        log(f"lab {LAB!r} up with {phones + int(warmup)} phones (no DHCP yet) in "
            f"{figures['lab_up_s']:.1f} s")  # fmt: skip
        status = lab.status()
        figures["dnsmasq_no_ping_added"] = False if dhcp_ping else ensure_no_ping(lab)
        if figures["dnsmasq_no_ping_added"]:
            log("router dnsmasq restarted with --no-ping (Plaza's config pings each new address)")

        if warmup:
            warm = start_helpers(lab, status, range(phones + 1, phones + 2), budget)
            wait_ready(warm, 30)
            warm[0].send("go")
            report = collect(warm, time.monotonic() + budget + 10)[0]
            if not report["ok"]:
                raise LabError(f"warm-up login failed at {report['step']}: {report['reason']} "
                               f"{report.get('detail', '')}")  # fmt: skip
            m = report["marks"]
            figures["warmup_lease_to_online_s"] = round(m["online"] - m["lease"], 4)
            log(f"warm-up phone online {figures['warmup_lease_to_online_s'] * 1e3:.0f} ms "
                "after its lease (alone, uncontended)")  # fmt: skip

        t1 = time.monotonic()
        helpers = start_helpers(lab, status, range(1, phones + 1), budget)
        wait_ready(helpers, 120)
        figures["helpers_ready_s"] = round(time.monotonic() - t1, 2)
        log(f"{phones} phone helpers ready in {figures['helpers_ready_s']:.1f} s; settling")
        figures["waited_for_quiet_s"], quiet = wait_quiet(quiet_wait)
        dnsmasq_log = lab.run_dir / "router-dnsmasq.log"
        log_offset = dnsmasq_log.stat().st_size
        leases_before = lease_events(lab)
        before = Snapshot.take(lab)
        # Load the storm did not cause (other labs or tests on this machine) just before it.
        figures["machine_busy_before_pct"] = busy_pct(Snapshot(0, {}, quiet, {}, {}), before)
        perf = router_cpu.PerfSampler(lab.state.pids["router-portal"])
        perf.start()
        for helper in helpers:
            helper.send("go")
        figures["go_spread_ms"] = round((time.monotonic() - before.t) * 1e3, 2)
        reports = collect(helpers, before.t + budget + 15)
        after = Snapshot.take(lab)
        drained = late_hooks(lab)
        # dnsmasq runs the lease script at most once per ACK; a phone whose REQUEST it answered
        # late asks again (udhcpc -T 1), and the second ACK may run the script again
        with dnsmasq_log.open("rb") as f:
            f.seek(log_offset)
            figures["dhcpacks"] = f.read().count(b"DHCPACK(")
        events = lease_events(lab)
        events.subtract(leases_before)
        figures["lease_events"] = {k: v for k, v in sorted(events.items()) if v}
        figures["lease_hook_runs"] = sum(events.values())
        figures["portal_perf_dso_pct"] = perf.stop()
        authorized = {c["ip"] for c in lab.control().clients() if c["state"] == "authorized"}
    finally:
        stop_helpers(warm + helpers)
        lab.down()
        leftover = [ns for ns in netns_names() if ns.startswith(f"{LAB}-")]
        if leftover:
            log(f"warning: namespaces left behind after down: {', '.join(leftover)}")

    return summarize(result, figures, reports, before, after, authorized, drained)


def summarize(
    result: Result,
    figures: dict[str, Any],
    reports: list[dict[str, Any]],
    before: Snapshot,
    after: Snapshot,
    authorized: set[str],
    drained: dict[str, float],
) -> Result:
    ok = [r for r in reports if r["ok"]]
    failed = [r for r in reports if not r["ok"]]
    for r in ok:  # the gateway must agree the phone is authorized
        if r.get("ip") not in authorized:
            r.update(ok=False, step="gateway", reason="not authorized at the gateway", detail="")
            failed.append(r)
    ok = [r for r in ok if r["ok"]]
    reasons = Counter(f"{r['step']}: {r['reason']}" for r in failed)
    for r in failed:
        detail = f" ({r['detail'][:160]})" if r.get("detail") else ""
        result.errors.append(f"{r['phone']}: {r['step']}: {r['reason']}{detail}")

    online = [r["marks"]["online"] - r["marks"]["lease"] for r in ok]
    figures["lease_to_online"] = _seconds(online)
    figures["go_to_online"] = _seconds([r["marks"]["online"] - before.t for r in ok])
    figures["segments"] = {
        label: _seconds([r["marks"][b] - r["marks"][a] for r in ok]) for a, b, label in SEGMENTS
    }
    figures["per_phone_network"] = {
        what: _seconds([r["net"][f"{what}_s"] for r in ok]) for what in ("dns", "tcp", "tls")
    }
    figures["connections_per_phone"] = _counts([r["net"]["connections"] for r in ok])
    figures["errors"] = len(failed)
    figures["error_reasons"] = dict(reasons.most_common())
    figures["internet_polls_over_1"] = sum(1 for r in ok if r.get("polls", 1) > 1)
    figures["connections_reopened"] = sum(r.get("reopened", 0) for r in reports)
    window = after.t - before.t
    figures["storm_wall_s"] = round(window, 3)
    cpu0, cpu1 = before.processes, after.processes
    cpu = {k: round(cpu1.get(k, 0) - cpu0.get(k, 0), 3) for k in sorted(set(cpu0) | set(cpu1))}
    cpu = {k: v for k, v in sorted(cpu.items(), key=lambda kv: -kv[1]) if v > 0}
    cpu["phone helpers (client side)"] = round(sum(r.get("cpu_s", 0) for r in reports), 3)
    cpu["phones' udhcpc + udhcpc.sh"] = round(sum(r.get("udhcpc_cpu_s", 0) for r in reports), 3)
    outside = top_outside(before.outside, after.outside)
    cpu["outside the lab (other tests, bench)"] = round(sum(s for _, s in outside), 3)
    machine = {k: round(after.machine[k] - before.machine[k], 2) for k in MACHINE_FIELDS}
    busy = sum(machine.values()) - machine["idle"] - machine["iowait"]
    cpu["not charged to a live process"] = round(busy - sum(cpu.values()), 3)
    figures["top_outside_the_lab"] = [(label, round(sec, 3)) for label, sec in outside[:5]]
    router = {k: drained.get(k, 0) - cpu0.get(k, 0) for k in router_cpu.ROUTER_PARTS}
    figures["router_cpu_s_incl_late_hooks"] = {k: round(v, 3) for k, v in router.items()}
    share = router_cpu.openssl_share(figures["portal_perf_dso_pct"])
    figures["portal_openssl_share"] = None if share is None else round(share, 3)
    figures["router_cpu_ms_per_login"] = router_cpu.per_login(router, share, len(ok))
    figures["lease_hook_cpu_ms_per_run"] = round(
        1e3 * router[router_cpu.HOOKS] / max(figures["lease_hook_runs"], 1), 2
    )
    lab_side = {k: v for k, v in cpu.items() if k not in router_cpu.ROUTER_PARTS}
    figures["lab_cpu_ms_per_login"] = {
        k: round(1e3 * v / max(len(ok), 1), 2)
        for k, v in lab_side.items()
        if k.startswith(("internet-", "phone"))
    }
    figures["cpu_s_during_storm"] = cpu
    figures["machine_cpu_s_during_storm"] = machine
    figures["machine_busy_pct"] = busy_pct(before, after)
    figures["tcp_counters_during_storm"] = {
        k: {name: after.tcp[k][name] - before.tcp[k][name] for name in before.tcp[k]}
        for k in before.tcp
    }
    result.figures = figures

    lo = figures["lease_to_online"]
    log(f"storm: {figures['phones']} phones, 'go' sent to all within "
        f"{figures['go_spread_ms']:.1f} ms; last report {window:.2f} s after go")  # fmt: skip
    log(f"lease -> online: p50 {lo['p50_s'] * 1e3:.0f} ms  p99 {lo['p99_s'] * 1e3:.0f} ms  "
        f"max {lo['max_s'] * 1e3:.0f} ms  (n={lo['n']}); errors {len(failed)}")  # fmt: skip
    log("per step (p50 / p99 / max, ms):")
    for label, s in figures["segments"].items():
        log(f"  {label:<40} {s['p50_s'] * 1e3:7.0f} {s['p99_s'] * 1e3:7.0f} "
            f"{s['max_s'] * 1e3:7.0f}")  # fmt: skip
    cores = os.cpu_count() or 1
    net = figures["per_phone_network"]
    log("per phone, summed over its connections (p50 / p99 / max, ms):")
    for what, label in (
        ("dns", "name lookups"),
        ("tcp", "TCP connects"),
        ("tls", "TLS handshakes"),
    ):
        n = net[what]
        log(f"  {label:<40} {n['p50_s'] * 1e3:7.0f} {n['p99_s'] * 1e3:7.0f} "
            f"{n['max_s'] * 1e3:7.0f}")  # fmt: skip
    c = figures["connections_per_phone"]
    log(f"  connections opened per phone: median {c['p50']:g}, max {c['max']:g}, "
        f"total {c['total']:g} (a server may close keep-alive ones)")  # fmt: skip
    log(f"CPU seconds during the {window:.1f} s storm ({cores} CPUs: {cores * window:.1f} s; "
        f"busy {figures['machine_busy_pct']}%, {figures['machine_busy_before_pct']}% "
        "just before the storm):")  # fmt: skip
    for label, seconds in cpu.items():
        log(f"  {label:<40} {seconds:7.2f}")
    log("  (machine: " + ", ".join(f"{k} {v:.2f}" for k, v in machine.items() if v) + ")")
    log_per_login(figures, len(ok))
    for label, seconds in figures["top_outside_the_lab"][:3]:
        log(f"  outside: {seconds:5.2f} s  {label}")
    for where, counters in figures["tcp_counters_during_storm"].items():
        text = ", ".join(f"{k} {v}" for k, v in counters.items())
        log(f"  TCP in the {where} namespace: {text}")
    for reason, count in reasons.most_common():
        log(f"  {count:3d} x {reason}")

    result.checks += [
        Check("lease -> online p50", lo["p50_s"], "s"),
        Check("lease -> online p99", lo["p99_s"], "s", 2.0),
        Check("lease -> online max", lo["max_s"], "s"),
        Check("phones that did not get online", len(failed), "", 0),
    ]
    return result


def log_per_login(figures: dict[str, Any], logins: int) -> None:
    """The router's CPU per login, part by part (the lease hooks that ran after the last phone
    was online included), then the lab's, which a real venue does not run on the router."""
    share = figures["portal_openssl_share"]
    how = (
        f"portal split by perf samples: {share:.0%} in OpenSSL"
        if share is not None
        else "perf not found: portal not split"
    )
    log(f"router CPU per login ({logins} logins; {how}), ms:")
    for label, ms in figures["router_cpu_ms_per_login"].items():
        log(f"  {label:<48} {ms:7.2f}")
    runs = figures["lease_hook_runs"]
    log(f"  (lease events {runs}, {runs / max(logins, 1):.2f} per login, lease hook CPU "
        f"{figures['lease_hook_cpu_ms_per_run']:.1f} ms per event; "
        f"{figures['dhcpacks']} DHCPACKs; {figures['lease_events']})")  # fmt: skip
    log("lab CPU per login (wallet, fake internet, phones: not the router), ms:")
    for label, ms in figures["lab_cpu_ms_per_login"].items():
        log(f"  {label:<48} {ms:7.2f}")
    top = sorted((figures["portal_perf_dso_pct"] or {}).items(), key=lambda kv: -kv[1])[:6]
    if top:
        log("  portal perf samples by library: " + ", ".join(f"{k} {v:.1f}%" for k, v in top))


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phones", type=int, default=100, help="phones in the storm (100)")
    parser.add_argument("--budget", type=float, default=60, help="seconds per phone (60)")
    parser.add_argument("--wallet", choices=("oidc", "alipay"), default="oidc")
    parser.add_argument("--no-warmup", action="store_true", help="storm a cold portal")
    parser.add_argument(
        "--dhcp-ping",
        action="store_true",
        help="keep dnsmasq's ping check if Plaza's config has it (leases then take ~3 s x N)",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=60,
        help="wait up to this long for the machine to be idle before the storm (60 s)",
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    args = parse()
    raise SystemExit(
        main(
            lambda: run(
                args.phones,
                args.budget,
                args.wallet,
                not args.no_warmup,
                args.dhcp_ping,
                args.quiet_wait,
            )
        )
    )
