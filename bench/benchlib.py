"""What the benchmarks share: the "bench" lab, helper processes in namespaces, and figures.

Benchmarks print figures and compare them with targets; they never assert timings. A result
is a plain dict (JSON-ready) so `run_all.py` can tabulate and store it without knowing more.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing as mp
import os
import select
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.orm import Session

from cloud import migrations
from cloud.accounts import create_merchant, create_venue
from cloud.models import Venue
from cloud.o2o.shoppers import Shopper
from gateway.control_client import ControlError
from lab.postgres import running_cluster
from lab.topology import Lab, LabError

LAB_NAME = "bench"
HERE = Path(__file__).resolve().parent
PYTHON = sys.executable


@dataclass
class Check:
    """One figure compared with its target; `passed` is informative, never an assertion."""

    figure: str
    value: float | None
    unit: str
    target: float | None = None  # None: a figure shown for context, with no target
    higher_is_better: bool = False

    @property
    def passed(self) -> bool | None:
        if self.target is None:
            return None
        if self.value is None or math.isnan(self.value):
            return False
        if self.higher_is_better:
            return self.value >= self.target
        return self.value <= self.target

    def target_text(self) -> str:
        if self.target is None:
            return "-"
        op = ">=" if self.higher_is_better else "<="
        return f"{op} {self.target:g} {self.unit}".rstrip()

    def value_text(self) -> str:
        if self.value is None or math.isnan(self.value):
            return "n/a"
        if self.value == int(self.value) and abs(self.value) < 1e6:
            return f"{int(self.value)} {self.unit}".rstrip()
        return f"{self.value:.3f} {self.unit}".rstrip()

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "target_text": self.target_text(), "passed": self.passed}


@dataclass
class Result:
    name: str
    checks: list[Check] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "checks": [c.as_dict() for c in self.checks],
            "figures": self.figures,
            "errors": self.errors,
            "seconds": round(self.seconds, 2),
        }


def percentile(values: list[float], p: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), p in 0..100."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    lo, hi = math.floor(rank), math.ceil(rank)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (rank - lo)


def log(message: str) -> None:
    print(message, flush=True)


@contextlib.contextmanager
def bench_lab(phones: int = 1, name: str = LAB_NAME) -> Iterator[Lab]:
    """Bring the "bench" lab (or `name`) up and always take it down again, whatever happens
    inside."""
    lab = Lab(name)
    if lab.is_up():
        log(f"lab {name!r} was left up by an earlier run; taking it down first")
    lab.down()
    started = time.monotonic()
    try:
        lab.up(phones=phones)
        log(f"lab {name!r} up in {time.monotonic() - started:.1f} s")
        yield lab
    finally:
        lab.down()
        leftover = [ns for ns in netns_names() if ns.startswith(f"{name}-")]
        if leftover:
            log(f"warning: namespaces left behind after down: {', '.join(leftover)}")


METRICS = "http://127.0.0.1:9100/metrics"  # the daemon's default, in the router's namespace


def scrape(lab: Lab) -> dict[str, float]:
    """The daemon's metrics page as {'name{labels}': value}."""
    page = nsrun(lab.state.router, "curl", "-sS", "--max-time", "5", METRICS)
    found = {}
    for line in page.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            found[key] = float(value)
    return found


def netns_names() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def phone_ipv4(lab: Lab) -> str:
    phone = lab.status()["phones"][0]
    if not phone.get("ipv4"):
        raise LabError(f"{phone['name']} has no IPv4 address")
    return phone["ipv4"]


def nsrun(ns: str, *cmd: str, timeout: float = 60, stdin: str | None = None) -> str:
    """Run a command in a namespace; a failure raises LabError with the command's message."""
    proc = subprocess.run(
        ["ip", "netns", "exec", ns, *cmd],
        capture_output=True,
        text=True,
        timeout=timeout,
        input=stdin,
    )
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        raise LabError(f"{' '.join(cmd)}: {lines[-1] if lines else f'exit {proc.returncode}'}")
    return proc.stdout


