"""The sandbox wallet as an Alipay-style open platform: authorize page and `gateway.do`.

Every gateway request must carry a valid RSA2 signature by the app's registered key and a
timestamp within 15 minutes; every answer is signed with the wallet's key over the exact text
of the `<method>_response` value, so the portal's verifier meets the same bytes it would meet
from the real platform. Refusals use the platform's code/sub_code vocabulary. Other parts of the
sandbox add their own methods (`add_method`), which get every check here for free.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlencode

from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Blueprint, Flask, Response, current_app, redirect, request

from lab.wallet import consent
from lab.wallet.settings import AlipayApp, WalletSettings
from lab.wallet.store import Expiring
from plaza.wallet import rsa2
from plaza.wallet.alipay import SHANGHAI, SUCCESS, TIMESTAMP_FORMAT, response_key

SCOPES = ("auth_base", "auth_user")

bp = Blueprint("alipay", __name__)


class Refusal(Exception):
    """A gateway error in Alipay's terms: code, msg, sub_code, sub_msg."""

    def __init__(self, code: str, msg: str, sub_code: str, sub_msg: str) -> None:
        super().__init__(sub_code)
        self.body = {"code": code, "msg": msg, "sub_code": sub_code, "sub_msg": sub_msg}


def no_token(sub_msg: str) -> Refusal:
    return Refusal("20001", "Insufficient Token Permissions", "aop.invalid-auth-token", sub_msg)


def missing(name: str, sub: str) -> Refusal:
    return Refusal("40001", "Missing Required Arguments", sub, f"missing {name}")


def invalid(sub: str, sub_msg: str) -> Refusal:
    return Refusal("40002", "Invalid Arguments", sub, sub_msg)


@dataclass(frozen=True)
class Grant:
    """What an auth_code, access token or refresh token stands for."""

    app_id: str
    login: str
    scope: str


Method = Callable[["AlipayState", dict[str, str]], dict]
# A method the browser is sent to (alipay.trade.wap.pay): it answers with a page, not JSON.
Page = Callable[["AlipayState", dict[str, str]], Response]


@dataclass
class AlipayState:
    settings: WalletSettings
    clock: Callable[[], float]
    wallet_key: rsa.RSAPrivateKey
    app_keys: dict[str, rsa.RSAPublicKey]
    codes: Expiring[Grant]
    tokens: Expiring[Grant]
    refresh: Expiring[Grant]
    methods: dict[str, Method]  # gateway.do's methods: name -> handler of checked params
    pages: dict[str, Page] = field(default_factory=dict)  # the browser's methods


def state() -> AlipayState:
    return current_app.extensions["wallet_alipay"]


def init(app: Flask, settings: WalletSettings, clock: Callable[[], float] = time.time) -> None:
    """Load the wallet's signing key and each registered app's public key, then serve."""
    app.extensions["wallet_alipay"] = AlipayState(
        settings=settings,
        clock=clock,
        wallet_key=rsa2.load_private_key(settings.wallet_private_key_file),
        app_keys={a.app_id: rsa2.load_public_key(a.public_key_file) for a in settings.alipay_apps},
        codes=Expiring(settings.code_seconds, clock),
        tokens=Expiring(settings.token_seconds, clock),
        refresh=Expiring(settings.refresh_seconds, clock),
        methods={"alipay.system.oauth.token": oauth_token, "alipay.user.info.share": user_info},
    )
    app.register_blueprint(bp)


def add_method(app: Flask, name: str, handler: Method) -> None:
    """Serve another gateway method: `handler` sees only signed, fresh requests from a
    registered app, and answers the `<name>_response` object (or raises Refusal)."""
    app.extensions["wallet_alipay"].methods[name] = handler


def add_page(app: Flask, name: str, handler: Page) -> None:
    """Serve a method the merchant sends the shopper's browser to with a signed URL (the
    cashier): the same checks, and `handler` answers with a page or a redirect."""
    app.extensions["wallet_alipay"].pages[name] = handler


