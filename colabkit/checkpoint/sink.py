"""Where a captured checkpoint goes: staged and committed by the writer process, or written inline.

Copying the tensors that changed (changes.py) into a reused staging buffer is the only stall of
the training thread; the writer process hashes, writes what the pool lacks, fsyncs and commits. When the state doesn't fit in the free
memory the staging would need, it is written straight from the live state on this thread
instead, which pauses training until it is on disk (said when it happens).
"""

from __future__ import annotations

import atexit
import os

from ..errors import warn
from ..units import format_bytes
from . import codec, state
from .changes import Changes
from .changes import kept_hashes as _kept
from .store import CheckpointStore

RAM_HEADROOM = 0.8  # staging may take at most this share of the memory that is free


class Sink:
    def __init__(self, store: CheckpointStore, mirror: CheckpointStore | None = None, lock_fd: int | None = None):
        self.store, self.mirror = store, mirror
        self.lock_fd = lock_fd  # the store's lock, which the writer holds too (lock.py)
        self._writer = None
        self._buffer = None
        self._inline_result: dict | None = None
        self.changes = Changes()

    def start(self) -> None:
        """Start the writer process now, so the first scheduled save doesn't wait for it."""
        self._writer_process()

    @property
    def busy(self) -> bool:
        """A save is still being written."""
        return self._writer is not None and self._writer.in_flight is not None

    def save(self, captured: state.Capture, step: int, position: int, pace: float | None, meta: dict) -> None:
        """Stage what changed and hand the checkpoint over (nothing may be in flight)."""
        places, staged, size = self.changes.place(captured.sources)
        payload = codec.encode(captured, places, size, step, position, pace, meta)
        buffer = self._staging(size)
        if buffer is None:
            self._inline_result = self._write_inline(payload, captured.sources)
            return
        state.stage(staged, buffer.buf)
        job = {"root": str(self.store.root), "keep": self.store.keep, "payload": payload,
               "mirror": str(self.mirror.root) if self.mirror else None}
        try:
            self._writer_process().submit(job, buffer)
        except OSError:  # the writer died since the last save (killed): a new one takes this save
            self._writer.process.kill()
            self._writer.process.wait()
            self._writer_process().submit(job, buffer)

    def poll(self) -> dict | None:
        """The result of the last save once it is done, once; None while writing or when nothing is new."""
        if self._inline_result is not None:
            result, self._inline_result = self._inline_result, None
        else:
            result = self._writer.poll() if self._writer is not None else None
        return self._settled(result)

    def wait(self) -> dict | None:
        """Block until the save in flight is done; its result (None when nothing was in flight)."""
        if self._inline_result is not None:
            return self.poll()
        return self._settled(self._writer.wait() if self._writer is not None else None)

    def _settled(self, result: dict | None) -> dict | None:
        if result is not None:
            self.changes.settle(result)
            result = {k: v for k, v in result.items() if k != "hashes"}
        return result

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
        # Nothing is in flight here (the Checkpointer collects a save before starting the next), and the
        # writer keeps its own mapping of an old buffer until it is told of the new one.
        self._release_buffer()
        self._buffer = StagingBuffer(size)
        atexit.register(self.close)  # finish the last save at exit
        return self._buffer

    def _write_inline(self, payload: codec.Payload, sources) -> dict:
        from .pool import Pool

        written = []

        def write(folder):
            written.append(codec.write_payload(folder, Pool(self.store.root), payload,
                                               lambda i: memoryview(state.host_bytes(sources[i].value))))
            return written[0]

        try:
            checkpoint = self.store.commit(payload.step, write, payload.meta)
            return {"ok": True, "id": checkpoint.id, "step": checkpoint.step, "bytes": checkpoint.size,
                    "hashes": _kept(checkpoint, written[0])}
        except OSError as exc:
            return {"ok": False, "error": str(exc), "errno": exc.errno, "step": payload.step}

    def _writer_process(self):
        from .writer import WriterProcess

        if self._writer is not None and not self._writer.alive():
            self._writer.close()
            self._writer = None
            self._sweep()  # what the dead writer was writing, here and on Drive
        if self._writer is None:
            self._writer = WriterProcess(self.lock_fd)
        return self._writer

    def _sweep(self) -> None:
        for store in filter(None, (self.store, self.mirror)):
            try:
                store.prepare()
            except OSError:  # the store itself is gone: the next save says so
                pass

    def close(self) -> dict | None:
        """Finish the save in flight (its result is returned), stop the writer, free the staging buffer."""
        atexit.unregister(self.close)
        try:
            return self.wait()
        finally:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
            self._release_buffer()

    def _release_buffer(self) -> None:
        if self._buffer is not None:
            self._buffer.close()
            self._buffer = None


def writes_here() -> bool:
    """Under torchrun (a multi-GPU SageMaker job) every rank restores, and rank 0 alone writes."""
    return os.environ.get("RANK", "0") == "0"
