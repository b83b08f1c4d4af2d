"""The `plaza-cloud` command line as the tests drive it: one call of `cli.main`, its exit code
and what it printed. With conftest's `cloud` fixture (the global options of a fresh instance
and SQLite database), shared by the operator, hospital-seed and transit command tests."""

from __future__ import annotations

import pytest

from cloud import cli


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out.strip(), err.strip()
