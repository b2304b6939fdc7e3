"""The Checkpointer: saves named training state when its schedule says, and resumes it.

It ties the parts together: the schedule says when, `state` captures the objects, `codec` turns
them into the checkpoint's files, the sink writes them (the writer process, or inline), and the
store (with its Drive mirror on Colab) commits and finds them again. At most one save is in
flight; one that comes due meanwhile waits for the next consistent point, and a writer error is
raised at the next consistent point, never lost.
"""

from __future__ import annotations

import errno
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy

from ..errors import ColabkitError, warn
from ..units import format_bytes, format_duration
from ..version import VERSION
from . import codec, state
from .schedule import Schedule
from .sink import Sink, writes_here
from .store import Checkpoint, CheckpointStore


@dataclass
class Restored:
    checkpoint: Checkpoint
    values: dict  # name -> value to bind (arrays, tensors, plain values, trusted pickled objects)
    notes: list[str] = field(default_factory=list)
    step: int = 0
    position: int = 0  # loop iterations done
    pace: float | None = None


def _describe_write_error(result: dict, root: Path) -> str:
    code = result.get("errno")
    reason = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up",
              errno.EROFS: "the storage folder is read-only", errno.EACCES: "permission was denied"}.get(code)
    why = reason or result["error"]
    return (f"Checkpoint step-{result.get('step')} was not saved: {why} ({root}). The previous checkpoint "
            "is intact. Free space or choose another folder with %checkpoint --to PATH, then %checkpoint now.")


