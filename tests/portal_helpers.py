"""The portal as the tests meet it: the phone's address, the portal's URL, the request
environment of the portal port, and a portal app over a fake gateway with a venue's texts.

Kept out of the test modules so tests share them without importing each other
(tests/unit/test_test_modules.py).
"""

from __future__ import annotations

from typing import Any

from flask import Flask

from gateway.config import Config, OfferConfig, PortalConfig, ReconnectConfig
from portal import create_app
from tests.fakes.control import FakeControl

PHONE = "198.19.0.100"
PORTAL = "http://portal.plaza.test/"
ON_PORTAL = {"REMOTE_ADDR": PHONE, "SERVER_PORT": "80"}
ON_INTERCEPT = {"REMOTE_ADDR": PHONE, "SERVER_PORT": "8080"}

OFFERS = (
    OfferConfig(
        title="Free pastry",
        text="With any latte.\nUntil 11:00.",
        title_zh="免费糕点",
        text_zh="购买任意拿铁即送。",
        url="https://example.com/offer?a=1&b=2",
    ),
    OfferConfig(title="10th cup free", text="Collect stamps."),  # no zh, no link
)


def make_app(control: FakeControl, **portal: Any) -> Flask:
    """A portal over `control` with a venue's English and Chinese texts and OFFERS; keyword
    arguments are [portal] settings (and `reconnect`, `offers`)."""
    reconnect = ReconnectConfig(enabled=portal.pop("reconnect", True))
    offers = portal.pop("offers", OFFERS)
    settings: dict[str, Any] = {
        "merchant_name": "Harbour & Co",
        "merchant_name_zh": "港湾咖啡",
        "terms": "Be kind.",
        "terms_zh": "文明上网。",
        "venue_info": "",
        **portal,
    }
    config = Config(portal=PortalConfig(**settings), reconnect=reconnect, offers=offers)
    return create_app(
        {"TESTING": True, "PLAZA_CONFIG": config, "CONTROL": control, "SECRET_KEY": "test"}
    )
