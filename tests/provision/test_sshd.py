"""plaza-provision against a real sshd on the loopback (tests/provision/conftest.py): flash,
verify, a failed upgrade, SSH refusals, claim refusals and the config rollback, each through
the real command line with --json, as the VM test and a technician's script call it."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import time
from pathlib import Path

from lab.pki import LabCA
from provisioning import errors
from tests.provision.conftest import Cloud, SshRouter, build_deb, free_port

PROVISION = str(Path(sys.executable).parent / "plaza-provision")


def provision(*argv: str, timeout: float = 120) -> tuple[int, list[dict], str]:
    proc = subprocess.run(
        [PROVISION, *argv, "--json"], capture_output=True, text=True, timeout=timeout, check=False
    )
    lines = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    return proc.returncode, lines, proc.stdout + proc.stderr


def venue_config(router: SshRouter, path: Path, cloud_url: str, interface: str = "lo") -> Path:
    path.write_text(
        f'[lan]\ninterface = "{interface}"\n[gateway]\nstate_dir = '
        f'"{router.root}/var/lib/plaza"\n[cloud]\nurl = "{cloud_url}"\n'
    )
    return path


def installed(router: SshRouter) -> str:
    out = subprocess.run(
        ["dpkg-query", f"--root={router.root}", "-W", "-f=${Version} ${db:Status-Abbrev}", "plaza"],
        capture_output=True,
        text=True,
        check=False,
    )
    return out.stdout.strip()


def checks(lines: list[dict]) -> dict[str, dict]:
    return {x["check"]: x for x in lines if "check" in x}


def test_flash_then_verify(ssh_router: SshRouter, cloud: tuple[Cloud, str], tmp_path: Path):
    server, venue_id = cloud
    claim = server.claim(venue_id)
    deb = build_deb(tmp_path, "0.1.0")
    config = venue_config(ssh_router, tmp_path / "venue.toml", server.url)
    start = time.monotonic()
    code, lines, text = provision(
        "flash",
        "127.0.0.1",
        "--claim",
        claim,
        "--cloud",
        server.url,
        "--package",
        str(deb),
        "--venue-config",
        str(config),
        "--rollback-timeout",
        "10",
        *ssh_router.args(),
    )
    took = time.monotonic() - start
    assert code == errors.OK, text
    assert [x["step"] for x in lines if "step" in x] == [
        "connect",
        "disk space",
        "upload",
        "install",
        "config (test and rollback)",
        "enrol",
        "services",
    ]
    assert took < 30
    root = ssh_router.root
    assert installed(ssh_router) == "0.1.0 ii"
    assert (root / "usr/share/plaza/version").read_text() == "0.1.0\n"
    assert (root / "postinst.log").read_text() == "postinst configure \n"
    assert (root / "etc/plaza/gateway.toml").read_text() == config.read_text()
    identity = json.loads((root / "var/lib/plaza/cloud.json").read_text())
    assert lines[-1]["message"] == f"enrolled as {identity['device_id']}"
    # The router made its key; it never crossed to the technician.
    assert "PRIVATE KEY" in (root / "var/lib/plaza/device.key").read_text()
    assert "PRIVATE KEY" not in text and claim not in text
    host_key = Path(str(ssh_router.host_key) + ".pub").read_text().split()[1]
    assert host_key in ssh_router.known_hosts.read_text()  # accepted as new, remembered
    assert "systemctl enable --now plaza-gateway plaza-portal plaza-dnsmasq" in ssh_router.log()

    # verify: services (stand-in systemd), the router's checks, the cloud's view.
    (ssh_router.state / "nft-loaded").touch()
    code, lines, text = provision(
        "verify", "127.0.0.1", "--cloud", server.url, "--claim", claim, *ssh_router.args()
    )
    found = checks(lines)
    assert found["service plaza-portal"]["status"] == "ok"
    assert found["nft"]["status"] == "ok"
    assert (
        found["enrolled"]["status"] == "ok" and identity["device_id"] in found["enrolled"]["reason"]
    )
    # No daemon runs here, so no heartbeat yet: the cloud says so.
    assert "never sent a heartbeat" in found["heartbeat"]["reason"]
    assert found["portal-https"]["status"] == "fail"  # no certificate in this config
    assert code == errors.CHECK_FAILED

    # A new config on an enrolled router: the agent's probe is a signed heartbeat, which the
    # cloud then reports to verify.
    config.write_text(config.read_text() + "[session]\ndefault_minutes = 30\n")
    code, lines, text = provision(
        "flash",
        "127.0.0.1",
        "--claim",
        claim,
        "--cloud",
        server.url,
        "--venue-config",
        str(config),
        *ssh_router.args(),
    )
    assert code == errors.OK, text
    assert "already enrolled" in lines[-1]["message"]
    assert "default_minutes = 30" in (root / "etc/plaza/gateway.toml").read_text()
    code, lines, _ = provision(
        "verify", "127.0.0.1", "--cloud", server.url, "--claim", claim, *ssh_router.args()
    )
    beat = checks(lines)["heartbeat"]
    assert beat["status"] == "ok" and identity["device_id"] in beat["reason"]


def test_failed_upgrade_leaves_the_previous_version(ssh_router, cloud, tmp_path: Path):
    """What dpkg really does when the new package's preinst fails on an upgrade."""
    server, venue_id = cloud
    claim = server.claim(venue_id)
    good, bad = build_deb(tmp_path, "0.1.0"), build_deb(tmp_path, "0.2.0", preinst="exit 1")
    common = ["--claim", claim, "--cloud", server.url, *ssh_router.args()]
    assert provision("flash", "127.0.0.1", "--package", str(good), *common)[0] == errors.OK
    code, lines, text = provision("flash", "127.0.0.1", "--package", str(bad), *common)
    assert code == errors.INSTALL_FAILED, text
    failed = next(x for x in lines if x.get("status") == "fail")
    assert failed["step"] == "install"
    assert "plaza 0.1.0 is still installed and running" in failed["message"]
    assert installed(ssh_router) == "0.1.0 ii"
    assert (ssh_router.root / "usr/share/plaza/version").read_text() == "0.1.0\n"


