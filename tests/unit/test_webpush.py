"""Web Push end to end on loopback: the cloud's send_webpush against lab.push_receiver, which
checks VAPID with its own JWT code and decrypts the body as the subscribed browser would.

A passing round trip only means something if the receiver refuses what a real push service
refuses, so its checks are tested here too (expired or far-future VAPID tokens, a wrong key,
no TTL, a body that does not decrypt).
"""

from __future__ import annotations

import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from py_vapid import Vapid02
from pywebpush import WebPusher

from cloud.push import PushError, RecipientGone
from cloud.push import webpush as wp
from cloud.push.endpoints import EndpointGuard, guarded_session, parse_networks
from lab.pki import LabCA
from lab.push_receiver import PushReceiver
from plaza.wallet.http import new_session

# The receiver runs on 127.0.0.1, which the cloud refuses by default: allowed explicitly, as
# the lab and the tests do with PUSH_ALLOWED_NETWORKS.
LOOPBACK = EndpointGuard(parse_networks("127.0.0.0/8"))
SUBJECT = "mailto:ops@plaza.test"
OFFER = {
    "title": "Plaza Café",
    "body": "两杯咖啡，一杯的价钱",
    "url": "https://portal.plaza.test/r/x",
}


class ShiftClock:
    """The receiver's clock: real time plus an offset, to play a sender whose clock is off."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> LabCA:
    return LabCA(tmp_path_factory.mktemp("push") / "ca")


@pytest.fixture(scope="module")
def clock() -> ShiftClock:
    return ShiftClock()


@pytest.fixture(scope="module")
def receiver(ca: LabCA, clock: ShiftClock) -> Iterator[PushReceiver]:
    cert, key = ca.issue("push", ["127.0.0.1"])
    with PushReceiver(str(cert), str(key), clock=clock).running() as running:
        yield running


@pytest.fixture(autouse=True)
def _clock_back(clock: ShiftClock) -> Iterator[None]:
    yield
    clock.offset = 0.0


@pytest.fixture(scope="module")
def vapid_key() -> ec.EllipticCurvePrivateKey:
    return wp.generate_vapid_key()


@pytest.fixture
def subscription(receiver: PushReceiver, vapid_key: ec.EllipticCurvePrivateKey) -> dict[str, Any]:
    return receiver.subscribe(wp.application_server_key(vapid_key))


def send(
    subscription: dict[str, Any],
    key: ec.EllipticCurvePrivateKey | str,
    ca: LabCA,
    payload: Any = None,
    **kw: Any,
) -> int:
    kw.setdefault("guard", LOOPBACK)
    return wp.send_webpush(
        subscription, OFFER if payload is None else payload, key, SUBJECT,
        ca_bundle=str(ca.cert_path), **kw,
    )  # fmt: skip


# -- it arrives, encrypted and identified ------------------------------------------------------


def test_a_push_arrives_and_decrypts_to_what_was_sent(
    receiver: PushReceiver,
    subscription: dict[str, Any],
    vapid_key: ec.EllipticCurvePrivateKey,
    ca: LabCA,
) -> None:
    before = int(time.time())
    assert send(subscription, vapid_key, ca, ttl=600, urgency="high", topic="venue-42") == 201
    [delivery] = receiver.deliveries(subscription)
    assert delivery.json() == OFFER
    assert (delivery.ttl, delivery.urgency, delivery.topic) == (600, "high", "venue-42")
    assert delivery.claims["aud"] == receiver.origin
    assert delivery.claims["sub"] == SUBJECT
    assert before + 11 * 3600 < delivery.claims["exp"] <= int(time.time()) + 24 * 3600


def test_the_largest_payload_that_fits_goes_through(
    receiver: PushReceiver,
    subscription: dict[str, Any],
    vapid_key: ec.EllipticCurvePrivateKey,
    ca: LabCA,
) -> None:
    """MAX_PAYLOAD is exactly what fits the 4096-byte body every push service must take."""
    filler = "x" * (wp.MAX_PAYLOAD - len('{"f":""}'))
    assert send(subscription, vapid_key, ca, {"f": filler}) == 201
    assert receiver.deliveries(subscription)[0].json() == {"f": filler}
    with pytest.raises(PushError, match=f"at most {wp.MAX_PAYLOAD} fit"):
        send(subscription, vapid_key, ca, {"f": filler + "x"})
    assert len(receiver.deliveries(subscription)) == 1


def test_a_key_file_and_a_shared_session_work(
    receiver: PushReceiver,
    subscription: dict[str, Any],
    vapid_key: ec.EllipticCurvePrivateKey,
    ca: LabCA,
    tmp_path: Path,
) -> None:
    wp.save_vapid_key(vapid_key, tmp_path / "vapid.pem")
    with guarded_session(str(ca.cert_path), LOOPBACK) as session:
        for i in range(3):
            status = wp.send_webpush(
                subscription, {"i": i}, str(tmp_path / "vapid.pem"), SUBJECT, session=session
            )
            assert status == 201
    assert [d.json() for d in receiver.deliveries(subscription)] == [{"i": 0}, {"i": 1}, {"i": 2}]


# -- what the push service answers ---------------------------------------------------------------


@pytest.mark.parametrize("status", [404, 410])
def test_a_gone_subscription_is_reported_expired(
    receiver: PushReceiver,
    subscription: dict[str, Any],
    vapid_key: ec.EllipticCurvePrivateKey,
    ca: LabCA,
    status: int,
) -> None:
    receiver.answer_with(subscription, status)
    with pytest.raises(wp.SubscriptionExpired, match="subscription expired") as caught:
        send(subscription, vapid_key, ca)
    assert isinstance(caught.value, RecipientGone) and not caught.value.retry
    assert caught.value.status == status


def test_too_large_is_a_clear_error_not_retried(
    receiver: PushReceiver,
    subscription: dict[str, Any],
    vapid_key: ec.EllipticCurvePrivateKey,
    ca: LabCA,
) -> None:
    receiver.answer_with(subscription, 413)
    with pytest.raises(PushError, match="payload as too large") as caught:
        send(subscription, vapid_key, ca)
    assert not caught.value.retry and caught.value.status == 413


def test_rate_limiting_says_when_to_retry(
    receiver: PushReceiver,
    subscription: dict[str, Any],
    vapid_key: ec.EllipticCurvePrivateKey,
    ca: LabCA,
) -> None:
    receiver.answer_with(subscription, 429, {"Retry-After": "30"})
    with pytest.raises(PushError, match=r"rate limited .*retry after 30 s") as caught:
        send(subscription, vapid_key, ca)
    assert caught.value.retry and caught.value.retry_after == 30.0
    receiver.answer_with(subscription, 503)
    with pytest.raises(PushError, match="failed") as caught:
        send(subscription, vapid_key, ca)
    assert caught.value.retry
    receiver.answer_with(subscription, None)
    assert send(subscription, vapid_key, ca) == 201


def test_another_vapid_key_is_refused(
    receiver: PushReceiver, subscription: dict[str, Any], ca: LabCA
) -> None:
    with pytest.raises(PushError, match=r"VAPID authorization \(403\)") as caught:
        send(subscription, wp.generate_vapid_key(), ca)
    assert not caught.value.retry
    assert receiver.refusals[-1] == (403, "k is not the key this subscription was made with")
    assert receiver.deliveries(subscription) == []


def test_an_unreachable_push_service_is_retried_later(
    subscription: dict[str, Any], vapid_key: ec.EllipticCurvePrivateKey, ca: LabCA
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))  # bound, never listening: connection refused
        gone = {**subscription, "endpoint": f"https://127.0.0.1:{s.getsockname()[1]}/push/x"}
        with pytest.raises(PushError, match="unreachable") as caught:
            send(gone, vapid_key, ca)
    assert caught.value.retry


def test_an_untrusted_push_service_is_refused(
    subscription: dict[str, Any], vapid_key: ec.EllipticCurvePrivateKey, tmp_path: Path
) -> None:
    with pytest.raises(PushError, match="SSLError"):
        wp.send_webpush(subscription, OFFER, vapid_key, SUBJECT, ca_bundle=str(
            LabCA(tmp_path / "other").cert_path
        ), guard=LOOPBACK)  # fmt: skip


# -- only to a checked address (cloud/push/endpoints.py) ---------------------------------------


class Table:
    """A resolver from a table (never real DNS); counts lookups."""

    def __init__(self, **names: list[str]) -> None:
        self.names = {name.replace("_", "."): addrs for name, addrs in names.items()}
        self.lookups: list[str] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.lookups.append(host)
        if host not in self.names:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return self.names[host]


@pytest.fixture(scope="module")
def named_receiver(ca: LabCA) -> Iterator[PushReceiver]:
    """A push service known by a name (push.test) that no real DNS answers for."""
    cert, key = ca.issue("push-named", ["push.test"])
    receiver = PushReceiver(str(cert), str(key))
    receiver.origin = f"https://push.test:{receiver.server.server_port}"  # the VAPID aud
    with receiver.running() as running:
        yield running


def test_by_default_a_loopback_push_service_is_not_contacted(
    receiver: PushReceiver, subscription: dict[str, Any], vapid_key: ec.EllipticCurvePrivateKey,
    ca: LabCA,
) -> None:  # fmt: skip
    refusals = len(receiver.refusals)
    with pytest.raises(PushError, match=r"endpoint refused: .*IP address") as caught:
        send(subscription, vapid_key, ca, guard=EndpointGuard())
    assert not caught.value.retry
    assert receiver.deliveries(subscription) == [] and len(receiver.refusals) == refusals


def test_the_connection_goes_to_the_checked_address_under_the_name(
    named_receiver: PushReceiver, vapid_key: ec.EllipticCurvePrivateKey, ca: LabCA
) -> None:
    """One lookup, through the guard; the socket goes where it answered (the system resolver,
    which knows no push.test, is never asked), and TLS checks the name's certificate."""
    subscription = named_receiver.subscribe(wp.application_server_key(vapid_key))
    table = Table(push_test=["127.0.0.1"])
    guard = EndpointGuard(parse_networks("127.0.0.0/8"), table)
    assert send(subscription, vapid_key, ca, guard=guard) == 201
    assert table.lookups == ["push.test"]
    [delivery] = named_receiver.deliveries(subscription)
    assert delivery.json() == OFFER and delivery.claims["aud"] == named_receiver.origin


