"""Self-contained HTML for the job reports: one page, inline CSS and SVG, no external assets.
Every text that comes from data is escaped; ``Raw`` marks markup built here."""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from html import escape
from typing import Any

PALETTE = ("#d62728", "#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2",
           "#17becf", "#bcbd22", "#7f7f7f")
OTHER = "#6b8fb3"
NOISE = "#c8c8c8"
_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1180px;color:#222;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ddd;padding:3px 8px;
text-align:right;vertical-align:top}th{background:#f5f5f5}
td.l,th.l{text-align:left}.note{color:#555;font-size:.9em}.charts{display:flex;
flex-wrap:wrap;gap:12px}code{font-size:.9em}ul{margin:.2em 0;padding-left:1.2em}
"""
W, H = 560, 320
LEFT, RIGHT, TOP, BOTTOM = 60, 16, 30, 46


class Raw(str):
    """Markup that must not be escaped again."""


def cell(value: Any) -> str:
    if isinstance(value, Raw):
        return value
    if isinstance(value, float):
        return escape(f"{value:,.3g}" if abs(value) < 1000 else f"{value:,.0f}")
    if isinstance(value, int):
        return f"{value:,}"
    return escape(str(value))


def table(head: Sequence[str], rows: Sequence[Sequence[Any]], left: int = 1) -> Raw:
    """A table; the first ``left`` columns are left-aligned (labels)."""
    def cls(i: int) -> str:
        return ' class="l"' if i < left else ""
    h = "".join(f"<th{cls(i)}>{escape(c)}</th>" for i, c in enumerate(head))
    body = "".join("<tr>" + "".join(f"<td{cls(i)}>{cell(v)}</td>" for i, v in enumerate(row))
                   + "</tr>" for row in rows)
    return Raw(f"<table><tr>{h}</tr>{body}</table>")


def items(values: Sequence[Any]) -> Raw:
    return Raw("<ul>" + "".join(f"<li>{cell(v)}</li>" for v in values) + "</ul>")


def page(title: str, sections: Sequence[str]) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>"
            f"<h1>{escape(title)}</h1>" + "".join(sections) + "</body></html>\n")


def day_label(epoch_day: float) -> str:
    return datetime.datetime.fromtimestamp(epoch_day * 86400, datetime.UTC).strftime("%m-%d")


class _Frame:
    def __init__(self, title: str, xs: tuple[float, float], ys: tuple[float, float],
                 x_label: str, y_label: str, x_format: Any = None) -> None:
        self.x0, self.x1 = xs if xs[1] > xs[0] else (xs[0], xs[0] + 1)
        self.y0, self.y1 = ys if ys[1] > ys[0] else (ys[0], ys[0] + 1)
        fmt = x_format or _num
        self.parts = [
            f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" '
            f'height="{H}" role="img" aria-label="{escape(title)}" font-family="sans-serif" '
            'font-size="11">',
            f'<text x="{W / 2}" y="16" text-anchor="middle" font-size="13" '
            f'font-weight="bold">{escape(title)}</text>',
            f'<rect x="{LEFT}" y="{TOP}" width="{W - LEFT - RIGHT}" '
            f'height="{H - TOP - BOTTOM}" fill="none" stroke="#999"/>']
        for i in range(5):
            fx = self.x0 + (self.x1 - self.x0) * i / 4
            fy = self.y0 + (self.y1 - self.y0) * i / 4
            self.parts.append(f'<text x="{self.px(fx):.1f}" y="{H - BOTTOM + 14}" '
                              f'text-anchor="middle">{escape(fmt(fx))}</text>')
            self.parts.append(f'<text x="{LEFT - 4}" y="{self.py(fy) + 4:.1f}" '
                              f'text-anchor="end">{escape(_num(fy))}</text>')
        self.parts.append(f'<text x="{(LEFT + W - RIGHT) / 2}" y="{H - 8}" '
                          f'text-anchor="middle">{escape(x_label)}</text>')
        self.parts.append(f'<text transform="translate(14 {(TOP + H - BOTTOM) / 2}) '
                          f'rotate(-90)" text-anchor="middle">{escape(y_label)}</text>')
        self.legend: list[tuple[str, str]] = []

    def px(self, x: float) -> float:
        return LEFT + (x - self.x0) / (self.x1 - self.x0) * (W - LEFT - RIGHT)

    def py(self, y: float) -> float:
        return H - BOTTOM - (y - self.y0) / (self.y1 - self.y0) * (H - TOP - BOTTOM)

    def finish(self) -> Raw:
        shown = self.legend[:12]
        if shown:
            width = 30 + 6.5 * max(len(name) for name, _ in shown)
            self.parts.append(f'<rect x="{LEFT + 4}" y="{TOP + 2}" width="{width:.0f}" '
                              f'height="{14 * len(shown) + 4}" fill="#fff" '
                              'fill-opacity="0.85"/>')
        y = TOP + 12
        for name, color in shown:
            self.parts.append(f'<rect x="{LEFT + 8}" y="{y - 8}" width="10" height="10" '
                              f'fill="{color}"/><text x="{LEFT + 22}" y="{y + 1}">'
                              f'{escape(name)}</text>')
            y += 14
        self.parts.append("</svg>")
        return Raw("".join(self.parts))


def _num(v: float) -> str:
    if v == 0:
        return "0"
    return f"{v:.0f}" if abs(v) >= 100 else f"{v:.3g}"


def scatter(title: str, points: Sequence[tuple[float, float, str]], colors: dict[str, str],
            *, x_label: str, y_label: str) -> Raw:
    """Points coloured by group; ``colors`` lists the legend's groups in order."""
    xs = [p[0] for p in points] or [0.0]
    ys = [p[1] for p in points] or [0.0]
    frame = _Frame(title, (min(xs), max(xs)), (min(ys), max(ys)), x_label, y_label)
    # noise first, so clusters are drawn on top of it
    for x, y, group in sorted(points, key=lambda p: colors.get(p[2], OTHER) != NOISE,
                              reverse=False):
        color = colors.get(group, OTHER)
        frame.parts.append(f'<circle cx="{frame.px(x):.1f}" cy="{frame.py(y):.1f}" r="2.2" '
                           f'fill="{color}" fill-opacity="0.75"/>')
    frame.legend = list(colors.items())
    return frame.finish()


def line_chart(title: str, series: Sequence[tuple[str, Sequence[tuple[float, float]]]], *,
               x_label: str, y_label: str, x_format: Any = None) -> Raw:
    xs = [x for _, pts in series for x, _ in pts] or [0.0]
    ys = [y for _, pts in series for _, y in pts] or [0.0]
    frame = _Frame(title, (min(xs), max(xs)), (0.0, max(ys) * 1.05 or 1.0), x_label, y_label,
                   x_format)
    for i, (name, pts) in enumerate(series):
        color = PALETTE[i % len(PALETTE)]
        if pts:
            coords = " ".join(f"{frame.px(x):.1f},{frame.py(y):.1f}" for x, y in pts)
            frame.parts.append(f'<polyline points="{coords}" fill="none" stroke="{color}" '
                               'stroke-width="1.8"/>')
        frame.legend.append((name, color))
    return frame.finish()
