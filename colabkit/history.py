"""What the watch saw over time: the `--history` window at full resolution and the whole session
downsampled, kept in a small file so that a kernel restart keeps them.

A point is a sample flattened to named numbers (`ram_used`, `gpu0_memory_used`, ...): what the
charts draw, the CSV holds and the file stores. Downsampling keeps each bucket's highest value, so
a spike never vanishes from the session's chart when it is squeezed.

The file: `<tmp>/colabkit/history-<machine start>-<notebook>.json`, rewritten (atomically) every
SAVE_EVERY seconds and when the watch stops. Keyed by the machine's start (PID 1) because that is
what a kernel restart keeps and a new machine does not: on Colab, Kaggle and Studio Lab /tmp lives
exactly as long as the VM, so the kernel Colab restarts after an out-of-memory crash picks up
what led to the crash, and a new runtime starts clean. On a machine that lives for weeks (a
workstation) a file whose newest point is older than CONTINUE_WITHIN is a past session, and is
not continued. Keyed by notebook because two notebooks on one machine each keep their own (with
their own kernel's CPU). Bounded: SESSION_POINTS points plus at most WINDOW_KEPT of the window's.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from .telemetry import Sample

log = logging.getLogger("colabkit")

SESSION_POINTS = 720  # the whole session's chart: 12 h at one point a minute
WINDOW_KEPT = 1200  # of the window's points, at most this many go into the file
SAVE_EVERY = 15.0  # seconds between rewrites of the file
CONTINUE_WITHIN = 3600.0  # a file whose newest point is older than this is a past session
FORMAT = 1


@dataclass(frozen=True)
class Point:
    """One moment (or the highest of a bucket of moments): `values` by name, None where unknown."""

    time: float
    values: dict

    def get(self, name: str):
        return self.values.get(name)


def point_of(sample: Sample) -> Point:
    """The numbers a chart and the CSV need from one sample: percentages and bytes."""
    values = {
        "cpu_percent": sample.cpu_percent,
        "kernel_cpu_percent": sample.kernel_cpu_percent,
        "ram_used": sample.ram_used,
        "ram_total": sample.ram_total,
        "kernel_ram_used": sample.kernel_ram_used,
    }
    for gpu in sample.gpus:
        for reading in (gpu, *gpu.mig_instances):
            key = "gpu" + reading.index.replace(":", "_mig")
            values[f"{key}_utilization"] = reading.utilization
            values[f"{key}_memory_used"] = reading.memory_used
            values[f"{key}_memory_total"] = reading.memory_total
    for disk in sample.disks:
        key = "disk_" + disk.label.replace(" ", "_")
        values[f"{key}_used"] = disk.used
        values[f"{key}_total"] = disk.total
    return Point(sample.time, {k: v for k, v in values.items() if v is not None})


def merge(a: Point, b: Point) -> Point:
    """One bucket for both: the earlier time, each value's highest."""
    values = dict(a.values)
    for name, value in b.values.items():
        values[name] = value if name not in values else max(values[name], value)
    return Point(min(a.time, b.time), values)


def columns(points: list[Point]) -> list[str]:
    """Every value name these points carry, in first-seen order."""
    seen: dict[str, None] = {}
    for point in points:
        for name in point.values:
            seen.setdefault(name)
    return list(seen)


class History:
    """The window (the last `window` seconds, every point) and the session (every point since the
    watch began, or since the machine did when the file had them, downsampled to SESSION_POINTS)."""

    def __init__(self, window: float, interval: float, path: Path | None = None):
        self.window = window
        self.interval = interval
        self.path = path
        self.recent: deque[Point] = deque(maxlen=max(2, int(window / interval)))
        self.session: list[Point] = []
        self.span = interval  # seconds per session point; doubles each time the session is squeezed
        self._lock = threading.Lock()
        self._saved_at = time.monotonic()
        if path is not None:
            self._load(path)

    def add(self, sample: Sample) -> Point:
        point = point_of(sample)
        with self._lock:
            self.recent.append(point)
            last = self.session[-1] if self.session else None
            if last is not None and point.time - last.time < self.span - self.interval / 2:  # jitter: a new point each interval
                self.session[-1] = merge(last, point)
            else:
                self.session.append(point)
            if len(self.session) > SESSION_POINTS:
                self.session = [merge(*self.session[i:i + 2]) if i + 1 < len(self.session) else self.session[i]
                                for i in range(0, len(self.session), 2)]
                self.span *= 2
        if self.path is not None and time.monotonic() - self._saved_at >= SAVE_EVERY:
            self.save()
        return point

    def window_points(self) -> list[Point]:
        with self._lock:
            return list(self.recent)

    def session_points(self) -> list[Point]:
        with self._lock:
            return list(self.session)

    # -- the file --------------------------------------------------------------------------
    def save(self) -> None:
        """Rewrite the file (temp file, then rename: a reader never sees half of it)."""
        if self.path is None:
            return
        self._saved_at = time.monotonic()
        with self._lock:
            data = {"format": FORMAT, "span": self.span, "interval": self.interval,
                    "session": [[p.time, p.values] for p in self.session],
                    "recent": [[p.time, p.values] for p in list(self.recent)[-WINDOW_KEPT:]]}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            temp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            temp.write_text(json.dumps(data, separators=(",", ":")))
            os.replace(temp, self.path)
        except OSError as exc:  # a full /tmp must not stop the watch: the panel still works
            log.warning("colabkit: could not keep the watch's history in %s: %s", self.path, exc)

    def _load(self, path: Path) -> None:
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.warning("colabkit: the watch's history in %s could not be read (%s); starting afresh", path, exc)
            return
        if data.get("format") != FORMAT or not data.get("session"):
            return
        if time.time() - data["session"][-1][0] > CONTINUE_WITHIN:
            return
        self.session = [Point(t, v) for t, v in data.get("session", [])][-SESSION_POINTS:]
        self.span = max(float(data.get("span", self.interval)), self.interval)
        now = time.time()
        self.recent.extend(Point(t, v) for t, v in data.get("recent", []) if now - t <= self.window)


def folder() -> Path:
    """Not /tmp/colabkit: a kernel started in /tmp would take that folder for the package."""
    return Path(tempfile.gettempdir()) / "colabkit-watch-history"


def default_path(notebook: str, machine_start: float) -> Path:
    return folder() / f"history-{machine_start:.0f}-{notebook}.json"


def to_csv(points: list[Point], path: Path, span: float) -> None:
    """One row per point: its local time, Unix time, the seconds it covers (each value is the
    highest in that stretch) and every value by name, empty where unknown."""
    import csv

    names = columns(points)
    with open(path, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["time", "unix_time", "covers_seconds", *names])
        for p in points:
            writer.writerow([time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(p.time)), f"{p.time:.3f}",
                             f"{span:g}", *("" if p.get(n) is None else _number(p.get(n)) for n in names)])


def _number(value) -> str:
    return str(value) if isinstance(value, int) else f"{value:.6g}"
