"""Push settings: from the app config (tests, `create_app(config)`), else the environment.

The worker and the web instances read the same names, so one environment file serves both.
Nothing here is required for the cloud to start: without a wallet URL, wallet jobs wait in the
outbox (and expire) rather than fail the join that made them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Flask

from cloud.push.endpoints import EndpointGuard, Network, Resolver, parse_networks, system_resolver
from cloud.push.wallet import WalletMessenger
from cloud.push.webpush import load_or_create_vapid_key

DEFAULT_INTERVAL_HOURS = 4.0  # at most one push per shopper per venue in this time
DEFAULT_JOB_TTL = 3600.0  # an offer for a shopper who walked in is stale after an hour
DEFAULT_SUBJECT = "mailto:push@plaza.invalid"
# At most this many shoppers pushed to per venue per hour: even with every consent in order, a
# venue (or a router replaying joins) cannot turn the cloud into a mass mailer.
DEFAULT_VENUE_HOURLY_BUDGET = 500

# config key -> environment variable
NAMES = {
    "WALLET_URL": "PLAZA_CLOUD_WALLET_URL",
    "WALLET_DIALECT": "PLAZA_CLOUD_WALLET_DIALECT",
    "WALLET_CLIENT_ID": "PLAZA_CLOUD_WALLET_CLIENT_ID",
    "WALLET_CLIENT_SECRET_FILE": "PLAZA_CLOUD_WALLET_CLIENT_SECRET_FILE",
    "WALLET_APP_ID": "PLAZA_CLOUD_WALLET_APP_ID",
    "WALLET_APP_PRIVATE_KEY_FILE": "PLAZA_CLOUD_WALLET_APP_PRIVATE_KEY_FILE",
    "WALLET_PUBLIC_KEY_FILE": "PLAZA_CLOUD_WALLET_PUBLIC_KEY_FILE",
    "WALLET_CA_BUNDLE": "PLAZA_CLOUD_WALLET_CA_BUNDLE",
    "VAPID_KEY_FILE": "PLAZA_CLOUD_VAPID_KEY_FILE",
    "VAPID_SUBJECT": "PLAZA_CLOUD_VAPID_SUBJECT",
    "WEBPUSH_CA_BUNDLE": "PLAZA_CLOUD_WEBPUSH_CA_BUNDLE",
    "PUSH_INTERVAL_HOURS": "PLAZA_CLOUD_PUSH_INTERVAL_HOURS",
    "PUSH_JOB_TTL_SECONDS": "PLAZA_CLOUD_PUSH_JOB_TTL_SECONDS",
    # Non-public networks a push endpoint may still be in (the lab's stand-in push service);
    # empty: public addresses only (cloud/push/endpoints.py).
    "PUSH_ALLOWED_NETWORKS": "PLAZA_CLOUD_PUSH_ALLOWED_NETWORKS",
    "PUSH_VENUE_HOURLY_BUDGET": "PLAZA_CLOUD_PUSH_VENUE_HOURLY_BUDGET",
}


def setting(app: Flask, name: str, default: Any = "") -> Any:
    if app.config.get(name) not in (None, ""):
        return app.config[name]
    return os.environ.get(NAMES[name]) or default


def _positive(app: Flask, name: str, default: float) -> float:
    raw = setting(app, name, default)
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ValueError(f"{NAMES[name]}: not a number: {raw!r}") from None
    if not value > 0:
        raise ValueError(f"{NAMES[name]}: must be more than 0, got {raw!r}")
    return value


def _networks(app: Flask) -> tuple[Network, ...]:
    try:
        return parse_networks(setting(app, "PUSH_ALLOWED_NETWORKS", ""))
    except ValueError as exc:
        raise ValueError(f"{NAMES['PUSH_ALLOWED_NETWORKS']}: {exc}") from None


EXTENSION = "plaza_push"  # app.extensions key: the settings init_app checked at start


@dataclass(frozen=True)
class PushSettings:
    interval_seconds: float
    job_ttl: float
    vapid_key_file: str
    vapid_subject: str
    webpush_ca_bundle: str
    wallet_url: str
    wallet_dialect: str
    wallet_ca_bundle: str
    wallet_credentials: dict[str, str]
    venue_hourly_budget: int = DEFAULT_VENUE_HOURLY_BUDGET
    allowed_networks: tuple[Network, ...] = ()
    # Config only (`PUSH_RESOLVER`, never the environment): tests pass a table, not DNS.
    resolver: Resolver = system_resolver

    @classmethod
    def of(cls, app: Flask) -> PushSettings:
        """The settings init_app checked and kept for `app`; read now for an app without."""
        found = app.extensions.get(EXTENSION)
        return found if found is not None else cls.from_app(app)

    @classmethod
    def from_app(cls, app: Flask) -> PushSettings:
        instance = Path(app.instance_path)
        return cls(
            interval_seconds=_positive(app, "PUSH_INTERVAL_HOURS", DEFAULT_INTERVAL_HOURS) * 3600,
            job_ttl=_positive(app, "PUSH_JOB_TTL_SECONDS", DEFAULT_JOB_TTL),
            vapid_key_file=str(setting(app, "VAPID_KEY_FILE", instance / "vapid.pem")),
            vapid_subject=str(setting(app, "VAPID_SUBJECT", DEFAULT_SUBJECT)),
            webpush_ca_bundle=str(setting(app, "WEBPUSH_CA_BUNDLE")),
            wallet_url=str(setting(app, "WALLET_URL")),
            wallet_dialect=str(setting(app, "WALLET_DIALECT", "oidc")),
            wallet_ca_bundle=str(setting(app, "WALLET_CA_BUNDLE")),
            wallet_credentials={
                "client_id": str(setting(app, "WALLET_CLIENT_ID")),
                "client_secret_file": str(setting(app, "WALLET_CLIENT_SECRET_FILE")),
                "app_id": str(setting(app, "WALLET_APP_ID")),
                "app_private_key_file": str(setting(app, "WALLET_APP_PRIVATE_KEY_FILE")),
                "wallet_public_key_file": str(setting(app, "WALLET_PUBLIC_KEY_FILE")),
            },
            allowed_networks=_networks(app),
            resolver=app.config.get("PUSH_RESOLVER") or system_resolver,
            venue_hourly_budget=int(
                _positive(app, "PUSH_VENUE_HOURLY_BUDGET", DEFAULT_VENUE_HOURLY_BUDGET)
            ),
        )

    def endpoint_guard(self) -> EndpointGuard:
        """What a push endpoint is checked against, at subscribe time and at every send."""
        return EndpointGuard(self.allowed_networks, self.resolver)

    def messenger(self) -> WalletMessenger | None:
        """The wallet client, or None when no wallet is configured. ValueError (naming the
        setting) when one is, but unusably: a worker should stop at start, not per job."""
        if not self.wallet_url:
            return None
        return WalletMessenger(
            self.wallet_url,
            self.wallet_dialect,
            ca_bundle=self.wallet_ca_bundle,
            **self.wallet_credentials,
        )

    def vapid_key(self) -> Any:
        """The VAPID key, made on first use (its directory too, 0700, like the instance dir's
        other keys). Every web instance and worker must share one file, or the subscriptions
        made through one are orphaned (cloud/push/webpush.py)."""
        path = Path(self.vapid_key_file)
        if not path.parent.exists():
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        return load_or_create_vapid_key(path)
