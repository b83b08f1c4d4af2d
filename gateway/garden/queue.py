"""The walled-garden inspector's kernel side: the NFQUEUE hooks and the queue reader.

The hooks send packets that `garden_classify` marked MARK_QUEUE to queue QUEUE_NUM, and the first
packets of unseen stations that `lan_antispoof` marked MARK_DETECT to the station detector's queue
DETECT_QUEUE_NUM (gateway/stations/detect.py). Kernels differ: some have nft's native `queue`
expression, others (the test kernel) only the xtables NFQUEUE target. Which one is probed once at
start with `nft --check`; the xt rules are then put in iptables-nft's mangle PREROUTING chain (after
`lan_antispoof`, which also classifies the garden's packets) for both families: one iptables-nft
chain, so that a forwarded packet meets no iptables-nft chain on the forward hook (each base
chain costs every forwarded packet: docs/decisions.md, "three base chains"). All carry
`bypass`: with no reader, packets go on without a verdict; the garden's are then refused by
lan_forward, so a stopped inspector fails closed and fast (a reset), never hangs, and undetected
stations are still learned from DHCP and neighbours. The queues also fail open
(gateway/dataplane/nfqueue.py): a reader that is there but hung (SIGSTOP) holds at most its queue's
length; beyond that packets go on as if nobody were bound, with the same result.

The reader runs on the daemon's asyncio loop (add_reader on the queue's netlink socket): one
thread, no locks, and a verdict costs a parse of a few hundred bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import subprocess
from collections.abc import Callable
from typing import Any

from gateway.config import Config
from gateway.dataplane import ruleset
from gateway.dataplane.grants import FAMILY
from gateway.dataplane.nfqueue import LoopQueue
from gateway.garden.inspector import Garden, Inspector, RateLimitedLog, Verdict

log = logging.getLogger("plaza.garden")

# Packets waiting in the kernel for a verdict; beyond, they fail open, which for a garden
# packet means refused (no MARK_ALLOW). First data packets of captive TLS to the garden only:
# a few per login.
QUEUE_MAXLEN = 256
COPY_RANGE = 4016  # bytes of each packet copied to us (netfilterqueue's own ceiling)
CHECK_SECONDS = 30.0  # how often the hook is checked and put back if someone removed it
COMMENT = "plaza-garden"
DETECT_COMMENT = "plaza-detect"

Runner = Callable[..., subprocess.CompletedProcess[str]]


def _run(cmd: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=10)


def native_queue_supported(run: Runner = _run) -> bool:
    """Whether this kernel has nft's `queue` expression: a dry-run load of the hook table."""
    if not shutil.which("nft"):
        return False
    probe = ruleset.queue_table().replace(ruleset.QUEUE_TABLE, "plaza_probe")
    try:
        return run(["nft", "--check", "-f", "-"], stdin=probe).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _xt_binaries() -> list[str]:
    found = []
    for names in (("iptables-nft", "iptables"), ("ip6tables-nft", "ip6tables")):
        binary = next((n for n in names if shutil.which(n)), None)
        if binary:
            found.append(binary)
    return found


def xt_rule(num: int = ruleset.QUEUE_NUM) -> list[str]:
    """Packets marked for the garden, of a connection the inspector has not decided yet (the
    ct mark: `lan_antispoof` runs before conntrack and cannot see it)."""
    mark = f"{ruleset.MARK_QUEUE:#x}"
    return [
        "PREROUTING", "-p", "tcp", "-m", "mark", "--mark", f"{mark}/{mark}",
        "-m", "connmark", "--mark", f"0x0/{ruleset.MARK_DECIDED:#x}",
        "-m", "comment", "--comment", COMMENT,
        "-j", "NFQUEUE", "--queue-num", str(num), "--queue-bypass",
    ]  # fmt: skip


def xt_detect_rule() -> list[str]:
    """Packets marked for the detector and not for the garden. A queued packet, given back,
    goes on to the next base chain, never to this chain's next rule: one that wanted both
    queues would miss the garden's and be refused. Its station is learned from its next
    packet (or DHCP) instead."""
    mark = f"{ruleset.MARK_DETECT:#x}"
    mask = f"{ruleset.MARK_DETECT | ruleset.MARK_QUEUE:#x}"
    return [
        "PREROUTING", "-m", "mark", "--mark", f"{mark}/{mask}",
        "-m", "comment", "--comment", DETECT_COMMENT,
        "-j", "NFQUEUE", "--queue-num", str(ruleset.DETECT_QUEUE_NUM), "--queue-bypass",
    ]  # fmt: skip


