"""The merchant's voucher pages in the dashboard: templates of one venue, new ones, and their
state changes (activate, pause, close), plus the staff link for the counter.

A blueprint of its own under /dashboard/vouchers that borrows the dashboard's whole guard:
its sign-in (`load_merchant`, `login_required`), its tenancy (`own_venue`: another merchant's
venue is a 404) and its headers and CSRF. A template is reached only through its venue, so
a merchant touching another merchant's template gets the same 404 as for a made-up id.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from flask import Blueprint, Flask, g, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy import select

from cloud.api import now
from cloud.dashboard import auth, security
from cloud.dashboard.tenancy import own_venue, owned
from cloud.db import get_db
from cloud.o2o import voucher_views
from cloud.o2o.voucher_models import VoucherAudit, VoucherTemplate
from cloud.o2o.voucher_views import describe, staff_key
from cloud.o2o.vouchers import TemplateSpec, VoucherError, change_state, create_template

bp = auth.guard(Blueprint("voucher_admin", __name__, url_prefix="/dashboard/vouchers",
                          template_folder="templates"))  # fmt: skip

DAY = 86400


@bp.context_processor
def _globals() -> dict[str, object]:
    return {"describe": describe}


def _fen(text: str, field: str) -> int:
    try:
        value = Decimal(text.strip() or "0")
    except InvalidOperation:
        raise VoucherError("invalid_template", f"{field}: a number like 12.50") from None
    if not value.is_finite() or value < 0 or value > 1_000_000:
        raise VoucherError("invalid_template", f"{field}: a number like 12.50")
    return int(value * 100)


def _int(text: str, field: str, optional: bool = False) -> int | None:
    text = text.strip()
    if not text and optional:
        return None
    if not text.isdigit() or len(text) > 9:
        raise VoucherError("invalid_template", f"{field}: a whole number")
    return int(text)


def spec_from_form(form: dict[str, str], at: float) -> TemplateSpec:
    """The form's fields as a TemplateSpec: amounts in yuan, validity as days from the claim
    or as an end in days from now (the form's simple absolute window)."""
    kind = form.get("kind", "amount")
    ends = _int(form.get("ends_in_days", ""), "ends in days", optional=True)
    return TemplateSpec(
        title=form.get("title", "").strip(),
        kind=kind,
        amount_off=_fen(form.get("amount_off", ""), "amount off") if kind == "amount" else 0,
        percent_off=_int(form.get("percent_off", "0") or "0", "percent off") or 0,
        min_spend=_fen(form.get("min_spend", ""), "minimum spend"),
        budget=_int(form.get("budget", ""), "budget") or 0,
        per_user_limit=_int(form.get("per_user_limit", "1") or "1", "per shopper") or 0,
        per_day_limit=_int(form.get("per_day_limit", ""), "per day", optional=True),
        valid_until=at + ends * DAY if ends is not None else None,
        valid_days=_int(form.get("valid_days", ""), "valid days", optional=True),
    )


def _page(venue_id: str, error: str | None = None, status: int = 200) -> ResponseReturnValue:
    venue = own_venue(venue_id)
    db = get_db()
    templates = list(db.scalars(
        select(VoucherTemplate).where(VoucherTemplate.venue_id == venue.id)
        .order_by(VoucherTemplate.created_at.desc())
    ))  # fmt: skip
    audit = list(db.scalars(
        select(VoucherAudit).join(VoucherTemplate)
        .where(VoucherTemplate.venue_id == venue.id).order_by(VoucherAudit.id.desc()).limit(20)
    ))  # fmt: skip
    staff = url_for("vouchers.counter", venue_id=venue.id, key=staff_key(venue.id),
                    _external=True)  # fmt: skip
    return render_template("vouchers/admin.html", venue=venue, templates=templates,
                           audit=audit, staff_link=staff, error=error), status  # fmt: skip


@bp.get("/<venue_id>")
@auth.login_required
def index(venue_id: str) -> ResponseReturnValue:
    return _page(venue_id)


@bp.post("/<venue_id>/new")
@auth.login_required
def new(venue_id: str) -> ResponseReturnValue:
    security.require_csrf()
    venue = own_venue(venue_id)
    try:
        spec = spec_from_form(dict(request.form), now())
        create_template(get_db(), venue, spec, g.merchant.id, now())
    except VoucherError as exc:
        return _page(venue_id, str(exc), 400)
    return redirect(url_for("voucher_admin.index", venue_id=venue.id), code=303)


@bp.post("/<venue_id>/<template_id>/<action>")
@auth.login_required
def act(venue_id: str, template_id: str, action: str) -> ResponseReturnValue:
    security.require_csrf()
    venue = own_venue(venue_id)
    db = get_db()
    template = owned(db, VoucherTemplate, template_id, "vtp_", venue)
    try:
        change_state(db, template, action, g.merchant.id, now())
    except VoucherError as exc:
        return _page(venue_id, str(exc), 409)
    return redirect(url_for("voucher_admin.index", venue_id=venue.id), code=303)


def register(app: Flask) -> None:
    """The voucher pages: the shopper's and the counter's (/plaza), and these (/dashboard)."""
    app.register_blueprint(voucher_views.bp)
    app.register_blueprint(bp)
