"""Charts as inline SVG, drawn on the server: the overview needs no JavaScript at all.

A chart is a plot area with three grid lines (0, half, top), bars for one series or lines for
several, an axis label at each of the window's ticks, and a ``<title>`` on every bar and point
(the browser shows it on hover). Colours come from CSS classes (``k-<series key>``).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe

if TYPE_CHECKING:
    from governance.dashboard.stats import Chart

WIDTH, HEIGHT = 640, 160
LEFT, RIGHT, TOP, BOTTOM = 44, 8, 10, 22
PLOT_W, PLOT_H = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 times a power of ten at or above ``value`` (1 for nothing)."""
    if value <= 0:
        return 1
    magnitude = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * magnitude:
            return step * magnitude
    return 10 * magnitude  # pragma: no cover - the loop always returns


def px(value: float) -> str:
    return f"{value:.1f}"


def number(value: float) -> str:
    if value == int(value):
        return str(int(value))
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}".rstrip("0").rstrip(".")


def chart_svg(chart: Chart) -> SafeString:
    win = chart.window
    peak = max((v for s in chart.series for v in s.values if v is not None), default=0)
    top = nice_ceiling(peak)
    band = PLOT_W / win.buckets

    def y(value: float) -> float:
        return TOP + PLOT_H - value / top * PLOT_H

    def when(index: int) -> str:
        return win.bucket_start(index).strftime("%H:%M")

    parts: list[str] = []
    for fraction in (0, 0.5, 1):
        at = y(top * fraction)
        parts.append(
            format_html(
                '<line class="grid" x1="{}" x2="{}" y1="{}" y2="{}"/>'
                '<text class="axis" x="{}" y="{}" text-anchor="end">{}</text>',
                LEFT,
                WIDTH - RIGHT,
                px(at),
                px(at),
                LEFT - 4,
                px(at + 3),
                number(top * fraction),
            )
        )
    for index in range(win.buckets):
        if win.is_tick(index):
            x = LEFT + index * band
            parts.append(
                format_html(
                    '<text class="axis" x="{}" y="{}" text-anchor="middle">{}</text>',
                    px(x),
                    HEIGHT - 6,
                    when(index),
                )
            )
    for series in chart.series:
        shapes: list[str] = []
        if chart.kind == "bars":
            for index, value in enumerate(series.values):
                if not value:
                    continue
                shapes.append(
                    format_html(
                        '<rect x="{}" y="{}" width="{}" height="{}">'
                        "<title>{} · {} {}</title></rect>",
                        px(LEFT + index * band + band * 0.1),
                        px(y(value)),
                        px(max(band * 0.8, 0.5)),
                        px(PLOT_H * value / top),
                        when(index),
                        number(value),
                        chart.unit,
                    )
                )
        else:
            segment: list[str] = []
            for index, value in enumerate([*series.values, None]):
                if value is None:
                    if len(segment) > 1:
                        shapes.append(format_html('<polyline points="{}"/>', " ".join(segment)))
                    segment = []
                    continue
                x, at = LEFT + (index + 0.5) * band, y(value)
                segment.append(f"{x:.1f},{at:.1f}")
                shapes.append(
                    format_html(
                        '<circle cx="{}" cy="{}" r="1.8"><title>{} · {} {} {}</title></circle>',
                        px(x),
                        px(at),
                        when(index),
                        series.name,
                        number(value),
                        chart.unit,
                    )
                )
        parts.append(
            format_html(
                '<g class="series k-{}">{}</g>',
                series.key,
                mark_safe("".join(shapes)),  # noqa: S308 - built by format_html
            )
        )
    label = f"{chart.title}, {win.title.lower()}: " + ", ".join(
        f"{s.name} {number(s.total)}" if chart.kind == "bars" or chart.unit != "ms" else s.name
        for s in chart.series
    )
    return format_html(
        '<svg class="chart {}" viewBox="0 0 {} {}" role="img" aria-label="{}">'
        "<title>{}</title>{}</svg>",
        chart.kind,
        WIDTH,
        HEIGHT,
        label,
        label,
        mark_safe("".join(parts)),  # noqa: S308 - every part built by format_html
    )
