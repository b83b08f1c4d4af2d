"""OpenID Connect login with Authlib: authorization code + PKCE (S256), state and nonce.

The browser never carries anything we trust: the code is exchanged over our own TLS channel
with the PKCE verifier only this login knows, and the ID token is checked against the keys the
issuer publishes (signature, iss, aud, nonce, exp) before the portal hears of a user.
Discovery and keys are cached for a few minutes; a token signed by a key we have not seen
makes us re-read the key set once (keys rotate), but not more often than every 30 s.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import requests
from authlib.common.security import generate_token
from authlib.integrations.base_client import OAuthError
from authlib.integrations.requests_client import OAuth2Session
from authlib.oidc.core import CodeIDToken
from joserfc import jwt
from joserfc.errors import (
    BadSignatureError,
    ClaimError,
    ExpiredTokenError,
    InvalidKeyIdError,
    JoseError,
)
from joserfc.jwk import KeySet

from plaza.wallet import http
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

log = logging.getLogger("plaza.portal.wallet")

CACHE_SECONDS = 300.0
JWKS_REFETCH_SECONDS = 30.0
LEEWAY = 60  # seconds of clock skew tolerated on exp/iat
# Asymmetric algorithms only: "none" and HMAC (keyed with a public value) are never accepted.
SAFE_ALGS = ("RS256", "PS256", "ES256", "RS384", "RS512", "ES384", "EdDSA")
# Claims that belong to the protocol, not to the shopper; left out of WalletUser.claims.
PROTOCOL_CLAIMS = frozenset({"nonce", "at_hash", "c_hash", "auth_time", "iat", "exp", "nbf"})


class OidcProvider:
    """A relying party for one issuer and client."""

    dialect = "oidc"

    def __init__(self, config: WalletConfig, *, clock: Callable[[], float] = time.time) -> None:
        if not config.issuer.startswith("https://"):
            raise ValueError("[wallet] issuer must be an https:// URL")
        self.issuer = config.issuer
        self.client_id = config.client_id
        self.scope = config.scope if "openid" in config.scope.split() else f"openid {config.scope}"
        self.ca_file = config.ca_file
        self.client_secret = read_secret(config.client_secret_file)
        self.clock = clock
        self._lock = threading.Lock()
        self._metadata: tuple[float, dict] | None = None
        self._jwks: tuple[float, dict] | None = None
        self.pool = http.KeptAlive(self.ca_file)

    # -- the portal's interface -------------------------------------------------------------

    def start(self, redirect_uri: str) -> tuple[str, dict]:
        endpoint = self.metadata()["authorization_endpoint"]
        state, nonce, verifier = generate_token(32), generate_token(32), generate_token(64)
        with self._oauth(redirect_uri) as client:
            url, _ = client.create_authorization_url(
                endpoint, state=state, code_verifier=verifier, nonce=nonce
            )
        txn = new_transaction(
            "oidc", redirect_uri, self.clock(), state=state, nonce=nonce, code_verifier=verifier
        )
        return url, txn

    def finish(self, args: Mapping[str, str], transaction: dict, redirect_uri: str) -> WalletUser:
        txn = check_transaction(transaction, "oidc", redirect_uri, self.clock())
        check_state(args, txn)
        check_callback_error(args)
        if "iss" in args and args["iss"] != self.issuer:  # RFC 9207 mix-up defence
            raise LoginError("the answer came from a different wallet than the one asked", "state")
        code = args.get("code")
        if not code:
            raise LoginError("the wallet sent no authorization code", "invalid")
        meta = self.metadata()
        with self._oauth(redirect_uri) as client:
            token = self._exchange(client, meta, code, txn["code_verifier"], redirect_uri)
            claims = self._id_token_claims(token, txn["nonce"])
            userinfo = self._userinfo(client, meta, claims) if "name" not in claims else {}
        merged = {k: v for k, v in {**claims, **userinfo}.items() if k not in PROTOCOL_CLAIMS}
        name = merged.get("name") or merged.get("preferred_username") or merged.get("nickname")
        return WalletUser(
            user_id=str(claims["sub"]),
            display_name=name if isinstance(name, str) and name else None,
            dialect="oidc",
            claims=merged,
        )

    def pass_url(self, link: str, title: str, offers: bool = False) -> str:
        """The issuer's add-a-pass page; the wallet knows us by client_id."""
        return pass_add_url(self.issuer, self.client_id, link, title, offers)

    # -- discovery and keys -----------------------------------------------------------------

    def metadata(self) -> dict:
        """The issuer's discovery document, checked and cached."""
        now = time.monotonic()
        with self._lock:
            if self._metadata and now - self._metadata[0] < CACHE_SECONDS:
                return self._metadata[1]
        url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
        with http.new_session(self.ca_file, self.pool) as session:
            meta = http.get_json(session, url, "discovery document")
        if meta.get("issuer") != self.issuer:
            log.warning("discovery names issuer %r, configured %r", meta.get("issuer"), self.issuer)
            raise LoginError("the wallet's discovery document names a different issuer", "invalid")
        for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            value = meta.get(key)
            if not isinstance(value, str) or not value.startswith("https://"):
                raise LoginError(f"the wallet's discovery document has no https {key}", "invalid")
        with self._lock:
            self._metadata = (now, meta)
        return meta

    def key_set(self, force: bool = False) -> KeySet:
        """The issuer's signing keys; `force` re-reads them unless that was just done."""
        now = time.monotonic()
        with self._lock:
            cached = self._jwks
        fresh = cached and now - cached[0] < (JWKS_REFETCH_SECONDS if force else CACHE_SECONDS)
        if cached and fresh:
            data = cached[1]
        else:
            with http.new_session(self.ca_file, self.pool) as session:
                data = http.get_json(session, self.metadata()["jwks_uri"], "key set")
            with self._lock:
                self._jwks = (now, data)
        try:
            return KeySet.import_key_set(data)  # type: ignore[arg-type]
        except (JoseError, ValueError, TypeError, KeyError) as exc:
            raise LoginError("the wallet's key set is not usable", "invalid") from exc

    # -- the steps of finish() --------------------------------------------------------------

    def _oauth(self, redirect_uri: str) -> OAuth2Session:
        session = OAuth2Session(
            client_id=self.client_id,
            client_secret=self.client_secret or None,
            scope=self.scope,
            redirect_uri=redirect_uri,
            code_challenge_method="S256",
            default_timeout=http.TIMEOUT,
        )
        return http.configure(session, self.ca_file, self.pool)

    def _exchange(
        self, client: OAuth2Session, meta: dict, code: str, verifier: str, redirect_uri: str
    ) -> dict:
        try:
            token = client.fetch_token(
                meta["token_endpoint"],
                grant_type="authorization_code",
                code=code,
                code_verifier=verifier,
                redirect_uri=redirect_uri,
                allow_redirects=False,
                timeout=http.TIMEOUT,
            )
        except OAuthError as exc:
            raise LoginError(
                f"the wallet refused the authorization code ({safe_code(exc.error)})", "rejected"
            ) from None
        except requests.RequestException as exc:
            raise http.unreachable(exc, "token endpoint") from None
        except ValueError:
            raise LoginError("the wallet's token endpoint answered nonsense", "invalid") from None
        if not isinstance(token, dict) or not isinstance(token.get("id_token"), str):
            raise LoginError("the wallet sent no ID token (is 'openid' in the scope?)", "invalid")
        return dict(token)

    def _id_token_claims(self, token: dict, nonce: str) -> dict[str, Any]:
        meta = self.metadata()
        advertised = meta.get("id_token_signing_alg_values_supported") or ["RS256"]
        algs = [alg for alg in advertised if alg in SAFE_ALGS]
        if not algs:
            raise LoginError("the wallet signs ID tokens with no algorithm we accept", "signature")
        try:
            try:
                decoded = jwt.decode(token["id_token"], self.key_set(), algorithms=algs)
            except InvalidKeyIdError:
                decoded = jwt.decode(token["id_token"], self.key_set(force=True), algorithms=algs)
        except BadSignatureError:
            raise LoginError("ID token signature check failed", "signature") from None
        except JoseError as exc:
            log.warning("ID token refused: %s", type(exc).__name__)
            raise LoginError(
                "ID token signature check failed (unknown key or algorithm)", "signature"
            ) from None
        except ValueError:
            raise LoginError("the ID token is malformed", "invalid") from None
        options = {
            "iss": {"essential": True, "value": self.issuer},
            "aud": {"essential": True, "value": self.client_id},
            "sub": {"essential": True},
            "exp": {"essential": True},
        }
        params = {"nonce": nonce, "client_id": self.client_id}
        if token.get("access_token"):
            params["access_token"] = token["access_token"]
        claims = CodeIDToken(decoded.claims, decoded.header, options, params)  # type: ignore[arg-type]
        try:
            claims.validate(now=int(self.clock()), leeway=LEEWAY)
        except ExpiredTokenError:
            raise LoginError("the ID token has expired", "invalid") from None
        except ClaimError as exc:
            raise LoginError(
                f"the ID token's {safe_code(exc.claim, 'claims')} is wrong", "invalid"
            ) from None
        if "nonce" not in claims:  # CodeIDToken only compares when present; we always send one
            raise LoginError("the ID token's nonce is wrong", "invalid")
        return dict(claims)

    def _userinfo(self, client: OAuth2Session, meta: dict, claims: dict) -> dict:
        """Profile claims (the name) when the ID token carries only `sub`, as OIDC §5.4 allows.

        Optional: if it fails the shopper is still logged in, just without a name. A different
        `sub` is refused outright, as it means the wallet mixed up two users (OIDC §5.3.4).
        """
        endpoint = meta.get("userinfo_endpoint")
        if not isinstance(endpoint, str) or not endpoint.startswith("https://"):
            return {}
        try:
            info = http.get_json(client, endpoint, "userinfo endpoint")
        except LoginError as exc:
            log.warning("userinfo skipped: %s", exc)
            return {}
        if info.get("sub") != claims["sub"]:
            raise LoginError("the wallet's userinfo is about a different user", "invalid")
        return info


def read_secret(path: str) -> str:
    """The client secret, read once at startup; empty path: a public client (PKCE only)."""
    if not path:
        return ""
    try:
        secret = Path(path).read_text().strip()
    except OSError as exc:
        raise ValueError(f"[wallet] client_secret_file {path}: {exc.strerror}") from None
    if not secret:
        raise ValueError(f"[wallet] client_secret_file {path} is empty")
    return secret
