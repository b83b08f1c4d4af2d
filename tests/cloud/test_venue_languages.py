"""Venue texts in both languages in the cloud: validation of the language maps (old plain
strings still valid), the dashboard editor's Chinese fields round-trip, and push messages in
the venue's default language."""

from __future__ import annotations

import copy
import re
from types import SimpleNamespace
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from cloud import db as cloud_db
from cloud.models import Venue
from cloud.push.presence_push import wallet_message, webpush_payload
from cloud.venue_config import ConfigError, default_config, validate_config
from tests.cloud.conftest import Router
from tests.cloud.dashboard_helpers import editor_form, text


def config_with(**branding: Any) -> dict[str, Any]:
    config = default_config()
    config["branding"].update(branding)
    return config


def test_plain_strings_from_before_languages_stay_valid() -> None:
    config = config_with(name=" Plaza Café ", terms="Be kind.")
    config["offers"] = [{"id": "o1", "title": "Two for one", "body": "", "url": ""}]
    checked = validate_config(config)
    assert (
        checked["branding"]["name"] == "Plaza Café" and checked["branding"]["terms"] == "Be kind."
    )
    assert checked["offers"][0]["title"] == "Two for one"
    assert checked["default_language"] == "en"  # a config without one: English
    old = copy.deepcopy(config)
    del old["default_language"]  # as stored before languages
    assert validate_config(old) == checked


def test_language_maps_are_checked_and_normalised() -> None:
    config = config_with(
        name={
            "EN": " Plaza Café ",
            "zh-cn": "广场咖啡",
        },
        terms={"en": "", "zh-CN": ""},
    )
    config["offers"] = [{"id": "o1", "title": {"zh-CN": "买一送一"}, "body": {"en": "  "}}]
    config["default_language"] = "ZH-cn"
    checked = validate_config(config)
    assert checked["branding"]["name"] == {"en": "Plaza Café", "zh-CN": "广场咖啡"}
    assert checked["branding"]["terms"] == ""  # written in no language: none
    assert checked["offers"][0]["title"] == {"zh-CN": "买一送一"}
    assert checked["offers"][0]["body"] == ""
    assert checked["default_language"] == "zh-CN"
    assert validate_config(checked) == checked  # stored form is valid as it is


@pytest.mark.parametrize(
    ("name", "title", "error"),
    [
        ({"fr": "Café"}, "x", "branding.name: unknown language 'fr'; expected one of en, zh-CN"),
        ({}, "x", "branding.name: must be text of 1 to 80 characters in at least one language"),
        ({"en": " ", "zh-CN": ""}, "x", "branding.name: must be text of 1 to 80 characters"),
        ({"zh-CN": "广" * 81}, "x", "branding.name.zh-CN: must be text of 0 to 80 characters"),
        ({"en": "a", "EN": "b"}, "x", "branding.name: language en given twice"),
        ({"en": 5}, "x", "branding.name.en: must be text"),
        (["Plaza"], "x", "branding.name: must be text, or an object of language to text"),
        ("Plaza", {"zh-CN": "好\x00"}, "offers[0].title.zh-CN: must not contain NUL"),
        ("Plaza", {"zh-CN": ""}, "offers[0].title: must be text of 1 to 120 characters"),
        ("Plaza", {"zh-TW": "好"}, "offers[0].title: unknown language 'zh-TW'"),
    ],
)
def test_bad_language_maps_are_refused_naming_the_field(name: Any, title: Any, error: str) -> None:
    config = config_with(name=name)
    config["offers"] = [{"id": "o1", "title": title}]
    with pytest.raises(ConfigError) as refused:
        validate_config(config)
    assert str(refused.value).startswith(error)


def test_an_unknown_default_language_is_refused() -> None:
    with pytest.raises(ConfigError, match="default_language: must be one of en, zh-CN"):
        validate_config({**default_config(), "default_language": "fr"})


