"""When a checkpoint is due: every so many seconds or steps, or at once when asked.

A timer only raises a flag: the save itself waits for a consistent point (an iteration
boundary, the end of a cell, an optimizer step), where the Checkpointer asks `due()`.
"""

from __future__ import annotations

import re
import time

from ..errors import ColabkitError
from ..units import parse_duration

_STEPS = re.compile(r"^\s*(\d+)\s*(steps?|iterations?|its?)\s*$")


def parse_every(every) -> tuple[float | None, int | None]:
    """ "15m" -> (900, None); "500 steps" -> (None, 500); None -> (None, None): only forced saves."""
    if every is None:
        return None, None
    match = _STEPS.match(str(every))
    if match:
        steps = int(match.group(1))
        if steps < 1:
            raise ColabkitError("every N steps needs N of at least 1.")
        return None, steps
    seconds = parse_duration(every)
    if seconds <= 0:
        raise ColabkitError(f"every {every!r}: the period must be longer than zero.")
    return seconds, None


class Schedule:
    def __init__(self, every=None):
        self.seconds, self.steps = parse_every(every)
        self._forced = False
        self._saved_at = time.monotonic()
        self._saved_step = 0

    @property
    def periodic(self) -> bool:
        return self.seconds is not None or self.steps is not None

    @property
    def forced(self) -> bool:
        return self._forced

    def request(self) -> None:
        """Save at the next consistent point, whatever the period (the session-deadline alert)."""
        self._forced = True

    def due(self, step: int) -> bool:
        if self._forced:
            return True
        if self.seconds is not None:
            return time.monotonic() - self._saved_at >= self.seconds
        if self.steps is not None:
            return step - self._saved_step >= self.steps
        return False

    def saved_at(self, step: int) -> bool:
        """Whether the last save (or restore) was of this step."""
        return self._saved_step == step

    def mark_saved(self, step: int) -> None:
        """A save (or a restore) of `step` happened now: the next period counts from here."""
        self._forced = False
        self._saved_at = time.monotonic()
        self._saved_step = step
