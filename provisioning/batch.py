"""`plaza-provision batch FILE.csv`: many routers, `--jobs` at a time, with an overall bar and
a result per router. Resumable: the state file records each router flashed; on a re-run those
are verified, not flashed again (a second flash would want a second claim code).

CSV columns: host, claim (required); venue_config, user, port (optional; a relative
venue_config is read next to the CSV).
"""

from __future__ import annotations

import csv
import json
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provisioning.errors import HALF_DONE, OK, USAGE, ProvisionError
from provisioning.report import Reporter

REQUIRED = ("host", "claim")


@dataclass(frozen=True)
class Row:
    host: str
    claim: str
    venue_config: Path | None = None
    user: str = ""
    port: int = 0


def read_rows(path: Path) -> list[Row]:
    try:
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
            if missing:
                raise ProvisionError(
                    USAGE,
                    f"{path}: missing column(s) {', '.join(missing)}",
                    "the first line names the columns: host,claim,venue_config",
                )
            rows = []
            for number, raw in enumerate(reader, start=2):
                host, claim = (raw.get("host") or "").strip(), (raw.get("claim") or "").strip()
                if not host or not claim:
                    raise ProvisionError(USAGE, f"{path}:{number}: host and claim are required")
                venue = (raw.get("venue_config") or "").strip()
                port = (raw.get("port") or "").strip()
                if port and not port.isdigit():
                    raise ProvisionError(USAGE, f"{path}:{number}: port {port!r} is not a number")
                rows.append(
                    Row(
                        host,
                        claim,
                        (path.parent / venue) if venue else None,
                        (raw.get("user") or "").strip(),
                        int(port or 0),
                    )
                )
    except OSError as exc:
        raise ProvisionError(USAGE, f"{path}: {exc.strerror}") from None
    hosts = [row.host for row in rows]
    if len(set(hosts)) != len(hosts):
        raise ProvisionError(USAGE, f"{path}: a host appears twice")
    return rows


class State:
    """Routers done, kept in a JSON file rewritten atomically after each one, so an
    interrupted batch (Ctrl-C, a laptop out of battery) loses at most the router in flight."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        try:
            self.done: dict[str, Any] = json.loads(path.read_text()).get("done", {})
        except FileNotFoundError:
            self.done = {}
        except (OSError, ValueError, AttributeError) as exc:
            raise ProvisionError(USAGE, f"{path}: not a batch state file ({exc})") from None

    def record(self, host: str, info: dict[str, Any]) -> None:
        with self._lock:
            self.done[host] = info
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text(json.dumps({"done": self.done}, indent=2, sort_keys=True) + "\n")
            os.replace(tmp, self.path)


FlashOne = Callable[[Row], dict[str, str]]  # raises ProvisionError
VerifyOne = Callable[[Row], int]


def run_batch(
    rows: list[Row],
    state: State,
    flash_one: FlashOne,
    verify_one: VerifyOne,
    reporter: Reporter,
    jobs: int = 4,
    clock: Callable[[], float] = time.time,
) -> dict[str, int]:
    """Every router's exit code; flashed routers go into the state file, routers already in
    it are verified instead."""
    advance = reporter.overall(len(rows))
    finished = 0
    lock = threading.Lock()
    codes: dict[str, int] = {}

    stop = threading.Event()

    def one(row: Row) -> None:
        nonlocal finished
        if stop.is_set():
            return
        try:
            if row.host in state.done:
                code = verify_one(row)
                message = "already flashed: verified" + ("" if code == OK else ", a check failed")
            else:
                result = flash_one(row)
                state.record(row.host, {**result, "at": clock()})
                code, message = OK, result.get("enrol", "flashed")
        except ProvisionError as exc:
            code, message = exc.code, exc.message
        except Exception as exc:  # one router's surprise must not stop the others
            code, message = HALF_DONE, f"unexpected error: {exc!r}"
        except BaseException:  # Ctrl-C (or exit) in this worker: no router starts after it
            stop.set()
            raise
        reporter.done(row.host, code, message)
        with lock:
            codes[row.host] = code
            finished += 1
            advance(finished)

    pool = ThreadPoolExecutor(max_workers=max(1, jobs))
    try:
        for future in [pool.submit(one, row) for row in rows]:
            future.result()
    except BaseException:
        stop.set()
        # Ctrl-C: routers not started yet stay untouched (and out of the state file); the
        # ones in flight see their ssh interrupted by the same signal.
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return codes
