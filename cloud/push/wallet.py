"""Pushing a message into a shopper's wallet inbox, as the merchant's registered wallet app.

The cloud, not the router, does this: it knows who opted in, and a router must never hold a
credential that can message every shopper. Each dialect authenticates as its apps do elsewhere:

- `oidc`: `POST <base>/v1/messages` with HTTP Basic client_id:client_secret (a confidential
  client; RFC 6749 §2.3.1 encoding), JSON `{"user", "title", "body", "link"}`, 201 `{"id"}`.
- `alipay`: the gateway method `alipay.pass.message.push` at `<base>/gateway.do`, signed with
  the merchant app's RSA2 key exactly as the portal signs its login calls (the portal's
  AlipayProvider builds the request), `biz_content` `{"user_id" | "open_id", ...}`.

An Alipay answer is believed only with the wallet's signature, refusals included: an unsigned
"no such user" would otherwise let anyone on the path make us delete a shopper's opt-in. The
HTTP rules are the portal's (plaza.wallet.http): our own trust anchors, no environment
proxies, no redirects. Nothing is retried here; PushError.retry tells the caller whether to.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote_plus

import requests

from cloud.push import PushError, RecipientGone, retry_after_seconds
from plaza.wallet import http, rsa2
from plaza.wallet.alipay import SUCCESS, AlipayProvider, response_key
from plaza.wallet.config import WalletConfig
from plaza.wallet.oidc import read_secret
from plaza.wallet.rawjson import raw_members

log = logging.getLogger("plaza.cloud.push")

DIALECTS = ("oidc", "alipay")
MESSAGES_PATH = "/v1/messages"
GATEWAY_PATH = "/gateway.do"
PUSH_METHOD = "alipay.pass.message.push"
TIMEOUT = 10.0  # a background fan-out, not a shopper waiting: longer than the portal's 5 s
ALIPAY_USER_ID = re.compile(r"2088\d{12}")  # anything else Alipay gave us is an open_id
ALIPAY_GONE = ("USER_NOT_EXIST",)


class WalletMessenger:
    """One merchant app at one wallet; `send` puts one message in one user's inbox."""

    def __init__(
        self,
        base_url: str,
        dialect: str,
        *,
        client_id: str = "",
        client_secret_file: str = "",
        app_id: str = "",
        app_private_key_file: str = "",
        wallet_public_key_file: str = "",
        ca_bundle: str = "",
        clock: Callable[[], float] = time.time,
        timeout: float = TIMEOUT,
    ) -> None:
        """Credentials for `dialect` only: oidc needs client_id and client_secret_file, alipay
        app_id, app_private_key_file and wallet_public_key_file. Files are read now, so a bad
        configuration fails at start rather than at the first shopper. ValueError if unusable."""
        if not base_url.startswith("https://"):
            raise ValueError("[push] wallet base_url must be an https:// URL")
        if dialect not in DIALECTS:
            raise ValueError(f"[push] wallet dialect: 'oidc' or 'alipay', got {dialect!r}")
        self.base_url = base_url.rstrip("/")
        self.dialect = dialect
        self.timeout = timeout
        self.session = http.new_session(ca_bundle)
        self._auth: tuple[str, str] | None = None
        self._alipay: AlipayProvider | None = None
        if dialect == "oidc":
            if not client_id or not client_secret_file:
                raise ValueError("[push] the oidc dialect needs client_id and client_secret_file")
            self._auth = (quote_plus(client_id), quote_plus(read_secret(client_secret_file)))
        else:
            if not (app_id and app_private_key_file and wallet_public_key_file):
                raise ValueError(
                    "[push] the alipay dialect needs app_id, app_private_key_file and "
                    "wallet_public_key_file"
                )
            config = WalletConfig(
                dialect="alipay",
                app_id=app_id,
                authorize_url=self.base_url + "/oauth2/publicAppAuthorize.htm",
                gateway_url=self.base_url + GATEWAY_PATH,
                app_private_key_file=app_private_key_file,
                wallet_public_key_file=wallet_public_key_file,
                ca_file=ca_bundle,
            )
            self._alipay = AlipayProvider(config, clock=clock)

    def __enter__(self) -> WalletMessenger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.session.close()

    def send(self, user: str, title: str, body: str, link: str) -> str:
        """Deliver; the wallet's message id. RecipientGone if the wallet has no such user,
        PushError otherwise (`retry` set when the wallet was unreachable or failing)."""
        if not link.startswith("https://"):
            raise PushError("the link must be an https:// URL")  # the wallet would refuse it
        if self._alipay is not None:
            return self._send_alipay(self._alipay, user, title, body, link)
        return self._send_oidc(user, title, body, link)

    # -- oidc -------------------------------------------------------------------------------

    def _send_oidc(self, user: str, title: str, body: str, link: str) -> str:
        response = self._post(
            self.base_url + MESSAGES_PATH,
            json={"user": user, "title": title, "body": body, "link": link},
            auth=self._auth,
        )
        answer = _json_object(response)
        if response.status_code == 201 and isinstance(answer.get("id"), str):
            return answer["id"]
        error, why = answer.get("error"), answer.get("error_description")
        detail = f"{error}: {why}" if isinstance(error, str) and isinstance(why, str) else ""
        detail = detail[:200] or f"HTTP {response.status_code}"
        if response.status_code == 404 and error == "unknown_user":
            raise RecipientGone(f"the wallet has no such user ({detail})", status=404)
        raise _http_failure(response, detail)

    # -- alipay -----------------------------------------------------------------------------

    def _send_alipay(
        self, provider: AlipayProvider, user: str, title: str, body: str, link: str
    ) -> str:
        who = "user_id" if ALIPAY_USER_ID.fullmatch(user) else "open_id"
        biz = {who: user, "title": title, "body": body, "link": link}
        response = self._post(
            provider.gateway_url,
            data=provider.request_params(PUSH_METHOD, {}, biz),
            headers={"Content-Type": "application/x-www-form-urlencoded;charset=utf-8"},
        )
        if response.status_code != 200:
            raise _http_failure(response, f"HTTP {response.status_code}")
        answer = verified_answer(response.content, PUSH_METHOD, provider)
        if answer.get("code") == SUCCESS and isinstance(answer.get("message_id"), str):
            return answer["message_id"]
        sub_code = str(answer.get("sub_code") or answer.get("code"))[:64]
        detail = f"{sub_code}: {str(answer.get('sub_msg', ''))[:200]}"
        if sub_code in ALIPAY_GONE:
            raise RecipientGone(f"the wallet has no such user ({detail})")
        raise PushError(f"the wallet refused the message ({detail})")

    # -- both -------------------------------------------------------------------------------

    def _post(self, url: str, **kw: Any) -> requests.Response:
        try:
            return self.session.post(url, timeout=self.timeout, allow_redirects=False, **kw)
        except requests.RequestException as exc:
            # The class only: a URL or header could carry a credential into the logs.
            log.warning("wallet push (%s): %s", self.dialect, type(exc).__name__)
            raise PushError(
                f"the wallet is unreachable ({type(exc).__name__})", retry=True
            ) from None


