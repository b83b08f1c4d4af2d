"""Offers as browser notifications: the welcome page's "Notify me on this phone" (Web Push).

The cloud sends standard Web Push (cloud/push/webpush.py) to browsers subscribed through
`POST <cloud>/api/v1/push/subscribe`, which ties a browser to a shopper by their one-tap
reconnect token (cloud/push/subscribe.py says why that token). This is the portal's half:
- the offer is made only on the https portal: service workers and the Push API need a secure
  context, and the token is a bearer secret that must not cross an open Wi-Fi in clear (the
  session cookie that holds it is `Secure` when the portal has TLS, see portal/__init__.py);
- only to a signed-in wallet user whose browser holds a reconnect token: the one it just opted
  in with, or the one it tapped in with (`remember_token`); "Forget me" drops it;
- only when the router is enrolled: the cloud's URL and the venue id come from
  `<state_dir>/cloud.json` (`[cloud] url` overrides the URL, as for the uplink); the page's CSP
  then lets its script reach that one origin (`connect_src`);
- nothing happens until the shopper taps the button (static/push.js asks for notification
  permission only then); the service worker (/sw.js, at the root so its scope is the portal)
  shows what arrives and, when tapped, opens the one-tap link, never a foreign URL.
Without JavaScript or without push support the card stays hidden and the page is as before.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from flask import Blueprint, Flask, current_app, request, send_from_directory, session
from werkzeug.wrappers import Response

from gateway.config import ConfigError, check_cloud_url
from gateway.uplink.identity import CLOUD_FILE, Identity, UplinkError

bp = Blueprint("push", __name__)

TOKEN_KEY = "connect_token"  # the browser's reconnect token, in its session cookie
EXTENSION = "plaza_push_cloud"


@dataclass(frozen=True)
class PushTarget:
    """Where the page subscribes: the cloud's base URL and this router's venue."""

    cloud_url: str
    venue_id: str

    @property
    def origin(self) -> str:
        parts = urlsplit(self.cloud_url)
        return f"{parts.scheme}://{parts.netloc}"


def remember_token(token: str) -> None:
    """Keep the reconnect token this browser opted in or tapped in with, for the push card."""
    session[TOKEN_KEY] = token


def forget_token() -> None:
    session.pop(TOKEN_KEY, None)


def target(app: Flask | None = None) -> PushTarget | None:
    """This router's cloud and venue, or None if it is not enrolled. Read again only when
    `cloud.json` changes (enrolment may happen while the portal runs)."""
    app = app or current_app._get_current_object()  # type: ignore[attr-defined]
    config = app.config["PLAZA_CONFIG"]
    state_dir = Path(config.gateway.state_dir)
    try:
        stamp = (state_dir / CLOUD_FILE).stat().st_mtime_ns
    except OSError:
        return None
    cached = app.extensions.get(EXTENSION)
    if cached and cached[0] == stamp:
        return cached[1]
    found: PushTarget | None = None
    with contextlib.suppress(UplinkError, ConfigError):
        identity = Identity.load(state_dir)
        url = check_cloud_url("[cloud] url", config.cloud.url or identity.cloud_url)
        found = PushTarget(url, identity.venue_id)
    app.extensions[EXTENSION] = (stamp, found)
    return found


def offer(signed_in: bool) -> dict[str, str] | None:
    """What the welcome page's push card needs, or None when it must not be shown."""
    if not signed_in or not request.is_secure:
        return None
    if not current_app.config["PLAZA_CONFIG"].reconnect.enabled:
        return None
    token = session.get(TOKEN_KEY)
    found = target()
    if not isinstance(token, str) or not token or found is None:
        return None
    return {"cloud": found.cloud_url, "venue": found.venue_id, "token": token}


def connect_src() -> str:
    """The CSP `connect-src` for a page: the portal itself and, if enrolled, the cloud."""
    found = target()
    return f"connect-src 'self' {found.origin}" if found else "connect-src 'self'"


@bp.get("/sw.js")
def service_worker() -> Response:
    """The service worker, from the root so that its scope is the whole portal."""
    response = send_from_directory(current_app.static_folder or "static", "sw.js")
    response.mimetype = "text/javascript"
    response.headers["Cache-Control"] = "no-cache"  # browsers re-check a worker on each visit
    return response
