"""The Watcher: one daemon thread that samples the machine, keeps its recent history and raises alerts.

Views subscribe to samples and alerts (the kernel's Events pass alerts on to everyone else); the
watcher knows none of them. Subscribers run on the watcher's thread and must return quickly.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from .platform import Platform
from .telemetry import Sample, Sampler
from .units import format_bytes, format_duration

log = logging.getLogger("colabkit")


@dataclass(frozen=True)
class Thresholds:
    """When to alert. Fractions of the total; session levels are seconds left, largest first."""

    ram: float = 0.90
    gpu_memory: float = 0.95
    disk: float = 0.90
    session_left: tuple[float, ...] = (30 * 60, 10 * 60)
    idle_left: tuple[float, ...] = (10 * 60,)  # only when an idle limit is set (--idle)
    # An alert re-arms only once its reading has fallen this far below its level, so a value that
    # hovers around the line does not alert on every tick.
    rearm_margin: float = 0.05


@dataclass(frozen=True)
class Alert:
    """A level crossed. `kind` is "ram", "gpu_memory", "disk" or "session"; `key` tells which one."""

    kind: str
    key: str
    message: str
    time: float
    value: float | None = None


@dataclass
class Peaks:
    """The highest readings over a stretch of samples, so a short spike between renders still shows."""

    cpu_percent: float | None = None
    ram_used: int | None = None
    gpu_memory_used: dict[str, int] = field(default_factory=dict)
    gpu_utilization: dict[str, float] = field(default_factory=dict)

    def add(self, sample: Sample) -> None:
        self.cpu_percent = _max(self.cpu_percent, sample.cpu_percent)
        self.ram_used = _max(self.ram_used, sample.ram_used)
        for gpu in sample.gpus:
            for reading in (gpu, *gpu.mig_instances):
                if reading.memory_used is not None:
                    self.gpu_memory_used[reading.index] = _max(
                        self.gpu_memory_used.get(reading.index), reading.memory_used)
                if reading.utilization is not None:
                    self.gpu_utilization[reading.index] = _max(
                        self.gpu_utilization.get(reading.index), reading.utilization)


def _max(a, b):
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


class Activity:
    """When the user last ran a cell. The monitor feeds it from IPython's pre/post_run_cell events."""

    def __init__(self):
        self.running = False
        self.last = time.time()

    def cell_started(self, *_):
        self.running = True

    def cell_finished(self, *_):
        self.running = False
        self.last = time.time()

    def idle_for(self, now: float) -> float:
        return 0.0 if self.running else max(0.0, now - self.last)


class AlertRules:
    """Turns samples into alerts, each once when its level is crossed (not on every tick)."""

    def __init__(self, thresholds: Thresholds, platform: Platform | None, activity: Activity | None = None):
        self.thresholds = thresholds
        self.platform = platform
        self.activity = activity
        self._armed: dict[str, bool] = {}

    def check(self, sample: Sample) -> list[Alert]:
        t = self.thresholds
        alerts = []
        ram = sample.ram_fraction
        ram_note = " Colab restarts the runtime when RAM is full." if self._on("colab") else ""
        alerts += self._level("ram", "ram", ram, t.ram, lambda: (
            f"RAM {ram:.0%} full ({format_bytes(sample.ram_used)} of {format_bytes(sample.ram_total)})."
            f"{ram_note} Free memory (del large objects, gc.collect()) or save your work now."))
        for gpu in sample.gpus:
            for reading in (gpu, *gpu.mig_instances):
                frac = reading.memory_fraction
                alerts += self._level("gpu_memory", reading.index, frac, t.gpu_memory, lambda r=reading, f=frac: (
                    f"GPU {r.index} memory {f:.0%} full ({format_bytes(r.memory_used)} of "
                    f"{format_bytes(r.memory_total)}): the next allocation may fail with CUDA out of "
                    "memory. Lower the batch size or free cached tensors (torch.cuda.empty_cache())."))
        for disk in sample.disks:
            frac = disk.fraction
            alerts += self._level("disk", disk.path, frac, t.disk, lambda d=disk, f=frac: (
                f"Disk {f:.0%} full at {d.path} ({format_bytes(d.used)} of {format_bytes(d.total)}): "
                "a checkpoint or download may fail. Delete old files or checkpoints."))
        alerts += self._session(sample)
        alerts += self._idle(sample)
        return [Alert(kind, key, message, sample.time, value) for kind, key, message, value in alerts]

    def _on(self, name: str) -> bool:
        return self.platform is not None and self.platform.name == name

    def _level(self, kind, key, value, level, message):
        rule = f"{kind}:{key}"
        if value is None:
            return []
        if value >= level and self._armed.get(rule, True):
            self._armed[rule] = False
            return [(kind, key, message(), value)]
        if value < level - self.thresholds.rearm_margin:
            self._armed[rule] = True
        return []

    def _session(self, sample: Sample):
        if self.platform is None or self.platform.session_cap is None:
            return []
        left = self.platform.time_left(sample.time)
        return self._countdown("session", left, self.thresholds.session_left, lambda: (
            f"{format_duration(max(left, 0))} left in this {self.platform.label} session (cap "
            f"{format_duration(self.platform.session_cap)}): the runtime will be stopped. Save a "
            "checkpoint now; %to_sagemaker moves a run that needs longer."))

    def _idle(self, sample: Sample):
        if self.platform is None or not self.platform.idle_timeout or self.activity is None:
            return []
        idle = self.activity.idle_for(sample.time)
        left = self.platform.idle_timeout - idle
        return self._countdown("idle", left, self.thresholds.idle_left, lambda: (
            f"No cell has run for {format_duration(idle)}: with your idle limit of "
            f"{format_duration(self.platform.idle_timeout)} the notebook may be disconnected in "
            f"{format_duration(max(left, 0))}. Run a cell to keep the session."))

    def _countdown(self, kind: str, left: float, levels: tuple[float, ...], message):
        """One alert per level of time left, re-armed when time is given back (a tier, activity)."""
        fired = []
        for level in levels:
            rule = f"{kind}:{level:.0f}"
            if left <= level and self._armed.get(rule, True):
                self._armed[rule] = False
                fired.append(level)
            elif left > level:
                self._armed[rule] = True
        if not fired:
            return []
        # Crossing two levels at once (a late start) says it once, for the nearest deadline.
        return [(kind, f"{min(fired):.0f}", message(), left)]


