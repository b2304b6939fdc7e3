"""The Watcher: one daemon thread that samples the machine, keeps its recent history and raises alerts.

Views subscribe to samples and alerts (the kernel's Events pass alerts on to everyone else); the
watcher knows none of them. Subscribers run on the watcher's thread and must return quickly.
Every reading, the first included, is taken on that thread: a cell waits for the first at most
FIRST_READING_WAIT seconds, and a stop at most STOP_WAIT, whatever a driver or a disk does.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass

from .errors import say
from .history import History
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
    # A bar turns "high" this far below its alert level, and "alert" at the level itself: the same
    # comparison that raises the alert, so the bar and the banner never disagree.
    high_band: float = 0.15

    def state(self, kind: str, fraction: float | None) -> str:
        """"ok", "high" or "alert" for a reading of a quantity that alerts ("ram", "gpu_memory", "disk")."""
        level = {"ram": self.ram, "gpu_memory": self.gpu_memory, "disk": self.disk}[kind]
        if fraction is None:
            return "ok"
        if fraction >= level:
            return "alert"
        return "high" if fraction >= level - self.high_band else "ok"


@dataclass(frozen=True)
class Alert:
    """A level crossed (said once: in the cell and to listeners). `kind` is "ram", "gpu_memory",
    "disk", "session" or "idle"; `key` tells which one."""

    kind: str
    key: str
    message: str
    time: float
    value: float | None = None


@dataclass(frozen=True)
class Condition:
    """An alert as the banner shows it now: `message` as of the latest sample (a countdown stays
    live), `since` when it fired, `worst` its worst reading, and `cleared` when its reading fell
    back below its level (None while it holds)."""

    kind: str
    key: str
    message: str
    since: float
    value: float | None
    worst: float | None
    cleared: float | None = None

    @property
    def active(self) -> bool:
        return self.cleared is None


CLEARED_SHOWN = 300.0  # seconds a cleared alert stays (dimmed) in the banner
FIRST_READING_WAIT = 1.0  # seconds start() waits for the first reading, so a view has one to show
STOP_WAIT = 1.0  # seconds stop() waits for the watcher's thread to end its tick


def gpu_key(index: str) -> str:
    """The name a GPU (or MIG instance "0:1") has in history points: gpu0, gpu0_mig1."""
    return "gpu" + index.replace(":", "_mig")


class Peaks:
    """The highest value of each quantity over a stretch of points, and when it was reached.

    The session's peaks feed the panel's peak markers and the export's instance advice; a window's
    peaks label its chart."""

    def __init__(self, points=()):
        self.values: dict[str, float] = {}
        self.times: dict[str, float] = {}
        for point in points:
            self.add(point)

    def add(self, point) -> None:
        for name, value in point.values.items():
            if name not in self.values or value > self.values[name]:
                self.values[name] = value
                self.times[name] = point.time

    def get(self, name: str):
        return self.values.get(name)

    @property
    def cpu_percent(self) -> float | None:
        return self.values.get("cpu_percent")

    @property
    def ram_used(self) -> int | None:
        return self.values.get("ram_used")

    @property
    def gpu_memory_used(self) -> dict[str, int]:
        """Per GPU index ("0", "0:1"): the highest memory used."""
        return self._per_gpu("_memory_used")

    @property
    def gpu_utilization(self) -> dict[str, float]:
        return self._per_gpu("_utilization")

    def _per_gpu(self, suffix: str) -> dict:
        found = {}
        for name, value in self.values.items():
            if name.startswith("gpu") and name.endswith(suffix):
                found[name[3:-len(suffix)].replace("_mig", ":")] = value
        return found


class Activity:
    """Which cell runs and what each cell used. The monitor feeds it IPython's pre/post_run_cell
    events; the watcher feeds it every sample.

    A cell's peaks are the highest readings taken while it ran, and the first reading after it
    ended if no other cell started first (what a short cell left behind: `x = np.zeros(...)` ends
    between two samples). Its growth is that peak minus the reading just before it started."""

    KEPT = 200  # cells remembered

    def __init__(self):
        self.running = False
        self.last = time.time()
        self.cells: deque[CellUsage] = deque(maxlen=self.KEPT)
        self._lock = threading.Lock()
        self._current: CellUsage | None = None
        self._closing: CellUsage | None = None
        self._latest: Sample | None = None

    def cell_started(self, info=None, *_):
        with self._lock:
            self._finish_closing()
            self.running = True
            raw = getattr(info, "raw_cell", "") or ""
            before = self._latest
            self._current = CellUsage(source=_first_line(raw), started=time.time(),
                                      ram_before=before.ram_used if before else None,
                                      gpu_before=_gpu_used(before) if before else None)

    def cell_finished(self, result=None, *_):
        with self._lock:
            self.running = False
            self.last = time.time()
            cell, self._current = self._current, None
            if cell is None:
                return
            cell.ended = self.last
            cell.number = getattr(result, "execution_count", None)
            self._closing = cell

    def record(self, sample: Sample) -> None:
        with self._lock:
            self._latest = sample
            if self._current is not None:
                self._current.add(sample)
            elif self._closing is not None:
                self._closing.add(sample)
                self._finish_closing()

    def _finish_closing(self):
        if self._closing is not None:
            self.cells.append(self._closing)
            self._closing = None

    def top(self, n: int = 3) -> list["CellUsage"]:
        """The cells that grew memory most (RAM or GPU memory, as a share of its total), the one
        running now included."""
        with self._lock:
            cells = [c for c in (*self.cells, self._closing, self._current) if c is not None and c.samples]
        ranked = sorted(cells, key=lambda c: c.growth_share(self._totals()), reverse=True)
        return [c for c in ranked[:n] if c.growth_share(self._totals()) > 0]

    def _totals(self) -> tuple[int | None, int | None]:
        latest = self._latest
        if latest is None:
            return None, None
        gpu_total = sum(g.memory_total or 0 for g in latest.gpus) or None
        return latest.ram_total, gpu_total

    def idle_for(self, now: float) -> float:
        return 0.0 if self.running else max(0.0, now - self.last)


def _first_line(source: str, width: int = 48) -> str:
    line = next((l.strip() for l in source.splitlines() if l.strip()), "")
    return line if len(line) <= width else line[:width - 1] + "…"


def _gpu_used(sample: Sample) -> int | None:
    used = [g.memory_used for g in sample.gpus if g.memory_used is not None]
    return sum(used) if used else None


@dataclass
class CellUsage:
    """One cell's run: when, and the RAM and GPU memory (all GPUs) it reached and grew by."""

    source: str
    started: float
    ram_before: int | None = None
    gpu_before: int | None = None
    ram_peak: int | None = None
    gpu_peak: int | None = None
    ended: float | None = None
    number: int | None = None
    samples: int = 0

    def add(self, sample: Sample) -> None:
        self.samples += 1
        self.ram_peak = _max(self.ram_peak, sample.ram_used)
        self.gpu_peak = _max(self.gpu_peak, _gpu_used(sample))

    @property
    def ram_growth(self) -> int | None:
        return None if self.ram_peak is None or self.ram_before is None else self.ram_peak - self.ram_before

    @property
    def gpu_growth(self) -> int | None:
        return None if self.gpu_peak is None or self.gpu_before is None else self.gpu_peak - self.gpu_before

    def growth_share(self, totals) -> float:
        ram_total, gpu_total = totals
        shares = [0.0]
        if self.ram_growth is not None and ram_total:
            shares.append(self.ram_growth / ram_total)
        if self.gpu_growth is not None and gpu_total:
            shares.append(self.gpu_growth / gpu_total)
        return max(shares)


