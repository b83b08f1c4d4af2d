"""The venues list and the venue page: routers, live clients and the four charts.

The venue page runs a fixed number of queries whatever the venue's history (stats.py), which
is what keeps it inside its time budget with a million usage records (bench/dashboard.py).
"""

from __future__ import annotations

import calendar
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from flask import abort, g, render_template, request
from flask.typing import ResponseReturnValue

from cloud.api import now
from cloud.dashboard import charts, stats
from cloud.dashboard.auth import login_required
from cloud.dashboard.blueprint import bp
from cloud.dashboard.tenancy import own_venue
from cloud.db import get_db


def mask_mac(mac: str) -> str:
    """Enough of a MAC to tell the shoppers in a venue apart, not enough to follow one
    elsewhere: the first octet and the last two."""
    parts = mac.split(":")
    if len(parts) != 6:
        return "••:••:••:••:••:••"
    return ":".join([parts[0], "••", "••", "••", parts[4], parts[5]])


def hhmm(t: float | None) -> str:
    if t is None:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


def ago(t: float | None, at: float) -> str:
    if t is None:
        return "never"
    seconds = max(0, int(at - t))
    if seconds < 90:
        return f"{seconds} s ago"
    if seconds < 90 * 60:
        return f"{seconds // 60} min ago"
    if seconds < 48 * 3600:
        return f"{seconds // 3600} h ago"
    return f"{seconds // 86400} days ago"


def parse_day(value: str | None) -> float | None:
    """Midnight UTC of a YYYY-MM-DD, or None (absent or not a date)."""
    if not value:
        return None
    try:
        day = datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        return None
    return float(calendar.timegm(day.timetuple()))


@dataclass(frozen=True)
class VenueFigures:
    """Everything the venue page shows about one window, computed once."""

    window: stats.Window
    visitors: list[int]
    bytes_up: list[int]
    bytes_down: list[int]
    dwell: stats.Dwell
    returning: stats.Returning

    @property
    def total_bytes(self) -> int:
        return sum(self.bytes_up) + sum(self.bytes_down)

    def charts(self) -> dict[str, charts.Chart]:
        w = self.window
        hours = [time.strftime("%H:00", time.gmtime(w.start + i * 3600)) for i in range(w.hours)]
        peak = max(range(w.hours), key=lambda i: self.visitors[i]) if w.hours else 0
        visitors = charts.bar_chart(
            "visitors",
            "Visitors per hour",
            f"Busiest hour {hours[peak]} UTC with {self.visitors[peak]:,} visitors."
            if any(self.visitors)
            else "No visitors in this period.",
            hours,
            [self.visitors],
            ["visitors"],
            charts.count,
            label_every=6,  # 4 labels: room for 14-unit text on a phone
        )
        data = charts.bar_chart(
            "data",
            "Data use per hour",
            f"{charts.data_size(sum(self.bytes_down))} down, "
            f"{charts.data_size(sum(self.bytes_up))} up.",
            hours,
            [self.bytes_down, self.bytes_up],
            ["down", "up"],
            charts.data_size,
            label_every=6,  # 4 labels: room for 14-unit text on a phone
        )
        d = self.dwell
        dwell = charts.bar_chart(
            "dwell",
            "Dwell time",
            f"{d.sessions:,} sessions, {charts.duration(d.mean_seconds)} on average."
            if d.sessions
            else "No sessions in this period.",
            list(stats.DWELL_LABELS),
            [d.counts],
            ["sessions"],
            charts.count,
        )
        r = self.returning
        returning = charts.bar_chart(
            "returning",
            "New and returning visitors",
            f"{r.rate:.0%} of {r.visitors:,} visitors had been here before."
            if r.visitors
            else "No visitors in this period.",
            ["new", "returning"],
            [[r.visitors - r.returning, r.returning]],
            ["visitors"],
            charts.count,
        )
        return {"visitors": visitors, "dwell": dwell, "returning": returning, "data": data}


def venue_figures(db: Any, venue_id: str, window: stats.Window) -> VenueFigures:
    up, down = stats.data_per_hour(db, venue_id, window)
    return VenueFigures(
        window=window,
        visitors=stats.visitors_per_hour(db, venue_id, window),
        bytes_up=up,
        bytes_down=down,
        dwell=stats.dwell(db, venue_id, window),
        returning=stats.returning(db, venue_id, window),
    )


@bp.get("/")
@login_required
def home() -> ResponseReturnValue:
    venues = stats.venues(get_db(), g.merchant.id, now())
    return render_template("dashboard/venues.html", venues=venues)


@bp.route("/<path:_rest>", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
def not_found(_rest: str) -> ResponseReturnValue:
    """A mistyped dashboard address gets the dashboard's error page (HTML, with a way back),
    not the API's JSON: unmatched URLs belong to no blueprint, so without this rule the
    app-wide JSON handler (cloud/api.py) answered them."""
    abort(404)


@bp.get("/venues/<venue_id>")
@login_required
def venue(venue_id: str) -> ResponseReturnValue:
    venue = own_venue(venue_id)
    db, t = get_db(), now()
    day_text = request.args.get("day", "")
    midnight = parse_day(day_text)
    bad_day = bool(day_text) and midnight is None
    window = stats.Window.day(midnight) if midnight is not None else stats.Window.last_24h(t)
    stats.tune(db)
    figures = venue_figures(db, venue.id, window)
    live = stats.live_clients(db, venue.id, t)
    return render_template(
        "dashboard/venue.html",
        venue=venue,
        devices=stats.devices(db, venue.id, t),
        live=live[: stats.LIVE_LIMIT],
        live_more=len(live) > stats.LIVE_LIMIT,
        figures=figures,
        charts=figures.charts(),
        day=day_text if midnight is not None else "",
        bad_day=bad_day,
        window_text=(
            f"{time.strftime('%Y-%m-%d %H:00', time.gmtime(window.start))} to "
            f"{time.strftime('%Y-%m-%d %H:00', time.gmtime(window.end))} UTC"
        ),
        today=time.strftime("%Y-%m-%d", time.gmtime(t)),
        now=t,
        mask_mac=mask_mac,
        hhmm=hhmm,
        ago=ago,
        data_size=charts.data_size,
        duration=charts.duration,
    )