def legacy_rules(num: int = ruleset.QUEUE_NUM) -> list[list[str]]:
    """The rules of releases before 2026-12-06 (garden queue on mangle FORWARD, detection
    without the garden's bit in its mask): a daemon that was killed left them behind, and
    the garden's would queue a packet a second time."""
    queue, detect = f"{ruleset.MARK_QUEUE:#x}", f"{ruleset.MARK_DETECT:#x}"
    return [
        ["FORWARD", "-p", "tcp", "-m", "mark", "--mark", f"{queue}/{queue}",
         "-m", "comment", "--comment", COMMENT,
         "-j", "NFQUEUE", "--queue-num", str(num), "--queue-bypass"],
        ["PREROUTING", "-m", "mark", "--mark", f"{detect}/{detect}",
         "-m", "comment", "--comment", DETECT_COMMENT,
         "-j", "NFQUEUE", "--queue-num", str(ruleset.DETECT_QUEUE_NUM), "--queue-bypass"],
    ]  # fmt: skip


class QueueHook:
    """Install, check and remove the rules that feed the queues; idempotent, both families."""

    def __init__(
        self, run: Runner = _run, native: bool | None = None, num: int = ruleset.QUEUE_NUM
    ) -> None:
        self.run = run
        self.num = num
        self.native = native_queue_supported(run) if native is None else native
        self.mode = "native nft queue" if self.native else "xtables NFQUEUE (iptables-nft)"
        self.rules = [xt_rule(num), xt_detect_rule()]

    def _xt(self, binary: str, verb: str, rule: list[str]) -> bool:
        cmd = [binary, "-w", "-t", "mangle", verb, *rule]
        if verb == "-I":
            cmd.insert(cmd.index(rule[0]) + 1, "1")  # first: before any ACCEPT in mangle
        return self.run(cmd).returncode == 0

    def installed(self) -> bool:
        if self.native:
            cmd = ["nft", "list", "table", FAMILY, ruleset.QUEUE_TABLE]
            return self.run(cmd).returncode == 0
        binaries = _xt_binaries()
        return bool(binaries) and all(self._xt(b, "-C", r) for b in binaries for r in self.rules)

    def install(self) -> None:
        """Put the hook in place if it is missing; raises RuntimeError when it cannot be."""
        if self.native:
            table = f"{FAMILY} {ruleset.QUEUE_TABLE}"
            text = f"table {table}\ndelete table {table}\n" + ruleset.queue_table(self.num)
            proc = self.run(["nft", "-f", "-"], stdin=text)
            if proc.returncode != 0:
                raise RuntimeError(f"nft refused the queue table: {proc.stderr.strip()}")
            return
        binaries = _xt_binaries()
        if not binaries:
            raise RuntimeError("neither a native nft queue nor iptables-nft is available")
        for binary in binaries:
            self._remove_legacy(binary)
            for rule in self.rules:
                if not self._xt(binary, "-C", rule) and not self._xt(binary, "-I", rule):
                    raise RuntimeError(f"{binary} refused the NFQUEUE rule")

    def _remove_legacy(self, binary: str) -> None:
        """Take out an older release's rules, and the mangle FORWARD chain if that leaves it
        empty: an empty iptables-nft base chain still costs every forwarded packet its hook
        call. `-X` refuses a chain that holds anyone's rules."""
        found = False
        for rule in legacy_rules(self.num):
            for _ in range(8):
                if not self._xt(binary, "-D", rule):
                    break
                found = True
        if found:
            self.run([binary, "-w", "-t", "mangle", "-X", "FORWARD"])

    def remove(self) -> None:
        if self.native:
            self.run(["nft", "delete", "table", FAMILY, ruleset.QUEUE_TABLE])
            return
        for binary in _xt_binaries():
            for rule in self.rules:
                for _ in range(8):  # a duplicate left by someone else goes too
                    if not self._xt(binary, "-D", rule):
                        break


def apply_verdicts(verdicts: list[tuple[Any, Verdict]], reasons: RateLimitedLog) -> None:
    """Hand each packet back to the kernel; the mark carries the verdict to lan_forward."""
    for packet, verdict in verdicts:
        try:
            if verdict is Verdict.ALLOW:
                packet.set_mark(packet.get_mark() | ruleset.MARK_ALLOW)
                packet.accept()
            elif verdict is Verdict.PASS:
                packet.set_mark(packet.get_mark() & ~ruleset.MARK_QUEUE & 0xFFFFFFFF)
                packet.accept()
            elif verdict is Verdict.REFUSE:
                packet.accept()  # still marked for the queue but not allowed: nft resets it
            else:
                packet.drop()
        except (OSError, RuntimeError) as exc:
            reasons.note("verdict-error", "NFQUEUE verdict failed: %s", exc)


QUEUE_PROC = "/proc/net/netfilter/nfnetlink_queue"


