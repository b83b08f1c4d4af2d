"""The sandbox wallet's settings: accounts, registered clients and apps, lifetimes.

A JSON file written by `lab.wallet.keys.provision` and read by the server at start. Like the
gateway's config it is strict: unknown keys and malformed ids are refused before serving, so a
typo shows up as an error rather than as a login that mysteriously fails.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

USER_ID = re.compile(r"2088\d{12}")


class SettingsError(ValueError):
    pass


@dataclass(frozen=True)
class WalletAccount:
    """A test shopper who can sign in to the wallet with `login` and `pin`."""

    login: str
    pin: str
    user_id: str  # Alipay style: "2088" + 12 digits; also the OIDC `sub`
    name: str


@dataclass(frozen=True)
class OidcClient:
    client_id: str
    name: str  # the merchant app's name, as the consent page shows it
    redirect_uris: tuple[str, ...]
    client_secret: str = ""  # empty: a public client, which must use PKCE S256 (and may not
    # push messages); a confidential client with no redirect_uris only calls the API
    scope: str = "openid profile"


@dataclass(frozen=True)
class AlipayApp:
    app_id: str
    name: str
    redirect_uri: str  # exactly one, matched exactly, as the open platform does
    public_key_file: str  # the app's RSA2 public key: verifies its gateway requests


@dataclass(frozen=True)
class WalletSettings:
    issuer: str  # e.g. https://wallet.test; also the base of every URL the wallet hands out
    wallet_private_key_file: str  # signs Alipay gateway responses
    users: tuple[WalletAccount, ...]
    oidc_clients: tuple[OidcClient, ...] = ()
    alipay_apps: tuple[AlipayApp, ...] = ()
    code_seconds: int = 60
    token_seconds: int = 3600
    refresh_seconds: int = 30 * 86400
    max_skew_seconds: int = 900  # Alipay refuses a request timestamp further off than this

    def account(self, login: str) -> WalletAccount | None:
        return next((u for u in self.users if u.login == login), None)

    def account_by_id(self, user_id: str) -> WalletAccount | None:
        """By the id apps know a user by (OIDC `sub`, Alipay `user_id`), not the sign-in name."""
        return next((u for u in self.users if u.user_id == user_id), None)

    def oidc_client(self, client_id: str) -> OidcClient | None:
        return next((c for c in self.oidc_clients if c.client_id == client_id), None)

    def alipay_app(self, app_id: str) -> AlipayApp | None:
        return next((a for a in self.alipay_apps if a.app_id == app_id), None)


def _build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise SettingsError(f"{where}: expected an object")
    known = {f.name for f in fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise SettingsError(f"{where}: unknown keys {sorted(unknown)}")
    try:
        return cls(**data)
    except TypeError as exc:
        raise SettingsError(f"{where}: {exc}") from None


def settings_from_dict(data: dict[str, Any]) -> WalletSettings:
    """Build and check settings from their JSON form."""
    if not isinstance(data, dict):
        raise SettingsError("settings: expected an object")
    raw = dict(data)
    raw["users"] = tuple(
        _build(WalletAccount, u, f"users[{i}]") for i, u in enumerate(raw.get("users", []))
    )
    clients = []
    for i, c in enumerate(raw.get("oidc_clients", [])):
        client = _build(OidcClient, c, f"oidc_clients[{i}]")
        clients.append(
            OidcClient(**{**client.__dict__, "redirect_uris": tuple(client.redirect_uris)})
        )
    raw["oidc_clients"] = tuple(clients)
    raw["alipay_apps"] = tuple(
        _build(AlipayApp, a, f"alipay_apps[{i}]") for i, a in enumerate(raw.get("alipay_apps", []))
    )
    settings = _build(WalletSettings, raw, "settings")
    check(settings)
    return settings


def check(settings: WalletSettings) -> None:
    """Refuse settings a real wallet could not have."""
    if not settings.issuer.startswith("https://") or settings.issuer.endswith("/"):
        raise SettingsError("issuer: an https:// URL without a trailing slash")
    logins = [u.login for u in settings.users]
    if len(set(logins)) != len(logins):
        raise SettingsError("users: duplicate login")
    for user in settings.users:
        if not USER_ID.fullmatch(user.user_id):
            raise SettingsError(f"users[{user.login}]: user_id must be 2088 + 12 digits")
        if not user.pin.isdigit():
            raise SettingsError(f"users[{user.login}]: pin must be digits")
    for client in settings.oidc_clients:
        # A confidential client may be a pure server (the cloud pushing messages) that signs
        # nobody in; every client that does sign users in needs somewhere https to send them.
        needs_uris = not client.client_secret
        if (needs_uris and not client.redirect_uris) or not all(
            u.startswith("https://") for u in client.redirect_uris
        ):
            raise SettingsError(f"oidc_clients[{client.client_id}]: https redirect_uris needed")
    for app in settings.alipay_apps:
        if not app.redirect_uri.startswith("https://"):
            raise SettingsError(f"alipay_apps[{app.app_id}]: redirect_uri must be https")
    for key in ("code_seconds", "token_seconds", "refresh_seconds", "max_skew_seconds"):
        if getattr(settings, key) <= 0:
            raise SettingsError(f"{key}: must be positive")


def settings_to_dict(settings: WalletSettings) -> dict[str, Any]:
    """The JSON form (tuples as lists), for writing a settings file."""

    def plain(obj: Any) -> Any:
        if hasattr(obj, "__dataclass_fields__"):
            return {f.name: plain(getattr(obj, f.name)) for f in fields(obj)}
        if isinstance(obj, tuple | list):
            return [plain(x) for x in obj]
        return obj

    return plain(settings)


def load_settings(path: str | Path) -> WalletSettings:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise SettingsError(f"{path}: {exc}") from None
    return settings_from_dict(data)
