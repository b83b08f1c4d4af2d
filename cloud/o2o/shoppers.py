"""The signed-in shopper: who the wallet vouched for, kept in the shop's session cookie.

A shopper is keyed by what the wallet says (its dialect, its subject: the OIDC `sub` or the
Alipay `user_id`), never by anything the browser chose. The cloud keeps one row per wallet
user so payments and vouchers have a stable owner (`shp_...`, the primary key other tables
refer to); the session holds only that id and the sign-in time, signed by the app's secret,
so any instance can serve any page and nothing is stored server-side per browser.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import quote

from flask import g, redirect, request, session
from sqlalchemy import Float, String, UniqueConstraint, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from cloud.api import now
from cloud.db import get_db
from cloud.models import Base, new_id

SESSION_SECONDS = 12 * 3600  # as the dashboard's: a phone left on a table signs itself out
SHOPPER_KEY = "shopper_id"
SINCE_KEY = "shopper_since"
SIGN_IN_PATH = "/plaza/signin"

F = TypeVar("F", bound=Callable[..., Any])


class Shopper(Base):
    """A wallet user who signed in to the shop at least once."""

    __tablename__ = "shoppers"
    __table_args__ = (UniqueConstraint("provider", "subject"),)

    id: Mapped[str] = mapped_column(String(24), primary_key=True, default=lambda: new_id("shp"))
    provider: Mapped[str] = mapped_column(String(16))  # the wallet dialect: oidc | alipay
    subject: Mapped[str] = mapped_column(String(128))  # the wallet's user id in that dialect
    display_name: Mapped[str | None] = mapped_column(String(120))
    created_at: Mapped[float] = mapped_column(Float)
    last_seen_at: Mapped[float] = mapped_column(Float)


def find_or_create(
    db: Session, provider: str, subject: str, name: str | None, at: float
) -> Shopper:
    """The shopper for this wallet user, created on the first sign-in. Two first sign-ins at
    once (two tabs) meet the unique constraint: the loser reads the winner's row."""
    query = select(Shopper).where(Shopper.provider == provider, Shopper.subject == subject)
    shopper = db.scalars(query).one_or_none()
    if shopper is None:
        shopper = Shopper(provider=provider, subject=subject, created_at=at, last_seen_at=at)
        shopper.display_name = (name or "")[:120] or None
        db.add(shopper)
        try:
            db.commit()
            return shopper
        except IntegrityError:
            db.rollback()
            shopper = db.scalars(query).one()
    shopper.last_seen_at = at
    if name:
        shopper.display_name = name[:120]
    db.commit()
    return shopper


def sign_in(shopper: Shopper, at: float) -> None:
    """This browser is now `shopper` (a new session: nothing from before sign-in survives,
    so a planted cookie cannot fix the session)."""
    session.clear()
    session[SHOPPER_KEY] = shopper.id
    session[SINCE_KEY] = at


def sign_out() -> None:
    session.pop(SHOPPER_KEY, None)
    session.pop(SINCE_KEY, None)


def current_shopper() -> Shopper | None:
    """The shopper this request's session names, if it is fresh and the row exists."""
    if "shopper" in g:
        return g.shopper
    found = None
    shopper_id, since = session.get(SHOPPER_KEY), session.get(SINCE_KEY)
    if isinstance(shopper_id, str) and isinstance(since, int | float):
        if 0 <= now() - since < SESSION_SECONDS:
            found = get_db().get(Shopper, shopper_id)
        else:
            sign_out()
    g.shopper = found
    return found


def shopper_required(view: F) -> F:
    """A view for signed-in shoppers only; others go to sign-in and come back here."""

    @functools.wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if current_shopper() is None:
            back = request.full_path if request.query_string else request.path
            return redirect(f"{SIGN_IN_PATH}?next={quote(back, safe='/')}", code=303)
        return view(*args, **kwargs)

    return wrapped  # type: ignore[return-value]
