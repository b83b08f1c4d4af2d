"""Presence events, shopper links and the join hook that push will use."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask
from sqlalchemy import func, select

from cloud import db as cloud_db
from cloud import presence
from cloud.models import PresenceEvent, ShopperLink, Venue
from tests.cloud.conftest import Router, opt_in_event

PRESENCE = "/api/v1/device/presence"
MAC = "02:00:00:00:00:0b"


@pytest.fixture
def joins() -> Iterator[list[tuple[str, str, str]]]:
    seen: list[tuple[str, str, str]] = []

    def hook(venue: Venue, link: ShopperLink) -> None:
        seen.append((venue.id, link.mac, link.wallet_user))

    presence.register_join_hook(hook)
    yield seen
    presence.JOIN_HOOKS.remove(hook)


def event(key: str, kind: str, at: float, mac: str = MAC, **extra) -> dict:
    return {"key": key, "kind": kind, "mac": mac, "at": at, **extra}


def links(app: Flask) -> list[tuple[str, str, bool]]:
    with cloud_db.session(app) as db:
        rows = db.scalars(select(ShopperLink)).all()
        return [(r.mac, r.wallet_user, r.opted_in) for r in rows]


def test_events_are_stored_once(app: Flask, router: Router, clock):
    batch = {"events": [event("e1", "join", clock()), event("e2", "leave", clock() + 60)]}
    assert router.post(PRESENCE, batch).get_json() == {"accepted": 2, "duplicates": 0, "refused": 0}
    assert router.post(PRESENCE, batch).get_json() == {"accepted": 0, "duplicates": 2, "refused": 0}
    with cloud_db.session(app) as db:
        assert db.scalar(select(func.count()).select_from(PresenceEvent)) == 2


def test_login_with_opt_in_links_and_a_later_join_fires_the_hook(app, router, clock, joins):
    t = clock()
    login = opt_in_event("e1", t, "wallet|alice")
    assert router.post(PRESENCE, {"events": [login]}).status_code == 200
    assert links(app) == [(MAC, "wallet|alice", True)]
    assert joins == []
    assert router.post(PRESENCE, {"events": [event("e2", "join", t + 3600)]}).status_code == 200
    assert joins == [(router.venue_id, MAC, "wallet|alice")]
    # A resent join is a duplicate: no second push.
    router.post(PRESENCE, {"events": [event("e2", "join", t + 3600)]})
    assert len(joins) == 1


def test_login_upserts_the_link(app: Flask, router: Router, clock):
    t = clock()
    router.post(PRESENCE, {"events": [opt_in_event("e1", t, "u1")]})
    router.post(PRESENCE, {"events": [opt_in_event("e2", t + 1, "u2")]})
    assert links(app) == [(MAC, "u2", True)]


def test_login_without_opt_in_links_nothing_and_withdraws(app, router, clock, joins):
    t = clock()
    router.post(PRESENCE, {"events": [event("e0", "login", t, wallet_user="u1", opt_in=False)]})
    assert links(app) == []
    router.post(PRESENCE, {"events": [opt_in_event("e1", t, "u1")]})
    router.post(PRESENCE, {"events": [event("e2", "login", t + 5, wallet_user="u1", opt_in=False)]})
    assert links(app) == [(MAC, "u1", False)]
    router.post(PRESENCE, {"events": [event("e3", "join", t + 99)]})
    assert joins == []


def test_join_of_unlinked_mac_fires_nothing(router: Router, clock, joins):
    router.post(PRESENCE, {"events": [event("e1", "join", clock(), mac="02:00:00:00:00:ff")]})
    assert joins == []


def test_join_before_login_in_one_batch_is_not_a_return(router: Router, clock, joins):
    t = clock()
    batch = [event("e1", "join", t), opt_in_event("e2", t + 5, "u")]
    router.post(PRESENCE, {"events": batch})
    assert joins == []


def test_failing_hook_loses_no_event(app: Flask, router: Router, clock, joins):
    def broken(_venue: Venue, _link: ShopperLink) -> None:
        raise RuntimeError("push service down")

    presence.JOIN_HOOKS.insert(0, broken)
    try:
        t = clock()
        router.post(PRESENCE, {"events": [opt_in_event("e1", t, "u")]})
        response = router.post(PRESENCE, {"events": [event("e2", "join", t + 10)]})
    finally:
        presence.JOIN_HOOKS.remove(broken)
    assert response.status_code == 200
    assert joins == [(router.venue_id, MAC, "u")]  # the next hook still ran
    with cloud_db.session(app) as db:
        assert db.scalar(select(func.count()).select_from(PresenceEvent)) == 2


@pytest.mark.parametrize(
    "bad",
    [
        {"key": "e", "kind": "wave", "mac": MAC, "at": 1},
        {"key": "e", "kind": "join", "mac": "nope", "at": 1},
        {"key": "e", "kind": "join", "mac": MAC},
        {"key": "e", "kind": "join", "mac": MAC, "at": 1, "extra": 1},
        {"key": "e", "kind": "login", "mac": MAC, "at": 1, "opt_in": True},
        {"key": "e", "kind": "login", "mac": MAC, "at": 1, "opt_in": "yes", "wallet_user": "u"},
        {"key": "", "kind": "join", "mac": MAC, "at": 1},
    ],
)
def test_bad_event_refuses_the_batch(app: Flask, router: Router, clock, bad):
    response = router.post(PRESENCE, {"events": [event("ok", "join", clock()), bad]})
    assert response.status_code == 400
    assert response.get_json()["error"].startswith("event 1")
    with cloud_db.session(app) as db:
        assert db.scalar(select(func.count()).select_from(PresenceEvent)) == 0


def test_too_many_events_is_413(router: Router, clock):
    events = [event(f"e{i}", "join", clock()) for i in range(1001)]
    assert router.post(PRESENCE, {"events": events}).status_code == 413


def test_nul_in_wallet_user_is_400_not_a_database_error(router: Router, clock):
    bad = event("e1", "login", clock(), wallet_user="a\u0000b", opt_in=True)
    assert router.post(PRESENCE, {"events": [bad]}).status_code == 400
