"""Inline SVG charts, drawn in Python so the report needs no script, font or CDN to display.

Every chart is a self-contained ``<svg>`` with a ``<title>`` (read by screen readers, and by
the tests), fixed geometry in a ``viewBox`` (CSS scales it) and a ``<title>`` on each mark, so
hovering a bar or cell shows its number without JavaScript. Every piece of text passes through
:func:`esc`.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

WIDTH = 960
PLOT_HEIGHT = 260
LEFT, RIGHT, TOP, BOTTOM = 76, 16, 36, 44
# Okabe-Ito: distinguishable with the common colour-vision deficiencies.
PALETTE = ("#0072B2", "#E69F00", "#D55E00", "#999999", "#009E73", "#CC79A7", "#56B4E9")
# ColorBrewer "Blues", 0 % to 100 % retention.
HEAT_STOPS = (
    (0xF7, 0xFB, 0xFF),
    (0xC6, 0xDB, 0xEF),
    (0x6B, 0xAE, 0xD6),
    (0x21, 0x71, 0xB5),
    (0x08, 0x30, 0x6B),
)


@dataclass(frozen=True)
class Series:
    """One named, coloured run of values, aligned with the chart's labels."""

    name: str
    colour: str
    values: Sequence[int]


def esc(value: object) -> str:
    """Escape any value for HTML or SVG text and attributes."""
    return html.escape(str(value), quote=True)


def num(value: float) -> str:
    """A coordinate: two decimals at most, so the markup stays small and identical run to run."""
    return f"{value:.2f}".rstrip("0").rstrip(".")


def heat_colour(rate: float) -> str:
    """The heatmap colour of a rate in [0, 1], interpolated between the Blues stops."""
    position = min(max(rate, 0.0), 1.0) * (len(HEAT_STOPS) - 1)
    low = min(int(position), len(HEAT_STOPS) - 2)
    share = position - low
    rgb = (
        round(a + (b - a) * share)
        for a, b in zip(HEAT_STOPS[low], HEAT_STOPS[low + 1], strict=True)
    )
    return "#" + "".join(f"{channel:02x}" for channel in rgb)


def _open(chart_id: str, title: str, desc: str, height: float) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" id="{esc(chart_id)}" '
        f'viewBox="0 0 {WIDTH} {num(height)}" role="img" '
        f'aria-labelledby="{esc(chart_id)}-title {esc(chart_id)}-desc">'
        f'<title id="{esc(chart_id)}-title">{esc(title)}</title>'
        f'<desc id="{esc(chart_id)}-desc">{esc(desc)}</desc>'
    )


def _text(x: float, y: float, text: object, cls: str = "", anchor: str = "middle") -> str:
    klass = f' class="{esc(cls)}"' if cls else ""
    return f'<text x="{num(x)}" y="{num(y)}" text-anchor="{anchor}"{klass}>{esc(text)}</text>'


def _empty(chart_id: str, title: str) -> str:
    return (
        _open(chart_id, title, "No data yet.", 80)
        + _text(WIDTH / 2, 45, "No data yet", "empty")
        + "</svg>"
    )


def heatmap(
    chart_id: str,
    title: str,
    rows: Sequence[str],
    columns: Sequence[str],
    cells: Mapping[tuple[int, int], tuple[float, str, str]],
) -> str:
    """Rows by columns of coloured cells; ``cells[(row, column)]`` is (rate, label, tooltip)."""
    if not rows or not columns:
        return _empty(chart_id, title)
    label_w, cell_h, head = 170.0, 30.0, 28.0
    cell_w = min(64.0, (WIDTH - label_w - RIGHT) / len(columns))
    height = head + cell_h * len(rows) + 56
    parts = [_open(chart_id, title, f"{len(rows)} cohorts by months since joining.", height)]
    for j, column in enumerate(columns):
        parts.append(_text(label_w + (j + 0.5) * cell_w, head - 10, column, "axis"))
    for i, row in enumerate(rows):
        y = head + i * cell_h
        parts.append(_text(label_w - 8, y + cell_h / 2 + 4, row, "axis", "end"))
        for j in range(len(columns)):
            if (i, j) not in cells:
                continue
            rate, label, tooltip = cells[(i, j)]
            x = label_w + j * cell_w
            ink = "light" if rate > 0.55 else "dark"
            parts.append(
                f'<rect x="{num(x)}" y="{num(y)}" width="{num(cell_w - 1)}" '
                f'height="{num(cell_h - 1)}" fill="{heat_colour(rate)}">'
                f"<title>{esc(tooltip)}</title></rect>"
            )
            parts.append(_text(x + cell_w / 2, y + cell_h / 2 + 4, label, f"cell {ink}"))
    parts.append(_legend_gradient(chart_id, label_w, head + cell_h * len(rows) + 18))
    parts.append("</svg>")
    return "".join(parts)


def _legend_gradient(chart_id: str, x: float, y: float) -> str:
    gradient = f"{chart_id}-scale"
    stops = "".join(
        f'<stop offset="{num(k / 10)}" stop-color="{heat_colour(k / 10)}"/>' for k in range(11)
    )
    return (
        f'<defs><linearGradient id="{esc(gradient)}">{stops}</linearGradient></defs>'
        f'<rect x="{num(x)}" y="{num(y)}" width="200" height="10" '
        f'fill="url(#{esc(gradient)})" stroke="#bbb"/>'
        + _text(x, y + 24, "0%", "axis", "start")
        + _text(x + 100, y + 24, "50%", "axis")
        + _text(x + 200, y + 24, "100% retained", "axis", "start")
    )


