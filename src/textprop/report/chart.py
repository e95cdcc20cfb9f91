"""The score chart: an inline SVG line chart, a pure function of the data.

Inline SVG with presentation attributes (no CSS or script needed) keeps the report one
self-contained file and lets the chart be tested by its geometry. Points on the marked
series are shaped by the step's status, so an accepted step reads differently from a
rejected one even in grey-scale, and each point links to its step's section.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

STATUS_COLORS = {
    "baseline": "#64748b",
    "accepted": "#16a34a",
    "rejected": "#dc2626",
    "pending": "#d97706",
    "skipped": "#94a3b8",
    "final": "#4f46e5",
}
_INK, _MUTED, _GRID, _FONT = "#334155", "#64748b", "#e2e8f0", "system-ui, sans-serif"


@dataclass(frozen=True)
class Series:
    """One line of the chart: a value per x (None is a gap in the line)."""

    key: str
    label: str
    values: Sequence[float | None]
    color: str
    marked: bool = False  # shape this series' points by the x's status
    dashed: bool = False
    bridge_gaps: bool = False  # join across missing values (for sparse evaluations)


@dataclass(frozen=True)
class Frame:
    """Canvas size and the margins around the plot area, in SVG user units."""

    width: int = 1100
    height: int = 360
    left: int = 64
    right: int = 28
    top: int = 48
    bottom: int = 56

    @property
    def plot_width(self) -> float:
        return self.width - self.left - self.right

    @property
    def plot_height(self) -> float:
        return self.height - self.top - self.bottom


def line_chart(xs: Sequence[int], series: Sequence[Series], statuses: Sequence[str] = (),
               *, x_label: str = "Step", y_label: str = "Score",
               href_prefix: str | None = "#step-", frame: Frame = Frame(),
               y_range: tuple[float, float] | None = None, value_format: str = ".3f") -> str:
    """The SVG for `series` over the integer `xs`; `statuses[i]` shapes marked points at xs[i].

    `y_range` fixes the y axis (else `y_domain` picks it); `value_format` formats the values
    in point labels and tooltips (e.g. ".0f" for counts).
    """
    for s in series:
        if len(s.values) != len(xs):
            raise ValueError(f"series {s.key!r} has {len(s.values)} values for {len(xs)} xs")
    lo, hi = y_range or y_domain([v for s in series for v in s.values])
    scale = _Scale(xs, lo, hi, frame)
    parts = [
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" role="img" '
        f'viewBox="0 0 {frame.width} {frame.height}" width="100%" '
        f'font-family="{_FONT}" font-size="12" aria-label="{escape(y_label)} per '
        f'{escape(x_label.lower())}">',
        _axes(scale, x_label, y_label),
        _legend(series, statuses, frame),
    ]
    for s in series:
        parts.append(_line(s, xs, scale))
    label_points = len(xs) <= 12
    for s in sorted(series, key=lambda s: s.marked):  # status markers on top
        parts.append(_points(s, xs, statuses, scale, href_prefix, label_points and s.marked,
                             value_format))
    parts.append("</svg>")
    return "\n".join(p for p in parts if p)


def y_domain(values: Sequence[float | None]) -> tuple[float, float]:
    """0..1 for scores in that range (honest scale, comparable across runs), else nice bounds."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return 0.0, 1.0
    lo, hi = min(finite), max(finite)
    if lo >= 0.0 and hi <= 1.0:
        return 0.0, 1.0
    if lo == hi:
        lo, hi = lo - 1.0, hi + 1.0
    step = nice_step((hi - lo) / 5)
    return round(math.floor(lo / step) * step, 12), round(math.ceil(hi / step) * step, 12)


def nice_step(raw: float) -> float:
    """The smallest of 1, 2, 5 x 10^k that is at least `raw`: readable tick spacing."""
    if raw <= 0:
        return 1.0
    magnitude = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if raw <= m * magnitude * (1 + 1e-9):
            return m * magnitude
    return 10 * magnitude


