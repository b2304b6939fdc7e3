"""Where a captured checkpoint goes: staged, and committed by the writer process.

Copying the tensors that changed (changes.py) into a reused staging buffer is the only stall of
the training thread; the writer process hashes, writes what the pool lacks, fsyncs and commits.
The buffer is sized and its pages faulted in before the first save needs it, on a thread of its
own (`prepare`), so the first save stalls as little as the later ones. A save larger than the
staging budget (a share of the RAM free now) streams through a ring of a few chunks instead
(stream.py): memory stays bounded, and training pauses until the last chunk is copied (said).
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import threading
import time
from typing import Callable

from ..errors import say
from . import codec, state, stream
from .changes import ALIGN, Changes
from .store import CheckpointStore

RAM_HEADROOM = 0.8  # staging may take at most this share of the memory that is free
log = logging.getLogger(__name__)


def budget() -> int:
    """The most staging memory a save may take now: a share of the RAM that is free (on Colab,
    what the runtime's 12.7 GB leave once the notebook's own data is in). In a container with a
    memory limit (Kaggle, SageMaker, Docker) the free memory is the limit's, which psutil doesn't
    see: it reports the host's, and staging that much got the kernel killed for memory."""
    import psutil

    available = psutil.virtual_memory().available
    container = _container_memory().read()
    if container is not None:
        used, limit = container
        available = min(available, max(limit - used, 0))
    return int(RAM_HEADROOM * available)


@functools.cache
def _container_memory():
    from ..telemetry import CgroupMemory

    return CgroupMemory()


def staging_size(sources) -> int:
    """The staging bytes of these sources when all of them change (changes.place's layout)."""
    return sum(s.nbytes + (-s.nbytes % ALIGN) for s in sources)


