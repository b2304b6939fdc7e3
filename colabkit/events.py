"""Who hears alerts and who adds status lines to the panel: one list of each per kernel.

The watch publishes alerts here and its panel reads status lines from here; the checkpoint
work listens for the session-deadline alert and adds its own line. Neither knows the other, and
a listener or source that raises is logged and passed over, so it never silences the rest.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

log = logging.getLogger("colabkit")


class Events:
    def __init__(self):
        self._lock = threading.Lock()
        self._listeners: list[Callable] = []
        self._sources: list[Callable[[], str | None]] = []

    def _add(self, registry: list, item) -> Callable[[], None]:
        with self._lock:
            registry.append(item)

        def remove():
            with self._lock:
                if item in registry:
                    registry.remove(item)

        return remove

    def on_alert(self, listener: Callable) -> Callable[[], None]:
        """Call `listener(alert)` for every alert of this kernel's watches; returns its remover."""
        return self._add(self._listeners, listener)

    def add_status(self, source: Callable[[], str | None]) -> Callable[[], None]:
        """Show `source()` (a line, or None for nothing) in every panel; returns its remover."""
        return self._add(self._sources, source)

    def alert(self, alert) -> None:
        """Tell every listener, each on its own: one that raises is logged and the rest still hear it."""
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(alert)
            except Exception:
                log.exception("colabkit: alert listener %r failed", listener)

    def status_lines(self) -> list[str]:
        with self._lock:
            sources = list(self._sources)
        lines = []
        for source in sources:
            try:
                line = source()
            except Exception:  # a broken source must not break the panel
                log.exception("colabkit: status source %r failed", source)
                continue
            if line:
                lines.append(line)
        return lines
