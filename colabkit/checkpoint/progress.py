"""The resumable loop's progress, as tqdm shows one: a bar, the percentage, elapsed and remaining
time, the pace, and the last checkpoint; then a finished or a stopped state, never "~2s left"
after the loop was left.

In a notebook one output is updated in place (display_id): an HTML bar (role=progressbar, with
its value) and the same line as text/plain for frontends without HTML. At most every UPDATE_EVERY
seconds, so a fast loop doesn't flood the frontend. In a terminal or a job log a line is printed
every LOG_EVERY seconds, and at the end.
"""

from __future__ import annotations

import html
import sys
import time

from ..units import format_bytes, format_clock, format_rate

LOG_EVERY = 60.0
UPDATE_EVERY = 0.25
BAR = 20  # characters of the text bar
EIGHTHS = " ▏▎▍▌▋▊▉"


def text_bar(share: float, width: int = BAR) -> str:
    """A bar of `width` characters in eighths, as tqdm draws it."""
    filled = max(0.0, min(share, 1.0)) * width
    whole = int(filled)
    part = EIGHTHS[int((filled - whole) * 8)] if whole < width else ""
    return ("█" * whole + part).ljust(width)


class LoopProgress:
    def __init__(self, total: int | None, start: int, restored):
        self.total = total
        self.start = start
        self.began = time.monotonic()
        self.state = "running"
        self._handle = None
        self._last_print = 0.0
        self._last_update = 0.0
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
        state = "done" if done else self.state
        elapsed = format_clock(time.monotonic() - self.began)
        each = format_rate(pace)
        if state == "done":
            parts = [f"✓ done: {position}" + (f"/{self.total}" if self.total else "") + f" in {elapsed}"]
        elif state == "stopped":
            parts = [f"■ stopped at {position}" + (f"/{self.total}" if self.total else "") + f" after {elapsed}"
                     " (the loop ended early: a break or an error)"]
        elif self.total:
            share = position / self.total
            parts = [f"{share:4.0%} ▕{text_bar(share)}▏ {position}/{self.total}", f"{elapsed} elapsed"]
            if pace is not None and position > self.start:
                parts.append(f"{format_clock(pace * (self.total - position), approximate=True)} left")
        else:
            parts = [f"iteration {position}", f"{elapsed} elapsed"]
        if each is not None:
            parts.append(each)
        if last is not None:
            if last["ok"]:
                parts.append(f"checkpoint {last['id']} ({format_bytes(last.get('bytes'))})")
            else:
                parts.append("last checkpoint FAILED")
        return "colabkit " + " · ".join(parts)

    def html(self, position: int, text: str, done: bool) -> str:
        """The line with a real bar: a role=progressbar carrying its value, for screen readers too."""
        state = "done" if done else self.state
        bar = ""
        if self.total:
            share = min(position / self.total, 1.0)
            color = {"running": "#2f5fb3", "done": "#339e66", "stopped": "#8b939c"}[state]
            bar = (f'<div role="progressbar" aria-label="colabkit loop" aria-valuemin="0" '
                   f'aria-valuemax="{self.total}" aria-valuenow="{position}" aria-valuetext="{position} of {self.total}, '
                   f'{state}" style="display:inline-block;vertical-align:middle;width:220px;height:10px;margin-right:8px;'
                   f'border:1px solid #8b939c;border-radius:3px;overflow:hidden">'
                   f'<div style="width:{share * 100:.1f}%;height:100%;background:{color}"></div></div>')
        words = html.escape(text.removeprefix("colabkit "))
        return (f'<div class="colabkit-progress" data-state="{state}" style="font:12px/1.6 -apple-system,'
                f"'Segoe UI',Roboto,'DejaVu Sans',sans-serif;font-variant-numeric:tabular-nums\">"
                f"<b>colabkit</b> {bar}<span>{words}</span></div>")

    def update(self, position: int, pace: float | None, last: dict | None, done: bool = False) -> None:
        if done:
            self.state = "done"
        now = time.monotonic()
        text = self.line(position, pace, last, done)
        if self._in_kernel:
            if not done and self._handle is not None and now - self._last_update < UPDATE_EVERY:
                return
            self._last_update = now
            from IPython.display import display

            bundle = {"text/html": self.html(position, text, done), "text/plain": text}
            if self._handle is None:
                self._handle = display(bundle, raw=True, display_id=True)
            else:
                self._handle.update(bundle, raw=True)
        elif done or now - self._last_print >= LOG_EVERY:
            self._last_print = now
            print(text, flush=True)

    def close(self, position: int, pace: float | None, last: dict | None) -> None:
        """The loop is over: if it did not finish, say it stopped (a break, an error, an interrupt)."""
        if self.state == "done":
            return
        self.state = "stopped"
        self._last_update = self._last_print = float("-inf")  # always shown
        self.update(position, pace, last)
