"""A stand-in Web Push service and browser: receives pushes the way a push service would,
and decrypts them the way the subscribed browser would, on the lab's own addresses.

Real push services are the browser vendors', out on the internet, which the lab and the tests
never reach. This one is strict where they are: HTTPS only; a TTL header (RFC 8030 §5.2); a
VAPID `Authorization: vapid t=<JWT>, k=<key>` (RFC 8292) whose key is the one the subscription
was made with (403 otherwise), whose JWT is ES256-signed by it with `aud` = this origin, `exp`
in the future but at most 24 h away and `sub` a mailto: or https: URL (401 otherwise); a body
of at most 4096 bytes (413), `Content-Encoding: aes128gcm` that the subscriber's key and auth
secret decrypt (RFC 8291). `subscribe()` makes what PushManager.subscribe() would give a page;
`answer_with()` makes an endpoint answer 410, 413, 429... to play expiry and overload.

The JWT is checked with joserfc rather than py-vapid, so a sender bug is not mirrored by the
checker.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import http_ece
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from flask import Flask, Response, request
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey

from cloud.push.webpush import b64url, unb64url
from lab.wallet.https import TLSServer, make_server

MAX_BODY = 4096  # RFC 8030 §7.2: what every push service must accept
MAX_VAPID_SECONDS = 24 * 3600  # RFC 8292 §2
AUTH_RE = re.compile(r"vapid\s+(.+)", re.IGNORECASE)
URGENCIES = ("very-low", "low", "normal", "high")


@dataclass(frozen=True)
class Delivery:
    """One push as the subscribed browser would see it, plus what the service checked."""

    payload: bytes  # decrypted
    ttl: int
    urgency: str
    topic: str | None
    claims: dict[str, Any]  # of the VAPID JWT

    def json(self) -> Any:
        return json.loads(self.payload)


@dataclass
class Subscriber:
    """The browser's side of one subscription: its ECDH key, auth secret and inbox."""

    id: str
    private_key: ec.EllipticCurvePrivateKey
    auth_secret: bytes
    server_key: bytes  # the applicationServerKey (VAPID public key) it subscribed with
    answer: tuple[int, dict[str, str]] | None = None  # forced status and headers
    deliveries: list[Delivery] = field(default_factory=list)


