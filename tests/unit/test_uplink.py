"""The router's uplink (gateway/uplink/) against the real cloud app (cloud/), served by
cheroot on 127.0.0.1 in a thread with SQLite in tmp_path; plus what needs no cloud: backoff,
atomic files, command checks with a key made here, and the portal's venue overlay."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from gateway import files
from gateway.assemble import open_gateway
from gateway.config import CloudConfig, Config, GatewayConfig, OfferConfig, PortalConfig
from gateway.gateway import Gateway
from gateway.ops.cli import main as gateway_main
from gateway.stations.accounting import Usage, UsageRecord
from gateway.stations.outbox import Outbox
from gateway.stations.store import Store
from gateway.uplink import sync
from gateway.uplink.commands import CommandRefused
from gateway.uplink.identity import NotEnrolled, UplinkError
from gateway.uplink.start import on_loop, start_uplink, uplink_for
from gateway.uplink.sync import BATCH, Uplink
from gateway.uplink.transport import Backoff, Refused, Unreachable
from plaza import signing
from portal import create_app
from portal.venue import VenueOverlay
from tests.consent_wallet import consent_proof, write_public_key
from tests.fakes.control import FakeControl
from tests.fakes.firewall import FakeFirewall
from tests.loopback_cloud import Cloud
from tests.portal_helpers import PHONE, PORTAL

MAC = "02:50:4c:00:00:01"
ENV = {"REMOTE_ADDR": PHONE, "SERVER_PORT": "80"}


# -- the real cloud, served on loopback ----------------------------------------------------
@pytest.fixture
def cloud(tmp_path: Path) -> Iterator[Cloud]:
    from cloud import create_app as create_cloud
    from cloud.migrations import upgrade

    url = f"sqlite:///{tmp_path / 'cloud.db'}"
    upgrade(url)
    app = create_cloud(
        {
            "INSTANCE_PATH": str(tmp_path / "cloud-instance"),
            "DATABASE_URL": url,
            "SECRET_KEY": "test",
            "TESTING": True,
            "COMMAND_POLL_SECONDS": 0.05,
            "WALLET_PUBLIC_KEY_FILE": str(write_public_key(tmp_path)),
        }
    )
    server = Cloud(app, 0)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def state(tmp_path: Path) -> Path:
    path = tmp_path / "state"
    path.mkdir()
    return path


@pytest.fixture
def enrolled(cloud: Cloud, state: Path) -> tuple[Uplink, str]:
    """An uplink enrolled with the cloud; returns it and its venue id."""
    code, venue = cloud.claim()
    up = uplink_for(state, rng=lambda: 0.0)
    up.enrol(cloud.url, code, hostname="test-router")
    return up, venue


def records(n: int, session: str = "s1", start: int = 0, bytes_down: int = 1000) -> list:
    return [
        UsageRecord(
            key=f"{session}-{i}", session_id=session, seq=i, mac=MAC, ip="198.19.0.100",
            started_at=1_800_000_000.0, period_start=1_800_000_000.0 + i,
            period_end=1_800_000_001.0 + i, final=False, reason=None,
            delta=Usage(10, 1, bytes_down, 2), total=Usage(10 * (i + 1), i + 1, 0, 0),
        )
        for i in range(start, start + n)
    ]  # fmt: skip


def outbox_with(state: Path, n: int) -> Outbox:
    store = Store(state / "plaza.db")
    store.write([], [], records(n))
    return Outbox(store)


# -- enrolment ------------------------------------------------------------------------------
def test_enrol_writes_a_private_key_and_the_identity(cloud: Cloud, state: Path) -> None:
    code, venue = cloud.claim()
    identity = uplink_for(state).enrol(cloud.url + "/", code)
    key_file, cloud_file = state / "device.key", state / "cloud.json"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    saved = json.loads(cloud_file.read_text())
    assert saved == {
        "device_id": identity.device_id,
        "venue_id": venue,
        "cloud_url": cloud.url,  # without the trailing slash
        "cloud_public_key": signing.public_b64(cloud.app.config["CLOUD_KEY"]),
    }
    # The cloud holds the public half of exactly the key the router kept.
    key = signing.load_private(key_file.read_bytes())
    assert cloud.device(identity.device_id).public_key == signing.public_b64(key)
    assert not [p for p in state.iterdir() if p.name.endswith(".tmp")]
    assert code not in cloud_file.read_text() and code not in key_file.read_text()


def test_enrol_refuses_to_replace_an_enrolment_and_a_used_claim(cloud: Cloud, state: Path) -> None:
    code, _ = cloud.claim()
    first = uplink_for(state).enrol(cloud.url, code)
    before = (state / "device.key").read_bytes(), (state / "cloud.json").read_bytes()
    code2, _ = cloud.claim("Second venue")
    with pytest.raises(UplinkError, match=f"already enrolled as {first.device_id}"):
        uplink_for(state).enrol(cloud.url, code2)
    with pytest.raises(Refused, match="claim code already used") as err:
        uplink_for(state).enrol(cloud.url, code, force=True)
    assert err.value.status == 409
    # Neither refusal touched the identity the router has.
    assert ((state / "device.key").read_bytes(), (state / "cloud.json").read_bytes()) == before
    with pytest.raises(Refused, match="unknown claim code"):
        uplink_for(state).enrol(cloud.url, "0000-0000-0000", force=True)
    second = uplink_for(state).enrol(cloud.url, code2, force=True)
    assert second.device_id != first.device_id


@pytest.mark.parametrize(
    "url", ["http://cloud.test", "ftp://127.0.0.1", "http://127.0.0.2:80", "https://a b"]
)
def test_enrol_refuses_a_cloud_url_that_is_not_https(state: Path, url: str) -> None:
    with pytest.raises(UplinkError, match="expected an https:// URL"):
        uplink_for(state).enrol(url, "K7Q4-9XMP-2D3F")
    assert not (state / "device.key").exists()


def test_enrol_cli_reads_the_claim_from_stdin_and_prints_the_device_id(
    cloud: Cloud, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    state = tmp_path / "cli-state"
    config = tmp_path / "gateway.toml"
    config.write_text(f"[gateway]\nstate_dir = '{state}'\n")
    code, venue = cloud.claim()
    monkeypatch.setattr("sys.stdin", io.StringIO(code + "\n"))
    assert gateway_main(["--config", str(config), "enrol", "--cloud", cloud.url]) == 0
    out, err = capsys.readouterr()
    device_id = json.loads((state / "cloud.json").read_text())["device_id"]
    assert out.strip() == device_id and venue in err
    assert code not in out + err
    code2, _ = cloud.claim("Other")
    args = ["--config", str(config), "enrol", "--cloud", cloud.url, "--claim", code2]
    assert gateway_main(args) == 1
    assert "already enrolled" in capsys.readouterr().err
    assert gateway_main([*args, "--force"]) == 0
    assert capsys.readouterr().out.strip() != device_id


def test_enrol_and_heartbeat_over_tls_trust_only_the_ca_bundle(
    cloud: Cloud, tmp_path: Path, state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lab.pki import LabCA

    ca = LabCA(tmp_path / "ca")
    cloud.stop()
    cloud.tls, cloud.port = ca.issue("cloud", ["127.0.0.1"]), 0
    cloud.start()
    code, _ = cloud.claim()
    with pytest.raises(Unreachable, match="TLS error"):
        uplink_for(state).enrol(cloud.url, code)  # the system store does not know the lab CA
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/nonexistent.pem")  # must not override ours
    up = uplink_for(state, ca_bundle=str(ca.cert_path))
    identity = up.enrol(cloud.url, code)
    assert identity.cloud_url.startswith("https://")
    assert up.heartbeat()["config_version"] == 1
    with pytest.raises(Unreachable, match=r"ca_bundle '/nowhere/ca\.pem'"):
        uplink_for(state, ca_bundle="/nowhere/ca.pem").heartbeat()


# -- heartbeat and config -------------------------------------------------------------------
def test_heartbeat_is_accepted_and_reports_health(enrolled: tuple[Uplink, str], cloud: Cloud):
    up, _ = enrolled
    up.outbox = outbox_with(up.state_dir, 3)
    answer = up.heartbeat({"clients": {"captive": 2, "authorized": 5}})
    assert answer["config_version"] == 1 and abs(answer["time"] - time.time()) < 5
    device = cloud.device(up.identity.device_id)
    assert device.last_heartbeat_at is not None
    assert device.health["clients"] == {"captive": 2, "authorized": 5}
    assert device.health["outbox_backlog"] == 3
    assert device.health["mem_total_bytes"] > 0 and len(device.health["load"]) == 3
    assert up.stats["heartbeats_ok"] == 1
    assert up.config_due.is_set()  # version 1 in the cloud, none here


def test_a_device_whose_key_changed_is_refused(enrolled: tuple[Uplink, str]) -> None:
    up, _ = enrolled
    (up.state_dir / "device.key").write_bytes(signing.private_pem(signing.new_key()))
    stranger = uplink_for(up.state_dir)
    with pytest.raises(Refused, match="bad signature") as err:
        stranger.heartbeat()
    assert err.value.status == 401 and stranger.stats["heartbeats_failed"] == 1


def test_a_router_clock_that_is_off_is_corrected_from_the_cloud(
    enrolled: tuple[Uplink, str], cloud: Cloud, caplog: pytest.LogCaptureFixture
) -> None:
    up, _ = enrolled
    skewed = uplink_for(up.state_dir, clock=lambda: time.time() - 3600)  # booted without NTP
    caplog.set_level(logging.INFO, "plaza.uplink")
    assert skewed.heartbeat()["config_version"] == 1  # refused once, signed again, accepted
    assert 3590 < skewed.transport.clock_offset < 3610
    assert any("clock is -3" in r.getMessage() for r in caplog.records)  # behind by ~3600 s
    # A command that has not expired by the cloud's clock is not taken for an expired one.
    runs: list[dict] = []
    skewed.commands.execute = lambda request: runs.append(request) or {"ok": True}
    cloud.issue(up.identity.device_id, "kick", {"client": MAC})
    assert skewed.commands.poll(wait=0) == [{"ok": True}] and len(runs) == 1
    # Once the router's clock is right, the correction goes.
    skewed.transport.clock = time.time
    skewed.heartbeat()
    assert skewed.transport.clock_offset == 0.0


def portal_page(state: Path, config: Config | None = None) -> str:
    control = FakeControl()
    control.clients[PHONE] = {"mac": MAC, "ip": PHONE, "state": "captive",
                              "seconds_remaining": None, "bytes_remaining": None}  # fmt: skip
    base = config or Config(
        gateway=GatewayConfig(state_dir=str(state)),
        portal=PortalConfig(merchant_name="TOML Name"),
        offers=(OfferConfig(title="TOML offer"),),
    )
    app = create_app(
        {"TESTING": True, "PLAZA_CONFIG": base, "CONTROL": control, "SECRET_KEY": "test"}
    )
    resp = app.test_client().get("/venue", base_url=PORTAL, environ_overrides=ENV)
    assert resp.status_code == 200
    return resp.get_data(as_text=True)


def test_config_is_pulled_once_per_version_and_reaches_the_portal(
    enrolled: tuple[Uplink, str], cloud: Cloud
) -> None:
    up, venue = enrolled
    page = portal_page(up.state_dir)
    assert "TOML Name" in page and "TOML offer" in page  # nothing from the cloud yet
    assert up.pull_config() is True
    assert up.config_version == 1
    assert up.pull_config() is False  # If-None-Match: "1" -> 304
    offer = {"id": "o1", "title": "Flat white ½ price", "body": "Before 10", "url": ""}
    version = cloud.set_config(
        venue, offers=[offer], branding={"name": "Harbour Roasters", "colour": "#123456"}
    )
    up.config_due.clear()
    assert up.heartbeat()["config_version"] == version == 2
    assert up.config_due.is_set()  # the heartbeat said there is a newer one
    assert up.pull_config() is True and up.config_version == 2
    saved = json.loads((up.state_dir / "cloud-config.json").read_text())
    assert saved["version"] == 2 and saved["config"]["offers"][0]["title"] == offer["title"]
    assert stat.S_IMODE((up.state_dir / "cloud-config.json").stat().st_mode) == 0o644
    page = portal_page(up.state_dir)
    assert "Flat white ½ price" in page and "Before 10" in page
    assert "Harbour Roasters" in page and "#123456" in page
    assert "TOML offer" not in page and "TOML Name" not in page
    # A restarted uplink knows its version from the file and does not fetch it again.
    assert uplink_for(up.state_dir).pull_config() is False


# -- commands -------------------------------------------------------------------------------
def make_gateway(state: Path) -> Gateway:
    config = Config(gateway=GatewayConfig(state_dir=str(state)))
    gw = open_gateway(config, FakeFirewall(), store=Store(state / "gw.db"))
    gw.start()
    assert gw.handle({"op": "lease", "action": "add", "mac": MAC, "ip": "198.19.0.100"})["ok"]
    return gw


def test_cloud_commands_reach_the_gateway_and_their_results_the_cloud(
    enrolled: tuple[Uplink, str], cloud: Cloud
) -> None:
    up, _ = enrolled
    gw = make_gateway(up.state_dir)
    calls: list[dict] = []

    def execute(request: dict) -> dict:
        calls.append(request)
        return gw.handle(request)

    up.commands.execute = execute
    device = up.identity.device_id
    auth = cloud.issue(device, "authorize", {"client": MAC, "minutes": 30})
    assert up.commands.poll(wait=2) == [{"ok": True}]
    assert calls == [{"op": "auth", "client": MAC, "minutes": 30}]
    assert gw.table.clients[MAC].state.value == "authorized"
    row = cloud.command(auth)
    assert row.ok is True and row.done_at is not None
    kick = cloud.issue(device, "kick", {"client": "198.19.0.100"})
    stranger = cloud.issue(device, "kick", {"client": "02:50:4c:00:00:99"})  # not a client
    assert sorted(r["ok"] for r in up.commands.poll(wait=2)) == [False, True]
    assert gw.table.clients[MAC].state.value == "captive"
    assert cloud.command(kick).ok is True
    failed = cloud.command(stranger)
    assert failed.ok is False and failed.error == "not a client: 02:50:4c:00:00:99"
    assert up.stats["commands_executed"] == 2 and up.stats["commands_failed"] == 1
    assert up.commands.poll(wait=0) == []  # all delivered once, results in


def test_a_command_arrives_during_a_long_poll(enrolled: tuple[Uplink, str], cloud: Cloud):
    up, _ = enrolled
    seen: list[dict] = []
    up.commands.execute = lambda request: seen.append(request) or {"ok": True}
    timer = threading.Timer(0.5, cloud.issue, (up.identity.device_id, "authorize", {"client": MAC}))
    timer.start()
    started = time.monotonic()
    assert up.commands.poll(wait=10) == [{"ok": True}]
    assert time.monotonic() - started < 5  # answered when it came, not at the end of wait
    assert seen == [{"op": "auth", "client": MAC}]


def test_refresh_config_command_pulls_the_config(enrolled: tuple[Uplink, str], cloud: Cloud):
    up, venue = enrolled
    up.pull_config()
    cloud.set_config(venue, offers=[{"id": "x", "title": "New today"}])
    command = cloud.issue(up.identity.device_id, "refresh-config", {})
    assert up.commands.poll(wait=2) == [{"ok": True}]
    assert up.config_version == 2 and cloud.command(command).ok is True
    assert "New today" in portal_page(up.state_dir)


def test_a_command_whose_result_was_lost_is_not_run_twice(
    enrolled: tuple[Uplink, str], cloud: Cloud
) -> None:
    up, _ = enrolled
    runs: list[dict] = []
    up.commands.execute = lambda request: runs.append(request) or {"ok": True}
    cloud.issue(up.identity.device_id, "authorize", {"client": MAC})
    real = up.transport.signed

    def lose_results(method: str, path: str, *args: Any, **kwargs: Any) -> Any:
        if path.endswith("/result"):
            raise Unreachable("POST result: connection failed")
        return real(method, path, *args, **kwargs)

    up.transport.signed = lose_results  # type: ignore[method-assign]
    with pytest.raises(Unreachable):
        up.commands.poll(wait=0)
    up.transport.signed = real  # type: ignore[method-assign]
    assert up.commands.poll(wait=0) == [{"ok": True}]  # redelivered: result posted again
    assert len(runs) == 1
    assert up.commands.poll(wait=0) == []


def genuine(up: Uplink, **fields: Any) -> dict[str, Any]:
    """An unsigned command as the cloud would issue it to `up`."""
    now = int(time.time())
    command = {
        "id": "cmd_0000000000000001",
        "op": "authorize",
        "args": {"client": MAC},
        "device_id": up.identity.device_id,
        "issued_at": now,
        "expires_at": now + 300,
    }
    return {**command, **fields}


def forgeries(up: Uplink, cloud_key: Any) -> dict[str, dict[str, Any]]:
    now = int(time.time())
    good = genuine(up)
    other_key = signing.new_key()
    tampered = signing.sign_command(cloud_key, good)
    tampered["args"] = {"client": "02:50:4c:00:00:66"}
    return {
        "bad signature": signing.sign_command(other_key, {**good, "id": "cmd_f1"}),
        "tampered": {**tampered, "id": "cmd_f2"},
        "unsigned": {**good, "id": "cmd_f3"},
        "for another device": signing.sign_command(
            cloud_key, {**good, "id": "cmd_f4", "device_id": "dev_00000000000000ff"}
        ),
        "expired": signing.sign_command(
            cloud_key, {**good, "id": "cmd_f5", "issued_at": now - 600, "expires_at": now - 1}
        ),
        "shell": signing.sign_command(
            cloud_key, {**good, "id": "cmd_f6", "op": "shell", "args": {"cmd": "reboot"}}
        ),
        "extra argument": signing.sign_command(
            cloud_key, {**good, "id": "cmd_f7", "args": {"client": MAC, "script": "x"}}
        ),
    }


def test_forged_commands_from_the_cloud_channel_are_refused_never_executed(
    enrolled: tuple[Uplink, str], cloud: Cloud
) -> None:
    up, _ = enrolled
    runs: list[dict] = []
    up.commands.execute = lambda request: runs.append(request) or {"ok": True}
    forged = forgeries(up, cloud.app.config["CLOUD_KEY"])
    ids = {name: cloud.inject(up.identity.device_id, command) for name, command in forged.items()}
    results = up.commands.poll(wait=0)
    assert runs == []
    assert len(results) == len(forged)
    assert all(r is not None and r["ok"] is False for r in results)
    for name, cid in ids.items():
        row = cloud.command(cid)  # the refusal was reported, so the cloud stops delivering
        assert row.ok is False and "refused by the router" in row.error, name
    assert up.stats["commands_refused"] == len(forged)
    assert up.commands.poll(wait=0) == []


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("bad signature", "bad signature"),
        ("tampered", "bad signature"),
        ("unsigned", "bad signature"),
        ("for another device", "for another device"),
        ("expired", "expired"),
        ("shell", "op 'shell' is not one of authorize, kick, refresh-config"),
        ("extra argument", "authorize takes no script"),
    ],
)
def test_command_checks_with_a_pinned_key(tmp_path: Path, name: str, reason: str) -> None:
    """No cloud needed: an enrolment written by hand, with a cloud key made here."""
    cloud_key = hand_enrolment(tmp_path)
    up = uplink_for(tmp_path)
    good = forgeries(up, cloud_key)
    with pytest.raises(CommandRefused) as err:
        up.commands.check(good[name])
    assert str(err.value) == reason
    posted: list[tuple[str, dict]] = []

    class Ok:
        status_code = 200

    up.transport.signed = lambda method, path, body=None, **kw: posted.append((path, body)) or Ok()  # type: ignore[method-assign]
    up.commands.execute = lambda request: pytest.fail(f"executed {request}")  # type: ignore[assignment]
    assert up.commands.handle(good[name]) == {
        "ok": False,
        "error": f"refused by the router: {reason}",
    }
    assert posted == [(f"/device/commands/{good[name]['id']}/result", posted[0][1])]
    # The genuine article passes.
    up.commands.check(signing.sign_command(cloud_key, genuine(up, op="kick")))


def hand_enrolment(state: Path) -> Any:
    """cloud.json and device.key as enrolment writes them; returns the cloud's key."""
    cloud_key = signing.new_key()
    (state / "device.key").write_bytes(signing.private_pem(signing.new_key()))
    identity = {"device_id": "dev_01", "venue_id": "ven_01", "cloud_url": "https://c.test",
                "cloud_public_key": signing.public_b64(cloud_key)}  # fmt: skip
    (state / "cloud.json").write_text(json.dumps(identity))
    return cloud_key


