"""Charts of the hourly statistics, drawn on the server as inline SVG: the admin needs no script and no CDN.

Text and axes take the page's own colours (`currentColor`, the admin's CSS variables), so the charts read in
the admin's light and dark themes alike; the data colours are mid tones that stand out on both.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from html import escape

from django.utils.safestring import SafeString, mark_safe

WIDTH, HEIGHT = 560, 220
LEFT, RIGHT, TOP, BOTTOM = 48, 8, 12, 36
PALETTE = ("#2e86de", "#e15f41", "#20bf6b", "#a55eea", "#f7b731", "#778ca3")


@dataclass(frozen=True)
class Series:
    label: str
    values: list[float]
    colour: str


def _nice_ceiling(value: float) -> float:
    """The smallest of 1, 2 or 5 times a power of ten at or above `value`, so the top tick is a round number."""
    if value <= 0:
        return 1.0
    magnitude = 10 ** len(str(int(value))) / 10
    for step in (1, 2, 5, 10):
        if value <= step * magnitude:
            return float(step * magnitude)
    return float(10 * magnitude)


def _frame(title: str, hours: list[datetime], top: float, unit: str) -> list[str]:
    plot_height = HEIGHT - TOP - BOTTOM
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-labelledby="{_id(title)}">',
        f'<title id="{_id(title)}">{escape(title)}</title>',
    ]
    for fraction in (0, 0.5, 1):
        y = TOP + plot_height * (1 - fraction)
        parts.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" class="tick">'
            f"{_number(top * fraction)}{unit}</text>"
        )
    step = max(1, len(hours) // 8)
    slot = (WIDTH - LEFT - RIGHT) / max(len(hours), 1)
    for index in range(0, len(hours), step):
        x = LEFT + slot * (index + 0.5)
        parts.append(
            f'<text x="{x:.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle" class="tick">'
            f"{hours[index]:%H:00}</text>"
        )
    if hours:
        parts.append(
            f'<text x="{LEFT}" y="{HEIGHT - 4}" class="tick">{hours[0]:%d %b}</text>'
            f'<text x="{WIDTH - RIGHT}" y="{HEIGHT - 4}" text-anchor="end" class="tick">{hours[-1]:%d %b} (UTC)</text>'
        )
    return parts


def stacked_bars(title: str, hours: list[datetime], series: list[Series], unit: str = "") -> SafeString:
    totals = [sum(s.values[index] for s in series) for index in range(len(hours))]
    top = _nice_ceiling(max(totals, default=0))
    parts = _frame(title, hours, top, unit)
    plot_height = HEIGHT - TOP - BOTTOM
    slot = (WIDTH - LEFT - RIGHT) / max(len(hours), 1)
    for index, hour in enumerate(hours):
        base = 0.0
        for s in series:
            value = s.values[index]
            if value:
                height = plot_height * value / top
                y = TOP + plot_height * (1 - (base + value) / top)
                parts.append(
                    f'<rect x="{LEFT + slot * index + 1:.1f}" y="{y:.1f}" width="{max(slot - 2, 1):.1f}" '
                    f'height="{height:.1f}" fill="{s.colour}"><title>{hour:%d %b %H:00}: '
                    f"{escape(s.label)} {_number(value)}{unit}</title></rect>"
                )
            base += value
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 (every outside text above is escaped)


def lines(title: str, hours: list[datetime], series: list[Series], unit: str = "") -> SafeString:
    top = _nice_ceiling(max((value for s in series for value in s.values), default=0))
    parts = _frame(title, hours, top, unit)
    plot_height = HEIGHT - TOP - BOTTOM
    slot = (WIDTH - LEFT - RIGHT) / max(len(hours), 1)
    for s in series:
        points = " ".join(
            f"{LEFT + slot * (index + 0.5):.1f},{TOP + plot_height * (1 - value / top):.1f}"
            for index, value in enumerate(s.values)
        )
        parts.append(
            f'<polyline points="{points}" fill="none" stroke="{s.colour}" stroke-width="2">'
            f"<title>{escape(s.label)}</title></polyline>"
        )
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 (every outside text above is escaped)


def _number(value: float) -> str:
    if value >= 1000:
        return f"{value / 1000:g}k"
    return f"{value:g}" if value == int(value) else f"{value:.2g}"


def _id(title: str) -> str:
    return "chart-" + "".join(char if char.isalnum() else "-" for char in title.lower())