def test_editor_round_trips_both_languages(
    app: Flask, signed_in: FlaskClient, router: Router, venue: Venue
) -> None:
    html = text(signed_in.get(f"/dashboard/venues/{venue.id}/editor"))
    for field in ("name_zh", "terms_zh", "new-title_zh", "new-body_zh"):
        assert re.search(rf'id="{field}" name="{field}" lang="zh-CN"', html), field
    assert re.search(r'id="name" name="name" lang="en"', html)
    form = editor_form(signed_in, venue.id)
    assert form["name"] == "Cafe Uno Main St" and form["name_zh"] == ""  # a plain old name
    form.update({"name_zh": "咖啡一号", "terms_zh": "文明上网。", "default_language": "zh-CN",
                 "new-title": "Two for one", "new-title_zh": "买一送一",
                 "new-body_zh": "仅限今天。"})  # fmt: skip
    assert signed_in.post(f"/dashboard/venues/{venue.id}/editor", data=form).status_code == 303
    config = router.get("/api/v1/device/config").get_json()["config"]
    assert config["default_language"] == "zh-CN"
    assert config["branding"]["name"] == {"en": "Cafe Uno Main St", "zh-CN": "咖啡一号"}
    assert config["branding"]["terms"] == {"zh-CN": "文明上网。"}
    [offer] = config["offers"]
    assert (offer["title"], offer["body"]) == ({"en": "Two for one", "zh-CN": "买一送一"},
                                               {"zh-CN": "仅限今天。"})  # fmt: skip
    # Shown again in the right fields, and an unchanged save keeps every language.
    form = editor_form(signed_in, venue.id)
    assert (form["name_zh"], form["terms_zh"], form["terms"]) == ("咖啡一号", "文明上网。", "")
    assert (form["offer-0-title_zh"], form["offer-0-body_zh"]) == ("买一送一", "仅限今天。")
    html = text(signed_in.get(f"/dashboard/venues/{venue.id}/editor"))
    assert '<option value="zh-CN" selected>' in html
    assert signed_in.post(f"/dashboard/venues/{venue.id}/editor", data=form).status_code == 303
    again = router.get("/api/v1/device/config").get_json()["config"]
    assert again["branding"] == config["branding"] and again["offers"] == config["offers"]
    assert again["default_language"] == "zh-CN"  # kept though the form sent no <select>


def test_editor_points_a_chinese_error_at_the_chinese_field(
    app: Flask, signed_in: FlaskClient, venue: Venue
) -> None:
    form = {**editor_form(signed_in, venue.id), "new-title": "Fine", "new-title_zh": "长" * 121}
    response = signed_in.post(f"/dashboard/venues/{venue.id}/editor", data=form)
    assert response.status_code == 400
    html = text(response)
    assert "New offer title (Chinese): must be text of 0 to 120 characters" in html
    assert re.search(r'name="new-title_zh"[^>]*aria-invalid="true"', html)
    assert "长" * 121 in html  # the input is kept
    form = {**editor_form(signed_in, venue.id), "name": " ", "name_zh": ""}
    response = signed_in.post(f"/dashboard/venues/{venue.id}/editor", data=form)
    assert response.status_code == 400
    assert "Venue name: must be text of 1 to 80 characters in at least one language" in text(
        response
    )
    assert re.search(r'name="name"[^>]*aria-invalid="true"', text(response))
    with cloud_db.session(app) as db:
        assert db.get(Venue, venue.id).config_version == 1


def test_push_messages_are_in_the_venues_default_language() -> None:
    config = config_with(name={"en": "Plaza Café", "zh-CN": "广场咖啡"})
    config["offers"] = [{"id": "o1", "title": {"en": "Two for one", "zh-CN": "买一送一"},
                         "body": {"zh-CN": "仅限今天。"}, "url": ""}]  # fmt: skip
    link = "https://wifi.cafe.example/reconnect/t"
    english = wallet_message(validate_config(config), link)
    assert english is not None and english["title"] == "Welcome back to Plaza Café"
    assert english["body"].startswith("Two for one — 仅限今天。")  # no English body: Chinese
    config["default_language"] = "zh-CN"
    chinese = wallet_message(validate_config(config), link)
    assert chinese is not None and chinese["title"] == "欢迎再次光临广场咖啡"
    assert chinese["body"] == "买一送一 — 仅限今天。\n轻点即可连接 Wi-Fi。"
    venue = SimpleNamespace(id="v1", config=validate_config(config))
    payload = webpush_payload(venue, chinese)  # type: ignore[arg-type]
    assert payload["offers"] == [{"id": "o1", "title": "买一送一", "body": "仅限今天。", "url": ""}]
