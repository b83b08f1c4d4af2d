"""Messages: what a merchant app pushes into a wallet user's inbox (offers, a one-tap link).

This is how the cloud reaches a shopper who opted in: it calls the wallet as the merchant's
registered app, server to server, and the wallet shows the message in its app; a tap opens the
link. Each dialect authenticates the way its apps already do elsewhere in the sandbox:

- OIDC: `POST /v1/messages`, HTTP Basic `client_id:client_secret` (RFC 6749 §2.3.1, so only
  a confidential client), JSON `{"user", "title", "body", "link"}` where `user` is the OIDC
  `sub`; 201 `{"id", "user", "sent_at"}`, refusals as `{"error", "error_description"}`.
- Alipay: the gateway method `alipay.pass.message.push`, with the common parameters and RSA2
  signature every gateway method has (checked by lab.wallet.alipay, not again here) and
  `biz_content` `{"user_id" | "open_id", "title", "body", "link"}`; refusals in the
  platform's code/sub_code terms, an unknown user as business failure USER_NOT_EXIST.

Unlike a pass, a message may link to any https:// site: the cloud speaks for every venue of a
merchant, each portal with its own host name, and for offers on the merchant's own site. The
text rules are the passes' (lab.wallet.passes), so what a wallet refuses to show is the same
everywhere. `GET /messages` is the wallet app's inbox; `GET /messages/<id>` is a tap: it
marks the message opened and sends the browser to its link. Messages live in memory.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    jsonify,
    redirect,
    request,
)

from lab.wallet import alipay, consent, oidc, passes
from lab.wallet.passes import Refused
from lab.wallet.settings import WalletAccount, WalletSettings
from lab.wallet.store import Inbox, WalletMessage

PUSH_METHOD = "alipay.pass.message.push"
API_PATH = "/v1/messages"
MAX_TITLE = passes.MAX_TITLE
MAX_BODY = 500
MAX_MESSAGES = 50  # per user; the oldest make room
MAX_REQUEST = 8 * 1024  # bytes of JSON: generous for 80 + 500 characters and a 1 KiB link
FIELDS = ("user", "title", "body", "link")
TEXT_FIELDS = FIELDS[1:]

bp = Blueprint("messages", __name__)

MESSAGES_PAGE = (
    consent.HEAD
    + consent.ERROR
    + """{% if account %}
<p>Signed in as <strong>{{ account.name }}</strong></p>
<h2>Your messages</h2>
{% if items %}<ul class="messages">
{% for m in items %}<li><a class="message" href="/messages/{{ m.id }}">{{ m.title }}</a>
<p class="message-body">{{ m.body }}</p>
<div class="hint"><span class="sender">{{ m.client }}</span>, {{ sent(m) }}
{%- if not m.opened_at %} <span class="new">new</span>{% endif %}</div></li>
{% endfor %}</ul>
{% else %}<p class="hint">No messages yet.</p>{% endif %}
<p class="hint"><a href="/passes">Your passes</a></p>
{% else %}
<p>Sign in to see your messages.</p>
"""
    + passes.SIGN_IN
    + """{% endif %}
</div></main></body></html>
"""
)


@dataclass(frozen=True)
class MessagesState:
    settings: WalletSettings
    clock: Callable[[], float]
    inbox: Inbox


class ApiError(Exception):
    """A refusal of the JSON API: HTTP status, OAuth-style error code, description."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status, self.error, self.description = status, error, description


class UnknownUser(LookupError):
    """The message names no user of this wallet (a sender should stop messaging them)."""


def state() -> MessagesState:
    return current_app.extensions["wallet_messages"]


def init(app: Flask, settings: WalletSettings, clock: Callable[[], float] = time.time) -> None:
    """Serve the API, the inbox and the Alipay method (after lab.wallet.alipay.init)."""
    app.extensions["wallet_messages"] = MessagesState(settings, clock, Inbox(MAX_MESSAGES))
    alipay.add_method(app, PUSH_METHOD, alipay_push)
    app.register_blueprint(bp)


# -- what both dialects check and store --------------------------------------------------------


def check_fields(fields: Mapping[str, Any], names: tuple[str, ...] = TEXT_FIELDS) -> list[str]:
    """title, body and link (under `names`), checked: the text rules of passes, an https link."""
    for name in names:
        if not isinstance(fields.get(name), str):
            raise Refused(f"{name} must be a string.")
    title_name, body_name, link_name = names
    title = passes.check_text(fields[title_name], "message", "title", MAX_TITLE)
    body = passes.check_text(fields[body_name], "message", "body", MAX_BODY, lines=True)
    link = fields[link_name]
    if passes.https_origin(link) is None:
        raise Refused("The link must be an https:// address.")
    return [title, body, link]


def deliver(
    account: WalletAccount | None, sender: str, title: str, body: str, link: str
) -> WalletMessage:
    """Put a checked message in `account`'s inbox; UnknownUser if there is no such account."""
    if account is None:
        raise UnknownUser("no such wallet user")
    st = state()
    item = WalletMessage(secrets.token_urlsafe(16), title, body, link, sender, st.clock())
    st.inbox.add(account.login, item)
    return item


# -- OIDC dialect: POST /v1/messages -------------------------------------------------------------


