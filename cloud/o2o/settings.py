"""The plaza services' settings: from the app config (tests), else the environment.

The wallet is the one the push worker already reaches (cloud/push/settings.py: the same
`PLAZA_CLOUD_WALLET_*` names), so one environment file configures pushes, shopper sign-in
and payments. Clients are built on first use, not at start: a cloud without a wallet still
serves routers and the dashboard, and the shop says sign-in is unavailable.
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask, request

from cloud.o2o.trade_client import TradeClient, TradeSettings
from cloud.push.settings import NAMES as PUSH_NAMES
from plaza.wallet import WalletProvider, make_provider
from plaza.wallet.config import WalletConfig

NAMES = {
    **{k: v for k, v in PUSH_NAMES.items() if k.startswith("WALLET_")},
    # The cloud's own https origin as shoppers' phones and the wallet reach it: the base of the
    # sign-in redirect URI and of the payment notify and return URLs. Empty: the request's.
    "PUBLIC_URL": "PLAZA_CLOUD_PUBLIC_URL",
    # The merchant account (Alipay PID, 2088...) payments go to; every notify must name it.
    "WALLET_SELLER_ID": "PLAZA_CLOUD_WALLET_SELLER_ID",
}
SIGN_IN_EXT = "plaza_o2o_sign_in"
TRADE_EXT = "plaza_o2o_trade"
AUTHORIZE_PATH = "/oauth2/publicAppAuthorize.htm"
GATEWAY_PATH = "/gateway.do"


class NotConfigured(RuntimeError):
    """The wallet settings this feature needs are missing."""


def setting(app: Flask, name: str, default: str = "") -> str:
    value: Any = app.config.get(name)
    if value not in (None, ""):
        return str(value)
    return os.environ.get(NAMES[name]) or default


def public_url(app: Flask) -> str:
    """The cloud's origin for URLs handed to the wallet, without a trailing slash."""
    return (setting(app, "PUBLIC_URL") or request.host_url).rstrip("/")


def wallet_url(app: Flask) -> str:
    url = setting(app, "WALLET_URL").rstrip("/")
    if not url:
        raise NotConfigured("no wallet is configured (PLAZA_CLOUD_WALLET_URL)")
    return url


def sign_in_provider(app: Flask) -> WalletProvider:
    """The wallet sign-in client (OIDC + PKCE, or the Alipay dialect), one per app."""
    found = app.extensions.get(SIGN_IN_EXT)
    if found is None:
        base = wallet_url(app)
        ca_file = setting(app, "WALLET_CA_BUNDLE")
        if setting(app, "WALLET_DIALECT", "oidc") == "alipay":
            config = WalletConfig(
                dialect="alipay",
                app_id=setting(app, "WALLET_APP_ID"),
                authorize_url=base + AUTHORIZE_PATH,
                gateway_url=base + GATEWAY_PATH,
                app_private_key_file=setting(app, "WALLET_APP_PRIVATE_KEY_FILE"),
                wallet_public_key_file=setting(app, "WALLET_PUBLIC_KEY_FILE"),
                ca_file=ca_file,
            )
        else:
            config = WalletConfig(
                dialect="oidc",
                issuer=base,
                client_id=setting(app, "WALLET_CLIENT_ID"),
                client_secret_file=setting(app, "WALLET_CLIENT_SECRET_FILE"),
                ca_file=ca_file,
            )
        found = app.extensions[SIGN_IN_EXT] = make_provider(config)
    return found


def trade_client(app: Flask) -> TradeClient:
    """The payments client (the Alipay trade dialect, whatever dialect signs shoppers in)."""
    found = app.extensions.get(TRADE_EXT)
    if found is None:
        app_id, key = setting(app, "WALLET_APP_ID"), setting(app, "WALLET_APP_PRIVATE_KEY_FILE")
        if not (app_id and key):
            raise NotConfigured("payments need PLAZA_CLOUD_WALLET_APP_ID and its private key")
        settings = TradeSettings(
            gateway_url=wallet_url(app) + GATEWAY_PATH,
            app_id=app_id,
            seller_id=setting(app, "WALLET_SELLER_ID"),
            app_private_key_file=key,
            wallet_public_key_file=setting(app, "WALLET_PUBLIC_KEY_FILE"),
            ca_file=setting(app, "WALLET_CA_BUNDLE"),
        )
        # Real time, not the app's CLOCK: a request's timestamp is checked by the wallet's clock.
        found = app.extensions[TRADE_EXT] = TradeClient(settings)
    return found
