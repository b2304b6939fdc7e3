"""The history as a chart people can read: one strip per quantity, each with its value axis, its
legend outside the plot and its alert level, above one time axis. SVG, drawn here without any
plotting library, so the live panel, `%gpuwatch plot` and the static summary need nothing more.

Series colours are a blue and a purple that keep 3:1 against light and dark backgrounds; the
danger red belongs to alerts, never to a line. Text and axes use `currentColor`, so the chart
follows the panel's (and the notebook's) theme.
"""

from __future__ import annotations

import html
import time
from dataclasses import dataclass

from ..history import Point, merge
from ..watcher import Thresholds

COLORS = ("#3b72c4", "#9058b8")  # first and second series of a strip
GUTTER = 58  # px left of the plots: the strip's name and its value axis
LEGEND = 15  # px above each plot: its legend


@dataclass(frozen=True)
class Series:
    label: str
    values: list  # percent (0..100) or None, one per point
    peak: float | None  # the highest percent in view


@dataclass(frozen=True)
class Strip:
    name: str
    series: tuple[Series, ...]
    level: float | None  # the alert level, percent


def _percent(point: Point, used: str, total: str | None = None):
    value = point.get(used)
    if value is None:
        return None
    if total is None:
        return value
    whole = point.get(total)
    return None if not whole else 100 * value / whole


def strips(points: list[Point], thresholds: Thresholds | None = None) -> list[Strip]:
    """What to draw for these points: the quantities they carry, in the panel's order."""
    t = thresholds or Thresholds()
    names = {name for p in points for name in p.values}

    def strip(name, specs, level=None):
        series = []
        for label, used, total in specs:
            if used not in names:
                continue
            values = [_percent(p, used, total) for p in points]
            known = [v for v in values if v is not None]
            series.append(Series(label, values, max(known) if known else None))
        return Strip(name, tuple(series), level) if series else None

    gpus = sorted({n[:-len("_memory_used")] for n in names if n.startswith("gpu") and n.endswith("_memory_used")},
                  key=lambda k: (len(k), k))
    found = [strip("CPU", [("machine", "cpu_percent", None), ("this kernel", "kernel_cpu_percent", None)])]
    for key in gpus:
        label = key[3:].replace("_mig", " MIG ")
        found.append(strip(f"GPU {label}", [("memory", f"{key}_memory_used", f"{key}_memory_total"),
                                            ("utilization", f"{key}_utilization", None)], 100 * t.gpu_memory))
    found.append(strip("RAM", [("machine", "ram_used", "ram_total"), ("this kernel", "kernel_ram_used", "ram_total")],
                       100 * t.ram))
    disks = sorted({n[len("disk_"):-len("_used")] for n in names if n.startswith("disk_") and n.endswith("_used")})
    found.append(strip("disk", [(d.replace("_", " "), f"disk_{d}_used", f"disk_{d}_total") for d in disks[:2]],
                       100 * t.disk))
    return [s for s in found if s is not None]