def test_the_certificate_is_checked_against_the_name_not_the_pinned_address(
    receiver: PushReceiver, subscription: dict[str, Any], vapid_key: ec.EllipticCurvePrivateKey,
    ca: LabCA,
) -> None:  # fmt: skip
    """The 127.0.0.1 receiver's certificate names only 127.0.0.1: reached as push.test, it is
    refused, so pinning the address did not switch the hostname check off."""
    port = receiver.server.server_port
    renamed = {**subscription, "endpoint": subscription["endpoint"].replace(
        f"127.0.0.1:{port}", f"push.test:{port}")}  # fmt: skip
    guard = EndpointGuard(parse_networks("127.0.0.0/8"), Table(push_test=["127.0.0.1"]))
    with pytest.raises(PushError, match="SSLError"):
        send(renamed, vapid_key, ca, guard=guard)
    assert receiver.deliveries(subscription) == []


def test_a_name_that_now_resolves_to_loopback_is_not_contacted(
    named_receiver: PushReceiver, vapid_key: ec.EllipticCurvePrivateKey, ca: LabCA
) -> None:
    """DNS rebinding: public when the browser subscribed, loopback at send time."""
    subscription = named_receiver.subscribe(wp.application_server_key(vapid_key))
    table = Table(push_test=["93.184.216.34"])
    guard = EndpointGuard((), table)
    assert guard.check(subscription["endpoint"]) == "93.184.216.34"  # subscribe time: fine
    table.names["push.test"] = ["127.0.0.1"]
    with pytest.raises(PushError, match="non-public address") as caught:
        send(subscription, vapid_key, ca, guard=guard)
    assert not caught.value.retry
    assert named_receiver.deliveries(subscription) == []