class Watcher:
    """Samples every `interval` seconds on one daemon thread; keeps `history` seconds of samples."""

    def __init__(
        self,
        interval: float = 1.0,
        history: float = 600.0,
        thresholds: Thresholds | None = None,
        platform: Platform | None = None,
        sampler: Sampler | None = None,
        activity: Activity | None = None,
        status=None,
    ):
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.interval = interval
        self.platform = platform
        self.activity = activity
        self.rules = AlertRules(thresholds or Thresholds(), platform, activity)
        self.sampler = sampler or Sampler()
        self._history: deque[tuple[int, Sample]] = deque(maxlen=max(2, int(history / interval)))
        self._seq = itertools.count(1)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sample_subscribers: list = []
        self._alert_subscribers: list = []
        self._status = status or (lambda: [])  # the lines others add to the panel (the checkpoint's)
        self.alerts: list[Alert] = []
        self.session_peaks = Peaks()  # since start, for instance advice when the run moves elsewhere
        self.started_at: float | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> "Watcher":
        if self._thread is not None:
            return self
        self.started_at = time.monotonic()
        self.tick()  # a first reading at once, so a view has something to show
        self._thread = threading.Thread(target=self._run, name="colabkit-watcher", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        # Ticks keep to a fixed schedule: under a GIL-bound training loop a tick itself takes a
        # while, and waiting a full interval after each one would drift far from the interval.
        next_at = time.monotonic()
        while True:
            next_at += self.interval
            delay = next_at - time.monotonic()
            if delay < 0:  # fell behind: take the next reading now, without a burst to catch up
                next_at, delay = time.monotonic(), 0
            if self._stop.wait(delay):
                return
            try:
                self.tick()
            except Exception:  # never let a bad reading end the watching
                log.exception("colabkit watcher: a sample failed")

    # -- sampling --------------------------------------------------------------------------
    def tick(self) -> Sample:
        """Take one sample, record it, raise what alerts it crosses, tell subscribers."""
        sample = self.sampler.read()
        alerts = self.rules.check(sample)
        with self._lock:
            self._history.append((next(self._seq), sample))
            self.alerts.extend(alerts)
            self.session_peaks.add(sample)
        for alert in alerts:  # subscribers decide how a person sees it
            self._notify(self._alert_subscribers, alert)
        self._notify(self._sample_subscribers, sample)
        return sample

    def _notify(self, subscribers, event) -> None:
        for callback in list(subscribers):
            try:
                callback(event)
            except Exception:  # a broken view must not stop the others or the watcher
                log.exception("colabkit watcher: subscriber %r failed", callback)

    def subscribe(self, on_sample=None, on_alert=None):
        """Call `on_sample(sample)` / `on_alert(alert)` from the watcher thread; returns an unsubscribe."""
        pairs = [(self._sample_subscribers, on_sample), (self._alert_subscribers, on_alert)]
        for subscribers, callback in pairs:
            if callback is not None:
                subscribers.append(callback)

        def unsubscribe():
            for subscribers, callback in pairs:
                if callback in subscribers:
                    subscribers.remove(callback)

        return unsubscribe

    # -- reading back ----------------------------------------------------------------------
    @property
    def latest(self) -> Sample | None:
        with self._lock:
            return self._history[-1][1] if self._history else None

    @property
    def latest_seq(self) -> int:
        with self._lock:
            return self._history[-1][0] if self._history else 0

    def history(self) -> list[Sample]:
        with self._lock:
            return [sample for _, sample in self._history]

    def since(self, seq: int) -> tuple[int, list[Sample]]:
        """Samples newer than sequence number `seq`, and the newest number, for peak-between-renders."""
        with self._lock:
            newer = [sample for n, sample in self._history if n > seq]
            return (self._history[-1][0] if self._history else seq), newer

    def status_lines(self) -> list[str]:
        return self._status()

    def idle_for(self, now: float) -> float | None:
        """Seconds since the last cell ran, when an idle limit is being counted down."""
        if self.activity is None or self.platform is None or not self.platform.idle_timeout:
            return None
        return self.activity.idle_for(now)

    def peaks(self, samples: list[Sample] | None = None) -> Peaks:
        peaks = Peaks()
        for sample in self.history() if samples is None else samples:
            peaks.add(sample)
        return peaks
