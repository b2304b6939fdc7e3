"""The history as a PNG (`%gpuwatch save`): the strips of chart.py drawn with matplotlib.

Importing this module imports matplotlib, so only `save` does, and only when asked: a PNG needs a
font rasteriser for its axes and legends, which matplotlib brings (and Colab, Kaggle and Studio
Lab already have). It draws on its own Figure with the Agg canvas, never through pyplot, so the
notebook's plotting state and backend are left alone.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
from matplotlib.figure import Figure

from ..history import Point
from ..watcher import Thresholds
from . import chart


def save_png(points: list[Point], thresholds: Thresholds | None, path: Path) -> Path:
    found = chart.strips(points, thresholds)
    if len(points) < 2 or not found:
        from ..errors import ColabkitError

        raise ColabkitError("Not enough history for a chart yet (fewer than two samples): let %gpuwatch run a "
                            "little longer, then save again.")
    times = [datetime.fromtimestamp(p.time) for p in points]
    figure = Figure(figsize=(9, 1.25 * len(found) + 0.6), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(found), 1, sharex=True, squeeze=False)[:, 0]
    for ax, strip in zip(axes, found):
        for color, series in zip(chart.COLORS, strip.series):
            values = [float("nan") if v is None else v for v in series.values]
            peak = f" (peak {series.peak:.0f}%)" if series.peak is not None else ""
            ax.plot(times, values, color=color, linewidth=1.3, label=f"{series.label}{peak}")
        if strip.level is not None:
            ax.axhline(strip.level, color="0.45", linewidth=0.8, linestyle="--", label=f"alert {strip.level:.0f}%")
        ax.set_ylim(0, 100)
        ax.set_yticks([0, 50, 100])
        ax.set_ylabel(f"{strip.name} %", rotation=0, ha="right", va="center")
        ax.grid(axis="y", color="0.9")
        # The legend outside the plot, so it never covers a line.
        ax.legend(loc="lower left", bbox_to_anchor=(0, 1.0), ncol=3, frameon=False, fontsize=8,
                  borderaxespad=0.1)
    locator = AutoDateLocator()
    axes[-1].xaxis.set_major_locator(locator)
    axes[-1].xaxis.set_major_formatter(ConciseDateFormatter(locator))
    figure.suptitle(f"colabkit: this session, {times[0]:%Y-%m-%d %H:%M} to {times[-1]:%H:%M}", fontsize=10)
    figure.savefig(path, format="png")
    return path