class _Scale:
    """Maps data coordinates to the plot area (y grows downwards in SVG)."""

    def __init__(self, xs: Sequence[int], lo: float, hi: float, frame: Frame) -> None:
        self.frame, self.lo, self.hi = frame, lo, hi
        self.x_min = min(xs, default=0)
        self.x_max = max(xs, default=0)
        self.pad = 24.0  # keep end points off the axes

    def x(self, value: float) -> float:
        f = self.frame
        if self.x_max == self.x_min:
            return f.left + f.plot_width / 2
        span = f.plot_width - 2 * self.pad
        return f.left + self.pad + (value - self.x_min) / (self.x_max - self.x_min) * span

    def y(self, value: float) -> float:
        f = self.frame
        return f.top + (self.hi - value) / (self.hi - self.lo) * f.plot_height


def _fmt(v: float) -> str:
    return f"{v:.1f}"


def _tick_label(v: float, step: float) -> str:
    decimals = max(0, -math.floor(math.log10(step))) if step < 1 else 0
    return f"{v:.{decimals}f}"


def _axes(scale: _Scale, x_label: str, y_label: str) -> str:
    f = scale.frame
    out = []
    y_step = nice_step((scale.hi - scale.lo) / 5)
    n_ticks = round((scale.hi - scale.lo) / y_step)
    for i in range(n_ticks + 1):
        v = scale.lo + i * y_step
        y = _fmt(scale.y(v))
        out.append(f'<line x1="{f.left}" x2="{f.width - f.right}" y1="{y}" y2="{y}" '
                   f'stroke="{_GRID}" stroke-width="1"/>')
        out.append(f'<text x="{f.left - 10}" y="{y}" text-anchor="end" '
                   f'dominant-baseline="middle" fill="{_MUTED}">{_tick_label(v, y_step)}</text>')
    x_step = max(1, int(nice_step((scale.x_max - scale.x_min) / 12)))
    bottom = f.top + f.plot_height
    for x in range(scale.x_min, scale.x_max + 1, x_step):
        px = _fmt(scale.x(x))
        out.append(f'<line x1="{px}" x2="{px}" y1="{bottom}" y2="{bottom + 5}" '
                   f'stroke="{_MUTED}" stroke-width="1"/>')
        out.append(f'<text x="{px}" y="{bottom + 20}" text-anchor="middle" '
                   f'fill="{_MUTED}">{x}</text>')
    out.append(f'<line x1="{f.left}" x2="{f.width - f.right}" y1="{bottom}" y2="{bottom}" '
               f'stroke="{_MUTED}" stroke-width="1"/>')
    out.append(f'<text class="axis-label" x="{_fmt(f.left + f.plot_width / 2)}" '
               f'y="{f.height - 10}" text-anchor="middle" fill="{_INK}" '
               f'font-weight="600">{escape(x_label)}</text>')
    mid = _fmt(f.top + f.plot_height / 2)
    out.append(f'<text class="axis-label" x="16" y="{mid}" text-anchor="middle" '
               f'transform="rotate(-90 16 {mid})" fill="{_INK}" '
               f'font-weight="600">{escape(y_label)}</text>')
    return "\n".join(out)


def _legend(series: Sequence[Series], statuses: Sequence[str], frame: Frame) -> str:
    out, x, y = ['<g class="legend">'], float(frame.left), 20.0
    for s in series:
        dash = ' stroke-dasharray="6 4"' if s.dashed else ""
        out.append(f'<line x1="{_fmt(x)}" x2="{_fmt(x + 24)}" y1="{y}" y2="{y}" '
                   f'stroke="{s.color}" stroke-width="{3 if s.marked else 2}"{dash}/>')
        out.append(f'<text x="{_fmt(x + 30)}" y="{y}" dominant-baseline="middle" '
                   f'fill="{_INK}">{escape(s.label)}</text>')
        x += 44 + 7.2 * len(s.label)
    if any(s.marked for s in series):
        x += 16
        for status in dict.fromkeys(statuses):
            out.append(_marker(status, x + 6, y, 5.0))
            out.append(f'<text x="{_fmt(x + 17)}" y="{y}" dominant-baseline="middle" '
                       f'fill="{_INK}">{escape(status)}</text>')
            x += 34 + 7.2 * len(status)
    out.append("</g>")
    return "\n".join(out)