def authenticate_client(settings: WalletSettings) -> str:
    """The registered name of the confidential client in the Basic credentials, or ApiError."""
    auth = request.authorization
    if auth is None or auth.type != "basic" or not auth.username:
        raise ApiError(
            401, "invalid_client", "client authentication required (HTTP Basic client_id:secret)"
        )
    # RFC 6749 §2.3.1: both halves are form-urlencoded before they go into the Basic header.
    client_id, secret = unquote_plus(auth.username), unquote_plus(auth.password or "")
    registered = settings.oidc_client(client_id)
    if registered is None:
        raise ApiError(401, "invalid_client", "unknown client_id")
    if not registered.client_secret:
        raise ApiError(
            401, "invalid_client", "a public client cannot send messages (it has no secret)"
        )
    if not oidc.Client(registered).check_client_secret(secret):
        raise ApiError(401, "invalid_client", "wrong client_secret")
    return registered.name


def read_json_object() -> dict[str, Any]:
    """The request's JSON object, with a small size limit of its own (a message is small)."""
    if request.mimetype != "application/json":
        raise ApiError(415, "invalid_request", "send the message as application/json")
    size = request.content_length
    if size is None:
        raise ApiError(411, "invalid_request", "a Content-Length is required")
    if size > MAX_REQUEST:
        raise ApiError(413, "request_too_large", f"at most {MAX_REQUEST} bytes of JSON")
    try:
        data = json.loads(request.get_data(cache=False))
    except ValueError:  # UnicodeDecodeError included
        data = None
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_request", "the body is not a JSON object")
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise ApiError(400, "invalid_request", f"unknown fields {unknown}")
    absent = [name for name in FIELDS if name not in data]
    if absent:
        raise ApiError(400, "invalid_request", f"missing fields {absent}")
    return data


@bp.post(API_PATH)
def send() -> Response:
    st = state()
    try:
        sender = authenticate_client(st.settings)
        data = read_json_object()
        if not isinstance(data["user"], str):
            raise ApiError(400, "invalid_request", "user must be a string")
        title, body, link = check_fields(data)
        item = deliver(st.settings.account_by_id(data["user"]), sender, title, body, link)
    except ApiError as refusal:
        return api_error(refusal)
    except Refused as refusal:
        return api_error(ApiError(400, "invalid_request", str(refusal)))
    except UnknownUser:
        return api_error(ApiError(404, "unknown_user", "this wallet has no such user"))
    answer = jsonify(id=item.id, user=data["user"], sent_at=int(item.sent_at))
    answer.status_code = 201
    answer.headers["Cache-Control"] = "no-store"
    return answer


def api_error(refusal: ApiError) -> Response:
    answer = jsonify(error=refusal.error, error_description=refusal.description)
    answer.status_code = refusal.status
    answer.headers["Cache-Control"] = "no-store"
    if refusal.status == 401:
        answer.headers["WWW-Authenticate"] = 'Basic realm="wallet", charset="UTF-8"'
    return answer


# -- Alipay dialect: alipay.pass.message.push --------------------------------------------------


def alipay_push(st: alipay.AlipayState, params: dict[str, str]) -> dict:
    """The gateway method; `params` are already signature- and timestamp-checked."""
    app = st.settings.alipay_app(params["app_id"])
    assert app is not None  # the gateway refused unknown app_ids before calling us
    biz = alipay.biz_content(params)
    ids = [name for name in ("user_id", "open_id") if name in biz]
    if not ids:
        raise alipay.missing("user_id or open_id", "isv.missing-user-id")
    unknown = sorted(set(biz) - {*ids, *TEXT_FIELDS})
    if len(ids) > 1 or unknown:
        why = f"unknown biz_content fields {unknown}" if unknown else "user_id or open_id, not both"
        raise alipay.invalid("isv.invalid-parameter", why)
    who = biz[ids[0]]
    try:
        title, body, link = check_fields(biz)
        if not isinstance(who, str):
            raise Refused(f"{ids[0]} must be a string.")
    except Refused as refusal:
        raise alipay.invalid("isv.invalid-parameter", str(refusal)) from None
    if ids[0] == "user_id":
        account = st.settings.account_by_id(who)
    else:
        account = next(
            (u for u in st.settings.users if alipay.open_id(app.app_id, u.user_id) == who), None
        )
    try:
        item = deliver(account, app.name, title, body, link)
    except UnknownUser:
        raise alipay.Refusal(
            "40004", "Business Failed", "USER_NOT_EXIST", "this wallet has no such user"
        ) from None
    return {"code": alipay.SUCCESS, "msg": "Success", "message_id": item.id}


# -- the wallet app's inbox --------------------------------------------------------------------


def messages_page(
    settings: WalletSettings, inbox: Inbox, error: str | None = None, status: int = 200
) -> Response:
    def sent(item: WalletMessage) -> str:
        return time.strftime("%Y-%m-%d %H:%M", time.gmtime(item.sent_at))

    return passes.app_page(
        MESSAGES_PAGE, settings, inbox.for_user, "/messages/signin", error, status, sent=sent
    )


@bp.get("/messages")
def index() -> Response:
    st = state()
    return messages_page(st.settings, st.inbox)


@bp.post("/messages/signin")
def signin() -> Response:
    st = state()
    return passes.sign_in_then(
        st.settings,
        "/messages",
        "your messages",
        lambda error, status: messages_page(st.settings, st.inbox, error, status),
    )


@bp.get("/messages/<message_id>")
def tap(message_id: str) -> Response:
    """Open a message: marked opened, then off to its link (never a link from the request).
    Nobody signed in: back to the inbox, which asks to sign in first."""
    st = state()
    account = consent.current_account(st.settings)
    if account is None:
        return consent.secure(redirect("/messages", code=303))
    item = st.inbox.open(account.login, message_id, st.clock())
    if item is None:
        return consent.error_page("This message is not in your wallet.", status=404)
    return consent.secure(redirect(item.link, code=303))
