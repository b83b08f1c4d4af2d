"""Properties of the RFC 8908 API (portal/capport.py): whatever the phone asks and whatever
the gateway answers over the control socket, every phone gets a valid API document (or a 503
when the gateway is down), never a 500: Android and iOS poll it and trust it over probes."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from gateway.config import Config
from gateway.control_client import ControlError
from portal import create_app
from portal.capport import MEDIA_TYPE
from tests.fuzz.jsonvalues import objects, values

CONFIG = Config()
PORTAL = CONFIG.portal.url


class Control:
    """The gateway as the portal sees it, answering `client` with whatever it was given."""

    answer: Any = None

    def client(self, who: str) -> Any:
        if isinstance(self.answer, ControlError):
            raise self.answer
        return self.answer


CONTROL = Control()
APP = create_app(
    {"TESTING": True, "PLAZA_CONFIG": CONFIG, "CONTROL": CONTROL, "SECRET_KEY": "test"}
)

views = st.one_of(
    values,
    objects,
    st.fixed_dictionaries(
        {"state": st.sampled_from(["authorized", "captive", "blocked", ""]) | values},
        optional={
            "seconds_remaining": st.one_of(st.integers(), st.floats(), values),
            "bytes_remaining": st.one_of(st.integers(), st.floats(), values),
            "mac": values,
        },
    ),
    st.builds(ControlError, st.sampled_from(["not a client: x", "the gateway is not running"])),
)


@given(
    views,
    st.sampled_from(["198.19.0.100", "fe80::1", "", "not-an-ip"]),
    st.dictionaries(
        st.sampled_from(["Accept", "Accept-Language", "If-None-Match", "X-Forwarded-For"]),
        st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40),
        max_size=3,
    ),
)
@example({"state": "authorized", "seconds_remaining": "600"}, "198.19.0.100", {})
@example({"state": "authorized", "seconds_remaining": float("inf")}, "198.19.0.100", {})
@example({"state": "authorized", "bytes_remaining": -5}, "198.19.0.100", {})
@example(["authorized"], "198.19.0.100", {})
def test_every_phone_gets_a_document_or_a_503(
    view: Any, remote: str, headers: dict[str, str]
) -> None:
    CONTROL.answer = view
    response = APP.test_client().get(
        "/api/captive",
        base_url=PORTAL,
        headers=headers,
        environ_overrides={"REMOTE_ADDR": remote, "SERVER_PORT": "80"},
    )
    if response.status_code == 503:
        assert isinstance(view, ControlError) and "not running" in str(view)
        assert "error" in json.loads(response.data)
        return
    assert response.status_code == 200, (view, response.status_code)
    assert response.mimetype == MEDIA_TYPE
    assert "private" in response.headers["Cache-Control"]
    doc = json.loads(response.data)
    authorized = isinstance(view, dict) and view.get("state") == "authorized"
    assert doc["captive"] is (not authorized)
    assert doc["user-portal-url"] == PORTAL and doc["venue-info-url"] == PORTAL + "venue"
    for key in ("seconds-remaining", "bytes-remaining"):
        if key in doc:
            assert authorized and isinstance(doc[key], int) and doc[key] >= 0
    assert set(doc) <= {
        "captive", "user-portal-url", "venue-info-url", "seconds-remaining",
        "bytes-remaining", "can-extend-session",
    }  # fmt: skip
