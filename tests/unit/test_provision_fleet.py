"""The router's half of image-baked enrolment (provisioning/fleet_enrol.py) with a fake
cloud: it waits through pending answers and a cloud that is away, keeps one key across
reboots, gives up only when told, and stops on a refusal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from plaza import signing
from provisioning import errors
from provisioning.errors import ProvisionError
from provisioning.fleet_enrol import PENDING_KEY, FleetEnrolment
from tests.conftest import FakeClock

CLOUD_KEY = signing.public_b64(signing.new_key())


class Cloud:
    def __init__(self, answers: list) -> None:
        self.answers, self.keys = answers, []

    def post(self, url: str, body: dict):
        assert url == "https://cloud.test/api/v1/enrol/fleet"
        assert body["fleet_secret"] == "fleet-s" and body["venue_tag"] == "main-st"
        self.keys.append(body["public_key"])
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def enrolment(tmp_path: Path, cloud: Cloud, clock: FakeClock) -> FleetEnrolment:
    return FleetEnrolment(
        tmp_path, "https://cloud.test/", "fleet-s", "main-st", cloud.post, clock, clock.advance
    )


APPROVED = (201, {"device_id": "dev_1", "venue_id": "ven_1", "cloud_public_key": CLOUD_KEY})


def test_waits_through_pending_and_outages_then_writes_the_identity(tmp_path: Path) -> None:
    clock = FakeClock()
    cloud = Cloud([(202, {"status": "pending"}), OSError("no route"), (503, {}), APPROVED])
    identity = enrolment(tmp_path, cloud, clock).run(interval=30)
    assert identity.device_id == "dev_1" and clock() == 1_800_000_090
    assert len(set(cloud.keys)) == 1  # one key for every ask
    saved = json.loads((tmp_path / "cloud.json").read_text())
    assert saved["cloud_url"] == "https://cloud.test" and saved["device_id"] == "dev_1"
    key = signing.load_private((tmp_path / "device.key").read_bytes())
    assert signing.public_b64(key) == cloud.keys[0]
    assert (tmp_path / "device.key").stat().st_mode & 0o777 == 0o600
    assert not (tmp_path / PENDING_KEY).exists()
    # Enrolled: a later boot asks nothing.
    assert enrolment(tmp_path, Cloud([]), clock).run().device_id == "dev_1"


def test_a_reboot_while_waiting_asks_with_the_same_key(tmp_path: Path) -> None:
    clock = FakeClock()
    cloud = Cloud([(202, {}), (202, {})])
    assert enrolment(tmp_path, cloud, clock).once() is None
    assert (tmp_path / PENDING_KEY).stat().st_mode & 0o777 == 0o600
    assert enrolment(tmp_path, cloud, clock).once() is None
    assert cloud.keys[0] == cloud.keys[1]


def test_refused_stops_and_timeout_gives_up(tmp_path: Path) -> None:
    clock = FakeClock()
    refused = Cloud([(403, {"error": "the merchant refused this router"})])
    with pytest.raises(ProvisionError) as caught:
        enrolment(tmp_path, refused, clock).run()
    assert caught.value.code == errors.CLAIM_REFUSED and "refused" in caught.value.message
    silent = Cloud([(202, {})] * 10)
    with pytest.raises(ProvisionError, match="not approved after 60 s"):
        enrolment(tmp_path / "b", silent, clock).run(interval=30, timeout=60)
    assert len(silent.answers) == 7  # asked at 0, 30 and 60 s


def test_the_wait_doubles_up_to_its_most(tmp_path: Path) -> None:
    """As plaza-fleet-enrol.service runs it (--interval 10 --max-interval 300): a router left
    waiting asks less and less often, never less than every `most` seconds."""
    clock = FakeClock()
    start = clock()
    asked: list[float] = []
    cloud = Cloud([(202, {})] * 7 + [APPROVED])
    post = cloud.post
    cloud.post = lambda url, body: (asked.append(clock() - start), post(url, body))[1]
    enrolment(tmp_path, cloud, clock).run(interval=10, most=60)
    assert asked == [0, 10, 30, 70, 130, 190, 250, 310]


def test_the_agent_removes_the_secret_once_enrolled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The secret only lets a router ask: once the router holds its identity it goes, so the
    unit (ConditionPathExists=/etc/plaza/fleet.secret) never runs again and a router revoked
    later cannot ask again with a new key. Kept while waiting (a reboot asks again)."""
    from provisioning import agent

    config = tmp_path / "gateway.toml"
    config.write_text(
        f'[lan]\ninterface = "lo"\n[gateway]\nstate_dir = "{tmp_path / "state"}"\n'
        '[cloud]\nurl = "https://cloud.test"\n'
    )
    secret = tmp_path / "fleet.secret"
    secret.write_text("fleet-s\n")
    cloud = Cloud([(202, {}), OSError("cloud away")])
    monkeypatch.setattr(agent, "http_post", lambda ca_bundle: cloud.post)
    argv = ["--config", str(config), "fleet-enrol", "--secret-file", str(secret),
            "--venue-tag", "main-st", "--interval", "0.01"]  # fmt: skip
    assert agent.main([*argv, "--timeout", "0.01"]) == errors.CLOUD_UNREACHABLE
    assert secret.exists()  # still waiting: kept
    cloud.answers[:] = [(202, {}), APPROVED]
    assert agent.main(argv) == errors.OK
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["device_id"] == "dev_1"
    assert not secret.exists()
    assert (tmp_path / "state/cloud.json").exists()


def test_the_unit_stops_retrying_on_the_agents_final_exit_codes() -> None:
    """plaza-fleet-enrol.service restarts the agent on failure except for a refusal or revoked
    secret and a missing cloud URL or secret: those codes are the agent's own."""
    unit = Path(__file__).resolve().parents[2] / "provisioning/package/systemd"
    text = (unit / "plaza-fleet-enrol.service").read_text()
    (line,) = [x for x in text.splitlines() if x.startswith("RestartPreventExitStatus=")]
    codes = {int(c) for c in line.split("=", 1)[1].split()}
    assert codes == {errors.CLAIM_REFUSED, errors.USAGE}