class Helper:
    """A helper script in a namespace, spoken to by lines on its stdin and stdout.

    It runs in its own process group so it can be ended by its own id; the lab's `down` is
    the safety net (it kills whatever is left in the lab's namespaces). Lines are read from
    the raw pipe with our own buffer, so a timeout never hides a line Python already buffered.
    """

    def __init__(self, ns: str, script: str, *args: str) -> None:
        self.name = script
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, PYTHON, "-u", str(HERE / script), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            bufsize=0,
            start_new_session=True,
        )
        self._buffer = b""

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")

    def readline(self, timeout: float = 5.0) -> str:
        """One line from the helper; LabError if it dies or stays silent past `timeout`."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise LabError(f"{self.name}: no answer within {timeout:g} s")
            chunk = os.read(fd, 65536)
            if not chunk:
                raise LabError(f"{self.name} exited: {self._stderr_tail()}")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode().strip()

    def _stderr_tail(self) -> str:
        try:
            self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            return "stdout closed"
        assert self.proc.stderr is not None
        lines = self.proc.stderr.read().decode(errors="replace").strip().splitlines()
        return lines[-1] if lines else f"exit {self.proc.returncode}"

    def close(self, timeout: float = 5.0) -> str:
        """Close stdin (the helper's cue to finish) and return what it printed until it ended."""
        with contextlib.suppress(OSError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        self.proc.stdin = None  # communicate() must not flush a closed pipe
        try:
            out, _err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            out, _err = self.proc.communicate()
        return (self._buffer + (out or b"")).decode(errors="replace")


def wait_tcp_listen(ns: str, ip: str, port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(
            ["ip", "netns", "exec", ns, "ss", "-Hltn", f"src {ip}:{port}"],
            capture_output=True,
            text=True,
        ).stdout
        if out.strip():
            return
        time.sleep(0.05)
    raise LabError(f"nothing listening on {ip}:{port} in {ns} after {timeout:g} s")


def print_checks(result: Result) -> None:
    for check in result.checks:
        if check.passed is None:
            log(f"  {check.figure}: {check.value_text()}")
            continue
        verdict = "meets" if check.passed else "MISSES"
        log(f"  {check.figure}: {check.value_text()} ({verdict} target {check.target_text()})")
    for error in result.errors[:10]:
        log(f"  error: {error}")
    if len(result.errors) > 10:
        log(f"  ... and {len(result.errors) - 10} more errors")


# -- the PostgreSQL benchmarks ------------------------------------------------------------

BENCH_NOW = 1_800_000_000.0  # the clock of their rows: fixed, so every run books the same day
ItemT = TypeVar("ItemT")


@contextlib.contextmanager
def bench_postgres(database: str = "plaza_bench") -> Iterator[str]:
    """A private PostgreSQL cluster with the default durability (fsync on), migrated; its URL.
    Stopped afterwards whatever happens inside."""
    with running_cluster(database=database, durable=True) as cluster:
        log(f"PostgreSQL: private cluster at {cluster.socket_dir} (fsync on)")
        migrations.upgrade(cluster.url)
        yield cluster.url


def bench_venue(db: Session, at: float = BENCH_NOW) -> Venue:
    """One merchant with one venue (committed): the tenant the measured rows belong to."""
    merchant = create_merchant(db, "Bench", "bench@example.com", "benchbenchbench", at)
    venue = create_venue(db, merchant.id, "Bench plaza", at, "portal.example")
    db.commit()
    return venue


def add_shoppers(db: Session, count: int, at: float = BENCH_NOW) -> list[str]:
    """`count` shoppers in one multi-row INSERT (not committed), ids `shp_<16 hex>`."""
    ids = [f"shp_{i:016x}" for i in range(count)]
    rows = [{"id": i, "provider": "oidc", "subject": i, "created_at": at,
             "last_seen_at": at} for i in ids]  # fmt: skip
    if rows:
        db.execute(sa.insert(Shopper), rows)
    return ids


def release_together(
    target: Callable[..., None],
    shares: Sequence[tuple[Any, ...]],
    settle: float = 1.0,
    timeout: float = 600.0,
) -> tuple[list[Any], float]:
    """One forked process per share, each running `target(*share, start, out)`: it gets ready
    (connects), waits on `start`, works, and puts one result on `out`. All are released at once
    after `settle` seconds; returns their results and the wall seconds from the release to the
    last result. Processes, not threads: each has its own interpreter, so the figure is the
    database's and the code's, not one GIL's."""
    ctx = mp.get_context("fork")
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=target, args=(*share, start, out)) for share in shares]
    for proc in procs:
        proc.start()
    time.sleep(settle)  # every process connected and waiting
    began = time.perf_counter()
    start.set()
    results = [out.get(timeout=timeout) for _ in procs]
    seconds = time.perf_counter() - began
    for proc in procs:
        proc.join()
    return results, seconds


def count_outcomes(
    url: str,
    items: Sequence[ItemT],
    attempt: Callable[[Session, ItemT], object],
    refused: type[Exception],
    start: Any,
    out: Any,
) -> None:
    """A `release_together` target: one connection, opened and kept before the start, then
    `attempt(db, item)` for each item; puts {outcome: count} on `out`, the outcome being "ok"
    or the refusal's `code` (after a rollback)."""
    engine = sa.create_engine(url, pool_size=1, max_overflow=0)
    counts: Counter[str] = Counter()
    with Session(engine, expire_on_commit=False) as db:
        db.execute(sa.select(1))
        db.commit()  # connected before the start
        start.wait()
        for item in items:
            try:
                attempt(db, item)
                counts["ok"] += 1
            except refused as exc:
                db.rollback()
                counts[str(getattr(exc, "code", type(exc).__name__))] += 1
    engine.dispose()
    out.put(dict(counts))


def merged(counts: Sequence[dict[str, int]]) -> dict[str, int]:
    """The processes' outcome counts added up."""
    total: Counter[str] = Counter()
    for one in counts:
        total.update(one)
    return dict(total)


def main(run: Callable[[], Result]) -> int:
    """Entry point of a single benchmark: run, print, exit 1 only if something broke."""
    started = time.monotonic()
    try:
        result = run()
    except (LabError, ControlError, OSError, subprocess.SubprocessError, ValueError) as exc:
        log(f"benchmark failed: {exc}")
        return 1
    result.seconds = time.monotonic() - started
    log(f"{result.name}: done in {result.seconds:.1f} s")
    print_checks(result)
    return 1 if result.errors else 0