class Refusal(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


class PushReceiver:
    """The push service on `host`, over HTTPS with `cert`/`key`; start() it, then subscribe."""

    def __init__(
        self,
        cert: str,
        key: str,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.clock = clock
        self.subscribers: dict[str, Subscriber] = {}
        self.refusals: list[tuple[int, str]] = []  # every refused push: status, why
        self._lock = threading.Lock()
        self.server: TLSServer = make_server(host, port, self._app(), cert, key)
        bracketed = f"[{host}]" if ":" in host else host
        self.origin = f"https://{bracketed}:{self.server.server_port}"
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> PushReceiver:
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    @contextmanager
    def running(self) -> Iterator[PushReceiver]:
        self.start()
        try:
            yield self
        finally:
            self.stop()

    # -- the browser's side -----------------------------------------------------------------

    def subscribe(self, application_server_key: str) -> dict[str, Any]:
        """A new subscription bound to this VAPID public key, as PushSubscription.toJSON()."""
        private_key = ec.generate_private_key(ec.SECP256R1())
        sub = Subscriber(
            id=secrets.token_urlsafe(16),
            private_key=private_key,
            auth_secret=os.urandom(16),
            server_key=unb64url(application_server_key),
        )
        with self._lock:
            self.subscribers[sub.id] = sub
        point = private_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return {
            "endpoint": f"{self.origin}/push/{sub.id}",
            "expirationTime": None,
            "keys": {"p256dh": b64url(point), "auth": b64url(sub.auth_secret)},
        }

    def subscriber(self, subscription: Mapping[str, Any]) -> Subscriber:
        return self.subscribers[subscription["endpoint"].rsplit("/", 1)[-1]]

    def deliveries(self, subscription: Mapping[str, Any]) -> list[Delivery]:
        with self._lock:
            return list(self.subscriber(subscription).deliveries)

    def answer_with(
        self,
        subscription: Mapping[str, Any],
        status: int | None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """From now on the endpoint answers `status` (None: back to normal), e.g. 410 Gone."""
        sub = self.subscriber(subscription)
        with self._lock:
            sub.answer = None if status is None else (status, dict(headers or {}))

    # -- the push service's side ------------------------------------------------------------

    def _app(self) -> Flask:
        app = Flask(__name__)
        app.config["MAX_CONTENT_LENGTH"] = 64 * 1024  # let 4097..64K reach our own 413

        @app.post("/push/<sid>")
        def push(sid: str) -> Response:
            with self._lock:
                sub = self.subscribers.get(sid)
            try:
                if sub is None:
                    raise Refusal(404, "no such subscription")
                if sub.answer is not None:
                    status, headers = sub.answer
                    return Response(status=status, headers=headers)
                delivery = self.receive(sub)
            except Refusal as refusal:
                with self._lock:
                    self.refusals.append((refusal.status, refusal.reason))
                return Response(refusal.reason, status=refusal.status, mimetype="text/plain")
            with self._lock:
                sub.deliveries.append(delivery)
            message = secrets.token_urlsafe(12)
            return Response(status=201, headers={"Location": f"{self.origin}/message/{message}"})

        return app

    def receive(self, sub: Subscriber) -> Delivery:
        """Check and decrypt the current request for `sub`, or raise Refusal."""
        ttl = request.headers.get("TTL", "")
        if not ttl.isdigit():
            raise Refusal(400, "a TTL header is required")
        urgency = request.headers.get("Urgency", "normal")
        if urgency not in URGENCIES:
            raise Refusal(400, "bad Urgency")
        claims = self.check_vapid(request.headers.get("Authorization", ""), sub)
        body = request.get_data()
        if len(body) > MAX_BODY:
            raise Refusal(413, f"the body is {len(body)} bytes; at most {MAX_BODY}")
        if request.headers.get("Content-Encoding") != "aes128gcm":
            raise Refusal(400, "Content-Encoding must be aes128gcm")
        try:
            payload = http_ece.decrypt(
                body,
                private_key=sub.private_key,
                auth_secret=sub.auth_secret,
                version="aes128gcm",
            )
        except Exception as exc:  # http_ece raises several kinds; any means undecryptable
            raise Refusal(400, f"cannot decrypt ({type(exc).__name__})") from None
        return Delivery(payload, int(ttl), urgency, request.headers.get("Topic"), claims)

    def check_vapid(self, header: str, sub: Subscriber) -> dict[str, Any]:
        """The VAPID JWT's claims, once its key, signature and claims are right."""
        match = AUTH_RE.fullmatch(header.strip())
        if not match:
            raise Refusal(401, "Authorization: vapid t=..., k=... is required")
        params = dict(
            part.strip().split("=", 1) for part in match.group(1).split(",") if "=" in part
        )
        if "t" not in params or "k" not in params:
            raise Refusal(401, "the vapid Authorization needs t and k")
        try:
            point = unb64url(params["k"])
            public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
        except ValueError:
            raise Refusal(401, "k is not a P-256 public key") from None
        if point != sub.server_key:
            raise Refusal(403, "k is not the key this subscription was made with")
        try:
            token = jwt.decode(params["t"], ECKey.import_key(public), algorithms=["ES256"])
        except (JoseError, ValueError) as exc:
            raise Refusal(401, f"the VAPID JWT does not verify ({type(exc).__name__})") from None
        claims = dict(token.claims)
        now = self.clock()
        if claims.get("aud") != self.origin:
            raise Refusal(401, f"aud must be {self.origin}")
        exp = claims.get("exp")
        if not isinstance(exp, int) or exp <= now:
            raise Refusal(401, "the VAPID JWT has expired (or has no exp)")
        if exp > now + MAX_VAPID_SECONDS:
            raise Refusal(401, "exp is more than 24 hours ahead")
        sub_claim = claims.get("sub")
        if not isinstance(sub_claim, str) or not sub_claim.startswith(("mailto:", "https:")):
            raise Refusal(401, "sub must be a mailto: or https: URL")
        return claims
