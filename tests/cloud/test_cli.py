"""`plaza-cloud` operator commands against a temporary SQLite database."""

from __future__ import annotations

import io
import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import requests
from sqlalchemy import select

from cloud import create_app, migrations
from cloud import db as cloud_db
from cloud.accounts import check_password
from cloud.enrol import code_hash
from cloud.models import ClaimCode, Command, Device, Merchant, Venue
from plaza import signing
from tests.cloud.cli_helpers import run


def session(cloud: list[str]):
    app = create_app({"INSTANCE_PATH": cloud[1], "DATABASE_URL": cloud[3]})
    return app, cloud_db.session(app)


def test_migrate_create_merchant_venue_claim(cloud, capsys, tmp_path: Path):
    assert run(capsys, *cloud, "migrate") == (0, f"database at revision {migrations.head()}", "")
    assert migrations.current(cloud[3]) == migrations.head()
    code, merchant_id, _ = run(capsys, *cloud, "create-merchant", "Cafe Uno", "Owner@Cafe.example",
                               "--password", "correct horse")  # fmt: skip
    assert code == 0 and re.fullmatch(r"mer_[0-9a-f]{16}", merchant_id)
    code, venue_id, _ = run(capsys, *cloud, "create-venue", merchant_id, "Main St")
    assert code == 0 and venue_id.startswith("ven_")
    code, claim, _ = run(capsys, *cloud, "create-claim", venue_id, "--days", "2")
    assert code == 0 and re.fullmatch(r"[0-9A-Z]{4}-[0-9A-Z]{4}-[0-9A-Z]{4}", claim)
    app, db = session(cloud)
    with db:
        merchant = db.get(Merchant, merchant_id)
        assert merchant.email == "owner@cafe.example"
        assert check_password(merchant, "correct horse")
        assert not check_password(merchant, "wrong")
        assert db.get(Venue, venue_id).merchant_id == merchant_id
        stored = db.scalars(select(ClaimCode)).one()
        assert stored.code_hash == code_hash(claim)  # stored hashed, printed once
        assert round(stored.expires_at - stored.created_at) == 2 * 86400
    cloud_db.engine(app).dispose()
    key_file = tmp_path / "instance" / "cloud.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_password_from_stdin(cloud, capsys, monkeypatch):
    run(capsys, *cloud, "migrate")
    monkeypatch.setattr(sys, "stdin", io.StringIO("from stdin pw\n"))
    code, merchant_id, _ = run(capsys, *cloud, "create-merchant", "A", "a@cafe.example")
    assert code == 0
    app, db = session(cloud)
    with db:
        assert check_password(db.get(Merchant, merchant_id), "from stdin pw")
    cloud_db.engine(app).dispose()


def test_operator_mistakes_are_one_line_errors(cloud, capsys):
    run(capsys, *cloud, "migrate")
    code, _, err = run(
        capsys, *cloud, "create-merchant", "A", "not-an-email", "--password", "x" * 9
    )
    assert code == 2 and err.startswith("plaza-cloud: not an e-mail address")
    code, _, err = run(capsys, *cloud, "create-merchant", "A", "a@b.example", "--password", "short")
    assert code == 2 and "at least 8" in err
    run(capsys, *cloud, "create-merchant", "A", "a@b.example", "--password", "x" * 9)
    code, _, err = run(capsys, *cloud, "create-merchant", "B", "A@b.example", "--password", "y" * 9)
    assert code == 2 and "already exists" in err
    assert run(capsys, *cloud, "create-venue", "mer_nope", "V")[0] == 2
    assert run(capsys, *cloud, "create-claim", "ven_nope")[0] == 2
    code, _, err = run(capsys, *cloud, "command", "dev_nope", "reboot")
    assert code == 2 and "unknown op" in err


