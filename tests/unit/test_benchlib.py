"""bench/benchlib.py's pieces for the PostgreSQL benchmarks, run small: the process pool
released at once (`release_together`), one client's outcome count (`count_outcomes`, here on
SQLite) and their sum (`merged`). The benchmarks' figures rest on these counts: a lost result
or a miscounted refusal would read as a broken invariant, or hide one."""

from __future__ import annotations

import importlib.util
import os
import queue
import sys
import threading
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

BENCHLIB = Path(__file__).resolve().parents[2] / "bench" / "benchlib.py"


def _load() -> ModuleType:
    """bench/ is a folder of scripts, not a package: load the module from its file."""
    spec = importlib.util.spec_from_file_location("benchlib", BENCHLIB)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


benchlib = _load()


class Refused(Exception):
    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def _square_after_start(n: int, start: Any, out: Any) -> None:
    start.wait()
    out.put((n, n * n, os.getpid()))


def test_release_together_gives_one_result_per_process() -> None:
    results, seconds = benchlib.release_together(
        _square_after_start, [(n,) for n in range(3)], settle=0.2, timeout=60
    )
    assert sorted(r[:2] for r in results) == [(0, 0), (1, 1), (2, 4)]
    assert len({r[2] for r in results}) == 3 and os.getpid() not in {r[2] for r in results}
    assert 0 <= seconds < 60


def test_count_outcomes_counts_ok_and_each_refusal(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'counts.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE taken (n INTEGER PRIMARY KEY)"))
    engine.dispose()

    def attempt(db: Session, n: int) -> None:
        db.execute(sa.text("INSERT INTO taken (n) VALUES (:n)"), {"n": n})
        if n % 3 == 0:
            raise Refused("third")  # after a write: the rollback must undo it
        db.commit()

    start, out = threading.Event(), queue.Queue()
    start.set()
    benchlib.count_outcomes(url, list(range(1, 8)), attempt, Refused, start, out)
    assert out.get_nowait() == {"ok": 5, "third": 2}
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        assert list(conn.scalars(sa.text("SELECT n FROM taken ORDER BY n"))) == [1, 2, 4, 5, 7]
    engine.dispose()


def test_count_outcomes_lets_other_errors_through(tmp_path: Path) -> None:
    def attempt(db: Session, n: int) -> None:
        raise ValueError("a bug, not a refusal")

    start, out = threading.Event(), queue.Queue()
    start.set()
    with pytest.raises(ValueError):
        benchlib.count_outcomes(f"sqlite:///{tmp_path / 'x.db'}", [1], attempt, Refused, start, out)
    assert out.empty()


def test_merged_adds_up_the_processes_counts() -> None:
    assert benchlib.merged([{"ok": 3, "taken": 1}, {"ok": 2}, {}]) == {"ok": 5, "taken": 1}
    assert benchlib.merged([]) == {}
