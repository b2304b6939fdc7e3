"""The resumable loop's progress line: iteration, pace, time left, the last checkpoint.

In a notebook one output line is updated in place (display_id); in a terminal or a job log a
line is printed every LOG_EVERY seconds.
"""

from __future__ import annotations

import sys
import time

from ..units import format_bytes, format_duration

LOG_EVERY = 60.0


class LoopProgress:
    def __init__(self, total: int | None, start: int, restored):
        self.total = total
        self._handle = None
        self._last_print = 0.0
        shell = sys.modules.get("IPython") and sys.modules["IPython"].get_ipython()
        self._in_kernel = type(shell).__name__ == "ZMQInteractiveShell"
        if restored is not None:
            first = f"colabkit: resumed from {restored.checkpoint.id}: {start} iteration(s) done, "
            if total is not None and start >= total:
                first += "nothing left to run"
            else:
                first += f"continuing at {start + 1}" + (f" of {total}" if total else "")
            print(first + "".join(f"\n  note: {n}" for n in restored.notes), flush=True)

    def line(self, position: int, pace: float | None, last: dict | None, done: bool) -> str:
        parts = [f"iteration {position}" + (f"/{self.total}" if self.total else "")]
        if pace is not None:
            parts.append(f"{pace:.2f} s/it" if pace < 60 else f"{format_duration(pace)}/it")
            if self.total and not done:
                parts.append(f"~{format_duration(pace * (self.total - position))} left")
        if last is not None:
            if last["ok"]:
                parts.append(f"last checkpoint {last['id']} ({format_bytes(last.get('bytes'))})")
            else:
                parts.append("last checkpoint FAILED")
        return "colabkit: " + " · ".join(parts) + (" · done" if done else "")

    def update(self, position: int, pace: float | None, last: dict | None, done: bool = False) -> None:
        text = self.line(position, pace, last, done)
        if self._in_kernel:
            from IPython.display import display

            if self._handle is None:
                self._handle = display({"text/plain": text}, raw=True, display_id=True)
            else:
                self._handle.update({"text/plain": text}, raw=True)
        elif done or time.monotonic() - self._last_print >= LOG_EVERY:
            self._last_print = time.monotonic()
            print(text, flush=True)
