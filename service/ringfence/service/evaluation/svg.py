"""Hand-written inline SVG charts (line, step-histogram, scatter): enough for a self-contained
report without a plotting dependency. Every text is escaped."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

W, H = 560, 300
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 28, 44
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")


@dataclass(frozen=True, slots=True)
class Series:
    name: str
    points: Sequence[tuple[float, float]]
    color: str = ""
    dashed: bool = False


@dataclass(frozen=True, slots=True)
class Marker:
    """A single labelled point (a baseline on an ROC plot)."""

    name: str
    x: float
    y: float
    color: str = "#000"


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 1:
        return f"{v:.3g}"
    return f"{v:.2g}"


class _Frame:
    def __init__(self, title: str, x_range: tuple[float, float], y_range: tuple[float, float],
                 x_label: str, y_label: str) -> None:
        self.x0, self.x1 = x_range
        self.y0, self.y1 = y_range
        if self.x1 <= self.x0:
            self.x1 = self.x0 + 1
        if self.y1 <= self.y0:
            self.y1 = self.y0 + 1
        self.parts = [
            f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" '
            f'height="{H}" role="img" aria-label="{escape(title)}" font-family="sans-serif" '
            f'font-size="11">',
            f'<text x="{W / 2}" y="16" text-anchor="middle" font-size="13" font-weight="bold">'
            f'{escape(title)}</text>',
            f'<rect x="{LEFT}" y="{TOP}" width="{W - LEFT - RIGHT}" height="{H - TOP - BOTTOM}" '
            'fill="none" stroke="#999"/>',
        ]
        for i in range(5):
            fx = self.x0 + (self.x1 - self.x0) * i / 4
            fy = self.y0 + (self.y1 - self.y0) * i / 4
            px, py = self.px(fx), self.py(fy)
            self.parts.append(f'<line x1="{px:.1f}" y1="{TOP}" x2="{px:.1f}" y2="{H - BOTTOM}" '
                              'stroke="#eee"/>')
            self.parts.append(f'<line x1="{LEFT}" y1="{py:.1f}" x2="{W - RIGHT}" y2="{py:.1f}" '
                              'stroke="#eee"/>')
            self.parts.append(f'<text x="{px:.1f}" y="{H - BOTTOM + 14}" text-anchor="middle">'
                              f'{_fmt(fx)}</text>')
            self.parts.append(f'<text x="{LEFT - 4}" y="{py + 4:.1f}" text-anchor="end">'
                              f'{_fmt(fy)}</text>')
        self.parts.append(f'<text x="{(LEFT + W - RIGHT) / 2}" y="{H - 8}" text-anchor="middle">'
                          f'{escape(x_label)}</text>')
        self.parts.append(f'<text transform="translate(14 {(TOP + H - BOTTOM) / 2}) rotate(-90)" '
                          f'text-anchor="middle">{escape(y_label)}</text>')
        self.legend: list[tuple[str, str, bool]] = []

    def px(self, x: float) -> float:
        return LEFT + (x - self.x0) / (self.x1 - self.x0) * (W - LEFT - RIGHT)

    def py(self, y: float) -> float:
        return H - BOTTOM - (y - self.y0) / (self.y1 - self.y0) * (H - TOP - BOTTOM)

    def polyline(self, s: Series, color: str) -> None:
        if not s.points:
            return
        coords = " ".join(f"{self.px(x):.1f},{self.py(y):.1f}" for x, y in s.points)
        dash = ' stroke-dasharray="5 3"' if s.dashed else ""
        self.parts.append(f'<polyline points="{coords}" fill="none" stroke="{color}" '
                          f'stroke-width="1.8"{dash}/>')
        self.legend.append((s.name, color, s.dashed))

    def marker(self, m: Marker) -> None:
        self.parts.append(f'<circle cx="{self.px(m.x):.1f}" cy="{self.py(m.y):.1f}" r="4.5" '
                          f'fill="{m.color}" stroke="#fff"/>')
        self.legend.append((m.name, m.color, False))

    def finish(self) -> str:
        if self.legend:
            width = 36 + 6.2 * max(len(name) for name, _, _ in self.legend)
            self.parts.append(f'<rect x="{LEFT + 4}" y="{TOP + 2}" width="{width:.0f}" '
                              f'height="{14 * len(self.legend) + 4}" fill="#fff" '
                              'fill-opacity="0.85"/>')
        y = TOP + 12
        for name, color, dashed in self.legend:
            dash = ' stroke-dasharray="5 3"' if dashed else ""
            self.parts.append(f'<line x1="{LEFT + 8}" y1="{y - 4}" x2="{LEFT + 26}" y2="{y - 4}" '
                              f'stroke="{color}" stroke-width="3"{dash}/>')
            self.parts.append(f'<text x="{LEFT + 30}" y="{y}">{escape(name)}</text>')
            y += 14
        self.parts.append("</svg>")
        return "".join(self.parts)


def _color(i: int, given: str) -> str:
    return given or PALETTE[i % len(PALETTE)]


def line_chart(title: str, series: Sequence[Series], *, x_label: str, y_label: str,
               x_range: tuple[float, float] | None = None,
               y_range: tuple[float, float] | None = None,
               markers: Sequence[Marker] = ()) -> str:
    xs = [x for s in series for x, _ in s.points] + [m.x for m in markers]
    ys = [y for s in series for _, y in s.points] + [m.y for m in markers]
    frame = _Frame(title, x_range or ((min(xs), max(xs)) if xs else (0, 1)),
                   y_range or ((min(0.0, *ys), max(ys)) if ys else (0, 1)), x_label, y_label)
    for i, s in enumerate(series):
        frame.polyline(s, _color(i, s.color))
    for m in markers:
        frame.marker(m)
    return frame.finish()


def histogram(title: str, edges: Sequence[float], series: Sequence[Series], *, x_label: str,
              y_label: str) -> str:
    """Step outlines of binned shares; each series' points are (bin index, value)."""
    stepped = []
    for s in series:
        pts: list[tuple[float, float]] = []
        for i, v in s.points:
            k = int(i)
            pts += [(edges[k], v), (edges[k + 1], v)]
        stepped.append(Series(s.name, pts, s.color, s.dashed))
    top = max((v for s in series for _, v in s.points), default=1.0)
    return line_chart(title, stepped, x_label=x_label, y_label=y_label,
                      x_range=(edges[0], edges[-1]), y_range=(0, top * 1.05 or 1))


def scatter(title: str, points: Sequence[tuple[float, float, str]], *, x_label: str,
            y_label: str) -> str:
    """Points coloured by their class (third item), legend by class."""
    if not points:
        return line_chart(title, [], x_label=x_label, y_label=y_label)
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    frame = _Frame(title, (min(xs), max(xs)), (min(ys), max(ys)), x_label, y_label)
    classes = sorted({p[2] for p in points}, key=lambda c: (c != "benign", c))
    colors = {c: ("#9aa5b1" if c == "benign" else PALETTE[(i + 1) % len(PALETTE)])
              for i, c in enumerate(classes)}
    for x, y, c in points:
        frame.parts.append(f'<circle cx="{frame.px(x):.1f}" cy="{frame.py(y):.1f}" r="2" '
                           f'fill="{colors[c]}" fill-opacity="0.7"/>')
    for c in classes:
        frame.legend.append((c, colors[c], False))
    return frame.finish()
