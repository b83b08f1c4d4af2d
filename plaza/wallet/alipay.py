"""Login with a wallet that speaks the Alipay open-platform dialect.

The browser brings back an `auth_code`; we trade it at the wallet's gateway for the user's id
with a request signed by the merchant app's key (RSA2), and believe the answer only if the
wallet's key signed it. Alipay has no PKCE, so the `state` we sent, checked in constant time
against the browser's cookie, is what ties the callback to the login this browser started.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlencode

import requests
from authlib.common.security import generate_token
from cryptography.hazmat.primitives.asymmetric import rsa

from plaza.wallet import http, rsa2
from plaza.wallet.base import (
    LoginError,
    WalletUser,
    check_callback_error,
    check_state,
    check_transaction,
    new_transaction,
    pass_add_url,
    safe_code,
)
from plaza.wallet.config import WalletConfig
from plaza.wallet.rawjson import raw_members

log = logging.getLogger("plaza.portal.wallet")

# Alipay's timestamps are Beijing time; China has had no daylight saving since 1991.
SHANGHAI = dt.timezone(dt.timedelta(hours=8), "Asia/Shanghai")
TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S"
SUCCESS = "10000"
TOKEN_METHOD = "alipay.system.oauth.token"
USERINFO_METHOD = "alipay.user.info.share"
USER_FIELDS = ("user_id", "open_id", "nick_name", "avatar", "gender", "province", "city")


def timestamp(now: float) -> str:
    """The `timestamp` common parameter for the instant `now` (Unix seconds)."""
    return dt.datetime.fromtimestamp(now, SHANGHAI).strftime(TIMESTAMP_FORMAT)


def response_key(method: str) -> str:
    """`alipay.user.info.share` answers in `alipay_user_info_share_response`."""
    return method.replace(".", "_") + "_response"


class AlipayProvider:
    """One merchant app (app_id + key pair) at one wallet gateway."""

    dialect = "alipay"

    def __init__(self, config: WalletConfig, *, clock: Callable[[], float] = time.time) -> None:
        for key in ("authorize_url", "gateway_url"):
            if not getattr(config, key).startswith("https://"):
                raise ValueError(f"[wallet] {key} must be an https:// URL")
        if config.alipay_scope not in ("auth_base", "auth_user"):
            raise ValueError("[wallet] alipay_scope must be auth_base or auth_user")
        self.app_id = config.app_id
        self.scope = config.alipay_scope
        self.authorize_url = config.authorize_url
        self.gateway_url = config.gateway_url
        self.ca_file = config.ca_file
        self.app_key = rsa2.load_private_key(config.app_private_key_file)
        self.wallet_key = rsa2.load_public_key(config.wallet_public_key_file)
        self.clock = clock
        self.pool = http.KeptAlive(self.ca_file)

    def start(self, redirect_uri: str) -> tuple[str, dict]:
        state = generate_token(32)
        query = urlencode(
            {
                "app_id": self.app_id,
                "scope": self.scope,
                "redirect_uri": redirect_uri,
                "state": state,
            }
        )
        sep = "&" if "?" in self.authorize_url else "?"
        txn = new_transaction("alipay", redirect_uri, self.clock(), state=state)
        return f"{self.authorize_url}{sep}{query}", txn

    def finish(self, args: Mapping[str, str], transaction: dict, redirect_uri: str) -> WalletUser:
        txn = check_transaction(transaction, "alipay", redirect_uri, self.clock())
        check_state(args, txn)
        check_callback_error(args)
        if args.get("app_id", self.app_id) != self.app_id:
            raise LoginError("the answer was meant for a different merchant app", "state")
        code = args.get("auth_code")
        if not code:
            raise LoginError("the wallet sent no auth_code", "invalid")
        with http.new_session(self.ca_file, self.pool) as session:
            token = self.call(
                session, TOKEN_METHOD, {"grant_type": "authorization_code", "code": code}
            )
            user_id, open_id = token.get("user_id"), token.get("open_id")
            if not (isinstance(user_id, str) and user_id) and not (
                isinstance(open_id, str) and open_id
            ):
                raise LoginError("the wallet's token answer names no user", "invalid")
            info: dict[str, Any] = {}
            if self.scope == "auth_user":
                access_token = token.get("access_token")
                if not isinstance(access_token, str) or not access_token:
                    raise LoginError("the wallet's token answer has no access token", "invalid")
                info = self.call(session, USERINFO_METHOD, {"auth_token": access_token})
                if any(k in info and info[k] != token.get(k) for k in ("user_id", "open_id")):
                    raise LoginError("the wallet's user info is about a different user", "invalid")
        claims = {k: v for k, v in {**token, **info}.items() if k in USER_FIELDS}
        claims["scope"] = self.scope
        name = info.get("nick_name")
        return WalletUser(
            user_id=str(user_id or open_id),
            display_name=name if isinstance(name, str) and name else None,
            dialect="alipay",
            claims=claims,
        )

    def pass_url(self, link: str, title: str, offers: bool = False) -> str:
        """The add-a-pass page on the authorize page's origin; the wallet knows us by app_id."""
        return pass_add_url(self.authorize_url, self.app_id, link, title, offers)

    # -- the gateway ------------------------------------------------------------------------

    def request_params(
        self, method: str, params: Mapping[str, str], biz: Mapping[str, Any] | None = None
    ) -> dict[str, str]:
        """A signed request: the common parameters, the method's own, and `sign` over all."""
        out = {
            "app_id": self.app_id,
            "method": method,
            "format": "JSON",
            "charset": "utf-8",
            "sign_type": "RSA2",
            "timestamp": timestamp(self.clock()),
            "version": "1.0",
        }
        if biz is not None:
            out["biz_content"] = json.dumps(biz, ensure_ascii=False, separators=(",", ":"))
        out.update(params)
        out["sign"] = rsa2.sign(out, self.app_key)
        return out

    def call(
        self,
        session: requests.Session,
        method: str,
        params: Mapping[str, str],
        biz: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """POST one signed API call; the verified `<method>_response` object, or LoginError."""
        body = self.request_params(method, params, biz)
        try:
            response = session.post(
                self.gateway_url,
                data=body,
                headers={"Content-Type": "application/x-www-form-urlencoded;charset=utf-8"},
                timeout=http.TIMEOUT,
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            raise http.unreachable(exc, method) from None
        if response.status_code != 200:
            log.warning("wallet %s: HTTP %d", method, response.status_code)
            raise LoginError("the wallet is unreachable (it reported an error)", "unreachable")
        try:
            text = response.content.decode("utf-8")
        except UnicodeDecodeError:
            raise LoginError(f"the wallet's answer to {method} is not UTF-8", "invalid") from None
        return parse_response(text, method, self.wallet_key)


def parse_response(text: str, method: str, wallet_key: rsa.RSAPublicKey) -> dict[str, Any]:
    """The `<method>_response` object of a gateway answer, once its signature checks out.

    The signature covers the value's raw text as sent, so that text is cut out of the body
    verbatim rather than re-serialized. `error_response` and non-10000 codes are refusals.
    """
    try:
        members = raw_members(text)
    except ValueError:
        raise LoginError(f"the wallet's answer to {method} is not JSON", "invalid") from None
    key = response_key(method)
    if key not in members:
        error = _json_object(members.get("error_response", "null"))
        if error is not None:
            raise _refusal(method, error)
        raise LoginError(f"the wallet's answer to {method} was not understood", "invalid")
    raw = members[key]
    signature = _json_object(members.get("sign", "null"), kind=str)
    if not isinstance(signature, str) or not rsa2.verify_text(raw, signature, wallet_key):
        log.warning("wallet %s: response signature check failed", method)
        raise LoginError("the wallet's answer failed the signature check", "signature")
    result = _json_object(raw)
    if result is None:
        raise LoginError(f"the wallet's answer to {method} was not understood", "invalid")
    if "code" in result and result["code"] != SUCCESS:
        raise _refusal(method, result)
    return result


def _json_object(raw: str, kind: type = dict) -> Any:
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, kind) else None


def _refusal(method: str, error: dict) -> LoginError:
    code = safe_code(error.get("sub_code") or error.get("code"))
    log.warning(
        "wallet refused %s: code=%s sub_code=%s", method, safe_code(error.get("code")), code
    )
    return LoginError(f"the wallet refused {method} ({code})", "rejected", code)
