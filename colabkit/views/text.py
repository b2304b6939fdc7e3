"""Plain text for terminal IPython, logs inside a SageMaker job, and frontends that render nothing else.

A reading every `every` seconds (not every sample: a terminal is also where the user types): on a
terminal in one line that fits it (at most 80 columns), in a log every figure; every alert at
once, in colour on a terminal. When the watch stops, its summary.

Terminal IPython: output goes to `sys.stdout` as it is at the moment of writing. While the prompt
waits for input, IPython has prompt_toolkit's patch_stdout in place, which prints above the prompt
and redraws it: nothing lands in the line being typed (a stream kept from when the watch started
would write straight into it). The reading also stays in view in prompt_toolkit's bottom toolbar.
"""

from __future__ import annotations

import shutil
import sys

from ..telemetry import Sample
from ..watcher import Alert, Watcher
from . import render

RED, RESET = "\x1b[1;31m", "\x1b[0m"


class TextView:
    def __init__(self, watcher: Watcher, every: float = 60.0, stream=None, shell=None):
        self.watcher = watcher
        self.every = every
        self._stream = stream  # None: sys.stdout at each write (see the module's docstring)
        self._last_print = 0.0
        self._toolbar = Toolbar(shell, self._toolbar_text) if _prompt_session(shell) is not None else None
        self._unsubscribe = watcher.subscribe(on_sample=self._on_sample, on_alert=self._on_alert)

    @property
    def stream(self):
        return self._stream or sys.stdout

    def _width(self) -> int:
        return min(80, shutil.get_terminal_size((80, 24)).columns)

    def _on_sample(self, sample: Sample) -> None:
        if self._toolbar is not None:
            self._toolbar.refresh()
        if sample.time - self._last_print >= self.every:
            self._print_reading(sample)

    def _on_alert(self, alert: Alert) -> None:
        self._write(f"[colabkit] WARNING: {alert.message}", colour=RED)

    def _print_reading(self, sample: Sample) -> None:
        self._last_print = sample.time
        if _isatty(self.stream):  # a person at a terminal: one line that fits it
            now = self.watcher.now()
            self._write(render.compact_line(sample, self.watcher.platform, now.banner, width=self._width(), stamp=True))
        else:  # a log (a SageMaker job's): every figure, however long the line
            self._write(render.text_line(sample, self.watcher.platform))

    def _toolbar_text(self) -> str:
        now = self.watcher.now()
        if now.sample is None:
            return ""
        return render.compact_line(now.sample, self.watcher.platform, now.banner, width=self._width() - 1)

    def _write(self, text: str, colour: str | None = None) -> None:
        stream = self.stream
        if colour and _isatty(stream):
            text = f"{colour}{text}{RESET}"
        print(text, file=stream, flush=True)

    def display(self) -> None:
        latest = self.watcher.latest
        if latest is not None and not self._last_print:  # the first tick may have printed it already
            self._print_reading(latest)

    def close(self) -> None:
        self._unsubscribe()
        if self._toolbar is not None:
            self._toolbar.close()
        self._write(render.summary_text(self.watcher))


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _prompt_session(shell):
    """Terminal IPython's prompt_toolkit session, or None (a kernel, plain Python, a script)."""
    return getattr(shell, "pt_app", None) if type(shell).__name__ == "TerminalInteractiveShell" else None


class Toolbar:
    """The reading in prompt_toolkit's bottom toolbar, below the line being typed; put back as it
    was when the watch stops."""

    def __init__(self, shell, text):
        self.session = _prompt_session(shell)
        self._before = self.session.bottom_toolbar
        self.session.bottom_toolbar = text

    def refresh(self) -> None:
        self.session.app.invalidate()  # thread-safe; nothing happens while no prompt is shown

    def close(self) -> None:
        self.session.bottom_toolbar = self._before
        self.refresh()
