"""The one live watch of this kernel: a Watcher and the view that suits the frontend.

`watch()` replaces any watch already running, so running the `%gpuwatch` cell twice leaves one
thread; `stop_watch()` (and `%unload_ext colabkit`) ends the thread and any server it started.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

from . import platform as platforms
from . import storage
from .errors import ColabkitError
from .units import parse_duration, parse_percent

VIEWS = ("auto", "widget", "colab", "text")

_lock = threading.Lock()
_active: "Monitor | None" = None
_alert_listeners: list = []  # subscribed to every watcher this module starts
_status_sources: list = []  # lines every watcher's panel shows


@dataclass
class Monitor:
    watcher: object  # watch.Watcher
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
    return platforms.detect(shell=platforms.current_shell(), tier=tier, idle_timeout=idle)


def _choose_view(view: str, platform) -> str:
    if view not in VIEWS:
        raise ColabkitError(f"--view must be one of {', '.join(VIEWS)} (got {view!r}).")
    if view != "auto":
        return view
    if platform.name == platforms.COLAB:
        return "colab"  # widgets don't update from a thread there (colabtools#3373)
    if type(platforms.current_shell()).__name__ == "ZMQInteractiveShell" and platform.name != platforms.SAGEMAKER_JOB:
        return "widget"
    return "text"


def _disk_paths() -> dict[str, str]:
    paths = {"working folder": os.getcwd()}
    mounted = storage.current()
    if mounted is not None:
        paths["storage"] = str(mounted)
    return paths


def _thresholds(ram_alert, gpu_alert, disk_alert):
    from .watch import Thresholds

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
    from .watch import Activity, Watcher

    seconds = parse_duration(interval)
    if seconds < 0.1:
        raise ColabkitError(f"--interval must be at least 0.1 s (got {interval!r}): sampling faster "
                            "would cost the training loop CPU time and show nothing new.")
    platform = current_platform(tier, idle)
    chosen = _choose_view(view, platform)
    thresholds = _thresholds(ram_alert, gpu_alert, disk_alert)
    text_seconds = parse_duration(text_every)
    global _active
    with _lock:
        if _active is not None:
            _active.stop()
            _active = None
        watcher = Watcher(interval=seconds, history=parse_duration(history), thresholds=thresholds,
                          platform=platform, sampler=Sampler(disk_paths=_disk_paths), activity=Activity())
        shell = platforms.current_shell()
        if shell is not None:
            shell.events.register("pre_run_cell", watcher.activity.cell_started)
            shell.events.register("post_run_cell", watcher.activity.cell_finished)
        watcher.subscribe(on_alert=_tell_listeners)
        watcher.status_sources = _status_sources  # shared: sources added later show up too
        view_object = _make_view(chosen, watcher, text_seconds)
        watcher.start()
        _active = Monitor(watcher, view_object, shell)
    if display:
        view_object.display()
    return _active


def _make_view(name: str, watcher, text_every: float):
    if name == "widget":
        from .views.widget import WidgetView

        return WidgetView(watcher)
    if name == "colab":
        from .views.served import ServedView

        return ServedView(watcher)
    from .views.text import TextView

    return TextView(watcher, every=text_every)


def _tell_listeners(alert) -> None:
    for listener in list(_alert_listeners):
        listener(alert)


def _register(registry: list, item):
    """Add `item` to a registry every watcher reads; returns a function that takes it out again."""
    registry.append(item)

    def remove():
        if item in registry:
            registry.remove(item)

    return remove


def add_alert_listener(callback):
    """Hear the alerts of the current watch and of every later one; returns a function that stops it."""
    return _register(_alert_listeners, callback)


def add_status_source(source):
    """Show `source()` (a line, or None) in every panel; returns a function that takes it away."""
    return _register(_status_sources, source)


def stop_watch() -> bool:
    """Stop the live watch, if any; True when one was running."""
    global _active
    with _lock:
        if _active is None:
            return False
        _active.stop()
        _active = None
        return True


def active() -> Monitor | None:
    return _active


def reading(tier: str | None = None) -> str:
    """One text reading of the machine now (`%gpuwatch --once`)."""
    from .telemetry import Sampler
    from .views.render import text_line

    if _active is not None and _active.watcher.latest is not None:
        sample = _active.watcher.latest
    else:
        sampler = Sampler(disk_paths=_disk_paths)
        time.sleep(0.2)  # CPU % is measured between two calls: give it something to measure
        sample = sampler.read()
    return text_line(sample, current_platform(tier))


def info(tier: str | None = None, idle: str | float | None = None) -> str:
    """Platform, limits, session age and time left (`%gpuwatch --info`)."""
    return current_platform(tier, idle).describe()