class Checkpointer:
    """Saves named training state on a schedule and resumes it after a restart.

    >>> ck = Checkpointer(every="15m", model=model, optimizer=opt)
    >>> for epoch in ck.loop(range(50)):
    ...     train_one_epoch(model, opt)
    """

    def __init__(self, every=None, to=None, keep: int = 3, namespace: dict | None = None, places=None, **objects):
        """`namespace` (a notebook's variables, given by %checkpoint) receives the values that are
        restored by name; with the Python API they are in `.objects` after a restore. `places`
        (storage.Places) is where the store lives; by default this notebook's (see storage)."""
        from .. import runtime, storage

        self.schedule = Schedule(every)
        places = places or runtime.current().checkpoint_places(to)
        self.store = CheckpointStore(storage.ensure_writable(places.root), keep)
        self.mirror_store = CheckpointStore(storage.ensure_writable(places.mirror), keep) if places.mirror else None
        self.store.prepare()
        self.objects: dict[str, object] = dict(objects)
        self.namespace = namespace
        self.step = 0
        self.position = 0  # iterations of loop() completed
        self.pace: float | None = None  # seconds per loop iteration, kept for cost estimates
        self.total: int | None = None  # the loop's length when known, for the time left
        self.last: dict | None = None  # the last writer result
        self._in_loop = False
        self._error: str | None = None
        self._warned_skipped: set[str] = set()
        self._saving_step: int | None = None  # the step of the last save handed to the sink
        self._noted_busy_for: int | None = None
        self.writes = writes_here()
        self.sink = Sink(self.store, self.mirror_store)
        if self.writes and self.schedule.periodic:
            self.sink.start()

    # -- consistent points -----------------------------------------------------------------
    def request(self) -> None:
        """Take a checkpoint at the next consistent point (the session-deadline alert calls this)."""
        self.schedule.request()

    def due(self) -> bool:
        return self.schedule.due(self.step)

    def at_consistent_point(self) -> None:
        """Raise a writer error from the last save, then save if one is due."""
        self._collect()
        self._raise_error()
        if self.due():
            self.save(force=self.schedule.forced)

    def after_optimizer_step(self, *_args) -> None:
        """The global optimizer-step hook: inside a long cell with no loop(), a step is consistent."""
        if not self._in_loop:
            self.step += 1
            self.at_consistent_point()

    # -- saving ----------------------------------------------------------------------------
    def _collect(self) -> None:
        result = self.sink.poll()
        if result is not None:
            self._record(result)

    def _record(self, result: dict) -> None:
        self.last = {**result, "at": time.time()}
        if not result["ok"]:
            self._error = _describe_write_error(result, self.store.root)

    def _raise_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise ColabkitError(error)

    def save(self, force: bool = True, wait: bool = False) -> bool:
        """Copy the state now and hand it to the writer; False if skipped (one already in flight, or
        a rank other than 0)."""
        if not self.writes:
            self.schedule.mark_saved(self.step)
            return False
        self._collect()
        if self.sink.busy:
            if not force:
                # Still due: the next consistent point after the writer finishes saves. One note per save in flight.
                if self._noted_busy_for != self._saving_step:
                    self._noted_busy_for = self._saving_step
                    warn(f"colabkit: checkpoint at step {self.step} skipped: the previous one is still being "
                         "written; the next one is taken when it is done (save less often, or to faster storage).")
                return False
            self._record(self.sink.wait())
        captured = state.capture(self.tracked())
        self._warn_skipped(captured.skipped)
        state.layout(captured.sources)
        payload = codec.encode(captured, self.step, self.position, self.pace, self._meta())
        self.sink.save(payload, captured.sources)
        self._saving_step = self.step
        self.schedule.mark_saved(self.step)
        if wait:
            self.wait()
        return True

    def tracked(self) -> dict[str, object]:
        """The objects to save now. Names are read afresh from the notebook, since a cell may
        rebind them (ema = ema * 0.9 + ...)."""
        if self.namespace is None:
            return self.objects
        return {name: self.namespace.get(name, value) for name, value in self.objects.items()}

    def _warn_skipped(self, skipped: dict[str, str]) -> None:
        new = {k: v for k, v in skipped.items() if k not in self._warned_skipped}
        if new:
            self._warned_skipped.update(new)
            names = "; ".join(f"{k}: {v}" for k, v in new.items())
            warn(f"colabkit: not saved ({names}). Everything else is saved; recreate these after a restore.")

    def _meta(self) -> dict:
        from .. import platform, runtime

        versions = {"python": sys.version.split()[0], "numpy": numpy.__version__}
        torch = sys.modules.get("torch")
        if torch is not None:
            versions["torch"] = str(torch.__version__)  # a TorchVersion would make the writer import torch
        return {"colabkit": VERSION, "platform": platform.detect_name(), "notebook": runtime.current().notebook.name,
                "position": self.position, "pace": self.pace, "total": self.total, "libraries": versions}

    def wait(self) -> None:
        """Block until the save in flight is committed; raise its error if it failed."""
        result = self.sink.wait()
        if result is not None:
            self._record(result)
        self._raise_error()

    # -- restoring -------------------------------------------------------------------------
    def stores(self) -> list[CheckpointStore]:
        return [self.store] + ([self.mirror_store] if self.mirror_store else [])

    def restore(self, checkpoint_id: str = "latest", trust: bool = False, namespace: dict | None = None) -> Restored | None:
        """Load a checkpoint (the newest that verifies, by default) into the tracked objects.

        `namespace` (a notebook's variables) supplies objects to load state dicts into that this
        Checkpointer doesn't track, and receives the values restored by name (default: the
        namespace given at creation).
        """
        namespace = self.namespace if namespace is None else namespace
        restored = restore(self.stores(), checkpoint_id, trust, {**(namespace or {}), **self.tracked()})
        if restored is None:
            return None
        self.objects.update({k: v for k, v in restored.values.items() if k in self.objects})
        if namespace is not None:
            namespace.update(restored.values)
        self.step, self.position, self.pace = restored.step, restored.position, restored.pace
        self.schedule.mark_saved(self.step)
        return restored

    def status(self) -> str | None:
        """One line for the panel: the last checkpoint and, on Drive, how far its copy lags."""
        from .mirror import read_status

        if self.last is None:
            return None
        if not self.last["ok"]:
            return f"checkpoint step-{self.last.get('step')} FAILED: see the cell output"
        age = format_duration(time.time() - self.last["at"])
        line = f"checkpoint {self.last['id']} ({format_bytes(self.last.get('bytes'))}, {age} ago)"
        if self.mirror_store is not None:
            mirror = read_status(self.store.root) or {}
            copied = mirror.get("mirrored") or "none yet"
            line += f" · Drive copy: {copied}"
            if mirror.get("pending"):
                line += f" (copying {mirror['pending']})"
            if mirror.get("error"):
                line += f" · Drive copy failed: {mirror['error']}"
        return line

    # -- the loop --------------------------------------------------------------------------
    def loop(self, iterable, total: int | None = None):
        """Iterate, restoring the latest checkpoint first and skipping the iterations it covers;
        save at iteration boundaries when due, and once more at the end."""
        from .progress import LoopProgress

        restored = self.restore()
        start = self.position if restored is not None else 0
        if restored is None:
            self.position = 0
        if total is None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.total = total
        progress = LoopProgress(total, start, restored)
        iterator = iter(iterable)
        for _ in range(start):  # the iterations the checkpoint already covers
            next(iterator, None)
        self._in_loop = True
        try:
            for item in iterator:
                began = time.monotonic()
                yield item
                # Back here means the body finished: a consistent point.
                elapsed = time.monotonic() - began
                self.pace = elapsed if self.pace is None else 0.8 * self.pace + 0.2 * elapsed
                self.position += 1
                self.step = self.position
                self.at_consistent_point()
                progress.update(self.position, self.pace, self.last)
            if not self.schedule.saved_at(self.position) or self.schedule.forced:
                self.save(force=True)
            self.wait()
            progress.update(self.position, self.pace, self.last, done=True)
        finally:
            self._in_loop = False
            progress.close(self.position, self.pace, self.last)  # a loop left early says it stopped

    def close(self) -> None:
        """Wait for the save in flight, stop the writer, free the staging buffer."""
        result = self.sink.close()
        if result is not None:
            self._record(result)
        self._raise_error()