def biz_content(params: dict[str, str]) -> dict:
    """The `biz_content` JSON object most methods carry their own parameters in."""
    raw = params.get("biz_content")
    if not raw:
        raise missing("biz_content", "isv.missing-biz-content")
    try:
        value = json.loads(raw)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise invalid("isv.invalid-biz-content", "biz_content is not a JSON object")
    return value


def open_id(app_id: str, user_id: str) -> str:
    """A stable per-app user id, as the platform gives apps instead of (or besides) user_id."""
    return "0" + hashlib.sha256(f"plaza-sandbox|{app_id}|{user_id}".encode()).hexdigest()[:44]


# -- the authorize page ----------------------------------------------------------------------


def _back(app: AlipayApp, **params: str) -> Response:
    sep = "&" if "?" in app.redirect_uri else "?"
    query = urlencode({"app_id": app.app_id, "source": "alipay_wallet", **params})
    return consent.secure(redirect(f"{app.redirect_uri}{sep}{query}", code=302))


def _code_for(st: AlipayState, app: AlipayApp, login: str, scope: str, state_: str) -> Response:
    code = secrets.token_hex(16)
    st.codes.put(code, Grant(app.app_id, login, scope))
    params = {"scope": scope, "auth_code": code}
    if state_:
        params["state"] = state_
    return _back(app, **params)


@bp.route("/oauth2/publicAppAuthorize.htm", methods=["GET", "POST"])
def authorize() -> Response:
    st = state()
    app = st.settings.alipay_app(request.args.get("app_id", ""))
    if app is None:
        return consent.error_page("This sign-in request is invalid: unknown app_id.")
    scope = request.args.get("scope", "")
    if scope not in SCOPES:
        return consent.error_page(
            "This sign-in request is invalid: scope must be auth_base or auth_user."
        )
    if request.args.get("redirect_uri") != app.redirect_uri:  # refused before any consent
        return consent.error_page(
            "This sign-in request is invalid: redirect_uri is not registered for this app."
        )
    state_ = request.args.get("state", "")
    account = consent.current_account(st.settings)
    profile = scope == "auth_user"
    if request.method == "GET":
        if scope == "auth_base" and account is not None:  # silent once signed in
            return _code_for(st, app, account.login, scope, state_)
        return consent.page(app.name, account, profile=profile)
    decision = consent.decide(st.settings, app.name, profile=profile)
    if isinstance(decision, Response):
        return decision
    if not decision.approved or decision.account is None:
        params = {"scope": scope, "error": "access_denied"}
        if state_:
            params["state"] = state_
        return _back(app, **params)
    return _code_for(st, app, decision.account.login, scope, state_)


# -- gateway.do ------------------------------------------------------------------------------


def signed_body(st: AlipayState, key: str, value: dict) -> str:
    """`{"<key>":<value>,"sign":"..."}` with the sign over the value's exact text."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    sign = rsa2.sign_text(text, st.wallet_key)
    return f'{{"{key}":{text},"sign":"{sign}"}}'


def _params() -> dict[str, str]:
    """The request's parameters from query and form; a name given twice is ambiguous."""
    params: dict[str, str] = {}
    for source in (request.args, request.form):
        for name in source:
            values = source.getlist(name)
            if len(values) > 1 or name in params:
                raise invalid("isv.invalid-parameter", f"{name} given more than once")
            params[name] = values[0]
    return params


