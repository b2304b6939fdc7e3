"""The live watch of a kernel: a Watcher and the view that suits the frontend.

`watch()` replaces any watch already running, so running the `%gpuwatch` cell twice leaves one
thread; `stop_watch()` (and `%unload_ext colabkit`) ends the thread and any server it started.
The kernel's Runtime holds the watch; its alerts go to the Runtime's events.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from . import platform as platforms
from . import runtime as runtimes
from .errors import ColabkitError
from .units import format_duration, parse_duration, parse_percent

VIEWS = ("auto", "widget", "colab", "text")


@dataclass
class Monitor:
    watcher: object  # watcher.Watcher
    view: object  # one of views.*View
    shell: object = None  # the IPython shell whose cell events feed watcher.activity

    def stop(self) -> None:
        self.watcher.stop()  # the last reading and the history file first: the view's summary shows them
        self.view.close()
        if self.shell is not None:
            self.shell.events.unregister("pre_run_cell", self.watcher.activity.cell_started)
            self.shell.events.unregister("post_run_cell", self.watcher.activity.cell_finished)


def current_platform(tier: str | None = None, idle: str | float | None = None):
    """The platform as detected now, with an optional Colab tier and idle limit."""
    return runtimes.current().platform(tier, idle)


def _choose_view(view: str, platform) -> str:
    if view not in VIEWS:
        raise ColabkitError(f"--view must be one of {', '.join(VIEWS)} (got {view!r}).")
    if view != "auto":
        return view
    if platform.name == platforms.COLAB:
        return "colab"  # widgets don't update from a thread there (colabtools#3373)
    if platforms.in_kernel() and platform.name != platforms.SAGEMAKER_JOB:
        return "widget"
    return "text"


def _thresholds(ram_alert, gpu_alert, disk_alert):
    from .watcher import Thresholds

    defaults = Thresholds()
    return Thresholds(
        ram=parse_percent(ram_alert) if ram_alert is not None else defaults.ram,
        gpu_memory=parse_percent(gpu_alert) if gpu_alert is not None else defaults.gpu_memory,
        disk=parse_percent(disk_alert) if disk_alert is not None else defaults.disk,
    )


def watch(
    interval: float | str = 1.0,
    history: float | str = "10m",
    view: str = "auto",
    tier: str | None = None,
    idle: str | float | None = None,
    ram_alert=None,
    gpu_alert=None,
    disk_alert=None,
    text_every: float | str = "60s",
    display: bool = True,
) -> Monitor:
    """Start watching GPU, CPU, RAM and disk, and show a live panel. Replaces a watch already running."""
    from .telemetry import Sampler
    from .watcher import Activity, Watcher

    seconds = parse_duration(interval)
    if seconds < 0.1:
        raise ColabkitError(f"--interval must be at least 0.1 s (got {interval!r}): sampling faster "
                            "would cost the training loop CPU time and show nothing new.")
    runtime = runtimes.current()
    platform = runtime.platform(tier, idle)
    chosen = _choose_view(view, platform)
    thresholds = _thresholds(ram_alert, gpu_alert, disk_alert)
    text_seconds = parse_duration(text_every)
    with runtime.lock:
        if runtime.watch is not None:
            runtime.watch.stop()
            runtime.watch = None
        watcher = Watcher(interval=seconds, history=parse_duration(history), thresholds=thresholds,
                          platform=platform, sampler=Sampler(disk_paths=runtime.disk_paths), activity=Activity(),
                          status=runtime.events.status_lines, history_path=history_file(runtime))
        shell = runtime.shell
        if shell is not None:
            shell.events.register("pre_run_cell", watcher.activity.cell_started)
            shell.events.register("post_run_cell", watcher.activity.cell_finished)
        watcher.subscribe(on_alert=runtime.events.alert)
        view_object = _make_view(chosen, watcher, text_seconds, shell)
        watcher.start()
        runtime.watch = Monitor(watcher, view_object, shell)
    if display:
        view_object.display()
    return runtime.watch


def history_file(runtime):
    """Where this notebook's watch keeps its history on this machine (see history.py)."""
    from .history import default_path

    return default_path(runtime.notebook.name, platforms.machine_start())


def _make_view(name: str, watcher, text_every: float, shell=None):
    if name == "widget":
        from .views.widget import WidgetView

        return WidgetView(watcher)
    if name == "colab":
        from .views.served import ServedView

        return ServedView(watcher)
    from .views.text import TextView

    return TextView(watcher, every=text_every, shell=shell)


def stop_watch() -> bool:
    """Stop the live watch, if any; True when one was running."""
    runtime = runtimes.current()
    with runtime.lock:
        if runtime.watch is None:
            return False
        runtime.watch.stop()
        runtime.watch = None
        return True


def active() -> Monitor | None:
    return runtimes.current().watch


ONCE_GPU_WAIT = 3.0  # seconds `%gpuwatch --once` waits for the GPU (nvmlInit alone can take a second or two)


