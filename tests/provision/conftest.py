"""A real router for plaza-provision, as far as one can be without a VM: OpenSSH's `sshd` on
127.0.0.1 (never the system service) with a throwaway key pair, commands running for real
under a root prefix (`--root`), and the real cloud app on the loopback.

What is real: ssh/scp, key auth, known_hosts, the byte stream of the upload, dpkg and its
maintainer scripts (`--root` into a private database, scripts run chrootless), dpkg-deb,
`plaza-gateway check-config` and `enrol`, the agent and its rollback, the cloud's enrolment
and status API, heartbeats. What is a stand-in (a small script on the session's PATH):
`systemctl` (records what it is asked, `is-active` answers from that) and `nft` (the host's
kernel is not the router's). The VM end-to-end test replaces those with the real things.

Nothing outside the temp dir is written but /run/sshd, the empty privilege-separation
directory sshd insists on (the openssh-server package creates the same).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SSHD = "/usr/sbin/sshd"
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


def keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


SHIMS = {
    # systemctl: remembers enabled/restarted units; is-active answers from that.
    "systemctl": """#!/bin/sh
state="$PLAZA_TEST_STATE/units"
echo "systemctl $*" >> "$PLAZA_TEST_STATE/log"
cmd="$1"; shift
case "$cmd" in
  enable|restart|start) for u in "$@"; do case "$u" in plaza-*) echo "$u" >> "$state";; esac; done;;
  is-active) rc=0; for u in "$@"; do if grep -qx "$u" "$state" 2>/dev/null; then echo active;
             else echo inactive; rc=3; fi; done; exit $rc;;
esac
""",
    "nft": """#!/bin/sh
[ -e "$PLAZA_TEST_STATE/nft-loaded" ] && exit 0
echo "Error: No such file or directory; table inet plaza" >&2; exit 1
""",
    # dpkg and dpkg-query into the router's own database under the root prefix.
    "dpkg": """#!/bin/sh
exec /usr/bin/dpkg --root="$PLAZA_TEST_ROOT" --force-script-chrootless --force-not-root "$@"
""",
    "dpkg-query": """#!/bin/sh