def _max(a, b):
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


class AlertRules:
    """Turns samples into alerts, each once when its level is crossed (not on every tick), and
    keeps each alert's condition: active while its reading stays past its level, cleared when it
    falls back, so the banner shows the present and not the past."""

    def __init__(self, thresholds: Thresholds, platform: Platform | None, activity: Activity | None = None):
        self.thresholds = thresholds
        self.platform = platform
        self.activity = activity
        self._armed: dict[str, bool] = {}
        self.conditions: dict[str, Condition] = {}  # by rule, in the order they first fired

    def check(self, sample: Sample) -> list[Alert]:
        t = self.thresholds
        alerts = []
        ram = sample.ram_fraction
        ram_note = " Colab restarts the runtime when RAM is full." if self._on("colab") else ""
        alerts += self._level("ram", "ram", ram, t.ram, sample.time, lambda: (
            f"RAM {ram:.0%} full ({format_bytes(sample.ram_used)} of {format_bytes(sample.ram_total)})."
            f"{ram_note} Free memory (del large objects, gc.collect()) or save your work now."))
        for gpu in sample.gpus:
            for reading in (gpu, *gpu.mig_instances):
                frac = reading.memory_fraction
                alerts += self._level("gpu_memory", reading.index, frac, t.gpu_memory, sample.time,
                                      lambda r=reading, f=frac: (
                    f"GPU {r.index} memory {f:.0%} full ({format_bytes(r.memory_used)} of "
                    f"{format_bytes(r.memory_total)}): the next allocation may fail with CUDA out of "
                    "memory. Lower the batch size or free cached tensors (torch.cuda.empty_cache())."))
        for disk in sample.disks:
            frac = disk.fraction
            alerts += self._level("disk", disk.path, frac, t.disk, sample.time, lambda d=disk, f=frac: (
                f"Disk {f:.0%} full at {d.path} ({format_bytes(d.used)} of {format_bytes(d.total)}): "
                "a checkpoint or download may fail. Delete old files or checkpoints."))
        alerts += self._session(sample)
        alerts += self._idle(sample)
        return [Alert(kind, key, message, sample.time, value) for kind, key, message, value in alerts]

    def _on(self, name: str) -> bool:
        return self.platform is not None and self.platform.name == name

    def _level(self, kind, key, value, level, now, message):
        rule = f"{kind}:{key}"
        if value is None:
            return []
        fired = []
        if value >= level:
            if self._armed.get(rule, True):
                self._armed[rule] = False
                self.conditions.pop(rule, None)  # a fresh crossing: a fresh condition, at the end
                fired = [(kind, key, message(), value)]
            self._hold(rule, kind, key, message(), value, now, higher_is_worse=True)
        else:
            self._release(rule, value, now)
            if value < level - self.thresholds.rearm_margin:
                self._armed[rule] = True
        return fired

    def _hold(self, rule, kind, key, message, value, now, higher_is_worse):
        """The condition holds at this reading: keep it active, with the message of now."""
        old = self.conditions.get(rule)
        if old is None:
            self.conditions[rule] = Condition(kind, key, message, now, value, value)
            return
        worst = old.worst if value is None or old.worst is None else (
            max(old.worst, value) if higher_is_worse else min(old.worst, value))
        self.conditions[rule] = Condition(kind, key, message, old.since, value, worst)

    def _release(self, rule, value, now):
        old = self.conditions.get(rule)
        if old is not None:
            self.conditions[rule] = Condition(old.kind, old.key, old.message, old.since, value, old.worst,
                                              old.cleared if old.cleared is not None else now)

    def _session(self, sample: Sample):
        if self.platform is None or self.platform.session_cap is None:
            return []
        left = self.platform.time_left(sample.time)
        return self._countdown("session", left, self.thresholds.session_left, sample.time, lambda: (
            f"{format_duration(max(left, 0))} left in this {self.platform.label} session (cap "
            f"{format_duration(self.platform.session_cap)}): the runtime will be stopped. Save a "
            "checkpoint now; %to_sagemaker moves a run that needs longer."))

    def _idle(self, sample: Sample):
        if self.platform is None or not self.platform.idle_timeout or self.activity is None:
            return []
        idle = self.activity.idle_for(sample.time)
        left = self.platform.idle_timeout - idle
        return self._countdown("idle", left, self.thresholds.idle_left, sample.time, lambda: (
            f"No cell has run for {format_duration(idle)}: with your idle limit of "
            f"{format_duration(self.platform.idle_timeout)} the notebook may be disconnected in "
            f"{format_duration(max(left, 0))}. Run a cell to keep the session."))

    def _countdown(self, kind: str, left: float, levels: tuple[float, ...], now: float, message):
        """One alert per level of time left, re-armed when time is given back (a tier, activity).
        One condition per countdown: active while the time left is under its largest level."""
        fired = []
        for level in levels:
            rule = f"{kind}:{level:.0f}"
            if left <= level and self._armed.get(rule, True):
                self._armed[rule] = False
                fired.append(level)
            elif left > level:
                self._armed[rule] = True
        if left <= max(levels):
            self._hold(kind, kind, kind, message(), left, now, higher_is_worse=False)
        else:
            self._release(kind, left, now)
        if not fired:
            return []
        # Crossing two levels at once (a late start) says it once, for the nearest deadline.
        return [(kind, f"{min(fired):.0f}", message(), left)]

    def banner(self, now: float) -> list[Condition]:
        """Active conditions, then those cleared in the last CLEARED_SHOWN seconds."""
        shown = [c for c in self.conditions.values() if c.active]
        return shown + [c for c in self.conditions.values()
                        if not c.active and now - c.cleared <= CLEARED_SHOWN]


