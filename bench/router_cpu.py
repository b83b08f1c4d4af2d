"""The router's CPU, part by part: what a storm of logins costs the router, apart from the lab.

On this machine the phones, the wallet and the fake internet share the router's CPUs; on a real
venue they bring their own, and the router's slower CPU feels only its own share. So the CPU
seconds of every process in the router's namespace are read from /proc (own time, plus the
time of reaped children) and charged to a part:

- gateway daemon: `plaza-gateway run` and its children (`nft -f` loads);
- portal: `plaza-portal run`, split with `perf` samples (when `perf` is installed) into the
  time spent in OpenSSL (libssl, libcrypto, Python's _ssl: TLS handshakes and records, and the
  few HMACs of signed cookies) and the rest (Python: Flask, templates, the wallet client,
  control calls, and the kernel's share of its sockets);
- dnsmasq: DHCP and DNS;
- lease hooks: every process dnsmasq's script helper starts, the helper's reaped children plus
  any still running. None since the daemon reads dnsmasq's lease file instead
  (gateway/stations/lease_watch.py): that work is now in the gateway daemon's share; the part
  stays so a config with a `dhcp-script` (OpenWrt's hotplug) still shows its cost.

Processes in the other namespaces (wallet, fake internet) are charged to their lab process.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
PERF_HZ = 499  # samples per second per thread: ~0.2 % of a CPU, enough for a 2-5 s storm
OPENSSL = re.compile(r"^(libssl|libcrypto|_ssl\.)")
GATEWAY, PORTAL, DNSMASQ, HOOKS = (
    "router: gateway daemon",
    "router: portal",
    "router: dnsmasq (DHCP, DNS)",
    "router: lease hooks (sh + python -I per DHCP event)",
)
ROUTER_PARTS = (PORTAL, HOOKS, DNSMASQ, GATEWAY)
# the portal's two halves, per login
PORTAL_REST, TLS = "router: portal, Python and kernel", "router: portal, OpenSSL (TLS, HMAC)"


@dataclass(frozen=True)
class Proc:
    """One process's CPU seconds so far: its own, and its reaped children's."""

    ppid: int
    comm: str
    own: float
    children: float


def processes(namespace: str) -> dict[int, Proc]:
    out = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True).stdout
    found = {}
    for pid in (int(p) for p in out.split() if p.isdigit()):
        try:
            raw = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        comm = raw[raw.index("(") + 1 : raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2 :].split()
        own = (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime stime
        children = (int(fields[13]) + int(fields[14])) / CLK_TCK  # cutime cstime
        found[pid] = Proc(int(fields[1]), comm, own, children)
    return found


def owner(pid: int, table: dict[int, Proc], owners: dict[int, str]) -> tuple[str | None, int]:
    """The lab process `pid` descends from (its key, and that ancestor's pid)."""
    cur = pid
    for _ in range(12):
        if cur in owners:
            return owners[cur], cur
        if cur not in table:
            break
        cur = table[cur].ppid
    return None, 0


def charge(pids: dict[str, int], table: dict[int, Proc]) -> Counter[str]:
    """CPU seconds so far per part (router) or per lab process (elsewhere); see the module."""
    owners = {pid: key for key, pid in pids.items()}
    parts: Counter[str] = Counter()
    for pid, proc in table.items():
        key, root = owner(pid, table, owners)
        if key == "router-gateway":
            parts[GATEWAY] += proc.own + proc.children
        elif key == "router-portal":
            parts[PORTAL] += proc.own + proc.children
        elif key == "router-dnsmasq":
            parent = table.get(proc.ppid)
            if proc.comm == "dnsmasq" and parent is not None and parent.comm == "dnsmasq":
                # dnsmasq's script helper: its reaped children are the lease hooks
                parts[DNSMASQ] += proc.own
                parts[HOOKS] += proc.children
            elif proc.comm == "dnsmasq" or pid == root:
                parts[DNSMASQ] += proc.own + proc.children  # (a dnsmasq respawned: all of it)
            else:
                parts[HOOKS] += proc.own + proc.children  # a hook still running
        else:
            parts[key or proc.comm] += proc.own + proc.children
    return parts


class PerfSampler:
    """`perf record` of one process (all its threads) for a while; then the share of samples
    in OpenSSL's libraries. Without perf installed: does nothing, and the share is None."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.proc: subprocess.Popen[bytes] | None = None
        self.dir = tempfile.TemporaryDirectory(prefix="plaza-perf-")
        self.data = Path(self.dir.name) / "perf.data"

    def start(self) -> bool:
        if shutil.which("perf") is None:
            return False
        self.proc = subprocess.Popen(
            ["perf", "record", "-q", "-F", str(PERF_HZ), "-p", str(self.pid), "-o",
             str(self.data)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        return True

    def stop(self) -> dict[str, float] | None:
        """Percent of samples per shared object (library, interpreter, kernel), or None."""
        if self.proc is None:
            return None
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None
        out = subprocess.run(
            ["perf", "report", "-i", str(self.data), "--sort", "dso", "--stdio", "-q"],
            capture_output=True, text=True,
        ).stdout  # fmt: skip
        self.dir.cleanup()
        shares = {}
        for line in out.splitlines():
            m = re.match(r"\s*([\d.]+)%\s+(\S.*)$", line)
            if m:
                shares[m.group(2).strip()] = float(m.group(1))
        return shares or None


def openssl_share(shares: dict[str, float] | None) -> float | None:
    """Fraction (0-1) of the samples in OpenSSL's libraries and Python's _ssl module."""
    if not shares:
        return None
    return sum(v for k, v in shares.items() if OPENSSL.match(k)) / 100.0


def per_login(router: dict[str, float], share: float | None, logins: int) -> dict[str, float]:
    """The router's CPU milliseconds per login, per part and in total; the portal's total is
    split by `share` (its OpenSSL fraction) when it is known."""
    parts = dict(router)
    if share is not None:
        portal = parts.pop(PORTAL, 0.0)
        parts = {PORTAL_REST: portal * (1 - share), TLS: portal * share, **parts}
    ms = {k: round(1e3 * v / max(logins, 1), 2) for k, v in parts.items()}
    ms["router total"] = round(sum(ms.values()), 2)
    return ms