def segments(xs: Sequence[int], values: Sequence[float | None]) -> list[list[tuple[int, float]]]:
    """Runs of consecutive present (x, value) pairs: a missing value breaks the line."""
    runs: list[list[tuple[int, float]]] = [[]]
    for x, v in zip(xs, values, strict=True):
        if v is None or not math.isfinite(v):
            runs.append([])
        else:
            runs[-1].append((x, v))
    return [r for r in runs if r]


def _line(s: Series, xs: Sequence[int], scale: _Scale) -> str:
    out = []
    dash = ' stroke-dasharray="6 4"' if s.dashed else ""
    width = 2.5 if s.marked else 1.75
    runs = segments(xs, s.values)
    if s.bridge_gaps:
        runs = [[point for run in runs for point in run]]
    for run in runs:
        if len(run) < 2:
            continue
        pts = " ".join(f"{_fmt(scale.x(x))},{_fmt(scale.y(v))}" for x, v in run)
        out.append(f'<polyline class="series" data-series="{escape(s.key)}" points="{pts}" '
                   f'fill="none" stroke="{s.color}" stroke-width="{width}" '
                   f'stroke-linejoin="round" stroke-linecap="round"{dash}/>')
    return "\n".join(out)


def _points(s: Series, xs: Sequence[int], statuses: Sequence[str], scale: _Scale,
            href_prefix: str | None, with_labels: bool, value_format: str = ".3f") -> str:
    out = []
    for i, (x, v) in enumerate(zip(xs, s.values, strict=True)):
        if v is None or not math.isfinite(v):
            continue
        status = statuses[i] if i < len(statuses) else ""
        px, py = scale.x(x), scale.y(v)
        tip = f"Step {x} · {s.label} {v:{value_format}}" + (f" · {status}" if status else "")
        shape = (_marker(status, px, py, 6.0) if s.marked else
                 f'<circle cx="{_fmt(px)}" cy="{_fmt(py)}" r="3.5" fill="{s.color}" '
                 f'stroke="#ffffff" stroke-width="1.5"/>')
        label = (f'<text x="{_fmt(px)}" y="{_fmt(py - 13)}" text-anchor="middle" '
                 f'font-weight="600" fill="{_INK}">{v:{value_format}}</text>'
                 ) if with_labels else ""
        point = (f'<g class="point" data-series="{escape(s.key)}" data-step="{x}" '
                 f'data-status="{escape(status)}" data-value="{v:.6g}">'
                 f'<title>{escape(tip)}</title>{shape}{label}</g>')
        if href_prefix is not None:
            point = f'<a href="{escape(href_prefix)}{x}">{point}</a>'
        out.append(point)
    return "\n".join(out)


def _marker(status: str, x: float, y: float, r: float) -> str:
    """Filled disc for kept values (baseline, accepted, a search's final pick), hollow ring
    with a cross for rejected, ring else."""
    color = STATUS_COLORS.get(status, _MUTED)
    cx, cy, rr = _fmt(x), _fmt(y), _fmt(r)
    if status in ("accepted", "baseline", "final"):
        return (f'<circle cx="{cx}" cy="{cy}" r="{rr}" fill="{color}" stroke="#ffffff" '
                f'stroke-width="2"/>')
    ring = (f'<circle cx="{cx}" cy="{cy}" r="{rr}" fill="#ffffff" stroke="{color}" '
            f'stroke-width="2.25"/>')
    if status != "rejected":
        return ring
    d = r * 0.5
    cross = (f'<path d="M{_fmt(x - d)},{_fmt(y - d)} L{_fmt(x + d)},{_fmt(y + d)} '
             f'M{_fmt(x - d)},{_fmt(y + d)} L{_fmt(x + d)},{_fmt(y - d)}" '
             f'stroke="{color}" stroke-width="2" stroke-linecap="round"/>')
    return ring + cross