def _scale(values: Sequence[int]) -> tuple[int, int, int]:
    """(bottom, top, step) of a y axis holding ``values`` and 0, with about 5 round ticks."""
    low, high = min(0, *values), max(0, *values)
    raw = max((high - low) / 5, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if raw <= m * magnitude)
    return math.floor(low / step) * step, max(math.ceil(high / step), 1) * step, step


class _Frame:
    """The plot area of a chart with a category x axis and an integer y axis."""

    def __init__(self, labels: Sequence[str], values: Sequence[int]) -> None:
        self.labels = labels
        self.bottom, self.top, self.step = _scale(values)
        self.band = (WIDTH - LEFT - RIGHT) / len(labels)
        self.height = TOP + PLOT_HEIGHT + BOTTOM

    def y(self, value: float) -> float:
        return TOP + PLOT_HEIGHT * (self.top - value) / (self.top - self.bottom)

    def x(self, index: int) -> float:
        """The left edge of category ``index``'s band."""
        return LEFT + index * self.band

    def axes(self) -> str:
        parts = []
        for tick in range(self.bottom, self.top + 1, self.step):
            y = self.y(tick)
            parts.append(
                f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{num(y)}" y2="{num(y)}" class="grid"/>'
            )
            parts.append(_text(LEFT - 8, y + 4, f"{tick:,}", "axis", "end"))
        # Thin the x labels so they never overlap (about 16 fit across the chart).
        every = max(1, math.ceil(len(self.labels) / 16))
        for i, label in enumerate(self.labels):
            if i % every == 0:
                parts.append(
                    _text(self.x(i) + self.band / 2, TOP + PLOT_HEIGHT + 20, label, "axis")
                )
        return "".join(parts)


def bar_chart(chart_id: str, title: str, labels: Sequence[str], values: Sequence[int]) -> str:
    """One bar per label, its value written above it."""
    if not labels:
        return _empty(chart_id, title)
    frame = _Frame(labels, values)
    parts = [_open(chart_id, title, f"{len(labels)} bars.", frame.height), frame.axes()]
    width = frame.band * 0.6
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        x, y0, y1 = frame.x(i) + frame.band * 0.2, frame.y(0), frame.y(value)
        parts.append(
            f'<rect x="{num(x)}" y="{num(min(y0, y1))}" width="{num(width)}" '
            f'height="{num(abs(y0 - y1))}" fill="{PALETTE[i % len(PALETTE)]}">'
            f"<title>{esc(label)}: {esc(f'{value:,}')}</title></rect>"
        )
        parts.append(_text(x + width / 2, min(y0, y1) - 6, f"{value:,}", "value"))
    parts.append("</svg>")
    return "".join(parts)


def grouped_bars(chart_id: str, title: str, labels: Sequence[str], series: Sequence[Series]) -> str:
    """For each label, one bar per series side by side, with a legend above the plot."""
    if not labels:
        return _empty(chart_id, title)
    frame = _Frame(labels, [v for s in series for v in s.values])
    parts = [_open(chart_id, title, f"{len(labels)} groups of bars.", frame.height)]
    parts += [frame.axes(), _legend(series)]
    width = frame.band * 0.8 / len(series)
    for k, run in enumerate(series):
        for i, value in enumerate(run.values):
            x, y0, y1 = frame.x(i) + frame.band * 0.1 + k * width, frame.y(0), frame.y(value)
            parts.append(
                f'<rect x="{num(x)}" y="{num(min(y0, y1))}" width="{num(width)}" '
                f'height="{num(abs(y0 - y1))}" fill="{esc(run.colour)}">'
                f"<title>{esc(labels[i])} {esc(run.name)}: {esc(f'{value:,}')}</title></rect>"
            )
    parts.append("</svg>")
    return "".join(parts)


def _legend(series: Sequence[Series]) -> str:
    parts = []
    for k, run in enumerate(series):
        x = LEFT + k * 130
        parts.append(f'<rect x="{x}" y="8" width="12" height="12" fill="{esc(run.colour)}"/>')
        parts.append(_text(x + 18, 19, run.name, "axis", "start"))
    return "".join(parts)


def line_chart(
    chart_id: str, title: str, labels: Sequence[str], values: Sequence[int], colour: str
) -> str:
    """A line through one point per label, over a shaded area down to zero."""
    if not labels:
        return _empty(chart_id, title)
    frame = _Frame(labels, values)
    points = [(frame.x(i) + frame.band / 2, frame.y(v)) for i, v in enumerate(values)]
    path = " ".join(f"{num(x)},{num(y)}" for x, y in points)
    base = num(frame.y(0))
    area = f"{num(points[0][0])},{base} {path} {num(points[-1][0])},{base}"
    parts = [_open(chart_id, title, f"{len(labels)} points.", frame.height), frame.axes()]
    parts.append(f'<polygon points="{area}" fill="{esc(colour)}" fill-opacity="0.15"/>')
    parts.append(
        f'<polyline points="{path}" fill="none" stroke="{esc(colour)}" stroke-width="2.5"/>'
    )
    for (x, y), label, value in zip(points, labels, values, strict=True):
        parts.append(
            f'<circle cx="{num(x)}" cy="{num(y)}" r="4" fill="{esc(colour)}">'
            f"<title>{esc(label)}: {esc(f'{value:,}')}</title></circle>"
        )
        # Every value when they fit side by side; otherwise the first and the latest.
        if frame.band >= 56 or (x, y) in (points[0], points[-1]):
            parts.append(_text(x, y - 10, f"{value:,}", "value"))
    parts.append("</svg>")
    return "".join(parts)