def test_ssh_refusals(ssh_router: SshRouter, tmp_path: Path) -> None:
    stranger = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    args = ssh_router.args()
    wrong = [*args, "--identity", str(stranger)]
    code, _, text = provision("flash", "127.0.0.1", "--claim", "C", *wrong)
    assert code == errors.UNREACHABLE and "refused the SSH key" in text
    code, _, text = provision(
        "flash", "127.0.0.1", "--claim", "C", *args, "--port", str(free_port())
    )
    assert code == errors.UNREACHABLE and "cannot reach the router" in text
    # The router's key changes (reinstalled, or another box answering as it).
    assert provision("verify", "127.0.0.1", *args)[0] in (errors.OK, errors.CHECK_FAILED)
    other = tmp_path / "other_host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    line = f"[127.0.0.1]:{ssh_router.port} {Path(str(other) + '.pub').read_text()}"
    ssh_router.known_hosts.write_text(line)
    code, _, text = provision("verify", "127.0.0.1", *args)
    assert code == errors.UNREACHABLE and "host key CHANGED" in text


def test_claim_refusals_and_cloud_unreachable(ssh_router, cloud, tmp_path: Path) -> None:
    server, venue_id = cloud
    claim = server.claim(venue_id)
    assert (
        provision(
            "flash", "127.0.0.1", "--claim", claim, "--cloud", server.url, *ssh_router.args()
        )[0]
        == errors.OK
    )
    # A second router (another root, its own state dir) with the same code.
    second = tmp_path / "second"
    (second / "etc/plaza").mkdir(parents=True)
    (second / "etc/plaza/gateway.toml").write_text(
        f'[lan]\ninterface = "lo"\n[gateway]\nstate_dir = "{second}/state"\n'
    )
    args = [*ssh_router.args(), "--root", str(second), "--cloud", server.url]
    code, _, text = provision("flash", "127.0.0.1", "--claim", claim, *args)
    assert code == errors.CLAIM_REFUSED and "already used (409)" in text
    expired = server.claim(venue_id, days=1e-6)
    time.sleep(0.2)
    code, _, text = provision("flash", "127.0.0.1", "--claim", expired, *args)
    assert code == errors.CLAIM_REFUSED and "expired (410)" in text
    code, _, text = provision("flash", "127.0.0.1", "--claim", "NOPE-NOPE-NOPE", *args)
    assert code == errors.CLAIM_REFUSED and "does not know this claim code (404)" in text
    dead = f"http://127.0.0.1:{free_port()}"
    code, _, text = provision(
        "flash", "127.0.0.1", "--claim", server.claim(venue_id), *args, "--cloud", dead
    )
    assert code == errors.CLOUD_UNREACHABLE and "check the router's WAN" in text
    assert not (second / "state/cloud.json").exists()


def test_config_check_and_rollback(ssh_router, cloud, tmp_path: Path) -> None:
    server, venue_id = cloud
    claim = server.claim(venue_id)
    config = venue_config(ssh_router, tmp_path / "venue.toml", server.url)
    common = ["--claim", claim, "--cloud", server.url, *ssh_router.args()]
    assert provision("flash", "127.0.0.1", "--venue-config", str(config), *common)[0] == 0
    live = ssh_router.root / "etc/plaza/gateway.toml"
    before = live.read_text()
    # A config check-config refuses (no such LAN interface): nothing replaced, no restart.
    restarts = ssh_router.log().count("systemctl restart")
    broken = venue_config(ssh_router, tmp_path / "broken.toml", server.url, "nosuch0")
    code, _, text = provision("flash", "127.0.0.1", "--venue-config", str(broken), *common)
    assert code == errors.CONFIG_REFUSED and "no such interface" in text
    assert live.read_text() == before and ssh_router.log().count("systemctl restart") == restarts
    # A config with which the router cannot reach the cloud: rolled back after the timeout.
    server.stop()
    changed = tmp_path / "changed.toml"
    changed.write_text(before + "[session]\ndefault_minutes = 45\n")
    start = time.monotonic()
    code, _, text = provision(
        "flash", "127.0.0.1", "--venue-config", str(changed), "--rollback-timeout", "3", *common
    )
    took = time.monotonic() - start
    assert code == errors.CONFIG_REFUSED and "previous config was restored" in text
    assert 3 <= took < 20
    assert live.read_text() == before
    assert ssh_router.log().count("systemctl restart") == restarts + 2


