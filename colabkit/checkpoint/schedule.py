"""When and how a checkpoint is taken: the Checkpointer and its resumable loop.

A timer only raises a flag; the state is copied at a consistent point, on the training thread:
a `loop()` iteration boundary, the end of a cell, or after an optimizer step when no loop runs.
Copying is the only stall: the writer process does the rest. At most one save is in flight; a
save that comes due meanwhile is skipped with a note, and a writer error is raised at the next
consistent point, never lost.
"""

from __future__ import annotations

import atexit
import errno
import json
import os
import pickle
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy

from .. import __version__
from ..errors import ColabkitError, warn
from ..units import format_bytes, format_duration, parse_duration
from . import state, tensorfile
from .store import Checkpoint, CheckpointDamaged, CheckpointStore
from .writer import OBJECTS, STATE, TENSORS

_STEPS = re.compile(r"^\s*(\d+)\s*(steps?|iterations?|its?)\s*$")
RAM_HEADROOM = 0.8  # staging may take at most this share of the memory that is free


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


@dataclass
class Restored:
    checkpoint: Checkpoint
    values: dict  # name -> value to bind (arrays, tensors, plain values, trusted pickled objects)
    notes: list[str] = field(default_factory=list)


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

    def __init__(self, every=None, to=None, keep: int = 3, namespace: dict | None = None, **objects):
        """`namespace` (a notebook's variables, given by %checkpoint) receives the values that are
        restored by name; with the Python API they are in `.objects` after a restore."""
        from .. import storage

        self.every_seconds, self.every_steps = parse_every(every)
        root = Path(to) if to is not None else (storage.current() or storage.mount()) / "checkpoints"
        # On Drive a commit is slow and uploads later: commit on local disk, mirror to Drive.
        self.mirror_store = None
        if to is None and storage.on_drive(root):
            self.mirror_store = CheckpointStore(storage.ensure_writable(root), keep)
            root = storage.local_twin(root.parent) / "checkpoints"
        self.store = CheckpointStore(storage.ensure_writable(root), keep)
        self.store.prepare()
        self.objects: dict[str, object] = dict(objects)
        self.namespace = namespace
        self.step = 0
        self.position = 0  # iterations of loop() completed
        self.pace: float | None = None  # seconds per loop iteration, kept for cost estimates
        self.total: int | None = None  # the loop's length when known, for the time left
        self.last: dict | None = None  # the last writer result
        self._forced = False
        self._last_save_at = time.monotonic()
        self._last_save_step = 0
        self._in_loop = False
        self._writer = None
        self._buffer = None
        self._error: str | None = None
        self._warned_skipped: set[str] = set()
        # Under torchrun (a multi-GPU SageMaker job) every rank restores, and rank 0 alone writes.
        self.writes = os.environ.get("RANK", "0") == "0"
        if self.writes and (self.every_seconds is not None or self.every_steps is not None):
            self._writer_process()  # started now, so the first scheduled save doesn't wait for it

    # -- flags and consistent points -------------------------------------------------------
    def request(self) -> None:
        """Take a checkpoint at the next consistent point (the session-deadline alert calls this)."""
        self._forced = True

    def due(self) -> bool:
        if self._forced:
            return True
        if self.every_seconds is not None:
            return time.monotonic() - self._last_save_at >= self.every_seconds
        if self.every_steps is not None:
            return self.step - self._last_save_step >= self.every_steps
        return False

    def at_consistent_point(self) -> None:
        """Raise a writer error from the last save, then save if one is due."""
        self._collect()
        if self._error is not None:
            error, self._error = self._error, None
            raise ColabkitError(error)
        if self.due():
            self.save(force=self._forced)

    def after_optimizer_step(self, *_args) -> None:
        """The global optimizer-step hook: inside a long cell with no loop(), a step is consistent."""
        if not self._in_loop:
            self.step += 1
            self.at_consistent_point()

    # -- saving ----------------------------------------------------------------------------
    def _collect(self) -> None:
        if self._writer is None:
            return
        result = self._writer.poll()
        if result is not None:
            self._record(result)

    def _record(self, result: dict) -> None:
        self.last = {**result, "at": time.time()}
        if not result["ok"]:
            self._error = _describe_write_error(result, self.store.root)

    def save(self, force: bool = True, wait: bool = False) -> bool:
        """Copy the state now and hand it to the writer; False if skipped (one already in flight, or
        a rank other than 0)."""
        if not self.writes:
            self._mark_saved()
            return False
        self._collect()
        if self._writer is not None and self._writer.in_flight is not None:
            if not force:
                # Still due: the next consistent point after the writer finishes saves. One note per save in flight.
                if self._writer.in_flight.get("noted") is None:
                    self._writer.in_flight["noted"] = True
                    warn(f"colabkit: checkpoint at step {self.step} skipped: the previous one is still being "
                         "written; the next one is taken when it is done (save less often, or to faster storage).")
                return False
            self._record(self._writer.wait())
        captured = state.capture(self.tracked())
        self._warn_skipped(captured.skipped)
        size = state.layout(captured.sources)
        header = tensorfile.header_bytes(state.entries(captured.sources), {"format": "pt"})
        state_json = json.dumps({"structure": captured.structure, "step": self.step, "position": self.position,
                                 "pace": self.pace}, allow_nan=True).encode()
        objects_pkl = pickle.dumps(captured.objects, protocol=pickle.HIGHEST_PROTOCOL) if captured.objects else None
        meta = self._meta()
        buffer = self._staging(size)
        if buffer is None:  # not enough free RAM to stage: write from the live state, on this thread
            self._save_inline(captured, header, state_json, objects_pkl, meta)
        else:
            state.stage(captured.sources, buffer.buf)
            self._writer_process().submit({
                "root": str(self.store.root), "keep": self.store.keep, "step": self.step, "size": size,
                "header": header, "state": state_json, "objects": objects_pkl, "meta": meta,
                "mirror": str(self.mirror_store.root) if self.mirror_store else None}, buffer)
        self._mark_saved()
        if wait:
            self.wait()
        return True

    def tracked(self) -> dict[str, object]:
        """The objects to save now. Names are read afresh from the notebook, since a cell may
        rebind them (ema = ema * 0.9 + ...)."""
        if self.namespace is None:
            return self.objects
        return {name: self.namespace.get(name, value) for name, value in self.objects.items()}

    def _mark_saved(self) -> None:
        self._forced = False
        self._last_save_at = time.monotonic()
        self._last_save_step = self.step

    def _warn_skipped(self, skipped: dict[str, str]) -> None:
        new = {k: v for k, v in skipped.items() if k not in self._warned_skipped}
        if new:
            self._warned_skipped.update(new)
            names = "; ".join(f"{k}: {v}" for k, v in new.items())
            warn(f"colabkit: not saved ({names}). Everything else is saved; recreate these after a restore.")

    def _meta(self) -> dict:
        from .. import platform

        versions = {"python": sys.version.split()[0], "numpy": numpy.__version__}
        torch = sys.modules.get("torch")
        if torch is not None:
            versions["torch"] = str(torch.__version__)  # a TorchVersion would make the writer import torch
        return {"colabkit": __version__, "platform": platform.detect_name(), "position": self.position,
                "pace": self.pace, "total": self.total, "libraries": versions}

    def _staging(self, size: int):
        """The staging buffer, reused across saves; None if a new one wouldn't fit in free RAM."""
        from .writer import StagingBuffer

        if self._buffer is not None and self._buffer.size >= max(size, 1):
            return self._buffer
        import psutil

        available = psutil.virtual_memory().available
        if size > RAM_HEADROOM * available:
            warn(f"colabkit: this checkpoint needs {format_bytes(size)} of staging memory but only "
                 f"{format_bytes(available)} is free; writing it directly from the live state instead, which "
                 "pauses training until it is on disk.")
            return None
        if self._writer is not None and (result := self._writer.wait()) is not None:
            self._record(result)  # the old buffer was still being read
        self._release_buffer()
        self._buffer = StagingBuffer(size)
        atexit.register(self.close)  # finish the last save at exit
        return self._buffer

    def _save_inline(self, captured, header, state_json, objects_pkl, meta) -> None:
        from .writer import payload_writer

        write_tensors = lambda path: tensorfile.write_sources(path, header, captured.sources)  # noqa: E731
        try:
            checkpoint = self.store.commit(self.step, payload_writer(write_tensors, state_json, objects_pkl), meta)
            self._record({"ok": True, "id": checkpoint.id, "step": checkpoint.step, "bytes": checkpoint.size})
        except OSError as exc:
            self._record({"ok": False, "error": str(exc), "errno": exc.errno, "step": self.step})

    def _writer_process(self):
        from .writer import WriterProcess

        if self._writer is None or not self._writer.alive():
            self._writer = WriterProcess()
        return self._writer

    def wait(self) -> None:
        """Block until the save in flight is committed; raise its error if it failed."""
        if self._writer is not None:
            result = self._writer.wait()
            if result is not None:
                self._record(result)
        if self._error is not None:
            error, self._error = self._error, None
            raise ColabkitError(error)

    # -- restoring -------------------------------------------------------------------------
    def restore(self, checkpoint_id: str = "latest", trust: bool = False, namespace: dict | None = None) -> Restored | None:
        """Load a checkpoint (the newest that verifies, by default) into the tracked objects.

        `namespace` (a notebook's variables) supplies objects to load state dicts into that this
        Checkpointer doesn't track, and receives the values restored by name (default: the
        namespace given at creation).
        """
        namespace = self.namespace if namespace is None else namespace
        skipped_notes = []
        stores = [self.store] + ([self.mirror_store] if self.mirror_store else [])
        if checkpoint_id == "latest":
            found = []
            for store in stores:
                candidate, skipped = store.latest_valid()
                skipped_notes += skipped
                if candidate is not None:
                    found.append(candidate)
            if not found:
                if skipped_notes:
                    raise ColabkitError("No checkpoint in " f"{self.store.root} can be loaded: " + " ".join(skipped_notes))
                return None
            checkpoint = max(found, key=lambda c: c.step)  # local first on a tie: max keeps the first
        else:
            checkpoint = self._find(checkpoint_id, stores)
            self.store.verify(checkpoint)
        saved = json.loads((checkpoint.path / STATE).read_text())
        tensors = _load_tensors(checkpoint.path / TENSORS, needs_torch=_needs_torch(saved["structure"]))
        pickled = None
        if trust and (checkpoint.path / OBJECTS).exists():
            with open(checkpoint.path / OBJECTS, "rb") as f:
                pickled = pickle.load(f)  # verified against the manifest above, and trusted by the user
        targets = {**(namespace or {}), **self.tracked()}
        values, notes = state.restore(saved["structure"], tensors, targets, pickled)
        self.objects.update({k: v for k, v in values.items() if k in self.objects})
        if namespace is not None:
            namespace.update(values)
        self.step, self.position, self.pace = saved["step"], saved["position"], saved.get("pace")
        self._last_save_step = self.step
        self._last_save_at = time.monotonic()
        notes = [f"{note} (passed over: newer checkpoint damaged)" for note in skipped_notes] + notes
        return Restored(checkpoint, values, notes)

    def _find(self, checkpoint_id: str, stores: list[CheckpointStore]) -> Checkpoint:
        for store in stores:
            if (store.root / checkpoint_id).is_dir():
                return store.get(checkpoint_id)
        return self.store.get(checkpoint_id)  # says clearly that there is no such checkpoint

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
            if self.position != self._last_save_step or self._forced:
                self.save(force=True)
            self.wait()
            progress.update(self.position, self.pace, self.last, done=True)
        finally:
            self._in_loop = False

    def close(self) -> None:
        """Wait for the save in flight, stop the writer, free the staging buffer."""
        atexit.unregister(self.close)
        try:
            self.wait()
        finally:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
            self._release_buffer()

    def _release_buffer(self) -> None:
        if self._buffer is not None:
            self._buffer.close()
            self._buffer = None


def _needs_torch(structure: dict) -> bool:
    """Torch tensors among the saved objects need torch; torch's random state alone does not
    (a job without torch restores the rest and leaves torch's random stream as it is)."""
    import importlib.util

    if '"__tensor__"' in json.dumps(structure.get("objects")):
        return True
    return "torch" in structure.get("rng", {}) and importlib.util.find_spec("torch") is not None


def _load_tensors(path: Path, needs_torch: bool) -> dict:
    """Tensors through safetensors: nothing in the file can run code."""
    if needs_torch:
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise ColabkitError("This checkpoint holds PyTorch tensors: install torch to restore it.") from None
    else:
        from safetensors.numpy import load_file
    try:
        return load_file(str(path))
    except Exception as exc:  # verified by hash already, so this is a format the library rejects
        raise CheckpointDamaged(f"{path.parent.name}: {path.name} cannot be read as safetensors ({exc}).") from None