def find(stores: list[CheckpointStore], checkpoint_id: str = "latest") -> tuple[Checkpoint, list[str]] | None:
    """The checkpoint to restore, verified, from any of `stores` (a local store and its Drive
    mirror), and why newer ones were passed over; None when there is none at all."""
    if checkpoint_id != "latest":
        for store in stores:
            if (store.root / checkpoint_id).is_dir():
                checkpoint = store.get(checkpoint_id)
                store.verify(checkpoint)
                return checkpoint, []
        stores[0].get(checkpoint_id)  # says clearly that there is no such checkpoint
    found, skipped = [], []
    for store in stores:
        candidate, passed_over = store.latest_valid()
        skipped += passed_over
        if candidate is not None:
            found.append(candidate)
    if not found:
        if skipped:
            raise ColabkitError(f"No checkpoint in {stores[0].root} can be loaded: " + " ".join(skipped))
        return None
    return max(found, key=lambda c: c.step), skipped  # local first on a tie: max keeps the first


def restore(stores: list[CheckpointStore], checkpoint_id: str, trust: bool, targets: dict) -> Restored | None:
    """Load a checkpoint from `stores` (the newest that verifies, by default): state dicts into the
    objects in `targets` (name -> object), in place; the values to bind by name are returned.
    Reads only: a read-only store restores."""
    found = find(stores, checkpoint_id)
    if found is None:
        return None
    checkpoint, skipped = found
    loaded = codec.read(checkpoint.path, trust)
    values, notes = state.restore(loaded.structure, loaded.tensors, targets, loaded.objects)
    notes = [f"{note} (passed over: newer checkpoint damaged)" for note in skipped] + notes
    return Restored(checkpoint, values, notes, loaded.step, loaded.position, loaded.pace)
