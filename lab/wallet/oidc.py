"""The sandbox wallet as an OpenID provider, built on Authlib's authorization server.

Authlib does the protocol (request validation, error redirects, token responses, ID token
signing); this module supplies storage and the rules of a strict wallet: exact redirect URIs,
public clients must use PKCE with S256 ("plain" is refused), a nonce is required, codes are
single-use and live 60 s, and presenting a spent code again revokes what it bought (RFC 6749
§4.1.2). ID tokens carry only `sub`; the name comes from /userinfo, as OIDC §5.4 describes
for the code flow.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from authlib.integrations.flask_oauth2 import AuthorizationServer, ResourceProtector
from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import ClientMixin, InvalidRequestError, TokenMixin, grants
from authlib.oauth2.rfc6750 import BearerTokenValidator
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oidc.core import UserInfo, UserInfoEndpoint
from authlib.oidc.core.grants import OpenIDCode
from authlib.oidc.core.models import AuthorizationCodeMixin
from flask import Blueprint, Flask, Response, current_app, jsonify, request
from joserfc.jwk import RSAKey

from lab.wallet import consent
from lab.wallet.settings import OidcClient, WalletAccount, WalletSettings
from lab.wallet.store import Expiring

SCOPES = ("openid", "profile")
NONCE_SECONDS = 600.0

bp = Blueprint("oidc", __name__)


class Client(ClientMixin):
    """A registered relying party (the portal)."""

    def __init__(self, registered: OidcClient) -> None:
        self.registered = registered
        self.client_id = registered.client_id
        self.client_metadata: dict[str, Any] = {}

    @property
    def is_public(self) -> bool:
        return not self.registered.client_secret

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> None:
        return None  # always require redirect_uri, and require it to match exactly

    def get_allowed_scope(self, scope: str) -> str:
        allowed = self.registered.scope.split()
        return " ".join(s for s in (scope or "").split() if s in allowed)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.registered.redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        secret = self.registered.client_secret
        return bool(secret) and hmac.compare_digest(client_secret.encode(), secret.encode())

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        if endpoint != "token":
            return True
        if self.is_public:
            return method == "none"
        return method in ("client_secret_basic", "client_secret_post")

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "authorization_code"


@dataclass
class Code(AuthorizationCodeMixin):
    code: str
    client_id: str
    redirect_uri: str
    scope: str
    login: str
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    auth_time: int

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> str | None:
        return self.nonce

    def get_auth_time(self) -> int:
        return self.auth_time


@dataclass
class Token(TokenMixin):
    access_token: str
    client: Client
    account: WalletAccount
    scope: str
    issued_at: float
    expires_in: int
    clock: Callable[[], float]
    revoked: bool = False

    def check_client(self, client: ClientMixin) -> bool:
        return client.get_client_id() == self.client.client_id

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return self.expires_in

    def is_expired(self) -> bool:
        return self.clock() >= self.issued_at + self.expires_in

    def is_revoked(self) -> bool:
        return self.revoked

    def get_user(self) -> WalletAccount:
        return self.account

    def get_client(self) -> Client:
        return self.client


@dataclass
class OidcState:
    settings: WalletSettings
    clock: Callable[[], float]
    key: RSAKey
    codes: Expiring[Code]
    tokens: Expiring[Token]
    spent: Expiring[list[str]]  # code -> access tokens it bought, to revoke on replay
    nonces: Expiring[bool] = field(default=None)  # type: ignore[assignment]
    server: AuthorizationServer = field(default=None)  # type: ignore[assignment]


def state() -> OidcState:
    return current_app.extensions["wallet_oidc"]


class CodeGrant(grants.AuthorizationCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]

    def save_authorization_code(self, code: str, request: Any) -> None:
        st: OidcState = self.server.wallet
        data = request.payload.data
        nonce = data.get("nonce")
        st.codes.put(
            code,
            Code(
                code=code,
                client_id=request.client.client_id,
                redirect_uri=request.payload.redirect_uri,
                scope=request.scope,
                login=request.user.login,
                nonce=nonce,
                code_challenge=data.get("code_challenge"),
                code_challenge_method=data.get("code_challenge_method"),
                auth_time=int(st.clock()),
            ),
        )
        if nonce:
            st.nonces.put(f"{request.client.client_id} {nonce}", True)

    def query_authorization_code(self, code: str, client: Client) -> Code | None:
        st: OidcState = self.server.wallet
        record = st.codes.take(code)  # taken at first presentation: one try per code
        if record is None:
            for access_token in st.spent.take(code) or []:
                token = st.tokens.get(access_token)
                if token:
                    token.revoked = True
            return None
        st.spent.put(code, [])
        if record.client_id != client.client_id:
            return None
        return record

    def delete_authorization_code(self, authorization_code: Code) -> None:
        pass  # already taken by query_authorization_code

    def authenticate_user(self, authorization_code: Code) -> WalletAccount | None:
        return self.server.wallet.settings.account(authorization_code.login)


class StrictPkce(CodeChallenge):
    """RFC 7636 as a wallet should enforce it for public clients: S256 or nothing."""

    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        data = grant.request.payload.data
        if grant.request.client.is_public and not data.get("code_challenge"):
            raise InvalidRequestError("PKCE is required: send code_challenge (method S256)")
        if data.get("code_challenge") and data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("code_challenge_method must be S256; plain is refused")
        super().validate_code_challenge(grant, redirect_uri)


class IdToken(OpenIDCode):
    def __init__(self, st: OidcState) -> None:
        super().__init__(require_nonce=True)
        self.st = st

    def exists_nonce(self, nonce: str, request: Any) -> bool:
        return f"{request.payload.client_id} {nonce}" in self.st.nonces

    def resolve_client_private_key(self, client: Client) -> RSAKey:
        return self.st.key

    def get_client_algorithm(self, client: Client) -> str:
        return "RS256"

    def get_encode_header(self, client: Client) -> dict[str, str]:
        return {"alg": "RS256", "kid": self.st.key.kid or "", "typ": "JWT"}

    def get_client_claims(self, client: Client) -> dict[str, Any]:
        return {"iss": self.st.settings.issuer, "aud": client.client_id}

    def generate_user_info(self, user: WalletAccount, scope: str) -> UserInfo:
        return UserInfo(sub=user.user_id)


class UserInfoView(UserInfoEndpoint):
    def __init__(self, st: OidcState, protector: ResourceProtector) -> None:
        super().__init__(resource_protector=protector)
        self.st = st

    def get_issuer(self) -> str:
        return self.st.settings.issuer

    def generate_user_info(self, user: WalletAccount, scope: str) -> UserInfo:
        info = UserInfo(sub=user.user_id, name=user.name, preferred_username=user.login)
        return info.filter(scope)

    def resolve_private_key(self) -> RSAKey:
        return self.st.key


class TokenValidator(BearerTokenValidator):
    def __init__(self, st: OidcState) -> None:
        super().__init__()
        self.st = st

    def authenticate_token(self, token_string: str) -> Token | None:
        return self.st.tokens.get(token_string)


def init(app: Flask, settings: WalletSettings, clock: Callable[[], float] = time.time) -> None:
    """Register the provider's endpoints; a fresh RS256 key per run, published at /jwks.json."""
    key = RSAKey.generate_key(2048, parameters={"use": "sig", "alg": "RS256"}, auto_kid=True)
    st = OidcState(
        settings=settings,
        clock=clock,
        key=key,
        codes=Expiring(settings.code_seconds, clock),
        tokens=Expiring(settings.token_seconds, clock),
        spent=Expiring(settings.token_seconds, clock),
        nonces=Expiring(NONCE_SECONDS, clock),
    )
    app.config.setdefault("OAUTH2_SCOPES_SUPPORTED", list(SCOPES))
    app.config.setdefault("OAUTH2_TOKEN_EXPIRES_IN", {"authorization_code": settings.token_seconds})

    def query_client(client_id: str) -> Client | None:
        registered = settings.oidc_client(client_id)
        return Client(registered) if registered else None

    def save_token(token: dict, request: Any) -> None:
        record = Token(
            access_token=token["access_token"],
            client=request.client,
            account=request.user,
            scope=token.get("scope", ""),
            issued_at=clock(),
            expires_in=int(token.get("expires_in", settings.token_seconds)),
            clock=clock,
        )
        st.tokens.put(record.access_token, record)
        code = getattr(request, "authorization_code", None)
        if code is not None:
            st.spent.put(code.code, [record.access_token])

    server = AuthorizationServer(app, query_client=query_client, save_token=save_token)
    server.wallet = st  # the grant classes reach their storage through the server
    server.register_grant(CodeGrant, [StrictPkce(required=True), IdToken(st)])
    protector = ResourceProtector()
    protector.register_token_validator(TokenValidator(st))
    server.register_endpoint(UserInfoView(st, protector))
    st.server = server
    app.extensions["wallet_oidc"] = st
    app.register_blueprint(bp)