def thin(points: list[Point], most: int) -> list[Point]:
    """At most `most` points, each bucket's highest values kept (a spike stays visible)."""
    if len(points) <= most:
        return points
    size = -(-len(points) // most)
    out = []
    for i in range(0, len(points), size):
        bucket = points[i:i + size]
        merged = bucket[0]
        for p in bucket[1:]:
            merged = merge(merged, p)
        out.append(merged)
    return out


def _clock(t: float, span: float) -> str:
    return time.strftime("%H:%M" if span >= 600 else "%H:%M:%S", time.localtime(t))


def svg(points: list[Point], thresholds: Thresholds | None = None, width: int = 640, plot_height: int = 34,
        title: str = "History", gap_after: float | None = None, standalone: bool = False) -> str:
    """The chart as an inline SVG element (`standalone`: an .svg file, on white). `gap_after`:
    seconds without a point that break a line (a stopped kernel) instead of joining across them."""
    points = thin(points, max(2, (width - GUTTER) // 4))
    found = strips(points, thresholds)
    if len(points) < 2 or not found:
        return f'<div class="ck-chart-empty">{html.escape(title)}: not enough samples yet.</div>'
    narrow = width < 480
    t0, t1 = points[0].time, points[-1].time
    span = max(t1 - t0, 1e-9)
    plot_w = width - GUTTER - 8
    row = LEGEND + plot_height + 8
    axis_y = len(found) * row + 2
    height = axis_y + 16
    x_of = [GUTTER + (p.time - t0) / span * plot_w for p in points]
    breaks = [gap_after is not None and i and points[i].time - points[i - 1].time > gap_after
              for i in range(len(points))]
    out = ['<?xml version="1.0" encoding="utf-8"?>\n' if standalone else ""]
    out += [f'<svg class="ck-chart" xmlns="http://www.w3.org/2000/svg" role="img" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
           f'style="max-width:100%;height:auto;font:10px sans-serif" aria-label="{html.escape(_describe(title, found))}">'
           f'<title>{html.escape(_describe(title, found))}</title>']
    if standalone:
        out.append(f'<rect width="{width}" height="{height}" fill="#fff"/>')
    for n, strip in enumerate(found):
        top = n * row + LEGEND
        bottom = top + plot_height

        def y(v):
            return bottom - min(max(v, 0), 100) / 100 * plot_height

        out.append(f'<text x="2" y="{top - 5}" fill="currentColor" font-weight="600">{html.escape(strip.name)}</text>'
                   f'<text x="{GUTTER - 4}" y="{top + 8}" fill="currentColor" text-anchor="end" opacity=".7">100%</text>'
                   f'<text x="{GUTTER - 4}" y="{bottom}" fill="currentColor" text-anchor="end" opacity=".7">0</text>'
                   f'<rect x="{GUTTER}" y="{top}" width="{plot_w}" height="{plot_height}" fill="none" '
                   f'stroke="currentColor" stroke-opacity=".25"/>')
        if strip.level is not None:
            ly = y(strip.level)
            out.append(f'<line x1="{GUTTER}" x2="{GUTTER + plot_w}" y1="{ly:.1f}" y2="{ly:.1f}" stroke="currentColor" '
                       f'stroke-opacity=".55" stroke-dasharray="3 3"><title>alert level {strip.level:.0f}%</title></line>')
        legend_x = GUTTER
        for color, series in zip(COLORS, strip.series):
            last = next((v for v in reversed(series.values) if v is not None), None)
            if narrow:  # the bars above say the values now; a narrow legend keeps the peaks
                text = f"{series.label} peak {_pct(series.peak)}"
            else:
                text = f"{series.label} {_pct(last)}" + (f" (peak {_pct(series.peak)})" if series.peak is not None else "")
            out.append(f'<rect x="{legend_x}" y="{top - 10}" width="10" height="3" fill="{color}"/>'
                       f'<text x="{legend_x + 14}" y="{top - 5}" fill="currentColor">{html.escape(text)}</text>')
            legend_x += 26 + 6 * len(text)
            path, pen = [], False
            for x, v, broken in zip(x_of, series.values, breaks):
                if v is None or broken:
                    pen = False
                if v is None:
                    continue
                path.append(f'{"L" if pen else "M"}{x:.0f} {y(v):.1f}')
                pen = True
            if path:
                out.append(f'<path d="{"".join(path)}" fill="none" stroke="{color}" stroke-width="1.5"/>')
        if strip.level is not None and not narrow:
            out.append(f'<text x="{GUTTER + plot_w}" y="{top - 5}" fill="currentColor" text-anchor="end" opacity=".7">'
                       f'alert {strip.level:.0f}%</text>')
    ticks = 5 if plot_w > 300 else 3
    for i in range(ticks):
        x = GUTTER + i * plot_w / (ticks - 1)
        anchor = "start" if i == 0 else "end" if i == ticks - 1 else "middle"
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{axis_y - 6}" y2="{axis_y - 2}" stroke="currentColor" '
                   f'stroke-opacity=".5"/><text x="{x:.1f}" y="{axis_y + 10}" fill="currentColor" '
                   f'text-anchor="{anchor}">{_clock(t0 + i * span / (ticks - 1), span)}</text>')
    out.append("</svg>")
    return "".join(out)


def _pct(value) -> str:
    return "n/a" if value is None else f"{value:.0f}%"


def _describe(title: str, found: list[Strip]) -> str:
    """The chart in words, for screen readers: each series' peak."""
    parts = [f"{s.name} {series.label} peak {_pct(series.peak)}" for s in found for series in s.series]
    return f"{title}: " + "; ".join(parts)