class Watcher:
    """Samples every `interval` seconds on one daemon thread; keeps `history` seconds of points at
    full resolution and the whole session downsampled (in `history_path` when given)."""

    def __init__(
        self,
        interval: float = 1.0,
        history: float = 600.0,
        thresholds: Thresholds | None = None,
        platform: Platform | None = None,
        sampler: Sampler | None = None,
        activity: Activity | None = None,
        status=None,
        history_path=None,
    ):
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.interval = interval
        self.platform = platform
        self.activity = activity
        self.thresholds = thresholds or Thresholds()
        self.rules = AlertRules(self.thresholds, platform, activity)
        self.sampler = sampler or Sampler()
        self.history = History(history, interval, history_path)
        self._latest: Sample | None = None
        self._seq = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._first_reading = threading.Event()  # set once the first tick has ended, well or not
        self._sample_subscribers: list = []
        self._alert_subscribers: list = []
        self._status = status or (lambda: [])  # the lines others add to the panel (the checkpoint's)
        self.alerts: list[Alert] = []  # every alert fired, in order
        # Since the session began (the history file's points included), for the peak markers and
        # for instance advice when the run moves elsewhere.
        self.session_peaks = Peaks(self.history.session_points())
        self.started_at: float | None = None  # time.time() of the first sample
        self.stopped_at: float | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> "Watcher":
        if self._thread is not None:
            return self
        self._thread = threading.Thread(target=self._run, name="colabkit-watcher", daemon=True)
        self._thread.start()
        # The first reading is the thread's: a view has it to show when it comes in time, and says
        # it is waiting when it does not (a hung driver, a hung disk).
        self._first_reading.wait(FIRST_READING_WAIT)
        return self

    def stop(self, timeout: float = STOP_WAIT) -> None:
        """Stop sampling; returns within `timeout` (and the sampler's short wait). A thread stuck
        in a reading is left as a daemon, and said."""
        self._stop.set()
        thread, self._thread = self._thread, None
        stuck = []
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                stuck.append("its thread (colabkit-watcher, a daemon) is still inside a reading and is left to "
                             "end on its own")
        gpu = self.sampler.close()  # its GPU reading thread
        if gpu:
            stuck.append(gpu)
        if stuck:
            say("the watch stopped, but " + "; ".join(stuck))
        if self.stopped_at is None:
            self.stopped_at = time.time()
            self.history.save()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        # Ticks keep to a fixed schedule: under a GIL-bound training loop a tick itself takes a
        # while, and waiting a full interval after each one would drift far from the interval.
        next_at = time.monotonic()
        while True:
            try:
                self.tick()
            except Exception:  # never let a bad reading end the watching
                log.exception("colabkit watcher: a sample failed")
            self._first_reading.set()
            next_at += self.interval
            delay = next_at - time.monotonic()
            if delay < 0:  # fell behind: take the next reading now, without a burst to catch up
                next_at, delay = time.monotonic(), 0
            if self._stop.wait(delay):
                return

    # -- sampling --------------------------------------------------------------------------
    def tick(self) -> Sample:
        """Take one sample, record it, raise what alerts it crosses, tell subscribers."""
        sample = self.sampler.read()
        with self._lock:
            alerts = self.rules.check(sample)
            point = self.history.add(sample)
            self._latest = sample
            self._seq += 1
            self.alerts.extend(alerts)
            self.session_peaks.add(point)
            if self.started_at is None:
                self.started_at = sample.time
        if self.activity is not None:
            self.activity.record(sample)
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
            return self._latest

    @property
    def latest_seq(self) -> int:
        with self._lock:
            return self._seq

    def now(self) -> "Now":
        """The latest sample with the alert conditions it left and the peaks up to it, read
        together, so a view never shows a bar from one tick beside a banner from another."""
        with self._lock:
            sample = self._latest
            banner = self.rules.banner(sample.time) if sample is not None else []
            return Now(sample, self._seq, banner, Peaks() if sample is None else _copy(self.session_peaks))

    def status_lines(self) -> list[str]:
        return self._status()

    def idle_for(self, now: float) -> float | None:
        """Seconds since the last cell ran, when an idle limit is being counted down."""
        if self.activity is None or self.platform is None or not self.platform.idle_timeout:
            return None
        return self.activity.idle_for(now)

    def conditions(self) -> list[Condition]:
        """Every alert condition of this watch, cleared ones included, in the order they fired."""
        with self._lock:
            return list(self.rules.conditions.values())


@dataclass(frozen=True)
class Now:
    sample: Sample | None
    seq: int
    banner: list[Condition]
    peaks: Peaks


def _copy(peaks: Peaks) -> Peaks:
    copy = Peaks()
    copy.values, copy.times = dict(peaks.values), dict(peaks.times)
    return copy
