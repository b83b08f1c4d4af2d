"""Which wallet signs shoppers in and how to reach it: the `[wallet]` section of the router's
config, and the same settings the cloud's push worker uses to reach the wallet as the merchant's
app. Here rather than in gateway.config so the cloud needs nothing of the router's."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WalletConfig:
    """Which wallet signs shoppers in, and how to reach it."""

    dialect: str = "oidc"  # "oidc" (OAuth 2.0 / OpenID Connect) or "alipay"
    # OpenID Connect: discovery at <issuer>/.well-known/openid-configuration
    issuer: str = "https://wallet.test"
    client_id: str = "plaza-portal"
    client_secret_file: str = ""  # empty: a public client (PKCE only)
    scope: str = "openid profile"
    # Alipay open-platform dialect
    app_id: str = ""
    authorize_url: str = "https://wallet.test/oauth2/publicAppAuthorize.htm"
    gateway_url: str = "https://wallet.test/gateway.do"
    alipay_scope: str = "auth_user"  # auth_base (silent, user_id only) or auth_user
    app_private_key_file: str = ""
    wallet_public_key_file: str = ""
    ca_file: str = ""  # trust anchors for the wallet's TLS; empty: the system store
