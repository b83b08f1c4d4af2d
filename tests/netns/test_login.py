"""Wallet login through the real gateway, both dialects, every OS probe, and refusals."""

from __future__ import annotations

import json
from collections.abc import Iterator
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import pytest

from lab import probes, shopper
from lab.phone import Phone
from lab.topology import Lab
from lab.wallet.app import approve
from tests.netns.conftest import running_lab

pytestmark = pytest.mark.netns


@pytest.fixture(scope="module", params=["oidc", "alipay"])
def lab(request: pytest.FixtureRequest) -> Iterator[Lab]:
    with running_lab("w", phones=2, wallet_dialect=request.param) as lab:
        yield lab


@pytest.fixture
def phone(lab: Lab) -> Iterator[Phone]:
    control = lab.control()
    for client in control.clients():
        if client["state"] == "authorized":
            control.deauth(client["mac"])
    p = Phone(lab.netns_of("phone1"))
    yield p
    p.close()


def answer(r) -> probes.Answer:
    return probes.Answer(r.status or None, r.body, r.location)


def start(lab: Lab, phone: Phone) -> str:
    """The portal's redirect to the wallet (lab/shopper.py); returns the authorize URL."""
    authorize_url = shopper.start_login(phone, lab.status()["portal_url"])
    assert authorize_url.startswith(lab.status()["wallet_url"])
    return authorize_url


def test_every_probe_before_and_after_wallet_login(lab: Lab, phone: Phone) -> None:
    portal = lab.status()["portal_url"]
    for probe in probes.PROBES:
        r = phone.get(probe.url, extra=("-A", probe.user_agent) if probe.user_agent else ())
        assert probe.rule(answer(r)) == probes.CAPTIVE, probe.os
        assert r.location == portal
    https = phone.get(probes.ANDROID_HTTPS.url, timeout=3)
    assert not https.ok and https.seconds < 1  # fails fast, so Android trusts the HTTP probe
    name, address = probes.WINDOWS_DNS
    from lab.topology import nsexec

    assert nsexec(phone.netns, "getent", "hosts", name).split()[0] == address  # never forged

    shopper.wallet_login(phone, portal)  # raises unless the callback says 303 to /welcome
    for probe in probes.PROBES:
        r = phone.get(probe.url, extra=("-A", probe.user_agent) if probe.user_agent else ())
        assert probe.rule(answer(r)) == probes.ONLINE, probe.os
    assert probes.ANDROID_HTTPS.rule(answer(phone.get(probes.ANDROID_HTTPS.url))) == "online"


def test_capport_api_follows_the_session(lab: Lab, phone: Phone) -> None:
    api = lab.status()["captive_api_url"]
    r = phone.get(api)
    assert r.headers["content-type"] == "application/captive+json"
    assert r.headers["cache-control"] == "private"
    assert json.loads(r.body)["captive"] is True
    shopper.wallet_login(phone, lab.status()["portal_url"])
    doc = json.loads(phone.get(api).body)
    assert doc["captive"] is False and 3500 < doc["seconds-remaining"] <= 3600
    # The other phone, asking the same URL, is still captive: the API keys on the client.
    other = Phone(lab.netns_of("phone2"))
    try:
        assert json.loads(other.get(api).body)["captive"] is True
    finally:
        other.close()


def test_denied_consent_keeps_the_phone_captive(lab: Lab, phone: Phone) -> None:
    r = approve(phone, start(lab, phone), deny=True)
    r = phone.get(r.location)
    assert r.status == 303 and r.location.startswith("/?error=")
    assert lab.control().client(lab.state.phones[0].mac)["state"] == "captive"


def test_forged_state_and_replayed_code_never_authorize(lab: Lab, phone: Phone) -> None:
    back = approve(phone, start(lab, phone)).location
    parts = urlsplit(back)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    forged = urlunsplit(parts._replace(query=urlencode({**query, "state": "forged"})))
    r = phone.get(forged)
    assert r.location == "/?error=login_failed"
    r = phone.get(back)  # the real callback, after the transaction was spent
    assert r.location == "/?error=session_expired"
    # A fresh login whose code is replayed after it was used once.
    back = approve(phone, start(lab, phone)).location
    assert phone.get(back).location == "/welcome"
    phone.logout(lab.status()["portal_url"])
    start(lab, phone)  # a new transaction in the session; the old code must still fail
    r = phone.get(back)
    assert r.location.startswith("/?error=")
    assert lab.control().client(lab.state.phones[0].mac)["state"] == "captive"


def test_unknown_wallet_user_is_refused_at_the_wallet(lab: Lab, phone: Phone) -> None:
    r = approve(phone, start(lab, phone), user="mallory", pin="0000")
    assert r.status == 403
    assert lab.control().client(lab.state.phones[0].mac)["state"] == "captive"


def test_unregistered_redirect_uri_is_refused_by_the_wallet(lab: Lab, phone: Phone) -> None:
    parts = urlsplit(start(lab, phone))
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    query["redirect_uri"] = "https://evil.test/callback"
    r = phone.get(urlunsplit(parts._replace(query=urlencode(query))))
    assert r.status == 400 and "evil.test" not in r.headers.get("location", "")


def test_secrets_never_reach_the_portal_log(lab: Lab, phone: Phone) -> None:
    back = approve(phone, start(lab, phone)).location
    query = {k: v[0] for k, v in parse_qs(urlsplit(back).query).items()}
    secret = query.get("code") or query.get("auth_code")
    assert secret and phone.get(back).location == "/welcome"
    log = (lab.run_dir / "router-portal.log").read_text()
    assert secret not in log and query["state"] not in log


OVERSIZED = """
import socket, sys
s = socket.create_connection((sys.argv[1], 80), timeout=5)
s.sendall(sys.argv[2].encode().decode("unicode_escape").encode("latin-1") * int(sys.argv[3]))
try:
    print(s.recv(200).split(b"\\r\\n")[0].decode("latin-1") or "closed")
except OSError as exc:
    print("reset", type(exc).__name__)
"""


@pytest.mark.parametrize(
    ("payload", "repeat"),
    [
        ("GET / HTTP/1.1\\r\\nHost: www.example.test\\r\\nX-Big: " + "a" * 1000, 200),  # ~200 KB
        ("\\x00\\xff\\x16\\x03garbage\\r\\n\\r\\n", 1),
        ("GET /" + "x" * 70000 + " HTTP/1.1\\r\\n\\r\\n", 1),
    ],
    ids=["huge-header", "garbage", "huge-url"],
)
def test_oversized_or_malformed_requests_are_refused(
    lab: Lab, phone: Phone, payload: str, repeat: int
) -> None:
    import subprocess
    import sys

    out = subprocess.run(
        ["ip", "netns", "exec", phone.netns, sys.executable, "-c", OVERSIZED,
         "192.0.2.80", payload, str(repeat)],
        capture_output=True, text=True, timeout=20,
    ).stdout.strip()  # fmt: skip
    assert not out.startswith("HTTP/1.1 302") and not out.startswith("HTTP/1.1 200"), out
    assert lab.control().client(lab.state.phones[0].mac)["state"] == "captive"
    r = phone.get("http://www.example.test/")  # the intercept still serves everyone else
    assert r.status == 302
