"""Make a sandbox wallet's key material and settings, and say how the portal should use them.

One call lays out a directory with everything both sides need: the wallet's RSA2 key pair
(it signs gateway answers; the portal holds the public half), the merchant app's key pair (the
portal signs requests with the private half; the wallet verifies with the public half), the
cloud's client secret (it pushes messages as a confidential OIDC client; in the Alipay dialect
it signs with the merchant app's key, like the portal), and the settings file the wallet
server loads. Keys are generated fresh per lab and never leave its run directory.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from lab.wallet.settings import (
    AlipayApp,
    OidcClient,
    WalletAccount,
    WalletSettings,
    check,
    settings_to_dict,
)
from lab.wallet.trade import seller_id
from plaza.wallet import rsa2

ISSUER = "https://wallet.test"
HOSTS = ("wallet.test",)
CLIENT_ID = "plaza-portal"
CLOUD_CLIENT_ID = "plaza-cloud"  # pushes messages; signs shoppers in to the plaza web app
SHOP_CALLBACK = "/plaza/login/callback"  # the cloud's shopper sign-in (cloud/o2o/shop.py)
APP_ID = "2021000000000001"
MERCHANT = "Plaza Free Wi-Fi"
OIDC_CALLBACK = "/login/callback"
ALIPAY_CALLBACK = "/login/alipay/callback"

DEFAULT_USERS = (
    WalletAccount("alice", "1234", "2088000000000001", "Alice Wang"),
    WalletAccount("bob", "5678", "2088000000000002", "Bob Li"),
    WalletAccount("mei", "2468", "2088000000000003", "王美"),  # a non-ASCII name, as is common
)


def _write(path: Path, data: bytes, private: bool = False) -> str:
    # Create private files 0600 from the start rather than chmod after: no window.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return str(path)


def provision(
    directory: str | Path,
    portal_redirect_base: str = "https://portal.plaza.test",
    *,
    issuer: str = ISSUER,
    users: tuple[WalletAccount, ...] = DEFAULT_USERS,
    cloud_base: str = "",
) -> dict[str, Any]:
    """Write keys and `wallet-settings.json` into `directory`; return what the lab needs.

    The result has `settings` (path for `--settings`), `hosts` (names the server answers for
    and its certificate must cover), `users`, and `oidc` / `alipay`: the WalletConfig fields for
    the portal in each dialect (add `ca_file`, the lab CA, yourself), `push`: the cloud's
    WalletMessenger arguments per dialect (add `ca_bundle` yourself), and `trade`: what the
    cloud's payments need (the merchant app, its seller id, the keys). With `cloud_base` (the
    cloud's https origin) the cloud's client may also sign shoppers in to the plaza web app.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    base = portal_redirect_base.rstrip("/")
    wallet_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    app_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    paths = {
        "wallet_private_key_file": _write(
            out / "wallet-rsa2.key", rsa2.private_pem(wallet_key), private=True
        ),
        "wallet_public_key_file": _write(
            out / "wallet-rsa2.pub", rsa2.public_pem(wallet_key.public_key())
        ),
        "app_private_key_file": _write(
            out / "app-rsa2.key", rsa2.private_pem(app_key), private=True
        ),
        "app_public_key_file": _write(out / "app-rsa2.pub", rsa2.public_pem(app_key.public_key())),
    }
    cloud_secret = secrets.token_urlsafe(32)
    cloud_secret_file = _write(out / "cloud-client-secret", cloud_secret.encode(), private=True)
    settings = WalletSettings(
        issuer=issuer,
        wallet_private_key_file=paths["wallet_private_key_file"],
        users=users,
        oidc_clients=(
            OidcClient(client_id=CLIENT_ID, name=MERCHANT, redirect_uris=(base + OIDC_CALLBACK,)),
            OidcClient(
                client_id=CLOUD_CLIENT_ID,
                name=MERCHANT,
                redirect_uris=(cloud_base.rstrip("/") + SHOP_CALLBACK,) if cloud_base else (),
                client_secret=cloud_secret,
            ),
        ),
        alipay_apps=(
            AlipayApp(
                app_id=APP_ID,
                name=MERCHANT,
                redirect_uri=base + ALIPAY_CALLBACK,
                public_key_file=paths["app_public_key_file"],
            ),
        ),
    )
    check(settings)
    settings_path = out / "wallet-settings.json"
    _write(settings_path, json.dumps(settings_to_dict(settings), indent=2).encode(), private=True)
    return {
        "settings": str(settings_path),
        "hosts": list(HOSTS),
        "issuer": issuer,
        "users": [
            {"login": u.login, "pin": u.pin, "user_id": u.user_id, "name": u.name} for u in users
        ],
        "oidc": {
            "dialect": "oidc",
            "issuer": issuer,
            "client_id": CLIENT_ID,
            "client_secret_file": "",
            "scope": "openid profile",
        },
        "alipay": {
            "dialect": "alipay",
            "app_id": APP_ID,
            "authorize_url": f"{issuer}/oauth2/publicAppAuthorize.htm",
            "gateway_url": f"{issuer}/gateway.do",
            "alipay_scope": "auth_user",
            "app_private_key_file": paths["app_private_key_file"],
            "wallet_public_key_file": paths["wallet_public_key_file"],
        },
        "redirect_uris": {"oidc": base + OIDC_CALLBACK, "alipay": base + ALIPAY_CALLBACK},
        "trade": {
            "app_id": APP_ID,
            "seller_id": seller_id(APP_ID),
            "gateway_url": f"{issuer}/gateway.do",
            "app_private_key_file": paths["app_private_key_file"],
            "wallet_public_key_file": paths["wallet_public_key_file"],
        },
        "push": {
            "oidc": {
                "base_url": issuer,
                "dialect": "oidc",
                "client_id": CLOUD_CLIENT_ID,
                "client_secret_file": cloud_secret_file,
            },
            "alipay": {
                "base_url": issuer,
                "dialect": "alipay",
                "app_id": APP_ID,
                "app_private_key_file": paths["app_private_key_file"],
                "wallet_public_key_file": paths["wallet_public_key_file"],
            },
        },
    }