def reading(tier: str | None = None) -> str:
    """One text reading of the machine now (`%gpuwatch --once`). The GPU part waits at most
    ONCE_GPU_WAIT seconds; past that the rest is printed, and the missing GPU reading said."""
    from .telemetry import Sampler
    from .views.render import text_line

    runtime = runtimes.current()
    if runtime.watch is not None and runtime.watch.watcher.latest is not None:
        return text_line(runtime.watch.watcher.latest, current_platform(tier))
    sampler = Sampler(disk_paths=runtime.disk_paths)
    time.sleep(0.2)  # CPU % is measured between two calls: give it something to measure
    sample = sampler.read(gpu_wait=ONCE_GPU_WAIT)
    line = text_line(sample, current_platform(tier))
    stuck = sampler.close()
    if stuck:
        line += (f"\ncolabkit: the GPU reading did not come in time (waited {ONCE_GPU_WAIT:.0f} s); the rest is "
                 f"above. {stuck[0].upper()}{stuck[1:]}")
    return line


def info(tier: str | None = None, idle: str | float | None = None) -> str:
    """Platform, limits, session age and time left (`%gpuwatch --info`)."""
    return current_platform(tier, idle).describe()


def _recorded(runtime):
    """(history, watcher): the running watch's, else the history its file kept (after a stop or a
    kernel restart) with no watcher."""
    from .history import History

    if runtime.watch is not None:
        return runtime.watch.watcher.history, runtime.watch.watcher
    kept = History(600.0, 1.0, history_file(runtime))
    if not kept.session_points():
        raise ColabkitError("There is no history to show yet: %gpuwatch records it while it runs (and keeps it "
                            "across a kernel restart). Start it with %gpuwatch, then run this again.")
    return kept, None


def plot(in_notebook: bool | None = None) -> None:
    """Show the history (`%gpuwatch plot`): this session and the recent window as charts, and the
    cells that used most. In a terminal: the summary so far, and how to save a chart."""
    from .views import chart, render

    history, watcher = _recorded(runtimes.current())
    thresholds = watcher.thresholds if watcher is not None else None
    if not (platforms.in_kernel() if in_notebook is None else in_notebook):
        if watcher is not None:
            print(render.summary_text(watcher).replace("watch ended", "watch so far"))
        print(f"colabkit: {len(history.session_points())} points of history; %gpuwatch save PATH writes "
              "them as a PNG chart and a CSV.")
        return
    from IPython.display import HTML, display

    body = [chart.svg(history.session_points(), thresholds, width=720, title="This session",
                      gap_after=max(5 * history.span, 5.0)),
            chart.svg(history.window_points(), thresholds, width=720,
                      title=f"Last {format_duration(history.window)}", gap_after=max(5 * history.interval, 5.0))]
    if watcher is not None and watcher.activity is not None:
        body.append(render.cells_table(watcher.activity.top(10)))
    display(HTML(render.style() + '<div class="ck-panel colabkit-plot">'
                 f'<div class="ck-head"><span>colabkit history</span><span class="ck-sub">this session, then the '
                 f'last {format_duration(history.window)}</span></div>{"".join(body)}</div>'))


def save(path) -> list:
    """Write the history as a PNG chart and a CSV (`%gpuwatch save PATH`); returns the files written.

    PATH names the files: run.png, run.csv or just run give run.png and run.csv. The PNG is drawn
    with matplotlib, imported only here: text on a chart (axes, legends) needs a font rasteriser,
    and matplotlib is already installed on Colab, Kaggle and Studio Lab. Without it the same chart
    is written as SVG (drawn by colabkit itself), and said."""
    from pathlib import Path

    from .errors import say
    from .history import to_csv
    from .views import chart

    history, watcher = _recorded(runtimes.current())
    thresholds = watcher.thresholds if watcher is not None else None
    target = Path(path).expanduser()
    base = target.with_suffix("") if target.suffix.lower() in (".png", ".csv", ".svg") else target
    if not base.parent.is_dir():
        raise ColabkitError(f"Can't save to {target}: the folder {base.parent} does not exist. Create it, or "
                            "give a path in an existing folder.")
    points = history.session_points()
    csv_path = base.with_suffix(".csv")
    to_csv(points, csv_path, history.span)
    try:
        from .views import figure
    except ImportError:  # no matplotlib
        svg_path = base.with_suffix(".svg")
        svg_path.write_text(chart.svg(points, thresholds, width=900, title="This session",
                                      gap_after=max(5 * history.span, 5.0), standalone=True))
        say(f"no PNG: matplotlib is not installed here, so the chart went to {svg_path} (SVG, which any "
            "browser opens). pip install matplotlib, then save again for a PNG.")
        return [svg_path, csv_path]
    return [figure.save_png(points, thresholds, base.with_suffix(".png")), csv_path]