def _check_request(st: AlipayState, params: dict[str, str]) -> str:
    """The common-parameter checks a real gateway makes before it looks at the method."""
    method = params.get("method")
    if not method:
        raise missing("method", "isv.missing-method")
    if method not in st.methods and method not in st.pages:
        raise invalid("isv.invalid-method", "unknown method")
    app_id = params.get("app_id")
    if not app_id:
        raise missing("app_id", "isv.missing-app-id")
    if app_id not in st.app_keys:
        raise invalid("isv.invalid-app-id", "unknown app_id")
    if not params.get("sign"):
        raise missing("sign", "isv.missing-signature")
    if params.get("sign_type") != "RSA2":
        raise invalid("isv.invalid-signature-type", "sign_type must be RSA2")
    if not rsa2.verify(params, params["sign"], st.app_keys[app_id]):
        raise invalid("isv.invalid-signature", "signature check failed")
    stamp = params.get("timestamp")
    if not stamp:
        raise missing("timestamp", "isv.missing-timestamp")
    try:
        when = dt.datetime.strptime(stamp, TIMESTAMP_FORMAT).replace(tzinfo=SHANGHAI).timestamp()
    except ValueError:
        raise invalid("isv.invalid-timestamp", "timestamp format is yyyy-MM-dd HH:mm:ss") from None
    if abs(st.clock() - when) > st.settings.max_skew_seconds:
        raise invalid("isv.invalid-timestamp", "timestamp is more than 15 minutes off")
    if params.get("charset", "utf-8").lower() != "utf-8":
        raise invalid("isv.invalid-charset", "charset must be utf-8")
    if params.get("format", "JSON").upper() != "JSON":
        raise invalid("isv.invalid-format", "format must be JSON")
    if params.get("version") != "1.0":
        raise invalid("isv.invalid-version", "version must be 1.0")
    return method


def _token_answer(st: AlipayState, grant: Grant) -> dict:
    account = st.settings.account(grant.login)
    if account is None:
        raise invalid("isv.code-invalid", "the user no longer exists")
    access, refresh = secrets.token_hex(20), secrets.token_hex(20)
    st.tokens.put(access, grant)
    st.refresh.put(refresh, grant)
    return {
        "user_id": account.user_id,
        "open_id": open_id(grant.app_id, account.user_id),
        "access_token": access,
        "expires_in": st.settings.token_seconds,
        "refresh_token": refresh,
        "re_expires_in": st.settings.refresh_seconds,
        "auth_start": dt.datetime.fromtimestamp(st.clock(), SHANGHAI).strftime(TIMESTAMP_FORMAT),
    }


def oauth_token(st: AlipayState, params: dict[str, str]) -> dict:
    """alipay.system.oauth.token: an auth_code (once, within 60 s) or refresh token -> tokens."""
    grant_type = params.get("grant_type")
    if grant_type == "authorization_code":
        code = params.get("code")
        if not code:
            raise missing("code", "isv.missing-code")
        grant = st.codes.take(code)
        if grant is None or grant.app_id != params["app_id"]:
            raise invalid("isv.code-invalid", "auth_code is invalid, expired or already used")
        return _token_answer(st, grant)
    if grant_type == "refresh_token":
        grant = st.refresh.take(params.get("refresh_token", ""))
        if grant is None or grant.app_id != params["app_id"]:
            raise invalid("isv.refresh-token-invalid", "refresh_token is invalid or expired")
        return _token_answer(st, grant)
    raise invalid(
        "isv.grant-type-invalid", "grant_type must be authorization_code or refresh_token"
    )


def user_info(st: AlipayState, params: dict[str, str]) -> dict:
    """alipay.user.info.share: the profile, for a token from an auth_user grant."""
    grant = st.tokens.get(params.get("auth_token", ""))
    if grant is None or grant.app_id != params["app_id"]:
        raise no_token("invalid auth_token")
    if grant.scope != "auth_user":
        raise Refusal(
            "40006",
            "Insufficient Permissions",
            "isv.insufficient-user-permissions",
            "needs auth_user",
        )
    account = st.settings.account(grant.login)
    if account is None:
        raise Refusal(
            "20001", "Insufficient Token Permissions", "aop.invalid-auth-token", "no such user"
        )
    return {
        "code": SUCCESS,
        "msg": "Success",
        "user_id": account.user_id,
        "open_id": open_id(grant.app_id, account.user_id),
        "nick_name": account.name,
    }


@bp.route("/gateway.do", methods=["GET", "POST"])
def gateway() -> Response:
    st = state()
    try:
        params = _params()
        method = _check_request(st, params)
        if method in st.pages:
            return st.pages[method](st, params)
        body = signed_body(st, response_key(method), st.methods[method](st, params))
    except Refusal as refusal:
        body = signed_body(st, "error_response", refusal.body)
    return Response(body, content_type="application/json; charset=utf-8")
