"""How progress and results reach the technician: progress bars (rich) for a person, one JSON
object per line for a machine (`--json`). The steps only talk to a `Reporter`.

`rich` is imported only by `RichReporter`: the router install does not carry it (the
technician's laptop installs `plaza[provision]`), and `--json` works without it.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol, TextIO

from provisioning.errors import MISSING_DEPENDENCY, NAMES, ProvisionError

Advance = Callable[[int], None]


class Reporter(Protocol):
    def step(self, host: str, name: str, total: int | None = None) -> Any:
        """A context manager around one step; yields `advance(done)` for steps with a
        `total` (bytes, seconds); a ProvisionError leaving it is reported as the step's
        failure and passed on."""
        ...

    def check(self, host: str, status: str, name: str, reason: str) -> None:
        """One verify line: status is ok, fail or skip."""
        ...

    def done(self, host: str, code: int, message: str) -> None:
        """The router's result."""
        ...

    def overall(self, total: int) -> Advance:
        """The batch's overall bar over `total` routers; returns `advance(done)`."""
        ...

    def close(self) -> None: ...


class JsonReporter:
    """One JSON object per line: {"host", "step", "status", ...}; no bars, no colour."""

    def __init__(self, out: TextIO, clock: Callable[[], float] = time.monotonic) -> None:
        self.out, self.clock = out, clock
        self._lock = threading.Lock()

    def emit(self, **fields: Any) -> None:
        with self._lock:
            self.out.write(json.dumps(fields, sort_keys=True) + "\n")
            self.out.flush()

    @contextmanager
    def step(self, host: str, name: str, total: int | None = None) -> Iterator[Advance]:
        start = self.clock()
        try:
            yield lambda done: None
        except ProvisionError as exc:
            self.emit(
                host=host,
                step=name,
                status="fail",
                message=exc.message,
                hint=exc.hint,
                exit=exc.code,
                seconds=round(self.clock() - start, 3),
            )
            raise
        self.emit(host=host, step=name, status="ok", seconds=round(self.clock() - start, 3))

    def check(self, host: str, status: str, name: str, reason: str) -> None:
        self.emit(host=host, check=name, status=status, reason=reason)

    def done(self, host: str, code: int, message: str) -> None:
        self.emit(host=host, result=NAMES.get(code, "error"), exit=code, message=message)

    def overall(self, total: int) -> Advance:
        return lambda done: None

    def close(self) -> None:
        pass


def rich_reporter(stream: TextIO | None = None) -> Reporter:
    """The progress-bar reporter, or a one-line ProvisionError saying what to install."""
    try:
        import rich  # noqa: F401
    except ImportError:
        raise ProvisionError(
            MISSING_DEPENDENCY,
            "the progress display needs the 'rich' library, which a router install lacks",
            "pip install 'plaza[provision]', or run with --json",
        ) from None
    from provisioning.report_rich import RichReporter

    return RichReporter(stream)