def test_a_name_that_does_not_resolve_is_retried_later(
    subscription: dict[str, Any], vapid_key: ec.EllipticCurvePrivateKey, ca: LabCA
) -> None:
    renamed = {**subscription, "endpoint": "https://gone.test/push/x"}
    with pytest.raises(PushError, match="does not resolve") as caught:
        send(renamed, vapid_key, ca, guard=EndpointGuard((), Table()))
    assert caught.value.retry


def test_a_redirect_from_the_push_service_is_not_followed(
    receiver: PushReceiver, vapid_key: ec.EllipticCurvePrivateKey, ca: LabCA
) -> None:
    first = receiver.subscribe(wp.application_server_key(vapid_key))
    second = receiver.subscribe(wp.application_server_key(vapid_key))
    for status in (301, 302, 307, 308):
        receiver.answer_with(first, status, {"Location": second["endpoint"]})
        with pytest.raises(PushError, match="redirect"):
            send(first, vapid_key, ca)
    assert receiver.deliveries(second) == [] and receiver.deliveries(first) == []


def test_an_unguarded_session_is_refused(
    receiver: PushReceiver, subscription: dict[str, Any], vapid_key: ec.EllipticCurvePrivateKey,
    ca: LabCA,
) -> None:  # fmt: skip
    with new_session(str(ca.cert_path)) as session, pytest.raises(PushError, match="guard"):
        send(subscription, vapid_key, ca, session=session)
    assert receiver.deliveries(subscription) == []


