"""Merchants and their venues: the operations the CLI and the dashboard share.

Functions taking `db` leave the transaction to the caller (commit or roll back), so a caller
can combine several in one unit of work.
"""

from __future__ import annotations

import re

from sqlalchemy import func, select
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from cloud.models import Merchant, Venue
from cloud.venue_config import DEFAULT_CONFIG, validate_config
from plaza.validators import HOSTNAME_RE

EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+\Z")
MIN_PASSWORD = 8


class AccountError(ValueError):
    """A merchant or venue that cannot be created; str() says why, in one line."""


def create_merchant(db: Session, name: str, email: str, password: str, now: float) -> Merchant:
    name, email = name.strip(), email.strip().lower()
    if not 1 <= len(name) <= 120 or not name.isprintable():
        raise AccountError("name must be 1 to 120 printable characters")
    if len(email) > 254 or not EMAIL_RE.match(email):
        raise AccountError(f"not an e-mail address: {email!r}")
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"password must be at least {MIN_PASSWORD} characters")
    if db.scalar(select(func.count()).select_from(Merchant).where(Merchant.email == email)):
        raise AccountError(f"a merchant with e-mail {email} already exists")
    merchant = Merchant(
        name=name, email=email, password_hash=generate_password_hash(password), created_at=now
    )
    db.add(merchant)
    db.flush()
    return merchant


def check_password(merchant: Merchant, password: str) -> bool:
    return check_password_hash(merchant.password_hash, password)


def portal_host(value: str) -> str:
    """A venue's portal host as registered: a DNS name (the portal certificate's), with a
    port only if not 443, lower-case; AccountError otherwise. Shoppers' consent proofs and
    every link pushed for the venue must name exactly this (cloud/presence.py)."""
    host, _, port = value.strip().lower().partition(":")
    host = host.rstrip(".")
    if (
        not HOSTNAME_RE.match(host)
        or "." not in host
        or host.replace(".", "").isdigit()
        or (port and (not port.isdigit() or not 0 < int(port) < 65536))
    ):
        raise AccountError(f"portal host must be a DNS name[:port], got {value!r}")
    return host if port in ("", "443") else f"{host}:{int(port)}"


def set_portal_host(db: Session, venue_id: str, host: str | None) -> Venue:
    venue = db.get(Venue, venue_id)
    if venue is None:
        raise AccountError(f"no venue {venue_id}")
    venue.portal_host = portal_host(host) if host else None
    return venue


def create_venue(
    db: Session, merchant_id: str, name: str, now: float, portal: str | None = None
) -> Venue:
    if db.get(Merchant, merchant_id) is None:
        raise AccountError(f"no merchant {merchant_id}")
    name = name.strip()
    if not 1 <= len(name) <= 120 or not name.isprintable():
        raise AccountError("name must be 1 to 120 printable characters")
    config = validate_config(
        {**DEFAULT_CONFIG, "branding": {**DEFAULT_CONFIG["branding"], "name": name}}
    )
    venue = Venue(
        merchant_id=merchant_id, name=name, config=config, config_version=1, created_at=now,
        portal_host=portal_host(portal) if portal else None,
    )  # fmt: skip
    db.add(venue)
    db.flush()
    return venue
