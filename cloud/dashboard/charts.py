"""Bar charts as geometry for server-rendered SVG.

No chart library and no script: the page's CSP allows neither, and a merchant's phone on a
weak connection should get a readable chart in the HTML itself. This module is pure (numbers
in, rectangles out) so the arithmetic is tested without a browser; `_chart.html` only prints
it. Each bar carries its value, which the template writes into a `<title>` (the hover text)
and a `data-value` attribute, and every chart also has a table of the same numbers for screen
readers and for anyone who wants the exact figure.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

# A phone-sized viewBox: on a 390 px phone the chart is drawn about 1:1 (323 px for 360
# units), so the 14-unit axis labels (dashboard.css) stay above 12 px. A wider geometry shrank
# them to ~7 px there. Desktop columns scale it up ~1.5x, and the stylesheet sets 9 units.
# Labels of several words go on two lines (the template splits at the last space).
WIDTH, HEIGHT = 360, 190
LEFT, RIGHT, TOP, BOTTOM = 52, 6, 10, 40  # plot margins, in viewBox units
GAP = 0.2  # the share of each slot left empty between bars


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    value: float
    series: int
    title: str  # the hover text: "09:00 UTC: 12 visitors"


@dataclass(frozen=True)
class Tick:
    at: float
    text: str


@dataclass(frozen=True)
class Chart:
    id: str
    title: str
    summary: str  # one sentence with the headline figure, also the SVG's description
    bars: list[Bar]
    x_ticks: list[Tick]
    y_ticks: list[Tick]
    series: list[str]
    rows: list[tuple[str, list[str]]]  # the table: label, one formatted value per series
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    top: int = TOP
    bottom: float = HEIGHT - BOTTOM
    right: float = WIDTH - RIGHT


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 x 10^k that is at least `value` (an axis maximum a
    reader can halve in their head)."""
    if value <= 0:
        return 1.0
    scale = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if step * scale >= value * (1 - 1e-12):
            return float(step * scale)
    return float(10 * scale)  # pragma: no cover - the loop always returns


def bar_chart(
    chart_id: str,
    title: str,
    summary: str,
    labels: Sequence[str],
    series: Sequence[Sequence[float]],
    series_names: Sequence[str],
    fmt: Callable[[float], str],
    label_every: int = 1,
) -> Chart:
    """One bar per label; several series are stacked in order (the first at the bottom)."""
    if not series or any(len(s) != len(labels) for s in series):
        raise ValueError("every series needs one value per label")
    totals = [sum(s[i] for s in series) for i in range(len(labels))]
    top_value = nice_ceiling(max(totals, default=0))
    plot_w, plot_h = WIDTH - RIGHT - LEFT, HEIGHT - BOTTOM - TOP
    slot = plot_w / max(1, len(labels))
    bars: list[Bar] = []
    for i, label in enumerate(labels):
        base = 0.0
        for n, values in enumerate(series):
            value = float(values[i])
            if value <= 0:
                continue
            y_low = TOP + plot_h * (1 - base / top_value)
            y_high = TOP + plot_h * (1 - (base + value) / top_value)
            name = f" {series_names[n]}" if len(series) > 1 else ""
            bars.append(
                Bar(
                    x=round(LEFT + slot * i + slot * GAP / 2, 2),
                    y=round(y_high, 2),
                    width=round(slot * (1 - GAP), 2),
                    height=round(max(0.5, y_low - y_high), 2),
                    value=value,
                    series=n,
                    title=f"{label}:{name} {fmt(value)}",
                )
            )
            base += value
    x_ticks = [
        Tick(round(LEFT + slot * (i + 0.5), 2), label)
        for i, label in enumerate(labels)
        if i % label_every == 0
    ]
    y_ticks = [Tick(round(TOP + plot_h * (1 - f), 2), fmt(top_value * f)) for f in (0.0, 0.5, 1.0)]
    rows = [(label, [fmt(float(s[i])) for s in series]) for i, label in enumerate(labels)]
    return Chart(chart_id, title, summary, bars, x_ticks, y_ticks, list(series_names), rows)


def count(value: float) -> str:
    return f"{value:,.0f}" if value == int(value) else f"{value:,.1f}"


def data_size(value: float) -> str:
    """Bytes in decimal units, as operators and phone bills count them."""
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if value >= size:
            scaled = value / size
            return f"{scaled:.1f} {unit}" if scaled < 100 else f"{scaled:.0f} {unit}"
    return f"{value:.0f} B"


def duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 3600:
        return f"{seconds // 60} min"
    hours, rest = divmod(seconds, 3600)
    return f"{hours} h {rest // 60:02d} min"
