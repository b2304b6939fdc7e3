"""Plain text for terminal IPython, logs inside a SageMaker job, and frontends that render nothing else.

A line every `every` seconds (not every sample: a terminal is also where the user types) and
every alert at once.
"""

from __future__ import annotations

import sys

from ..telemetry import Sample
from ..watcher import Alert, Watcher
from . import render


class TextView:
    def __init__(self, watcher: Watcher, every: float = 60.0, stream=None):
        self.watcher = watcher
        self.every = every
        self.stream = stream or sys.stdout
        self._seq = watcher.latest_seq
        self._last_print = 0.0
        self._unsubscribe = watcher.subscribe(on_sample=self._on_sample, on_alert=self._on_alert)

    def _line(self, sample: Sample) -> str:
        self._seq, newer = self.watcher.since(self._seq)
        return render.text_line(sample, self.watcher.platform, self.watcher.peaks(newer))

    def _on_sample(self, sample: Sample) -> None:
        if sample.time - self._last_print >= self.every:
            self._print_reading(sample)

    def _on_alert(self, alert: Alert) -> None:
        self._write(f"[colabkit] WARNING: {alert.message}")

    def _print_reading(self, sample: Sample) -> None:
        self._last_print = sample.time
        self._write(self._line(sample))

    def _write(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def display(self) -> None:
        latest = self.watcher.latest
        if latest is not None and not self._last_print:  # the first tick may have printed it already
            self._print_reading(latest)

    def close(self) -> None:
        self._unsubscribe()