@bp.get("/.well-known/openid-configuration")
def discovery() -> Response:
    issuer = state().settings.issuer
    return jsonify(
        issuer=issuer,
        authorization_endpoint=f"{issuer}/authorize",
        token_endpoint=f"{issuer}/token",
        userinfo_endpoint=f"{issuer}/userinfo",
        jwks_uri=f"{issuer}/jwks.json",
        response_types_supported=["code"],
        response_modes_supported=["query"],
        grant_types_supported=["authorization_code"],
        subject_types_supported=["public"],
        id_token_signing_alg_values_supported=["RS256"],
        scopes_supported=list(SCOPES),
        token_endpoint_auth_methods_supported=["none", "client_secret_basic", "client_secret_post"],
        code_challenge_methods_supported=["S256"],
        claims_supported=["sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "name"],
    )


@bp.get("/jwks.json")
def jwks() -> Response:
    return jsonify(keys=[state().key.as_dict(private=False)])


@bp.route("/authorize", methods=["GET", "POST"])
def authorize() -> Response:
    st = state()
    account = consent.current_account(st.settings)
    try:
        grant = st.server.get_consent_grant(end_user=account)
    except OAuth2Error as error:
        if error.redirect_uri:  # only once client and redirect_uri are known good
            return st.server.handle_error_response(None, error)
        return consent.error_page(f"This sign-in request is invalid: {error.description}")
    client: Client = grant.client
    profile = "profile" in (grant.request.scope or "").split()
    if request.method == "GET":
        if request.args.get("prompt") == "none":
            error = OAuth2Error(error="consent_required", redirect_uri=grant.redirect_uri)
            error.state = grant.request.payload.state
            return st.server.handle_error_response(None, error)
        return consent.page(client.registered.name, account, profile=profile)
    decision = consent.decide(st.settings, client.registered.name, profile=profile)
    if isinstance(decision, Response):
        return decision
    user = decision.account if decision.approved else None
    return consent.secure(st.server.create_authorization_response(grant=grant, grant_user=user))


@bp.post("/token")
def token() -> Response:
    return state().server.create_token_response()


@bp.route("/userinfo", methods=["GET", "POST"])
def userinfo() -> Response:
    return state().server.create_endpoint_response("userinfo")