def verified_answer(content: bytes, method: str, provider: AlipayProvider) -> dict[str, Any]:
    """The `<method>_response` or `error_response` object of a gateway answer, only if the
    wallet's key signed its exact text (Alipay signs refusals too); PushError otherwise."""
    try:
        members = raw_members(content.decode("utf-8"))
    except ValueError:  # UnicodeDecodeError included
        raise PushError(f"the wallet's answer to {method} is not a JSON object") from None
    key = response_key(method) if response_key(method) in members else "error_response"
    raw, sign = members.get(key), members.get("sign")
    try:
        signature = json.loads(sign) if sign else None
    except ValueError:
        signature = None
    if raw is None or not isinstance(signature, str):
        raise PushError(f"the wallet's answer to {method} was not understood")
    if not rsa2.verify_text(raw, signature, provider.wallet_key):
        log.warning("wallet push: response signature check failed")
        raise PushError(f"the wallet's answer to {method} failed the signature check")
    value = json.loads(raw)
    if not isinstance(value, dict):
        raise PushError(f"the wallet's answer to {method} was not understood")
    return value


def _json_object(response: requests.Response) -> dict[str, Any]:
    try:
        value = response.json()
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _http_failure(response: requests.Response, detail: str) -> PushError:
    """A refusal or failure by HTTP status: 429 and 5xx may work later, the rest will not."""
    status = response.status_code
    retry_after = retry_after_seconds(response.headers.get("Retry-After"))
    if status == 429 or status >= 500:
        return PushError(
            f"the wallet is busy or failing ({detail})",
            retry=True,
            status=status,
            retry_after=retry_after,
        )
    if status == 401:
        return PushError(f"the wallet refused our client credentials ({detail})", status=status)
    return PushError(f"the wallet refused the message ({detail})", status=status)