class Sink:
    def __init__(self, store: CheckpointStore, mirror: CheckpointStore | None = None, lock_fd: int | None = None):
        self.store, self.mirror = store, mirror
        self.lock_fd = lock_fd  # the store's lock, which the writer holds too (lock.py)
        self._writer = None
        self._buffer = None
        self._streamed: dict | None = None  # how the save in flight was streamed, for its result
        self._preparing: tuple[threading.Event, threading.Lock] | None = None
        self._prepared = None  # a buffer the preparing thread made (pages faulted in as far as it got)
        self.prepared = threading.Event()  # set when the preparing thread is done (benchmarks wait)
        self.next_bytes: int | None = None  # what the next save will stage, about: the last one's, or all
        self._saved_any = False
        self.changes = Changes()

    def start(self) -> None:
        """Start the writer process now, so the first scheduled save doesn't wait for it."""
        self._writer_process()

    def prepare(self, estimate: Callable[[], int]) -> None:
        """Size the staging buffer by `estimate()` (the staging bytes of the state as it is now)
        and fault its pages in, on a thread of its own: a fresh buffer's page faults made the
        first save stall 10x a later one. Never waits; a save that comes first takes the buffer
        as far as it got (or makes its own), correct either way."""
        self._stop_preparing()
        stop, lock = threading.Event(), threading.Lock()
        self._preparing = (stop, lock)
        self.prepared.clear()
        threading.Thread(target=self._prepare, args=(estimate, stop, lock), name="colabkit-staging",
                         daemon=True).start()

    def _prepare(self, estimate, stop: threading.Event, lock: threading.Lock) -> None:
        from .writer import StagingBuffer

        try:
            estimated = estimate()
            if not self._saved_any:  # before the first save, all of it will be new
                self.next_bytes = estimated
            size = self._staging_need(estimated)[0]
            with lock:
                if stop.is_set() or (self._buffer is not None and self._buffer.size >= size):
                    return
                if self._prepared is not None and self._prepared.size < size:
                    self._prepared.close()
                    self._prepared = None
                if self._prepared is None:
                    self._prepared = StagingBuffer(size)
                buffer = self._prepared
            buffer.prefault(stop, lock)
        except Exception:  # only the first save's speed depends on it: it stages all the same
            log.exception("colabkit: preparing the staging buffer failed")
        finally:
            self.prepared.set()

    def _stop_preparing(self) -> None:
        """Stop the preparing thread for good (it touches no page after this) and adopt its buffer."""
        if self._preparing is None:
            return
        stop, lock = self._preparing
        stop.set()
        with lock:
            prepared, self._prepared = self._prepared, None
        self._preparing = None
        if prepared is not None:
            if self._buffer is None or prepared.size > self._buffer.size:
                self._release_buffer()
                self._buffer = prepared
                atexit.register(self._close_at_exit)
            else:
                prepared.close()

    @property
    def busy(self) -> bool:
        """A save is still being written."""
        return self._writer is not None and self._writer.in_flight is not None

    def save(self, captured: state.Capture, step: int, position: int, pace: float | None, meta: dict) -> dict | None:
        """Stage what changed and hand the checkpoint over (nothing may be in flight). Returns how
        it was streamed when it was larger than the staging budget ({"pause", "ring", "budget"}),
        else None."""
        started = time.perf_counter()
        self._stop_preparing()
        places, staged, size = self.changes.place(captured.sources)
        self.next_bytes, self._saved_any = size, True
        payload = codec.encode(captured, places, size, step, position, pace, meta)
        need, slot, allowed = self._staging_need(size)
        buffer = self._staging(need)
        job = {"root": str(self.store.root), "keep": self.store.keep, "payload": payload,
               "mirror": str(self.mirror.root) if self.mirror else None}
        if slot is None:
            state.stage(staged, buffer.buf)
            self._submit(job, buffer)
            self._streamed = None
            return None
        job["stream"] = {"slot": slot}
        self._submit(job, buffer)
        try:
            stream.send(self._writer, staged, size, buffer, slot)
        except OSError:  # the writer died mid-stream: poll() says the save was lost
            pass
        except BaseException:  # an interrupt in the copy: the writer drops the stream and says the save failed
            self._writer.abandon()
            raise
        self._streamed = {"streamed": True, "pause": time.perf_counter() - started, "ring": buffer.size,
                          "budget": allowed}
        return self._streamed

    def _submit(self, job: dict, buffer) -> None:
        try:
            self._writer_process().submit(job, buffer)
        except OSError:  # the writer died since the last save (killed): a new one takes this save
            self._writer.process.kill()
            self._writer.process.wait()
            self._writer_process().submit(job, buffer)

    def poll(self) -> dict | None:
        """The result of the last save once it is done, once; None while writing or when nothing is new."""
        return self._settled(self._writer.poll() if self._writer is not None else None)

    def wait(self) -> dict | None:
        """Block until the save in flight is done; its result (None when nothing was in flight)."""
        return self._settled(self._writer.wait() if self._writer is not None else None)

    def _settled(self, result: dict | None) -> dict | None:
        if result is not None:
            self.changes.settle(result)
            result = {k: v for k, v in result.items() if k != "hashes"}
            if self._streamed is not None:
                result.update(self._streamed)
                self._streamed = None
        return result

    def _staging_need(self, size: int) -> tuple[int, int | None, int]:
        """The buffer a save of `size` staged bytes needs: (its size, the ring's slot size or None
        when it is staged whole, the budget it was measured against)."""
        allowed = budget()
        if size <= allowed:
            return max(size, 1), None, allowed
        slot = stream.slot_size(allowed)
        return slot * stream.SLOTS, slot, allowed

    def _staging(self, size: int):
        """The staging buffer, reused across saves; a larger one replaces it when needed."""
        from .writer import StagingBuffer

        if self._buffer is not None and self._buffer.size >= size:
            return self._buffer
        # Nothing is in flight here (the Checkpointer collects a save before starting the next), and the
        # writer keeps its own mapping of an old buffer until it is told of the new one.
        self._release_buffer()
        self._buffer = StagingBuffer(size)
        atexit.register(self._close_at_exit)
        return self._buffer

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

    def close(self, waiting: Callable[[], None] | None = None) -> dict | None:
        """Finish the save in flight (its result is returned), stop the writer (`waiting`: called
        when it takes a while: WriterProcess.close), free the staging buffer."""
        atexit.unregister(self._close_at_exit)
        self._stop_preparing()
        try:
            return self.wait()
        finally:
            writer, self._writer = self._writer, None
            try:
                if writer is not None:
                    writer.close(waiting)
            finally:  # also when an interrupt stopped the wait for the writer
                self._release_buffer()

    def _close_at_exit(self) -> None:
        """At interpreter exit, for a Checkpointer never closed (a script): finish the last save,
        and say when it failed, as nobody else is left to."""
        result = self.close()
        if result is not None and not result.get("ok"):
            say(f"the last checkpoint, step-{result.get('step')}, was not saved ({result.get('error')}); the "
                f"checkpoints before it in {self.store.root} are intact.")

    def _release_buffer(self) -> None:
        if self._buffer is not None:
            self._buffer.close()
            self._buffer = None


def writes_here() -> bool:
    """Under torchrun (a multi-GPU SageMaker job) every rank restores, and rank 0 alone writes."""
    return os.environ.get("RANK", "0") == "0"