# -- refused before anything is sent -------------------------------------------------------------


def broken(subscription: dict[str, Any], **over: Any) -> dict[str, Any]:
    keys = {**subscription["keys"], **over.pop("keys", {})}
    return {**subscription, "keys": keys, **over}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: broken(s, endpoint=s["endpoint"].replace("https", "http")), "https://"),
        (lambda s: broken(s, endpoint="https://127.0.0.1:99999/x"), "not a valid URL"),
        (lambda s: {"endpoint": s["endpoint"]}, "no keys"),
        (lambda s: broken(s, keys={"auth": None}), "p256dh and auth"),
        (lambda s: broken(s, keys={"p256dh": "AAAA"}), "P-256"),
        (lambda s: broken(s, keys={"p256dh": "!!"}), "base64url"),
        (lambda s: broken(s, keys={"auth": wp.b64url(b"x" * 8)}), "auth 16 bytes"),
        (lambda s: [s], "JSON object"),
    ],
)
def test_a_bad_subscription_is_refused(
    receiver: PushReceiver,
    subscription: dict[str, Any],
    vapid_key: ec.EllipticCurvePrivateKey,
    ca: LabCA,
    change: Any,
    message: str,
) -> None:
    with pytest.raises(PushError, match=f"invalid subscription: .*{message}"):
        send(change(subscription), vapid_key, ca)
    with pytest.raises(ValueError, match=message):
        wp.check_subscription(change(subscription))
    assert receiver.deliveries(subscription) == []


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"subject": "ops@plaza.test"}, "mailto: or https:"),
        ({"subject": "http://plaza.test"}, "mailto: or https:"),
        ({"urgency": "urgent"}, "urgency"),
        ({"topic": "a" * 33}, "topic"),
        ({"topic": "has space"}, "topic"),
        ({"ttl": -1}, "ttl"),
    ],
)
def test_bad_options_are_refused(
    subscription: dict[str, Any],
    vapid_key: ec.EllipticCurvePrivateKey,
    ca: LabCA,
    kw: dict[str, Any],
    message: str,
) -> None:
    kw = dict(kw)
    subject = kw.pop("subject", SUBJECT)
    with pytest.raises(PushError, match=message):
        wp.send_webpush(subscription, OFFER, vapid_key, subject, ca_bundle=str(ca.cert_path), **kw)


def test_accepted_subjects(
    subscription: dict[str, Any], vapid_key: ec.EllipticCurvePrivateKey, ca: LabCA
) -> None:
    for subject in ("mailto:ops@plaza.test", "https://plaza.test/contact"):
        status = wp.send_webpush(
            subscription, {}, vapid_key, subject, ca_bundle=str(ca.cert_path), guard=LOOPBACK
        )
        assert status == 201


# -- the receiver refuses what a push service refuses ------------------------------------------


def raw_push(
    receiver: PushReceiver,
    subscription: dict[str, Any],
    key: ec.EllipticCurvePrivateKey,
    ca: LabCA,
    claims: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    ttl: int = 60,
    data: bytes = b'{"a":1}',
) -> requests.Response:
    """A push built by hand (pywebpush's encryption, our own claims and headers)."""
    claims = {
        "sub": SUBJECT,
        "aud": receiver.origin,
        "exp": int(time.time()) + 3600,
        **(claims or {}),
    }
    all_headers = {**Vapid02(private_key=key).sign(claims), **(headers or {})}
    with new_session(str(ca.cert_path)) as session:
        response = WebPusher(subscription, requests_session=session).send(
            data, all_headers, ttl=ttl, timeout=5
        )
    assert isinstance(response, requests.Response)
    return response