def kernel_queue_stats(num: int, path: str | None = None) -> dict[str, int] | None:
    """The kernel's counters for queue `num` (this network namespace), None if not bound.

    Each line: queue, peer portid, queue_total (waiting now), copy mode, copy range,
    queue_dropped (queue was full), user_dropped (netlink socket overran), id sequence, 1.
    """
    try:
        with open(path or QUEUE_PROC) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) >= 7 and fields[0] == str(num):
            try:
                total, dropped, user = int(fields[2]), int(fields[5]), int(fields[6])
            except ValueError:
                return None
            return {"queue_total": total, "queue_dropped": dropped, "user_dropped": user}
    return None


class QueueReader(LoopQueue):
    """Binds the queue, hands packets to the Inspector, applies its verdicts."""

    def __init__(self, inspector: Inspector[Any], num: int = ruleset.QUEUE_NUM) -> None:
        self.inspector = inspector
        self._timer: asyncio.TimerHandle | None = None
        super().__init__(num, QUEUE_MAXLEN, COPY_RANGE, inspector.reasons)

    def on_packet(self, packet: Any) -> None:
        try:
            verdicts = self.inspector.packet(packet.get_payload(), packet)
        except Exception:  # a bug must not stop the queue: refuse this one and go on
            log.exception("garden inspector failed on a packet; refusing it")
            verdicts = [(packet, Verdict.REFUSE)]
        self._apply(verdicts)
        self._schedule()

    def _apply(self, verdicts: list[tuple[Any, Verdict]]) -> None:
        apply_verdicts(verdicts, self.inspector.reasons)

    def _schedule(self) -> None:
        """Wake up for the earliest held ClientHello's deadline, if any."""
        if self.loop is None or self._timer is not None:
            return
        deadline = self.inspector.next_deadline()
        if deadline is not None:
            delay = max(0.0, deadline - self.inspector.clock())
            self._timer = self.loop.call_later(delay + 0.01, self._expire)

    def _expire(self) -> None:
        self._timer = None
        self._apply(self.inspector.expire())
        self._schedule()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._apply(self.inspector.release_all())
        super().close()


class GardenInspector:
    """What the daemon starts and stops: the hook, the reader, and a periodic hook check."""

    def __init__(self, config: Config, hook: QueueHook | None = None) -> None:
        self.inspector: Inspector[Any] = Inspector(Garden.from_config(config))
        self.hook = hook or QueueHook()
        self.reader: QueueReader | None = None
        self._check: asyncio.TimerHandle | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        # Told (on the loop) of each commit the hook makes, so the reconciler counts it
        # among the daemon's own (gateway/daemon.py).
        self.committed: Callable[[], None] | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.reader = QueueReader(self.inspector, self.hook.num)
        self.reader.attach(loop)
        self.hook.install()
        garden = self.inspector.garden
        log.info(
            "walled-garden inspector on queue %d via %s; %d names, %d wildcard domains",
            self.hook.num, self.hook.mode, len(garden.exact), len(garden.below),
        )  # fmt: skip
        self._check = loop.call_later(CHECK_SECONDS, self._recheck)

    def set_garden(self, garden: Garden) -> None:
        """New garden names take effect for the next connection."""
        self.inspector.garden = garden

    def _recheck(self) -> None:
        """Check the hook (four iptables-nft runs, ~10 ms, more on a busy router) in a
        worker thread: the daemon's thread keeps answering logins meanwhile."""
        if self.loop is None:
            return
        checking = self.loop.run_in_executor(None, self._check_hook)
        checking.add_done_callback(lambda _f: self._schedule_check())

    def _check_hook(self) -> None:
        try:
            if not self.hook.installed():
                log.warning("the walled-garden queue hook was removed; putting it back")
                self.hook.install()
                if self.committed is not None and self.loop is not None:
                    self.loop.call_soon_threadsafe(self.committed)
        except Exception as exc:
            self.inspector.reasons.note("hook-error", "cannot restore the queue hook: %s", exc)

    def _schedule_check(self) -> None:
        if self.loop is not None and not self.loop.is_closed():
            self._check = self.loop.call_later(CHECK_SECONDS, self._recheck)

    def stop(self) -> None:
        if self._check is not None:
            self._check.cancel()
        with contextlib.suppress(Exception):
            self.hook.remove()
        if self.reader is not None:
            self.reader.close()
        log.info("walled-garden inspector stopped: %s", dict(sorted(self.inspector.stats.items())))


def start(config: Config, loop: asyncio.AbstractEventLoop) -> GardenInspector | None:
    """Start the inspector; on failure log why and return None.

    Without it the gateway still runs: captive TLS to the garden is refused (the kernel
    fails closed), everything else, authorized clients included, is unaffected.
    """
    garden: GardenInspector | None = None
    try:
        garden = GardenInspector(config)
        garden.start(loop)
    except Exception as exc:
        log.error("walled-garden inspector not running (garden TLS will be refused): %s", exc)
        if garden is not None:
            with contextlib.suppress(Exception):
                garden.stop()
        return None
    return garden