def test_command_is_signed_and_stored(cloud, capsys):
    run(capsys, *cloud, "migrate")
    _, merchant_id, _ = run(capsys, *cloud, "create-merchant", "A", "a@b.example", "--password",
                            "x" * 9)  # fmt: skip
    _, venue_id, _ = run(capsys, *cloud, "create-venue", merchant_id, "V")
    app, db = session(cloud)
    with db:
        device = Device(venue_id=venue_id, public_key=signing.public_b64(signing.new_key()),
                        enrolled_at=0.0, revoked=False)  # fmt: skip
        db.add(device)
        db.commit()
        device_id = device.id
    code, out, _ = run(capsys, *cloud, "command", device_id, "authorize", "--client",
                       "02:00:00:00:00:01", "--minutes", "20")  # fmt: skip
    assert code == 0
    command = json.loads(out)
    assert command["args"] == {"client": "02:00:00:00:00:01", "minutes": 20}
    signing.verify_command(
        signing.load_public(signing.public_b64(app.config["CLOUD_KEY"])), command
    )
    with cloud_db.session(app) as db:
        assert db.get(Command, command["id"]).signed == command
    assert run(capsys, *cloud, "revoke", device_id)[0] == 0
    with cloud_db.session(app) as db:
        assert db.get(Device, device_id).revoked is True
    cloud_db.engine(app).dispose()


def test_console_script_migrates_from_another_directory(tmp_path: Path):
    """No alembic.ini: the installed entry point works from any working directory."""
    exe = Path(sys.executable).with_name("plaza-cloud")
    env = {**os.environ, "PLAZA_CLOUD_INSTANCE": str(tmp_path / "inst")}
    env.pop("PLAZA_CLOUD_DATABASE_URL", None)
    done = subprocess.run([str(exe), "migrate"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "inst" / "cloud.db").exists()


def test_run_serves_over_http_on_loopback(tmp_path: Path, capsys):
    """`plaza-cloud run` (cheroot) migrates the embedded SQLite itself and answers JSON."""
    cloud = ["--instance", str(tmp_path / "inst"), "--database-url",
             f"sqlite:///{tmp_path / 'run.db'}"]  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "cloud.cli", *cloud, "run", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        assert match, line
        body = {"claim_code": "AAAA-BBBB-CCCC", "public_key": signing.public_b64(signing.new_key())}
        url = f"http://127.0.0.1:{match.group(1)}/api/v1/enrol"
        response = requests.post(url, json=body, timeout=10)
        assert response.status_code == 404
        assert response.json() == {"error": "unknown claim code"}
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
    assert migrations.current(cloud[3]) == migrations.head()


def test_cloud_key_from_environment(tmp_path: Path, monkeypatch):
    key = signing.new_key()
    monkeypatch.setenv("PLAZA_CLOUD_KEY", signing.private_pem(key).decode())
    monkeypatch.setenv("PLAZA_CLOUD_DATABASE_URL", f"sqlite:///{tmp_path / 'env.db'}")
    app = create_app({"INSTANCE_PATH": str(tmp_path / "inst")})
    assert signing.public_b64(app.config["CLOUD_KEY"]) == signing.public_b64(key)
    assert app.config["DATABASE_URL"] == f"sqlite:///{tmp_path / 'env.db'}"
    assert not (tmp_path / "inst" / "cloud.key").exists()
    # Without it, the generated key persists across restarts (routers pin it).
    monkeypatch.delenv("PLAZA_CLOUD_KEY")
    first = signing.public_b64(
        create_app({"INSTANCE_PATH": str(tmp_path / "i2")}).config["CLOUD_KEY"]
    )
    again = signing.public_b64(
        create_app({"INSTANCE_PATH": str(tmp_path / "i2")}).config["CLOUD_KEY"]
    )
    assert first == again


def test_unmigrated_database_is_a_one_line_hint(cloud, capsys):
    code, _, err = run(capsys, *cloud, "create-venue", "mer_x", "V")
    assert code == 2
    assert err.startswith("plaza-cloud: database error") and "plaza-cloud migrate" in err
