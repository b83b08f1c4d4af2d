"""Config test-and-rollback (provisioning/rollback.py) on a fake clock: the new config stays
when the cloud answers in time, the old one comes back when it does not, and a config that
fails its check never replaces anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from provisioning import errors
from provisioning.errors import ProvisionError
from provisioning.rollback import ConfigRollout
from tests.conftest import FakeClock

OLD, NEW = b"[lan]\ninterface = 'old0'\n", b"[lan]\ninterface = 'new0'\n"


class Router:
    """The services and the cloud as the rollout sees them: each restart reads the config,
    and the cloud answers only while `good` is what the config holds, after `delay` s."""

    def __init__(self, config: Path, clock: FakeClock, good: bytes, delay: float) -> None:
        self.config, self.clock, self.good, self.delay = config, clock, good, delay
        self.restarts: list[bytes] = []
        self.restarted_at = 0.0

    def restart(self) -> None:
        self.restarts.append(self.config.read_bytes())
        self.restarted_at = self.clock()

    def probe(self) -> bool:
        return (
            self.config.read_bytes() == self.good and self.clock() - self.restarted_at >= self.delay
        )


def rollout(tmp_path: Path, good: bytes, delay: float, refuse: bool = False):
    clock = FakeClock()
    config = tmp_path / "gateway.toml"
    config.write_bytes(OLD)
    router = Router(config, clock, good, delay)

    def check(path: Path) -> None:
        if refuse:
            raise ProvisionError(errors.CONFIG_REFUSED, "fails check-config")

    new = tmp_path / "new.toml"
    new.write_bytes(NEW)
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock.advance(seconds)

    r = ConfigRollout(config, check, router.restart, router.probe, clock, sleep, interval=2.0)
    return r, router, new, sleeps, clock


def test_new_config_stays_when_the_cloud_answers_in_time(tmp_path: Path) -> None:
    r, router, new, sleeps, _ = rollout(tmp_path, good=NEW, delay=7)
    outcome = r.apply(new, timeout=30)
    assert outcome.applied and not outcome.rolled_back and outcome.waited == 8
    assert r.config.read_bytes() == NEW and router.restarts == [NEW]
    assert r.previous.read_bytes() == OLD  # kept for a later manual rollback
    assert sleeps == [2, 2, 2, 2]


def test_silent_cloud_rolls_back_at_the_timeout_and_restarts_again(tmp_path: Path) -> None:
    r, router, new, sleeps, clock = rollout(tmp_path, good=OLD, delay=0)
    start = clock()
    with pytest.raises(ProvisionError) as caught:
        r.apply(new, timeout=9)
    assert caught.value.code == errors.CONFIG_REFUSED
    assert "did not reach the cloud in 9 s" in caught.value.message
    assert clock() - start == 9  # not a second more: the last sleep is cut to the deadline
    assert sleeps == [2, 2, 2, 2, 1]
    assert r.config.read_bytes() == OLD and router.restarts == [NEW, OLD]
    assert router.probe()  # back in touch with the old config


def test_config_failing_its_check_touches_nothing(tmp_path: Path) -> None:
    r, router, new, _, _ = rollout(tmp_path, good=NEW, delay=0, refuse=True)
    with pytest.raises(ProvisionError, match="fails check-config"):
        r.apply(new, timeout=30)
    assert r.config.read_bytes() == OLD and router.restarts == [] and not r.previous.exists()


def test_without_an_old_config_a_silent_cloud_needs_a_person(tmp_path: Path) -> None:
    r, router, new, _, _ = rollout(tmp_path, good=OLD, delay=0)
    r.config.unlink()
    with pytest.raises(ProvisionError) as caught:
        r.apply(new, timeout=4)
    assert caught.value.code == errors.HALF_DONE and "no previous config" in caught.value.message
    assert r.config.read_bytes() == NEW and router.restarts == [NEW]


def test_a_config_on_trial_is_marked_and_the_mark_goes_with_the_verdict(tmp_path: Path) -> None:
    r, router, new, _, _ = rollout(tmp_path, good=NEW, delay=3)
    seen: list[bool] = []
    probe = r.probe
    r.probe = lambda: seen.append(r.pending.exists()) or probe()
    r.apply(new, timeout=30)
    assert seen and all(seen) and not r.pending.exists() and router.restarts == [NEW]
    (tmp_path / "b").mkdir()
    r2, _, new2, _, _ = rollout(tmp_path / "b", good=OLD, delay=0)
    with pytest.raises(ProvisionError):
        r2.apply(new2, timeout=2)
    assert not r2.pending.exists()


def test_power_cut_during_the_trial_is_undone_at_boot(tmp_path: Path) -> None:
    r, router, new, _, _ = rollout(tmp_path, good=NEW, delay=100)

    def power_cut() -> bool:
        raise SystemExit("the lights go out")  # nothing after this runs (no restore either)

    r.probe = power_cut
    r._restore = lambda had_old: None  # a power cut leaves no time to restore
    with pytest.raises(SystemExit):
        r.apply(new, timeout=30)
    assert r.config.read_bytes() == NEW and r.pending.exists() and router.restarts == [NEW]
    # Boot: the oneshot runs before the gateway.
    message = r.recover()
    assert "previous restored" in message
    assert r.config.read_bytes() == OLD and not r.pending.exists()
    assert r.recover() == ""  # once


def test_killed_agent_puts_the_old_config_back(tmp_path: Path) -> None:
    r, router, new, _, _ = rollout(tmp_path, good=NEW, delay=100)

    def killed() -> bool:
        raise SystemExit(143)  # the agent's SIGTERM handler

    r.probe = killed
    with pytest.raises(SystemExit):
        r.apply(new, timeout=30)
    assert r.config.read_bytes() == OLD and not r.pending.exists()
    assert router.restarts == [NEW, OLD]


def test_the_new_config_keeps_the_old_files_mode(tmp_path: Path) -> None:
    """The config holds the wallet's secret: 0640 stays 0640, whatever the upload's mode."""
    r, _, new, _, _ = rollout(tmp_path, good=NEW, delay=0)
    r.config.chmod(0o640)
    new.chmod(0o666)
    r.apply(new, timeout=5)
    assert r.config.stat().st_mode & 0o777 == 0o640
    (tmp_path / "b").mkdir()
    first, _, new2, _, _ = rollout(tmp_path / "b", good=NEW, delay=0)
    first.config.unlink()
    first.apply(new2, timeout=5)
    assert first.config.stat().st_mode & 0o777 == 0o640