exec /usr/bin/dpkg-query --root="$PLAZA_TEST_ROOT" "$@"
""",
}


@dataclass
class SshRouter:
    """The router: where it listens, its root, and the options plaza-provision needs."""

    port: int
    root: Path
    state: Path  # what the stand-ins record
    key: Path
    known_hosts: Path
    host_key: Path

    def args(self, *extra: str) -> list[str]:
        return [
            "--port",
            str(self.port),
            "--identity",
            str(self.key),
            "--known-hosts",
            str(self.known_hosts),
            "--root",
            str(self.root),
            *extra,
        ]

    def log(self) -> str:
        path = self.state / "log"
        return path.read_text() if path.exists() else ""


def make_root(root: Path) -> None:
    for sub in (
        "var/lib/dpkg/updates",
        "var/lib/dpkg/info",
        "var/lib/plaza",
        "etc/plaza",
        "var/cache",
    ):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "var/lib/dpkg/status").touch()
    (root / "var/lib/dpkg/available").touch()
    # What the package ships as its conffile, with the state dir moved into the root.
    (root / "etc/plaza/gateway.toml").write_text(
        f'[lan]\ninterface = "lo"\n[gateway]\nstate_dir = "{root}/var/lib/plaza"\n'
    )


@pytest.fixture
def ssh_router(tmp_path: Path) -> Iterator[SshRouter]:
    if not os.path.exists(SSHD):
        pytest.fail("OpenSSH's sshd is needed: apt-get install openssh-server", pytrace=False)
    base = tmp_path / "sshd"
    bin_dir, state, root = base / "bin", base / "state", tmp_path / "router"
    for d in (bin_dir, state):
        d.mkdir(parents=True)
    make_root(root)
    for name, text in SHIMS.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    host_key, key = keygen(base / "host_ed25519"), keygen(base / "client_ed25519")
    shutil.copy(base / "client_ed25519.pub", base / "authorized_keys")
    port = free_port()
    path = f"{bin_dir}:{VENV_BIN}:/usr/sbin:/usr/bin:/sbin:/bin"
    (base / "sshd_config").write_text(
        f"ListenAddress 127.0.0.1\nPort {port}\nHostKey {host_key}\nPidFile {base}/sshd.pid\n"
        f"AuthorizedKeysFile {base}/authorized_keys\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nPubkeyAuthentication yes\n"
        "PermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\n"
        f"SetEnv PATH={path} PLAZA_TEST_STATE={state} PLAZA_TEST_ROOT={root}\n"
    )
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    log = (base / "sshd.log").open("wb")
    proc = subprocess.Popen(
        [SSHD, "-D", "-e", "-f", str(base / "sshd_config")], stdout=log, stderr=subprocess.STDOUT
    )
    try:
        wait_port(port)
        yield SshRouter(port, root, state, key, tmp_path / "known_hosts", host_key)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


@dataclass
class Cloud:
    url: str
    app: object
    stop: object

    def claim(self, venue_id: str, days: float = 7) -> str:
        from cloud import db as cloud_db
        from cloud.enrol import create_claim

        with cloud_db.session(self.app) as db:
            code = create_claim(db, venue_id, time.time(), days)
            db.commit()
            return code


@pytest.fixture
def cloud(tmp_path: Path) -> Iterator[tuple[Cloud, str]]:
    """The real cloud app (SQLite) served on 127.0.0.1, and a venue id."""
    from werkzeug.serving import make_server

    from cloud import create_app, migrations
    from cloud import db as cloud_db
    from cloud.accounts import create_merchant, create_venue
    from plaza import signing
    from tests.consent_wallet import PORTAL_HOST, write_public_key

    url = f"sqlite:///{tmp_path / 'cloud.db'}"
    migrations.upgrade(url)
    app = create_app(
        {
            "DATABASE_URL": url,
            "INSTANCE_PATH": str(tmp_path / "instance"),
            "CLOUD_KEY": signing.new_key(),
            "SECRET_KEY": "test",
            "WALLET_PUBLIC_KEY_FILE": str(write_public_key(tmp_path)),
        }
    )
    with cloud_db.session(app) as db:
        merchant = create_merchant(db, "Cafe", "o@cafe.example", "hunter2hunter2", time.time())
        venue = create_venue(db, merchant.id, "Cafe Main St", time.time(), PORTAL_HOST)
        db.commit()
        venue_id = venue.id
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    stopped = threading.Event()

    def stop() -> None:
        if not stopped.is_set():
            stopped.set()
            server.shutdown()

    try:
        yield Cloud(f"http://127.0.0.1:{server.server_port}", app, stop), venue_id
    finally:
        stop()
        cloud_db.engine(app).dispose()


def build_deb(directory: Path, version: str, preinst: str = "") -> Path:
    """A small `plaza` package: one file, a postinst that records the version, and an
    optional preinst (a failing one is the broken upgrade)."""
    tree = directory / f"plaza-{version}"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "usr/share/plaza").mkdir(parents=True)
    (tree / "usr/share/plaza/version").write_text(version + "\n")
    (tree / "DEBIAN/control").write_text(
        f"Package: plaza\nVersion: {version}\nArchitecture: all\nMaintainer: t <t@t>\n"
        "Description: test package for plaza-provision\n"
    )
    scripts = {"postinst": '#!/bin/sh\necho "postinst $1 $2" >> "$DPKG_ROOT/postinst.log"\n'}
    if preinst:
        scripts["preinst"] = "#!/bin/sh\n" + preinst + "\n"
    for name, text in scripts.items():
        (tree / "DEBIAN" / name).write_text(text)
        (tree / "DEBIAN" / name).chmod(0o755)
    out = directory / f"plaza_{version}_all.deb"
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(tree), str(out)],
        check=True,
        capture_output=True,
    )
    return out
