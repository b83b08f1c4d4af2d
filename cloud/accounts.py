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


def create_venue(db: Session, merchant_id: str, name: str, now: float) -> Venue:
    if db.get(Merchant, merchant_id) is None:
        raise AccountError(f"no merchant {merchant_id}")
    name = name.strip()
    if not 1 <= len(name) <= 120 or not name.isprintable():
        raise AccountError("name must be 1 to 120 printable characters")
    config = validate_config(
        {**DEFAULT_CONFIG, "branding": {**DEFAULT_CONFIG["branding"], "name": name}}
    )
    venue = Venue(
        merchant_id=merchant_id, name=name, config=config, config_version=1, created_at=now
    )
    db.add(venue)
    db.flush()
    return venue
