"""Every OS probe: the intercept makes it say "captive", the real probe host "online"."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from lab import internet
from lab.probes import CAPTIVE, OFFLINE, ONLINE, PROBES, Answer, _generate_204
from portal import create_app
from tests.fakes.control import FakeControl
from tests.unit.conftest import MakeConfig


def answer(resp) -> Answer:
    return Answer(resp.status_code, resp.get_data(as_text=True), resp.headers.get("Location", ""))


@pytest.fixture(scope="module")
def fake_internet():
    return internet.create_app().test_client()


@pytest.fixture
def portal(make_config: MakeConfig):
    config = make_config()
    app = create_app({"PLAZA_CONFIG": config, "CONTROL": FakeControl(), "SECRET_KEY": "k" * 32})
    return app.test_client()


@pytest.mark.parametrize("probe", PROBES, ids=lambda p: p.os)
def test_probe_is_captive_before_and_online_after(probe, fake_internet, portal) -> None:
    url = urlsplit(probe.url)
    headers = {"Host": url.hostname, "User-Agent": probe.user_agent}
    intercepted = portal.get(url.path, headers=headers, environ_overrides={"SERVER_PORT": "8080"})
    assert probe.rule(answer(intercepted)) == CAPTIVE
    assert intercepted.headers["Cache-Control"] == "no-store"
    assert len(intercepted.get_data()) > 4  # never an empty 200-like answer
    real = fake_internet.get(url.path, headers=headers)
    assert probe.rule(answer(real)) == ONLINE


def test_generate_204_rules_from_android() -> None:
    assert _generate_204(Answer(204)) == ONLINE
    assert _generate_204(Answer(302, "x" * 100, "https://p/")) == CAPTIVE
    assert _generate_204(Answer(200, "")) == OFFLINE  # an empty 200 is a failed probe
    assert _generate_204(Answer(200, "ok")) == OFFLINE
    assert _generate_204(Answer(None)) == OFFLINE


def test_every_probe_host_is_served_by_the_fake_internet() -> None:
    hosts = set(internet.all_hosts())
    assert all(urlsplit(p.url).hostname in hosts for p in PROBES)
