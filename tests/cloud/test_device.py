"""Heartbeat and the venue's cloud-managed config."""

from __future__ import annotations

import copy

import pytest
from flask import Flask

from cloud import db as cloud_db
from cloud.models import Device, Venue
from cloud.venue_config import DEFAULT_CONFIG, ConfigError, set_venue_config, validate_config
from tests.cloud.conftest import Router

HB = "/api/v1/device/heartbeat"
CONFIG = "/api/v1/device/config"
HEALTH = {
    "uptime": 3600, "load": [0.1, 0.2, 0.3], "mem_used_bytes": 10_000_000,
    "mem_total_bytes": 128_000_000, "clients": {"captive": 3, "authorized": 7},
    "version": "0.4.1", "config_version": 1, "outbox_backlog": 0,
}  # fmt: skip


def good_config() -> dict:
    config = copy.deepcopy(DEFAULT_CONFIG)
    config["branding"] = {"name": "Cafe Uno", "logo_url": "https://cdn.cafe.example/logo.png",
                          "colour": "#AA3300", "terms": "Be nice."}  # fmt: skip
    config["offers"] = [{"id": "coffee-2for1", "title": "Two for one", "body": "Until noon",
                         "url": "https://cafe.example/offer"}]  # fmt: skip
    config["policy"]["session_minutes"] = 90
    config["garden"]["domains"] = ["Cafe.Example", "*.cdn.cafe.example", "*.cafe-uno.co.uk"]
    return config


def test_heartbeat_stores_health_and_answers_time_and_version(app: Flask, router: Router, clock):
    response = router.post(HB, {**HEALTH, "future_field": "ignored"})
    assert response.status_code == 200
    assert response.get_json() == {"time": int(clock()), "config_version": 1}
    with cloud_db.session(app) as db:
        device = db.get(Device, router.device_id)
        assert device.last_heartbeat_at == clock()
        assert device.health == HEALTH  # the unknown field is dropped
        assert device.version == "0.4.1"


@pytest.mark.parametrize(
    "bad",
    [
        {"uptime": -1},
        {"load": [1, 2]},
        {"clients": {"captive": -1}},
        {"uptime": True},
        {"mem_used_bytes": "lots"},
        {"version": "0.4\u0000"},
    ],
)
def test_bad_heartbeat_is_400_and_not_stored(app: Flask, router: Router, bad):
    assert router.post(HB, bad).status_code == 400
    with cloud_db.session(app) as db:
        assert db.get(Device, router.device_id).last_heartbeat_at is None


def test_config_etag_and_304(router: Router, venue: Venue):
    first = router.get(CONFIG)
    assert first.status_code == 200
    body = first.get_json()
    assert body["version"] == 1
    assert body["config"]["branding"]["name"] == "Cafe Uno Main St"
    assert first.headers["ETag"] == '"1"'
    same = router.get(CONFIG, extra={"If-None-Match": '"1"'})
    assert same.status_code == 304
    assert same.data == b""


def test_config_change_bumps_version_heartbeat_and_etag(app: Flask, router: Router, venue):
    with cloud_db.session(app) as db:
        assert set_venue_config(db, venue.id, good_config()) == 2
        db.commit()
    assert router.post(HB, HEALTH).get_json()["config_version"] == 2
    stale = router.get(CONFIG, extra={"If-None-Match": '"1"'})
    assert stale.status_code == 200
    body = stale.get_json()
    assert body["version"] == 2
    assert body["config"]["offers"][0]["id"] == "coffee-2for1"
    assert body["config"]["branding"]["colour"] == "#aa3300"
    assert body["config"]["garden"]["domains"] == [
        "cafe.example",
        "*.cdn.cafe.example",
        "*.cafe-uno.co.uk",
    ]
    assert router.get(CONFIG, extra={"If-None-Match": '"2"'}).status_code == 304


def test_set_venue_config_unknown_venue(app: Flask, venue):
    with cloud_db.session(app) as db, pytest.raises(ConfigError, match="no venue"):
        set_venue_config(db, "ven_0000000000000000", good_config())


def _bad(path: str, value) -> dict:
    config = good_config()
    *parents, last = path.split(".")
    node = config
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    node[last] = value
    return config


BAD_CONFIGS = [
    ("branding.name", "", "branding.name"),
    ("branding.colour", "red", "branding.colour"),
    ("branding.logo_url", "http://cafe.example/logo.png", "branding.logo_url"),
    ("branding.extra", 1, "unknown key"),
    ("offers.0.url", "javascript:alert(1)", "offers[0].url"),
    ("offers.0.url", "http://cafe.example/", "offers[0].url"),
    ("offers.0.id", "has space", "offers[0].id"),
    ("offers.0.title", "", "offers[0].title"),
    ("policy.session_minutes", 0, "policy.session_minutes"),
    ("policy.session_minutes", 99_999, "policy.session_minutes"),
    ("policy.idle_minutes", -1, "policy.idle_minutes"),
    ("policy.rate_down_kbit", "fast", "policy.rate_down_kbit"),
    ("policy.quota_total_mb", True, "policy.quota_total_mb"),
    ("garden.domains", ["exa mple.com"], "garden.domains"),
    ("garden.domains", ["-bad.example"], "garden.domains"),
    ("garden.domains", ["*.com"], "garden.domains"),
    ("garden.domains", ["*.co.uk"], "public suffix co.uk"),
    ("garden.domains", ["*.com.cn"], "public suffix com.cn"),
    ("garden.domains", ["*.github.io"], "public suffix github.io"),
    ("garden.domains", "cafe.example", "garden.domains"),
]


@pytest.mark.parametrize("path,value,message", BAD_CONFIGS)
def test_bad_config_is_refused_naming_the_field(path, value, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        validate_config(_bad(path, value))


def test_bad_config_leaves_version_and_config_alone(app: Flask, venue):
    with cloud_db.session(app) as db:
        with pytest.raises(ConfigError):
            set_venue_config(db, venue.id, _bad("policy.idle_minutes", -5))
        db.rollback()
        stored = db.get(Venue, venue.id)
        assert stored.config_version == 1
        assert stored.config["policy"]["idle_minutes"] == DEFAULT_CONFIG["policy"]["idle_minutes"]


def test_config_rejects_missing_section_and_duplicate_offers():
    config = good_config()
    del config["garden"]
    with pytest.raises(ConfigError, match="missing key 'garden'"):
        validate_config(config)
    config = good_config()
    config["offers"].append(dict(config["offers"][0]))
    with pytest.raises(ConfigError, match="duplicate"):
        validate_config(config)
