"""Usage ingestion: validated whole, stored once per (device, key)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select

from cloud import db as cloud_db
from cloud.models import UsageRecord
from plaza.records import USAGE_FIELDS
from tests.cloud.conftest import Router, enrol, new_claim

USAGE = "/api/v1/device/usage"


def record(i: int, session: str = "s1", **changes: Any) -> dict[str, Any]:
    """A record shaped exactly like gateway/stations/outbox.py as_dict()."""
    rec = {
        "key": f"{session}-{i}", "session_id": session, "seq": i, "mac": "02:00:00:00:00:0a",
        "ip": "192.168.50.10", "started_at": 1_800_000_000.0,
        "period_start": 1_800_000_000.0 + 60 * i, "period_end": 1_800_000_060.0 + 60 * i,
        "final": False, "reason": None, "bytes_up": 1000 * i, "packets_up": 10 * i,
        "bytes_down": 5000 * i, "packets_down": 20 * i, "total_bytes_up": 1000 * i,
        "total_bytes_down": 5000 * i,
    }  # fmt: skip
    assert tuple(rec) == USAGE_FIELDS
    return {**rec, **changes}


def stored(app: Flask) -> int:
    with cloud_db.session(app) as db:
        return db.scalar(select(func.count()).select_from(UsageRecord)) or 0


def test_batch_is_stored_with_every_field(app: Flask, router: Router, clock):
    records = [record(i) for i in range(5)] + [record(0, "s2", ip=None, final=True, reason="idle")]
    response = router.post(USAGE, {"records": records})
    assert response.status_code == 200, response.get_json()
    assert response.get_json() == {"accepted": 6, "duplicates": 0}
    with cloud_db.session(app) as db:
        rows = db.scalars(select(UsageRecord).order_by(UsageRecord.id)).all()
        assert [{f: getattr(r, f) for f in USAGE_FIELDS} for r in rows] == records
        assert {r.device_id for r in rows} == {router.device_id}
        assert {r.venue_id for r in rows} == {router.venue_id}
        assert rows[0].received_at == clock()


def test_duplicate_batch_is_stored_once(app: Flask, router: Router):
    batch = {"records": [record(i) for i in range(10)]}
    assert router.post(USAGE, batch).get_json() == {"accepted": 10, "duplicates": 0}
    assert router.post(USAGE, batch).get_json() == {"accepted": 0, "duplicates": 10}
    overlap = {"records": [record(i) for i in range(5, 15)]}
    assert router.post(USAGE, overlap).get_json() == {"accepted": 5, "duplicates": 5}
    assert stored(app) == 15


def test_a_key_resent_with_other_figures_keeps_the_first_and_is_logged(
    app: Flask, router: Router, caplog: pytest.LogCaptureFixture
):
    """A router that forgot a record it had sent (a power cut before its store synced) sends
    the key again with other figures: the first copy stays, and the cloud says so."""
    assert router.post(USAGE, {"records": [record(1), record(2)]}).get_json()["accepted"] == 2
    with caplog.at_level("WARNING", logger="cloud.usage"):
        again = [record(1), record(2, bytes_down=9999, total_bytes_down=9999), record(3)]
        assert router.post(USAGE, {"records": again}).get_json() == {
            "accepted": 1, "duplicates": 2,
        }  # fmt: skip
    warned = [r.getMessage() for r in caplog.records if r.name == "cloud.usage"]
    assert len(warned) == 1 and "resent 1 usage record(s)" in warned[0] and "s1-2" in warned[0]
    with cloud_db.session(app) as db:
        kept = db.scalar(select(UsageRecord).where(UsageRecord.key == "s1-2"))
        assert kept is not None and kept.bytes_down == 10000  # the first copy's figures


def test_same_key_twice_in_one_batch_counts_once(app: Flask, router: Router):
    response = router.post(USAGE, {"records": [record(1), record(1), record(2)]})
    assert response.get_json() == {"accepted": 2, "duplicates": 1}
    assert stored(app) == 2


def test_same_key_from_two_devices_is_two_records(app: Flask, client, clock, venue, router):
    other = enrol(client, clock, new_claim(app, venue.id, clock()))
    assert router.post(USAGE, {"records": [record(1)]}).get_json()["accepted"] == 1
    assert other.post(USAGE, {"records": [record(1)]}).get_json()["accepted"] == 1
    assert stored(app) == 2


def test_empty_batch_is_fine(router: Router):
    assert router.post(USAGE, {"records": []}).get_json() == {"accepted": 0, "duplicates": 0}


BAD_RECORDS = [
    ("missing field", lambda r: r.pop("bytes_up")),
    ("unknown field", lambda r: r.update(extra=1)),
    ("negative counter", lambda r: r.update(bytes_down=-1)),
    ("float counter", lambda r: r.update(packets_up=1.5)),
    ("bool counter", lambda r: r.update(bytes_up=True)),
    ("string counter", lambda r: r.update(total_bytes_up="10")),
    ("counter over 64 bits", lambda r: r.update(bytes_up=2**63)),
    ("long key", lambda r: r.update(key="k" * 65)),
    ("empty key", lambda r: r.update(key="")),
    ("bad mac", lambda r: r.update(mac="02:00:00:00:00")),
    ("bad ip", lambda r: r.update(ip="300.1.1.1")),
    ("final not bool", lambda r: r.update(final=1)),
    ("time not number", lambda r: r.update(period_end="soon")),
    ("period backwards", lambda r: r.update(period_start=1_900_000_000.0)),
    ("long reason", lambda r: r.update(reason="r" * 33)),
    ("NUL in reason", lambda r: r.update(reason="idle\u0000")),
]


@pytest.mark.parametrize("mutate", [m for _, m in BAD_RECORDS], ids=[n for n, _ in BAD_RECORDS])
def test_one_malformed_record_refuses_the_batch(app: Flask, router: Router, mutate):
    records = [record(i) for i in range(5)]
    mutate(records[3])
    response = router.post(USAGE, {"records": records})
    assert response.status_code == 400
    assert response.get_json()["error"].startswith("record 3")
    assert stored(app) == 0


@pytest.mark.parametrize(
    "body", [[], {"records": {}}, {"records": [1]}, {"rows": []}, {"records": [], "more": 1}]
)
def test_malformed_batch_shape_is_400(app: Flask, router: Router, body):
    assert router.post(USAGE, body).status_code == 400
    assert stored(app) == 0


def test_not_json_is_400(router: Router):
    response = router.request("POST", USAGE, raw=b"\xff\xfe not json")
    assert response.status_code == 400
    assert "JSON" in response.get_json()["error"]


def test_more_than_1000_records_is_413(app: Flask, router: Router):
    response = router.post(USAGE, {"records": [record(i) for i in range(1001)]})
    assert response.status_code == 413
    assert stored(app) == 0


def test_exactly_1000_records_is_accepted(app: Flask, router: Router):
    response = router.post(USAGE, {"records": [record(i) for i in range(1000)]})
    assert response.get_json() == {"accepted": 1000, "duplicates": 0}
    assert stored(app) == 1000


def test_body_over_1_mib_is_413(app: Flask, router: Router):
    body = json.dumps({"records": [record(1)], "pad": "x" * (1024 * 1024)}).encode()
    response = router.request("POST", USAGE, raw=body)
    assert response.status_code == 413
    assert "error" in response.get_json()
    assert stored(app) == 0


def test_usage_must_be_signed(app: Flask, client, router: Router):
    response = client.post(USAGE, json={"records": [record(1)]})
    assert response.status_code == 401
    assert stored(app) == 0