def test_a_command_without_a_usable_id_is_refused_and_not_reported(tmp_path: Path) -> None:
    cloud_key = hand_enrolment(tmp_path)
    up = uplink_for(tmp_path)
    up.transport.signed = lambda *a, **k: pytest.fail("posted")  # type: ignore[method-assign]
    command = signing.sign_command(cloud_key, genuine(up, id="../../x"))
    assert up.commands.handle(command) is None
    assert up.commands.handle("not an object") is None
    assert up.stats["commands_refused"] == 2


def test_on_loop_runs_the_request_on_the_loop_thread() -> None:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        seen: list[str] = []

        def handle(request: dict) -> dict:
            seen.append(threading.current_thread().name)
            return {"ok": True, "echo": request["op"]}

        execute = on_loop(loop, handle, timeout=5)
        assert execute({"op": "auth"}) == {"ok": True, "echo": "auth"}
        assert seen == [thread.name]
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


# -- usage ----------------------------------------------------------------------------------
def test_usage_is_uploaded_in_order_in_batches_and_marked_sent_on_200(
    enrolled: tuple[Uplink, str], cloud: Cloud
) -> None:
    up, _ = enrolled
    up.outbox = box = outbox_with(up.state_dir, 2300)
    order = [r["key"] for r in box.pending(limit=5000)]
    assert up.upload_usage() == 1000
    assert box.backlog() == 1300
    assert [r["key"] for r in box.pending(limit=5000)] == order[1000:]  # oldest went first
    assert up.upload_usage() == 1000 and up.upload_usage() == 300 and up.upload_usage() == 0
    assert box.backlog() == 0
    assert cloud.usage_count(up.identity.device_id) == 2300
    assert cloud.usage_total(up.identity.device_id) == 2300 * 1000
    assert up.stats["usage_records_sent"] == 2300 and up.stats["usage_batches_sent"] == 3


