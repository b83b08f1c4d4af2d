"""Properties of the cloud's device API: request signatures (plaza/signing.py, checked by
cloud/auth_device.py) and the usage, presence and heartbeat bodies a router sends.

A router is a box in a shop: it may be rooted, and its requests are outside bytes until its
signature checks out, and still untrusted after. Whatever it sends, the cloud answers with a
JSON error of its own (400, 401, 409, 413) or takes it; never a 500, never a half-stored batch.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import example, given
from hypothesis import strategies as st

from cloud import create_app, migrations, presence, usage
from cloud import db as cloud_db
from cloud.accounts import create_merchant, create_venue
from cloud.enrol import create_claim
from plaza import signing
from tests.conftest import FakeClock
from tests.fuzz.jsonvalues import deep, mutated, objects, spaced, values

NOW = 1_800_000_000
MAC = "02:50:4c:00:00:01"


def record(i: int = 0) -> dict:
    return {
        "key": f"s1-{i}", "session_id": "s1", "seq": i, "mac": MAC, "ip": "198.19.0.100",
        "final": False, "reason": None, "started_at": NOW, "period_start": NOW + i,
        "period_end": NOW + i + 1, "bytes_up": 10, "packets_up": 1, "bytes_down": 1000,
        "packets_down": 2, "total_bytes_up": 10 * (i + 1), "total_bytes_down": 1000 * (i + 1),
    }  # fmt: skip


def event(i: int = 0, kind: str = "join") -> dict:
    return {"key": f"p-{i}", "kind": kind, "mac": MAC, "at": NOW + i}


# -- the validators, called directly ------------------------------------------------------------
@given(values)
@example({"records": [{**record(), "period_end": 10**400}]})  # regression: OverflowError
@example({"records": [{**record(), "started_at": -(10**400)}]})
def test_any_usage_body_is_records_or_a_batch_error(body: object) -> None:
    try:
        records = usage.validate_batch(body)
    except usage.BatchError as exc:
        assert exc.status in (400, 413) and "\n" not in str(exc)
        return
    assert isinstance(body, dict) and records is body["records"]


@given(st.integers(1, 20), st.data())
def test_a_usage_batch_with_one_field_changed(n: int, data: st.DataObject) -> None:
    """A good batch is taken whole; with one field of one record replaced by any JSON value,
    it is refused whole (naming that record) or still good."""
    records = [record(i) for i in range(n)]
    assert usage.validate_batch({"records": copy.deepcopy(records)}) == records
    i = data.draw(st.integers(0, n - 1))
    name = data.draw(st.sampled_from(sorted(records[i])))
    records[i][name] = data.draw(values)
    try:
        usage.validate_batch({"records": records})
    except usage.BatchError as exc:
        assert str(exc).startswith(f"record {i}")


@given(values)
@example({"events": [{**event(), "at": 10**400}]})  # regression: OverflowError (via JSON: 400)
def test_any_presence_body_is_events_or_a_presence_error(body: object) -> None:
    try:
        events = presence.validate_events(body)
    except presence.PresenceError as exc:
        assert exc.status in (400, 413)
        return
    assert isinstance(body, dict) and events is body["events"]


@given(st.integers(1, 20), st.data())
def test_a_presence_batch_with_one_field_changed(n: int, data: st.DataObject) -> None:
    events = [event(i, kind) for i, kind in zip(range(n), ["join", "leave"] * n, strict=False)]
    assert presence.validate_events({"events": copy.deepcopy(events)}) == events
    i = data.draw(st.integers(0, n - 1))
    events[i][data.draw(st.sampled_from(sorted(events[i])))] = data.draw(values)
    try:
        presence.validate_events({"events": events})
    except presence.PresenceError as exc:
        assert str(exc).startswith(f"event {i}")


# -- request signatures -------------------------------------------------------------------------
KEY = signing.new_key()
PUBLIC = KEY.public_key()
PATH = "/api/v1/device/usage"


@given(st.binary(max_size=200), st.sampled_from(["GET", "POST"]))
def test_a_signed_request_verifies(body: bytes, method: str) -> None:
    headers = signing.sign_request(KEY, "dev_0123456789abcdef", method, PATH, body, NOW)
    assert signing.verify_request(PUBLIC, headers, method, PATH, body, NOW + 1)[0] == NOW


header_text = st.one_of(
    st.text(max_size=80),
    st.from_regex(r"[0-9]{1,400}", fullmatch=True),
    st.sampled_from([" 1800000000", "1_800_000_000", "١٨٠٠٠٠٠٠٠٠", "1800000000\n", "-0", ""]),
)


@given(
    st.sampled_from(signing.HEADERS[1:]),
    header_text,
    st.binary(max_size=100),
)
@example("X-Plaza-Timestamp", "9" * 400, b"")  # regression: OverflowError, a 500
@example("X-Plaza-Timestamp", "1_800_000_000", b"")  # int() took it; the signature did not
def test_a_changed_header_is_a_signature_error(name: str, value: str, body: bytes) -> None:
    headers = signing.sign_request(KEY, "dev_0123456789abcdef", "POST", PATH, body, NOW)
    if headers[name] == value:
        return
    headers[name] = value
    with pytest.raises(signing.SignatureError):
        signing.verify_request(PUBLIC, headers, "POST", PATH, body, NOW)


@given(st.binary(max_size=100), st.data())
def test_a_changed_body_path_or_method_is_a_signature_error(
    body: bytes, data: st.DataObject
) -> None:
    headers = signing.sign_request(KEY, "dev_0123456789abcdef", "POST", PATH, body, NOW)
    which = data.draw(st.sampled_from(["body", "path", "method"]))
    args = {"method": "POST", "path": PATH, "body": body}
    changed = data.draw(
        st.binary(max_size=100) if which == "body" else st.text(min_size=1, max_size=40)
    )
    if changed == args[which] or (which == "method" and str(changed).upper() == "POST"):
        return
    args[which] = changed
    with pytest.raises(signing.SignatureError):
        signing.verify_request(PUBLIC, headers, args["method"], args["path"], args["body"], NOW)


# -- through the app: never a 500 ---------------------------------------------------------------
@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Flask, FlaskClient, dict]]:
    """One app on SQLite for the module (hypothesis runs many examples per test) and one
    enrolled router: (app, client, its identity)."""
    tmp: Path = tmp_path_factory.mktemp("fuzz-cloud")
    url = f"sqlite:///{tmp / 'cloud.db'}"
    migrations.upgrade(url)
    clock = FakeClock(NOW)
    app = create_app(
        {"DATABASE_URL": url, "INSTANCE_PATH": str(tmp / "instance"), "SECRET_KEY": "test",
         "CLOCK": clock, "TESTING": True, "COMMAND_POLL_SECONDS": 0.05},
    )  # fmt: skip
    with cloud_db.session(app) as db:
        merchant = create_merchant(db, "Fuzz", "fuzz@shop.example", "password-123", NOW)
        venue = create_venue(db, merchant.id, "Fuzz Cafe", NOW)
        code = create_claim(db, venue.id, NOW)
        db.commit()
    client = app.test_client()
    answer = client.post(
        "/api/v1/enrol",
        json={"claim_code": code, "public_key": signing.public_b64(KEY),
              "hostname": "fuzz", "version": "0"},
    )  # fmt: skip
    assert answer.status_code == 201, answer.get_json()
    yield app, client, {"device_id": answer.get_json()["device_id"]}
    cloud_db.engine(app).dispose()


def post(cloud: tuple, path: str, body: bytes, **header_changes: str) -> Any:
    _, client, router = cloud
    headers = signing.sign_request(KEY, router["device_id"], "POST", path, body, NOW)
    headers.update(header_changes)
    headers["Content-Type"] = "application/json"
    return client.post(path, data=body, headers=headers)


def check_answer(response: Any, ok: tuple[int, ...] = (200,)) -> None:
    assert response.status_code in (*ok, 400, 401, 409, 413), response.status_code
    if response.status_code >= 400:
        error = response.get_json()["error"]
        assert isinstance(error, str) and "\n" not in error


ENDPOINTS = ["/api/v1/device/heartbeat", "/api/v1/device/usage", "/api/v1/device/presence"]
bodies = st.one_of(
    st.binary(max_size=300),
    values.map(lambda v: json.dumps(v).encode()),
    objects.flatmap(spaced).flatmap(mutated).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.builds(
        lambda r, v: json.dumps({"records": [{**record(), **r}]}).replace('"__v__"', v).encode(),
        st.dictionaries(st.sampled_from(sorted(record())), st.just("__v__"), max_size=1),
        st.sampled_from(["1" * 400, "1" * 5000, "-" + "9" * 30, "1e400", "NaN", "-Infinity"]),
    ),
)


@given(st.sampled_from(ENDPOINTS), bodies)
@example(ENDPOINTS[1], ('{"records":' + deep() + "}").encode())  # regression: RecursionError
@example(ENDPOINTS[1], b'{"records":[' + b"1" * 5000 + b"]}")  # regression: ValueError
@example(ENDPOINTS[2], b'{"events":[{"key":"k","kind":"join","mac":"02:00:00:00:00:01","at":1'
         + b"0" * 400 + b"}]}")  # fmt: skip
@example(ENDPOINTS[0], b'{"uptime":1' + b"0" * 4400 + b"}")
def test_any_signed_body_gets_an_answer_never_a_500(cloud: tuple, path: str, body: bytes) -> None:
    check_answer(post(cloud, path, body))


@given(st.sampled_from(signing.HEADERS), header_text)
@example("X-Plaza-Timestamp", "9" * 400)  # regression: OverflowError, a 500
def test_any_signature_header_gets_an_answer_never_a_500(
    cloud: tuple, name: str, value: str
) -> None:
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return  # not an HTTP header value
    if "\n" in value or "\r" in value:
        return
    response = post(cloud, ENDPOINTS[0], b"{}", **{name: value})
    check_answer(response)


def test_overflow_numbers_are_refused_at_the_json_boundary(cloud: tuple) -> None:
    """Regressions, each a 500 before: a number too long for int() (ValueError, not a
    JSONDecodeError), JSON nested past the recursion limit, a usage time or a presence `at`
    beyond a float (math.isfinite raised OverflowError), a timestamp header of 400 digits."""
    huge = "1" + "0" * 400
    usage_body = json.dumps({"records": [record()]}).replace(str(NOW + 1), huge, 1)
    events = json.dumps({"events": [event()]}).replace(str(NOW), huge, 1)
    for path, body in [
        (ENDPOINTS[1], b'{"records":[' + b"1" * 5000 + b"]}"),
        (ENDPOINTS[1], ('{"records":' + deep() + "}").encode()),
        (ENDPOINTS[1], usage_body.encode()),
        (ENDPOINTS[2], events.encode()),
    ]:
        response = post(cloud, path, body)
        assert response.status_code == 400, (path, body[:40], response.status_code)
        assert "not JSON" in response.get_json()["error"]
    response = post(cloud, ENDPOINTS[0], b"{}", **{"X-Plaza-Timestamp": "9" * 400})
    assert response.status_code == 401