def test_the_receiver_checks_the_vapid_claims(
    receiver: PushReceiver,
    subscription: dict[str, Any],
    vapid_key: ec.EllipticCurvePrivateKey,
    ca: LabCA,
) -> None:
    assert raw_push(receiver, subscription, vapid_key, ca).status_code == 201
    now = int(time.time())
    for claims, reason in (
        ({"aud": "https://elsewhere.test"}, "aud must be"),
        ({"exp": now - 10}, "expired"),
        ({"exp": now + 25 * 3600}, "more than 24 hours"),
        ({"sub": "mailto:x@y.test", "exp": "soon"}, "expired (or has no exp)"),
    ):
        assert raw_push(receiver, subscription, vapid_key, ca, claims).status_code == 401
        assert reason in receiver.refusals[-1][1]
    assert len(receiver.deliveries(subscription)) == 1


def test_the_receiver_follows_the_senders_clock_skew(
    receiver: PushReceiver,
    subscription: dict[str, Any],
    vapid_key: ec.EllipticCurvePrivateKey,
    ca: LabCA,
    clock: ShiftClock,
) -> None:
    """With the service's clock 13 h ahead our 12 h token has expired; 13 h behind, it is
    more than 24 h ahead: the sender's VAPID lifetime leaves room for skew, not for that."""
    for offset, reason in ((13 * 3600, "expired"), (-13 * 3600, "more than 24 hours")):
        clock.offset = offset
        with pytest.raises(PushError, match="401"):
            send(subscription, vapid_key, ca)
        assert reason in receiver.refusals[-1][1]


def test_the_receiver_checks_headers_and_body(
    receiver: PushReceiver,
    subscription: dict[str, Any],
    vapid_key: ec.EllipticCurvePrivateKey,
    ca: LabCA,
) -> None:
    with new_session(str(ca.cert_path)) as session:
        bare = session.post(subscription["endpoint"], data=b"x", timeout=5)
        assert bare.status_code == 400 and "TTL" in bare.text
        unsigned = session.post(subscription["endpoint"], data=b"x", headers={"TTL": "0"})
        assert unsigned.status_code == 401
        unknown = session.post(subscription["endpoint"] + "x", data=b"x", headers={"TTL": "0"})
        assert unknown.status_code == 404
    other = receiver.subscribe(wp.application_server_key(vapid_key))  # same key, other secrets
    encrypted_for_other = WebPusher(other).encode(b'{"a":1}', "aes128gcm")["body"]
    with new_session(str(ca.cert_path)) as session:
        headers = {
            **Vapid02(private_key=vapid_key).sign(
                {"sub": SUBJECT, "aud": receiver.origin, "exp": int(time.time()) + 60}
            ),
            "TTL": "0",
            "Content-Encoding": "aes128gcm",
        }
        wrong = session.post(subscription["endpoint"], data=encrypted_for_other, headers=headers)
        assert wrong.status_code == 400 and "cannot decrypt" in wrong.text
        huge = session.post(subscription["endpoint"], data=b"x" * 4097, headers=headers)
        assert huge.status_code == 413
    assert receiver.deliveries(subscription) == []


# -- the VAPID key ---------------------------------------------------------------------------------


def test_the_vapid_key_is_kept_private_and_never_replaced(tmp_path: Path) -> None:
    path = tmp_path / "vapid.pem"
    key = wp.load_or_create_vapid_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert wp.load_or_create_vapid_key(path).private_numbers() == key.private_numbers()
    with pytest.raises(FileExistsError):
        wp.save_vapid_key(wp.generate_vapid_key(), path)
    assert wp.load_vapid_key(path).private_numbers() == key.private_numbers()


def test_the_application_server_key_is_the_raw_public_point(tmp_path: Path) -> None:
    key = wp.generate_vapid_key()
    raw = wp.unb64url(wp.application_server_key(key))
    assert len(raw) == 65 and raw[0] == 4 and "=" not in wp.application_server_key(key)
    public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)
    assert public.public_numbers() == key.public_key().public_numbers()


def test_unusable_vapid_keys_are_refused(tmp_path: Path) -> None:
    rsa_pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (tmp_path / "rsa.pem").write_bytes(rsa_pem)
    (tmp_path / "junk.pem").write_text("not a key")
    p384 = ec.generate_private_key(ec.SECP384R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (tmp_path / "p384.pem").write_bytes(p384)
    for name, message in (
        ("rsa.pem", "must be EC P-256"),
        ("p384.pem", "must be EC P-256"),
        ("junk.pem", "not an unencrypted PEM"),
        ("missing.pem", "cannot read"),
    ):
        with pytest.raises(ValueError, match=message) as caught:
            wp.load_vapid_key(tmp_path / name)
        assert "BEGIN" not in str(caught.value)