class LostAck:
    """An outbox whose first acknowledgement is lost (the router died before marking)."""

    def __init__(self, box: Outbox) -> None:
        self.box, self.lost = box, 0

    def pending(self, limit: int = 500) -> list[dict]:
        return self.box.pending(limit)

    def backlog(self) -> int:
        return self.box.backlog()

    def mark_sent(self, keys: Any, now: float) -> int:
        if not self.lost:
            self.lost = len(list(keys))
            return 0
        return self.box.mark_sent(keys, now)


def test_a_batch_resent_after_a_lost_acknowledgement_is_stored_once(
    enrolled: tuple[Uplink, str], cloud: Cloud
) -> None:
    up, _ = enrolled
    box = outbox_with(up.state_dir, 40)
    up.outbox = LostAck(box)
    assert up.upload_usage() == 40
    assert box.backlog() == 40  # not marked: the acknowledgement was "lost"
    assert up.upload_usage() == 40
    assert box.backlog() == 0
    assert cloud.usage_count(up.identity.device_id) == 40
    assert up.stats["usage_records_duplicate"] == 40


def test_a_cloud_that_is_down_loses_nothing(enrolled: tuple[Uplink, str], cloud: Cloud):
    up, _ = enrolled
    up.outbox = box = outbox_with(up.state_dir, 1500)
    cloud.stop()
    for _ in range(3):
        with pytest.raises(Unreachable, match="connection failed"):
            up.upload_usage()
    assert box.backlog() == 1500 and up.stats["usage_upload_errors"] == 3
    cloud.start()
    store = Store(up.state_dir / "plaza.db")
    store.write([], [], records(10, session="s2"))  # more usage while it was down
    while up.upload_usage():
        pass
    assert box.backlog() == 0
    assert cloud.usage_count(up.identity.device_id) == 1510


