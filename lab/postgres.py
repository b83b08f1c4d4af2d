"""A throwaway PostgreSQL cluster for tests and benchmarks, started from Debian's binaries.

Tests and the ingestion benchmark must not depend on a system service being configured (CI
installs the `postgresql` package but nothing starts it), so each user gets its own cluster in
a temporary directory: `initdb`, `pg_ctl start` listening only on a unix socket in that
directory (no TCP port, so nothing can collide and nothing is reachable from outside), and
`pg_ctl stop` plus removal at the end. PostgreSQL refuses to run as root, so when we are root
the cluster belongs to the `postgres` user and its commands run through `runuser`.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

BIN_DIRS = tuple(f"/usr/lib/postgresql/{v}/bin" for v in (15, 16, 17))  # Debian 12, 13, ...
OWNER = "postgres"


class PostgresUnavailable(RuntimeError):
    """The PostgreSQL server binaries (or the user to run them as) are not installed."""


def find_bin_dir() -> Path:
    """The first installed server bin dir; a clear error naming the package otherwise."""
    override = os.environ.get("PLAZA_PG_BIN")
    for candidate in (override,) if override else BIN_DIRS:
        path = Path(candidate)
        if (path / "initdb").exists() and (path / "pg_ctl").exists():
            return path
    raise PostgresUnavailable(
        "PostgreSQL server binaries not found (looked in "
        f"{', '.join((override,) if override else BIN_DIRS)}); install Debian's `postgresql` "
        "package (`make setup` does) or set PLAZA_PG_BIN"
    )


class PostgresCluster:
    """One private cluster. `durable=False` turns fsync off: fine for tests, whose data is
    thrown away; the benchmark keeps the default durability so its figure means something."""

    def __init__(self, database: str = "plaza", durable: bool = True) -> None:
        self.bin_dir = find_bin_dir()
        self.database = database
        self.durable = durable
        self.root: Path | None = None
        self._as_owner: list[str] = []

    @property
    def socket_dir(self) -> Path:
        assert self.root is not None, "cluster not started"
        return self.root

    @property
    def url(self) -> str:
        """SQLAlchemy URL for psycopg 3 over the cluster's unix socket."""
        return f"postgresql+psycopg://{OWNER}@/{self.database}?host={self.socket_dir}"

    def _run(self, *args: str) -> None:
        cmd = [*self._as_owner, str(self.bin_dir / args[0]), *args[1:]]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({done.returncode}): {done.stderr.strip()}")

    def start(self) -> str:
        """Create and start the cluster and its database; returns the URL."""
        if os.geteuid() == 0:
            try:
                owner = pwd.getpwnam(OWNER)
            except KeyError:
                raise PostgresUnavailable(f"no {OWNER!r} user to run PostgreSQL as") from None
            self._as_owner = ["runuser", "-u", OWNER, "--"]
        self.root = Path(tempfile.mkdtemp(prefix="plaza-pg-"))
        self.root.chmod(0o700)
        if self._as_owner:
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
        data = self.root / "data"
        self._run("initdb", "-D", str(data), "-U", OWNER, "-A", "trust", "-E", "UTF8", "--no-sync")
        options = f"-k {self.root} -c listen_addresses='' -c max_connections=50"
        if not self.durable:
            options += " -F -c synchronous_commit=off -c full_page_writes=off"
        self._run("pg_ctl", "-D", str(data), "-l", str(self.root / "log"), "-o", options, "-w",
                  "start")  # fmt: skip
        self._run("createdb", "-h", str(self.root), "-U", OWNER, self.database)
        return self.url

    def stop(self) -> None:
        """Stop the server and remove every file; safe to call twice."""
        if self.root is None:
            return
        data = self.root / "data"
        if (data / "postmaster.pid").exists():
            with suppress(RuntimeError):
                self._run("pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)
        self.root = None

    def log_tail(self, lines: int = 20) -> str:
        """The server log's end, for a failure message."""
        if self.root is None or not (self.root / "log").exists():
            return ""
        return "\n".join((self.root / "log").read_text().splitlines()[-lines:])


@contextmanager
def running_cluster(database: str = "plaza", durable: bool = True) -> Iterator[PostgresCluster]:
    cluster = PostgresCluster(database, durable)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
