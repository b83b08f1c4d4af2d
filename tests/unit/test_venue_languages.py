"""Venue texts in both languages from the cloud: the fallback order (plaza/texts.py) and the
portal's overlay of the cloud's language maps (portal/venue.py), seen on the shopper's pages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gateway.config import Config, OfferConfig, PortalConfig
from plaza.texts import pick
from portal import create_app
from portal.venue import Malformed, overlay
from tests.fakes.control import FakeControl
from tests.portal_helpers import PHONE, PORTAL

ENV = {"REMOTE_ADDR": PHONE, "SERVER_PORT": "80"}
NAME = {"en": "Plaza Café", "zh-CN": "广场咖啡"}
OFFER = {
    "id": "o1",
    "title": {"en": "Two coffees for one", "zh-CN": "咖啡买一送一"},
    "body": {"en": "Today only.", "zh-CN": "仅限今天。"},
    "url": "",
}


@pytest.mark.parametrize(
    ("text", "lang", "default", "shown"),
    [
        (NAME, "zh-CN", "en", "广场咖啡"),  # the exact language
        (NAME, "zh-cn", "en", "广场咖啡"),  # tags are case-insensitive
        (NAME, "zh-TW", "en", "广场咖啡"),  # then the same primary subtag
        (NAME, "en-GB", "zh-CN", "Plaza Café"),
        (NAME, "fr", "zh-CN", "广场咖啡"),  # then the venue's default language
        (NAME, "fr", "en", "Plaza Café"),
        ({"zh-CN": "广场咖啡"}, "en", "en", "广场咖啡"),  # then any language written
        ({"en": "  ", "zh-CN": "广场咖啡"}, "en", "en", "广场咖啡"),  # blank is not written
        ({"xx": "Later cloud"}, "en", "en", "Later cloud"),  # a tag this side does not know
        ("Plain old name", "zh-CN", "en", "Plain old name"),  # the older form: every language
        ({}, "en", "en", ""),  # an optional text written in no language
        (None, "en", "en", ""),
    ],
)
def test_fallback_order(text: Any, lang: str, default: str, shown: str) -> None:
    assert pick(text, lang, default) == shown


def cloud_document(**config: Any) -> dict[str, Any]:
    return {"version": 7, "config": config}


def pages(tmp_path: Path, base: Config, **config: Any) -> Any:
    """A portal whose router holds this cloud config; returns get(path, accept_language)."""
    path = tmp_path / "cloud-config.json"
    path.write_text(json.dumps(cloud_document(**config)))
    control = FakeControl()
    control.clients[PHONE] = {"mac": "02:00:00:00:00:64", "ip": PHONE, "state": "captive",
                              "seconds_remaining": None, "bytes_remaining": None}  # fmt: skip
    app = create_app({"TESTING": True, "PLAZA_CONFIG": base, "CONTROL": control,
                      "SECRET_KEY": "test", "CLOUD_CONFIG_FILE": str(path)})  # fmt: skip
    client = app.test_client()

    def get(page: str, lang: str) -> str:
        resp = client.get(page, base_url=PORTAL, environ_overrides=ENV,
                          headers={"Accept-Language": lang})  # fmt: skip
        assert resp.status_code == 200
        return resp.get_data(as_text=True)

    return get


TOML = Config(
    portal=PortalConfig(merchant_name="TOML Name", merchant_name_zh="路由器名"),
    offers=(OfferConfig(title="TOML offer", title_zh="路由器优惠"),),
)


def test_a_zh_cn_phone_reads_the_clouds_chinese_name_and_offers(tmp_path: Path) -> None:
    get = pages(tmp_path, TOML, branding={"name": NAME, "terms": {"en": "Be kind.",
                "zh-CN": "文明上网。"}}, offers=[OFFER])  # fmt: skip
    splash, venue = get("/", "zh-CN,zh;q=0.9,en;q=0.5"), get("/venue", "zh-CN")
    assert "广场咖啡" in splash and "文明上网。" in splash and "Plaza Café" not in splash
    assert "咖啡买一送一" in venue and "仅限今天。" in venue
    assert "Two coffees for one" not in venue and "路由器" not in venue + splash
    splash, venue = get("/", "en-US"), get("/venue", "en-US")
    assert "Plaza Café" in splash and "Be kind." in splash and "广场咖啡" not in splash
    assert "Two coffees for one" in venue and "咖啡买一送一" not in venue


def test_a_language_the_venue_did_not_write_falls_back_never_empty(tmp_path: Path) -> None:
    english_only = {"id": "o1", "title": {"en": "Two coffees for one"}, "url": ""}
    get = pages(tmp_path, TOML, branding={"name": {"en": "Plaza Café"}}, offers=[english_only])
    assert "Plaza Café" in get("/", "zh-CN") and "Two coffees for one" in get("/venue", "zh-CN")
    # A Chinese-first venue: an English phone reads the Chinese it wrote, not the router's.
    chinese_only = {"id": "o1", "title": {"zh-CN": "咖啡买一送一"}, "url": ""}
    (tmp_path / "zh").mkdir()
    get = pages(tmp_path / "zh", TOML, default_language="zh-CN",
                branding={"name": {"zh-CN": "广场咖啡"}}, offers=[chinese_only])  # fmt: skip
    assert "广场咖啡" in get("/", "en") and "咖啡买一送一" in get("/venue", "en")


def test_an_older_clouds_plain_strings_keep_working(tmp_path: Path) -> None:
    plain = {"id": "o1", "title": "Two coffees for one", "body": "Today only.", "url": ""}
    get = pages(tmp_path, TOML, branding={"name": "Plaza Café"}, offers=[plain])
    for lang in ("en", "zh-CN"):  # one text for every language; no stale TOML translation
        assert "Plaza Café" in get("/", lang) and "路由器名" not in get("/", lang)
        assert "Two coffees for one" in get("/venue", lang)


def test_the_routers_own_chinese_stays_when_the_cloud_sets_no_name(tmp_path: Path) -> None:
    get = pages(tmp_path, TOML, branding={"colour": "#123456"})
    assert "路由器名" in get("/", "zh-CN") and "路由器优惠" in get("/venue", "zh-CN")


def test_overlay_maps_both_portal_languages() -> None:
    effective = overlay(TOML, cloud_document(branding={"name": NAME}, offers=[OFFER]))
    assert (effective.portal.merchant_name, effective.portal.merchant_name_zh) == (
        "Plaza Café",
        "广场咖啡",
    )
    assert effective.offers == (
        OfferConfig(title="Two coffees for one", text="Today only.",
                    title_zh="咖啡买一送一", text_zh="仅限今天。"),
    )  # fmt: skip


@pytest.mark.parametrize(
    "config",
    [
        {"branding": {"name": {"en": 5}}},
        {"branding": {"name": ["Plaza"]}},
        {"branding": {"name": {"en": "x" * 101}}},
        {"offers": [{"id": "o1", "title": {"en": "", "zh-CN": " "}}]},  # a title in no language
        {"offers": [{"id": "o1", "title": {"zh-CN": "好"}, "body": {"zh-CN": 3}}]},
        {"default_language": 7, "branding": {"name": "x"}},
    ],
)
def test_a_malformed_language_map_is_refused_whole(config: dict[str, Any]) -> None:
    with pytest.raises(Malformed):
        overlay(TOML, cloud_document(**config))