def test_a_refused_batch_stays_and_is_logged_once(
    enrolled: tuple[Uplink, str], cloud: Cloud, caplog: pytest.LogCaptureFixture
) -> None:
    up, _ = enrolled
    store = Store(up.state_dir / "plaza.db")
    bad = replace(records(1, session="bad")[0], mac="not-a-mac")
    store.write([], [], [bad, *records(5)])
    up.outbox = box = Outbox(store)
    caplog.set_level(logging.INFO, "plaza.uplink")
    for _ in range(3):
        with pytest.raises(Refused, match="record 0") as err:
            up.upload_usage()
        assert err.value.status == 400
    assert box.backlog() == 6  # nothing marked, nothing skipped past the bad record
    assert cloud.usage_count(up.identity.device_id) == 0
    assert up.stats["usage_batches_refused"] == 3
    refusals = [r for r in caplog.records if "refused by the cloud" in r.getMessage()]
    assert len(refusals) == 1 and "bad-0" in refusals[0].getMessage()
    assert "field 'mac'" in refusals[0].getMessage()


def test_uplink_logs_no_secrets(
    cloud: Cloud, state: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    code, _ = cloud.claim()
    up = uplink_for(state)
    up.enrol(cloud.url, code)
    up.heartbeat()
    up.pull_config()
    text = "\n".join(r.getMessage() for r in caplog.records)
    key_pem = (state / "device.key").read_text()
    body = key_pem.splitlines()[1]
    assert code not in text and body not in text and "X-Plaza-Signature" not in text


# -- the loops ------------------------------------------------------------------------------
def test_the_loops_heartbeat_pull_run_commands_and_upload_through_an_outage(
    enrolled: tuple[Uplink, str], cloud: Cloud
) -> None:
    up, venue = enrolled
    up.heartbeat_seconds, up.upload_seconds = 0.3, 0.2
    up.outbox = box = outbox_with(up.state_dir, 50)
    gw = make_gateway(up.state_dir)
    up.commands.execute = gw.handle
    stop = threading.Event()
    commands = threading.Thread(target=up.command_loop, args=(stop, 1), daemon=True)
    main = threading.Thread(target=up.main_loop, args=(stop,), daemon=True)
    commands.start()
    main.start()
    try:
        wait_for(lambda: box.backlog() == 0 and up.config_version == 1)
        cloud.stop()
        Store(up.state_dir / "plaza.db").write([], [], records(20, session="s3"))
        wait_for(lambda: up.stats["usage_upload_errors"] >= 2)
        assert box.backlog() == 20
        cloud.start()
        cloud.set_config(venue, offers=[{"id": "a", "title": "After the outage"}])
        cloud.issue(up.identity.device_id, "authorize", {"client": MAC})
        wait_for(lambda: box.backlog() == 0 and up.config_version == 2, timeout=20)
        wait_for(lambda: gw.table.clients[MAC].state.value == "authorized")
        assert cloud.usage_count(up.identity.device_id) == 70
        assert up.stats["heartbeats_ok"] >= 2
    finally:
        stop.set()
        main.join(5)
        cloud.stop()  # ends the long poll in flight at once
        commands.join(5)
    assert not main.is_alive() and not commands.is_alive()


def wait_for(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def test_start_uplink_does_nothing_until_enrolled(state: Path) -> None:
    config = Config(gateway=GatewayConfig(state_dir=str(state)))
    stop = threading.Event()
    assert start_uplink(config, lambda r: {"ok": True}, None, None, stop) == []  # type: ignore[arg-type]


def test_start_uplink_runs_both_threads_and_stops(
    enrolled: tuple[Uplink, str], cloud: Cloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    up, _ = enrolled
    monkeypatch.setattr(sync, "LONG_POLL", 1)  # so the poll in flight ends soon after stop
    config = Config(
        gateway=GatewayConfig(state_dir=str(up.state_dir)),
        cloud=CloudConfig(heartbeat_seconds=1),
    )
    collectors: list[Any] = []
    stop = threading.Event()
    gw = make_gateway(up.state_dir)  # one captive station; health_fn None: counts by ping
    threads = start_uplink(
        config, gw.handle, outbox_with(up.state_dir, 1), None, stop,
        register_collector=collectors.append,
    )  # fmt: skip
    try:
        assert [t.name for t in threads] == ["plaza-uplink", "plaza-uplink-commands"]
        wait_for(lambda: cloud.device(up.identity.device_id).last_heartbeat_at is not None)
        health = cloud.device(up.identity.device_id).health
        assert health["clients"] == {"captive": 1, "authorized": 0}
        wait_for(lambda: cloud.usage_count(up.identity.device_id) == 1)
        names = {f.name for f in collectors[0]()}
        assert "plaza_uplink_usage_records_sent_total" in names
    finally:
        stop.set()
        cloud.stop()
        for thread in threads:
            thread.join(10)
    assert not any(t.is_alive() for t in threads)


# -- no cloud needed ------------------------------------------------------------------------
def test_backoff_doubles_from_one_second_to_a_minute_with_jitter() -> None:
    top = Backoff(rng=lambda: 1.0)
    assert [top.failed() for _ in range(9)] == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    bottom = Backoff(rng=lambda: 0.0)
    assert [bottom.failed() for _ in range(8)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    bottom.succeeded()
    assert bottom.failed() == 0.5
    values = iter([0.0, 0.5, 1.0])
    mid = Backoff(rng=lambda: next(values))
    assert [mid.failed() for _ in range(3)] == [0.5, 1.5, 4.0]
    many = Backoff()
    for _ in range(200):  # no overflow, never beyond the cap
        assert 0 < many.failed() <= 60


def test_upload_loop_backs_off_while_the_cloud_is_unreachable(state: Path) -> None:
    """With an injected clock: each failed attempt waits longer, up to the cap."""
    now = [1000.0]
    up = uplink_for(state, monotonic=lambda: now[0], rng=lambda: 1.0)

    def down() -> int:
        raise Unreachable("POST /api/v1/device/usage: connection failed")

    up.upload_usage = down  # type: ignore[method-assign]
    backoff = Backoff(rng=lambda: 1.0)
    waits = [up._upload_step(backoff) - now[0] for _ in range(8)]
    assert waits == [1, 2, 4, 8, 16, 32, 60, 60]
    up.upload_usage = lambda: 3  # type: ignore[method-assign]
    assert up._upload_step(backoff) - now[0] == up.upload_seconds
    up.upload_usage = lambda: BATCH  # type: ignore[method-assign]
    assert up._upload_step(backoff) == now[0]  # a full batch: the backlog drains at once


def test_write_atomic_replaces_whole_files_with_the_mode_asked(tmp_path: Path) -> None:
    target = tmp_path / "device.key"
    old = os.umask(0o077)
    try:
        files.write_atomic(target, b"one", 0o644)
    finally:
        os.umask(old)
    assert stat.S_IMODE(target.stat().st_mode) == 0o644  # exactly, whatever the umask
    files.write_atomic(target, b"two", 0o600)
    assert target.read_bytes() == b"two" and stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["device.key"]


def test_a_broken_enrolment_file_is_reported_not_fatal(state: Path) -> None:
    (state / "cloud.json").write_text("{")
    config = Config(gateway=GatewayConfig(state_dir=str(state)))
    assert start_uplink(config, lambda r: {}, None, None, threading.Event()) == []  # type: ignore[arg-type]
    with pytest.raises(NotEnrolled):
        _ = uplink_for(state / "nowhere").identity


# -- the portal's venue overlay -------------------------------------------------------------
def write_cloud_config(path: Path, version: int, **config: Any) -> None:
    files.write_atomic(path, json.dumps({"version": version, "config": config}).encode(), 0o644)


def test_portal_overlay_follows_the_file_checking_at_most_once_a_second(tmp_path: Path):
    path = tmp_path / "cloud-config.json"
    now = [0.0]
    overlay = VenueOverlay(path, clock=lambda: now[0])
    base = Config(portal=PortalConfig(merchant_name="TOML", merchant_name_zh="中文名"))
    assert overlay.config(base) is base  # no file: the TOML
    write_cloud_config(path, 1, branding={"name": "Cloud One", "colour": "#abcdef"}, offers=[])
    assert overlay.config(base) is base  # not looked at again within the second
    now[0] = 1.0
    effective = overlay.config(base)
    assert effective.portal.merchant_name == "Cloud One"
    assert effective.portal.merchant_name_zh == ""  # no stale translation of the old name
    assert effective.portal.brand_color == "#abcdef" and effective.offers == ()
    assert effective.portal.terms == base.portal.terms  # not set by the cloud: TOML kept
    write_cloud_config(path, 2, offers=[{"id": "a", "title": "Two", "body": "b", "url": ""}])
    now[0] = 2.0
    effective = overlay.config(base)
    assert effective.portal.merchant_name == "TOML"
    assert effective.offers == (OfferConfig(title="Two", text="b"),)
    path.unlink()
    now[0] = 3.0
    assert overlay.config(base) is base


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b'{"version": 3}',
        b'{"version": 3, "config": {"branding": {"colour": "red"}}}',
        b'{"version": 3, "config": {"offers": [{"title": "x", "url": "javascript:alert(1)"}]}}',
        b'{"version": 3, "config": {"offers": [{"title": ""}]}}',
        b'{"version": 3, "config": {"branding": {"logo_url": "http://x.test/a.png"}}}',
    ],
)
def test_a_malformed_cloud_file_keeps_the_toml_and_is_logged_once(
    tmp_path: Path, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "cloud-config.json"
    path.write_bytes(content)
    now = [0.0]
    overlay = VenueOverlay(path, clock=lambda: now[0])
    base = Config(offers=(OfferConfig(title="TOML offer"),))
    caplog.set_level(logging.WARNING, "plaza.portal")
    for i in range(5):
        now[0] = float(i * 2)
        assert overlay.config(base) is base
    assert len([r for r in caplog.records if "ignored" in r.getMessage()]) == 1


def test_portal_pages_show_the_cloud_offer_after_the_file_changes(state: Path) -> None:
    base = Config(
        gateway=GatewayConfig(state_dir=str(state)), offers=(OfferConfig(title="TOML offer"),)
    )
    control = FakeControl()
    control.clients[PHONE] = {"mac": MAC, "ip": PHONE, "state": "captive",
                              "seconds_remaining": None, "bytes_remaining": None}  # fmt: skip
    app = create_app({"TESTING": True, "PLAZA_CONFIG": base, "CONTROL": control,
                      "SECRET_KEY": "t"})  # fmt: skip
    app.extensions["plaza_venue"].interval = 0  # look at the file on every request
    client = app.test_client()

    def page() -> str:
        return client.get("/venue", base_url=PORTAL, environ_overrides=ENV).get_data(True)

    assert "TOML offer" in page()
    write_cloud_config(state / "cloud-config.json", 1, offers=[{"id": "n", "title": "Cloud deal"}])
    assert "Cloud deal" in page() and "TOML offer" not in page()
    (state / "cloud-config.json").write_text("garbage")
    assert "TOML offer" in page()


# -- presence --------------------------------------------------------------------------------
def test_presence_from_the_gateway_reaches_the_cloud_once(
    cloud: Cloud, enrolled: tuple[Uplink, str], state: Path
) -> None:
    """A station's join, the shopper's opt-in (with the connect link) and its leave go up in
    order; a resend after a lost answer is stored once; a bad link never leaves the router."""
    from cloud.models import PresenceEvent, ShopperLink
    from gateway.config import Config, GatewayConfig
    from gateway.stations.presence import PresenceOutbox
    from tests.fakes.firewall import FakeFirewall

    config = Config(gateway=GatewayConfig(state_dir=str(state)))
    gw = open_gateway(config, FakeFirewall())
    gw.start()
    gw.handle({"op": "lease", "action": "add", "mac": MAC, "ip": "198.19.0.100"})
    link = "https://portal.plaza.test/reconnect/abc.DEF_123-x"
    proof = consent_proof("2088000000000001", link, time.time())
    ok = gw.handle({"op": "shopper", "client": MAC, "wallet_user": "2088000000000001",
                    "opt_in": True, "connect_url": link, "consent": proof})  # fmt: skip
    assert ok["ok"]
    junk = gw.handle({"op": "shopper", "client": MAC, "wallet_user": "2088000000000001",
                      "opt_in": True, "connect_url": link, "consent": "x\n"})  # fmt: skip
    assert not junk["ok"] and "consent" in junk["error"]
    bad = gw.handle({"op": "shopper", "client": MAC, "wallet_user": "2088000000000001",
                     "opt_in": True, "connect_url": "http://evil.test/x"})  # fmt: skip
    assert not bad["ok"] and "connect_url" in bad["error"]
    gw.handle({"op": "lease", "action": "del", "mac": MAC, "ip": "198.19.0.100"})
    up, _ = enrolled
    up.presence = PresenceOutbox(config.db_path)
    resend = up.presence.pending()
    assert [e["kind"] for e in resend] == ["join", "login", "leave"]
    assert up.upload_presence() == 3 and up.presence.backlog() == 0
    # The answer was lost: the same batch again is taken, stored once.
    resp = up.transport.signed("POST", "/device/presence", {"events": resend})
    assert resp.status_code == 200 and resp.json()["duplicates"] == 3
    with cloud.db() as db:
        kinds = [e.kind for e in db.scalars(select(PresenceEvent).order_by(PresenceEvent.at))]
        linked = db.scalars(select(ShopperLink)).one()
    assert kinds == ["join", "login", "leave"]
    assert (linked.mac, linked.wallet_user, linked.connect_url) == (MAC, "2088000000000001", link)
