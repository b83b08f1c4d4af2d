"""Idle memory: the gateway daemon's and the portal's resident set on a router with no phones.

The lab "bidle" is brought up with its router (gateway daemon, portal, dnsmasq) and no phone;
after SETTLE_SECONDS (the daemon's first accounting polls, reconcile and garden check have run:
steady state, not start-up) each process's /proc/PID/status is read SAMPLES times a second
apart. Figures: the median VmRSS of each (and its anonymous and file-backed parts, thread
count and peak VmHWM), against the target for the daemon (issue 12: <= 40 MB at idle). The
portal has no target; it is printed so its cost is known. Numbers come from the development
venv's interpreter and the code of this tree: what a process imports, not what the install
holds, sets its size (bench/router_install.py measures the install).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from benchlib import Check, Result, log, main, netns_names

from lab.topology import Lab

NAME = "idle memory"
LAB = "bidle"
SETTLE_SECONDS = 12.0
SAMPLES = 5
DAEMON_TARGET_MB = 40.0
PROCESSES = (("gateway daemon", "router-gateway"), ("portal", "router-portal"))
FIELDS = ("VmRSS", "RssAnon", "RssFile", "VmHWM")


def status(pid: int) -> dict[str, float]:
    """MB of each of FIELDS, and the thread count, from /proc/PID/status."""
    found: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in FIELDS:
            found[key] = int(value.split()[0]) / 1024  # kB
        elif key == "Threads":
            found[key] = int(value)
    return found


def run(settle: float = SETTLE_SECONDS) -> Result:
    result = Result(NAME)
    lab = Lab(LAB)
    if lab.is_up():
        log(f"lab {LAB!r} was left up by an earlier run; taking it down first")
    lab.down()
    samples: dict[str, list[dict[str, float]]] = {label: [] for label, _ in PROCESSES}
    try:
        lab.up(phones=0, dhcp=False)
        pids = {label: lab.state.pids[key] for label, key in PROCESSES}
        log(f"lab {LAB!r} up, no phones; settling {settle:g} s")
        time.sleep(settle)
        for _ in range(SAMPLES):
            for label, pid in pids.items():
                samples[label].append(status(pid))
            time.sleep(1.0)
    finally:
        lab.down()
        leftover = [ns for ns in netns_names() if ns.startswith(f"{LAB}-")]
        if leftover:
            log(f"warning: namespaces left behind after down: {', '.join(leftover)}")

    for label, rows in samples.items():
        fig = {k: round(statistics.median(r[k] for r in rows), 1) for k in (*FIELDS, "Threads")}
        fig["VmHWM"] = round(max(r["VmHWM"] for r in rows), 1)
        result.figures[label] = fig
        log(f"{label}: RSS {fig['VmRSS']:.1f} MB (anonymous {fig['RssAnon']:.1f}, "
            f"files {fig['RssFile']:.1f}); peak {fig['VmHWM']:.1f} MB; "
            f"{fig['Threads']:g} threads")  # fmt: skip
    daemon = result.figures["gateway daemon"]["VmRSS"]
    portal = result.figures["portal"]["VmRSS"]
    result.figures["daemon_ratio_to_target"] = round(daemon / DAEMON_TARGET_MB, 3)
    log(f"daemon idle RSS / target: {daemon:.1f} / {DAEMON_TARGET_MB:g} MB = "
        f"{daemon / DAEMON_TARGET_MB:.2f}")  # fmt: skip
    result.checks += [
        Check("daemon RSS at idle", daemon, "MB", DAEMON_TARGET_MB),
        Check("portal RSS at idle", portal, "MB"),
    ]
    return result


if __name__ == "__main__":
    raise SystemExit(main(run))
