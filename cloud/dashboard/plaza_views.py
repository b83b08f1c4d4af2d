"""The venue's plaza page in the dashboard: the funnel from Wi-Fi join to redeemed voucher by
day and by offer, and redemptions, bookings and queue waits per day, as server-rendered SVG
charts like the venue page's (no script).

Every figure about people goes through cloud/dashboard/privacy.py before it reaches the
template: counts of 1-4 read "<5", larger ones are rounded down to a multiple of 5 (the bars
too), and a day's median queue wait is shown only over at least 5 called numbers. Its own
blueprint, registered by the app next to the o2o pages, so that the dashboard package does
not import the o2o tables that import it.
"""

from __future__ import annotations

import dataclasses
import time

from flask import Blueprint, Flask, render_template
from flask.typing import ResponseReturnValue

from cloud.api import now
from cloud.dashboard import auth, charts, funnel
from cloud.dashboard.privacy import DAY, MIN_GROUP, floor_count, shown
from cloud.dashboard.tenancy import own_venue
from cloud.db import get_db

bp = auth.guard(Blueprint("plaza_stats", __name__, url_prefix="/dashboard/plaza"))


def people_chart(chart_id: str, title: str, summary: str, labels: list[str],
                 raw: list[int], unit: str) -> charts.Chart:  # fmt: skip
    """A one-series bar chart of counts about people: bars at the rounded count (none under
    5), the table's cells as privacy.shown says."""
    chart = charts.bar_chart(chart_id, title, summary, labels,
                             [[floor_count(n) for n in raw]], [unit], charts.count)  # fmt: skip
    bars = []
    for bar in chart.bars:
        i = _slot(chart, bar)
        bars.append(dataclasses.replace(bar, title=f"{labels[i]}: {shown(raw[i])} {unit}"))
    rows = [(label, [shown(n)]) for label, n in zip(labels, raw, strict=True)]
    return dataclasses.replace(chart, bars=bars, rows=rows)


def _slot(chart: charts.Chart, bar: charts.Bar) -> int:
    ticks = [t.at for t in chart.x_ticks]
    centre = bar.x + bar.width / 2
    return min(range(len(ticks)), key=lambda i: abs(ticks[i] - centre))


def _total(raw: list[int]) -> str:
    return shown(sum(raw))


@bp.get("/<venue_id>")
@auth.login_required
def page(venue_id: str) -> ResponseReturnValue:
    venue = own_venue(venue_id)
    db, t = get_db(), now()
    days = funnel.Days.ending_today(t)
    labels = [time.strftime("%m-%d", time.gmtime(days.start + i * DAY)) for i in range(days.count)]
    found = funnel.funnel(db, venue.id, days, int(t // DAY))
    steps = ["Wi-Fi join", "Wallet login", "Offer seen", "Claimed", "Redeemed"]  # short: axis
    totals = [found.total(s) for s in funnel.STEPS]
    redeemed = funnel.redemptions_per_day(db, venue.id, days)
    booked = funnel.bookings_per_day(db, venue.id, days)
    called, medians = funnel.queue_waits(db, venue.id, days)
    waits = [m / 60 if n >= MIN_GROUP else 0.0 for n, m in zip(called, medians, strict=True)]
    wait_chart = charts.bar_chart(
        "waits", "Median wait at the service windows",
        "Minutes from taking a number to its first call, on days with at least 5 calls.",
        labels, [waits], ["minutes"], charts.count,
    )  # fmt: skip
    wait_rows = [
        (label, [f"{m:.1f} min" if n >= MIN_GROUP else f"<{MIN_GROUP} calls"])
        for label, n, m in zip(labels, called, waits, strict=True)
    ]
    figures = {
        "funnel": people_chart(
            "funnel", "From Wi-Fi to redeemed voucher",
            f"Over {days.count} days, in device-days (a phone counts once a day).",
            steps, totals, "devices",
        ),
        "redemptions": people_chart(
            "redemptions", "Vouchers redeemed per day",
            f"{_total(redeemed)} redemptions over {days.count} days.", labels, redeemed,
            "redemptions",
        ),
        "bookings": people_chart(
            "bookings", "Bookings confirmed per day",
            f"{_total(booked)} bookings over {days.count} days.", labels, booked, "bookings",
        ),
        "waits": dataclasses.replace(wait_chart, rows=wait_rows),
    }  # fmt: skip
    by_day = [(funnel.STEP_NAMES[s], [shown(n) for n in found.by_day[s]], shown(found.total(s)))
              for s in funnel.STEPS]  # fmt: skip
    by_offer = [(title, shown(c), shown(r)) for title, c, r in found.by_offer.values()]
    return render_template(
        "dashboard/plaza.html", venue=venue, charts=figures, labels=labels, by_day=by_day,
        by_offer=by_offer, window_text=f"{labels[0]} to {labels[-1]} (UTC days)",
    )  # fmt: skip


def register(app: Flask) -> None:
    app.register_blueprint(bp)