def test_batch_resumes_by_verifying(ssh_router, cloud, tmp_path: Path) -> None:
    server, venue_id = cloud
    claim = server.claim(venue_id)
    csv_file = tmp_path / "routers.csv"
    csv_file.write_text(f"host,claim\n127.0.0.1,{claim}\n")
    argv = ["batch", str(csv_file), "--cloud", server.url, *ssh_router.args()]
    code, lines, text = provision(*argv)
    assert code == errors.OK, text
    state = json.loads((tmp_path / "routers.csv.state.json").read_text())
    assert list(state["done"]) == ["127.0.0.1"]
    code, lines, text = provision(*argv)
    assert lines[-1]["message"].startswith("already flashed: verified"), text
    assert ssh_router.log().count("enable --now") == 1  # not flashed twice


def test_image_baked_enrolment_waits_for_the_merchant(ssh_router, cloud, tmp_path: Path):
    """plaza-provision-agent fleet-enrol in the router's root (as its first-boot unit runs it),
    over real HTTP to the cloud: not
    approved yet → gives up at its timeout with the router in the merchant's list; approved →
    enrolled, and verify sees it enrolled."""
    from cloud import db as cloud_db
    from cloud import fleet
    from cloud.models import Venue

    server, venue_id = cloud
    with cloud_db.session(server.app) as db:
        merchant_id = db.get(Venue, venue_id).merchant_id
        secret = fleet.create_fleet_secret(db, merchant_id, time.time())
        db.commit()
    secret_file = ssh_router.root / "etc/plaza/fleet.secret"
    secret_file.write_text(secret + "\n")
    agent = [
        str(Path(sys.executable).parent / "plaza-provision-agent"),
        "--root",
        str(ssh_router.root),
        "fleet-enrol",
        "--secret-file",
        str(secret_file),
        "--venue-tag",
        venue_id,
        "--cloud",
        server.url,
        "--interval",
        "0.2",
    ]
    waiting = subprocess.run([*agent, "--timeout", "0.5"], capture_output=True, text=True)
    assert waiting.returncode == errors.CLOUD_UNREACHABLE, waiting.stderr
    assert "not approved" in waiting.stderr
    with cloud_db.session(server.app) as db:
        (pending,) = fleet.pending_for(db, merchant_id)
        assert pending.venue_tag == venue_id
        device = fleet.approve(db, merchant_id, pending.id, venue_id, time.time())
        db.commit()
        device_id = device.id
    joined = subprocess.run([*agent, "--timeout", "10"], capture_output=True, text=True)
    assert joined.returncode == 0, joined.stderr
    assert json.loads(joined.stdout)["device_id"] == device_id
    code, lines, _ = provision("verify", "127.0.0.1", *ssh_router.args())
    assert device_id in checks(lines)["enrolled"]["reason"]
    assert code == errors.CHECK_FAILED  # never flashed: its services are not running


def test_flash_installs_the_portal_certificate(
    ssh_router: SshRouter, cloud: tuple[Cloud, str], tmp_path: Path
):
    """--portal-cert/--portal-key: the pair lands where the venue config says, before the
    router's check-config reads that config, the key readable only by root and the config's
    group."""
    server, venue_id = cloud
    chain, key = LabCA(tmp_path / "ca").issue("portal", ["portal.plaza.test"])
    root = ssh_router.root
    config = venue_config(ssh_router, tmp_path / "venue.toml", server.url)
    with config.open("a") as f:
        f.write(
            f'[portal]\nhostname = "portal.plaza.test"\ncert_file = "{root}/etc/plaza/tls/'
            f'portal.pem"\nkey_file = "{root}/etc/plaza/tls/portal.key"\n'
        )
    code, lines, text = provision(
        "flash", "127.0.0.1", "--claim", server.claim(venue_id), "--cloud", server.url,
        "--package", str(build_deb(tmp_path, "0.1.0")), "--venue-config", str(config),
        "--portal-cert", str(chain), "--portal-key", str(key), "--rollback-timeout", "10",
        *ssh_router.args(),
    )  # fmt: skip
    assert code == errors.OK, text
    steps = [x["step"] for x in lines if "step" in x]
    assert steps.index("portal certificate") < steps.index("config (test and rollback)")
    placed_chain, placed_key = root / "etc/plaza/tls/portal.pem", root / "etc/plaza/tls/portal.key"
    assert placed_chain.read_bytes() == chain.read_bytes()
    assert placed_key.read_bytes() == key.read_bytes()
    assert stat.S_IMODE(placed_key.stat().st_mode) == 0o640
    assert placed_key.stat().st_gid == (root / "etc/plaza/gateway.toml").stat().st_gid
    assert "PRIVATE KEY" not in text
    assert not list((root / "var/cache/plaza-provision").glob("portal-*"))
