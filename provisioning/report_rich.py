"""The technician's view: a bar per running step (bytes for the upload, seconds for the
rollback wait, a spinner and the elapsed time otherwise), a line per finished step and per
check, and an overall bar for a batch. Imported only when `rich` is installed
(provisioning/report.py says what to install otherwise)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from provisioning.errors import NAMES, ProvisionError

Advance = Callable[[int], None]  # as provisioning/report.py's (not imported: no circle)
MARK = {"ok": "[green]ok[/]", "fail": "[bold red]fail[/]", "skip": "[yellow]skip[/]"}


class RichReporter:
    def __init__(self, stream: TextIO | None = None) -> None:
        self.console = Console(file=stream, highlight=False)
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        )
        self._lock = threading.Lock()
        self.progress.start()

    @contextmanager
    def step(self, host: str, name: str, total: int | None = None) -> Iterator[Advance]:
        label = f"{escape(host)}: {escape(name)}"
        task = self.progress.add_task(label, total=total)

        def advance(done: int) -> None:
            self.progress.update(task, completed=done)

        try:
            yield advance
        except ProvisionError as exc:
            self.progress.remove_task(task)
            hint = f"\n    → {escape(exc.hint)}" if exc.hint else ""
            self.console.print(f"{MARK['fail']} {label}: {escape(exc.message)}{hint}")
            raise
        except BaseException:
            self.progress.remove_task(task)
            raise
        elapsed = self.progress.tasks[[t.id for t in self.progress.tasks].index(task)].elapsed
        self.progress.remove_task(task)
        self.console.print(f"{MARK['ok']} {label} [dim]{elapsed or 0:.1f} s[/]")

    def check(self, host: str, status: str, name: str, reason: str) -> None:
        self.console.print(
            f"{MARK.get(status, status)} {escape(host)} {escape(name)}: {escape(reason)}"
        )

    def done(self, host: str, code: int, message: str) -> None:
        colour = "green" if code == 0 else "red"
        self.console.print(
            f"[bold {colour}]{escape(host)}: {NAMES.get(code, 'error')}[/] "
            f"(exit {code}) {escape(message)}"
        )

    def overall(self, total: int) -> Advance:
        task = self.progress.add_task("routers", total=total)
        return lambda done: self.progress.update(task, completed=done)

    def close(self) -> None:
        self.progress.stop()
