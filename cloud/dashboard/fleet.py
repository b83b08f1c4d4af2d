"""Routers from a baked image waiting for the merchant (cloud/fleet.py): the list, approve for
a venue or refuse, and a new fleet secret for the next image (shown once; the old one stops
working at once)."""

from __future__ import annotations

from flask import abort, flash, g, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy import select

from cloud import fleet
from cloud.api import now
from cloud.dashboard.auth import login_required
from cloud.dashboard.blueprint import bp
from cloud.dashboard.security import require_csrf
from cloud.dashboard.views import ago
from cloud.db import get_db
from cloud.models import Venue


@bp.get("/fleet")
@login_required
def fleet_page() -> ResponseReturnValue:
    db = get_db()
    venues = db.scalars(
        select(Venue).where(Venue.merchant_id == g.merchant.id).order_by(Venue.name)
    ).all()
    waiting = fleet.pending_for(db, g.merchant.id)
    t = now()
    asked = {p.id: ago(p.requested_at, t) for p in waiting}
    return render_template("dashboard/fleet.html", waiting=waiting, venues=venues, asked=asked)


@bp.post("/fleet/secret")
@login_required
def fleet_secret() -> ResponseReturnValue:
    require_csrf()
    db = get_db()
    secret = fleet.create_fleet_secret(db, g.merchant.id, now())
    db.commit()
    return render_template("dashboard/fleet_secret.html", secret=secret)


@bp.post("/fleet/<pending_id>/<decision>")
@login_required
def fleet_decide(pending_id: str, decision: str) -> ResponseReturnValue:
    """Approve (for the venue chosen in the form) or refuse; another merchant's router, or a
    venue not theirs, is a 404 as if it did not exist."""
    if decision not in ("approve", "reject"):
        abort(404)
    require_csrf()
    db = get_db()
    try:
        if decision == "approve":
            device = fleet.approve(
                db, g.merchant.id, pending_id, request.form.get("venue_id", ""), now()
            )
            message = f"Router approved: it joins as {device.id} at its next try."
        else:
            fleet.reject(db, g.merchant.id, pending_id, now())
            message = "Router refused."
    except fleet.FleetError:
        db.rollback()
        abort(404)
    db.commit()
    flash(message)
    return redirect(url_for("dashboard.fleet_page"), 303)
