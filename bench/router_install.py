"""The router install measured: `pip install .` into a fresh virtualenv, then the size on disk
of what it installed (the sum of its files' sizes; pip and setuptools, the venv's own tools,
set aside) next to the target
(issue 12: <= 40 MB), and that none of the cloud's libraries came with it.

Needs the package index (PyPI or its mirror), as `make test` does; builds nothing else.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import Check, Result, log

NAME = "router install"
ROOT = Path(__file__).resolve().parents[1]
TARGET_MB = 40.0
VENV_TOOLS = ("pip", "setuptools", "pkg_resources", "_distutils_hack", "distutils-precedence.pth")
CLOUD_ONLY = ("sqlalchemy", "alembic", "psycopg", "gunicorn", "pywebpush")


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def _is_venv_tool(name: str) -> bool:
    return any(name == t or name.startswith((f"{t}-", f"{t}.")) for t in VENV_TOOLS)


def run() -> Result:
    result = Result(NAME)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="plaza-router-install-") as tmp:
        venv = Path(tmp) / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        python = venv / "bin" / "python"
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(ROOT)],
            check=True,
        )
        [site] = list((venv / "lib").glob("python3*/site-packages"))
        entries = [p for p in site.iterdir() if not _is_venv_tool(p.name)]
        total = sum(_size(p) for p in entries)
        biggest = sorted(((_size(p), p.name) for p in entries), reverse=True)[:5]
        found = subprocess.run(
            [str(python), "-c",
             "import importlib.util, sys; "
             "print(','.join(m for m in sys.argv[1:] if importlib.util.find_spec(m)))",
             *CLOUD_ONLY],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
    megabytes = total / 1e6
    result.checks.append(Check("installed size, runtime closure", megabytes, "MB", TARGET_MB))
    result.figures = {
        "megabytes": round(megabytes, 1),
        "largest": {name: round(size / 1e6, 1) for size, name in biggest},
        "cloud_libraries_present": found.split(",") if found else [],
    }
    if found:
        result.errors.append(f"the router install brought cloud libraries: {found}")
    result.seconds = time.monotonic() - started
    largest = result.figures["largest"]
    log(f"{NAME}: {megabytes:.1f} MB (target {TARGET_MB:.0f} MB); largest {largest}")
    return result


if __name__ == "__main__":
    outcome = run()
    print(outcome.as_dict())
    sys.exit(1 if outcome.errors else 0)
