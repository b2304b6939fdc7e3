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
from .units import parse_duration, parse_percent

VIEWS = ("auto", "widget", "colab", "text")


@dataclass
class Monitor:
    watcher: object  # watcher.Watcher
    view: object  # one of views.*View
    shell: object = None  # the IPython shell whose cell events feed watcher.activity

    def stop(self) -> None:
        self.view.close()
        self.watcher.stop()
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
                          status=runtime.events.status_lines)
        shell = runtime.shell
        if shell is not None:
            shell.events.register("pre_run_cell", watcher.activity.cell_started)
            shell.events.register("post_run_cell", watcher.activity.cell_finished)
        watcher.subscribe(on_alert=runtime.events.alert)
        view_object = _make_view(chosen, watcher, text_seconds)
        watcher.start()
        runtime.watch = Monitor(watcher, view_object, shell)
    if display:
        view_object.display()
    return runtime.watch


def _make_view(name: str, watcher, text_every: float):
    if name == "widget":
        from .views.widget import WidgetView

        return WidgetView(watcher)
    if name == "colab":
        from .views.served import ServedView

        return ServedView(watcher)
    from .views.text import TextView

    return TextView(watcher, every=text_every)


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


def reading(tier: str | None = None) -> str:
    """One text reading of the machine now (`%gpuwatch --once`)."""
    from .telemetry import Sampler
    from .views.render import text_line

    runtime = runtimes.current()
    if runtime.watch is not None and runtime.watch.watcher.latest is not None:
        sample = runtime.watch.watcher.latest
    else:
        sampler = Sampler(disk_paths=runtime.disk_paths)
        time.sleep(0.2)  # CPU % is measured between two calls: give it something to measure
        sample = sampler.read()
    return text_line(sample, current_platform(tier))


def info(tier: str | None = None, idle: str | float | None = None) -> str:
    """Platform, limits, session age and time left (`%gpuwatch --info`)."""
    return current_platform(tier, idle).describe()
