"""The staging copy of large tensors, shared by the training thread and one helper thread.

A save's stall is its copy into the staging buffer. One thread copies about half as fast as the
memory can (1 GiB: 0.08 s against 0.04 s on two threads here), but torch's own parallel copy
(OpenMP threads that wait on each other) is several times slower than one thread when another
process is busy on the second core, as a data loader is on a 2-core Colab VM. So the bytes are
cut into chunks that the training thread and a helper thread take from one list, each as it
finishes the last (ctypes' memmove lets go of the GIL): on a quiet machine both copy, and when
the helper is starved of a core the training thread takes the chunks it would have copied, so the
stall is never much longer than one thread's copy.
"""

from __future__ import annotations

import ctypes
import os
import threading

CHUNK = 8 << 20  # a chunk taken at a time: small enough to share the tail, large enough to cost nothing to hand out
SHARED = 32 << 20  # below this many bytes the helper's wake-up costs more than it saves


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class _Helper:
    """The helper thread (one per process, started at the first large copy) and the chunks it shares."""

    def __init__(self):
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # chunks handed out, or the helper's chunk done
        self._using = threading.Lock()  # one copy at a time shares the helper; another copies alone
        self._chunks: list[tuple[int, int, int]] = []
        self._next = 0
        self._copying = False  # the helper is in a memmove
        threading.Thread(target=self._run, name="colabkit-staging-copy", daemon=True).start()

    def _take(self):
        """The next chunk, or None (under the lock)."""
        if self._next < len(self._chunks):
            self._next += 1
            return self._chunks[self._next - 1]
        return None

    def _run(self) -> None:
        with self._lock:
            while True:
                chunk = self._take()
                if chunk is None:
                    self._changed.wait()
                    continue
                self._copying = True
                self._lock.release()
                try:
                    ctypes.memmove(*chunk)
                finally:
                    self._lock.acquire()
                    self._copying = False
                    self._changed.notify_all()

    def copy(self, chunks: list[tuple[int, int, int]]) -> bool:
        """Copy `chunks` ((to, from, size) addresses) with the helper; False, copying nothing,
        when another thread's copy holds it."""
        if not self._using.acquire(blocking=False):
            return False
        memmove = ctypes.memmove
        try:
            with self._lock:
                self._chunks, self._next = chunks, 0
                self._changed.notify_all()
            while True:
                with self._lock:
                    chunk = self._take()
                if chunk is None:
                    break
                memmove(*chunk)
            return True
        finally:  # also on KeyboardInterrupt: the helper must be done with the caller's memory
            with self._lock:
                self._chunks, self._next = [], 0
                while self._copying:
                    self._changed.wait()
            self._using.release()


_helper: _Helper | None = None
_starting = threading.Lock()


def _forget_helper() -> None:
    """In a forked child the helper thread is gone (and may have held its lock): start afresh."""
    global _helper, _starting
    _helper, _starting = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_helper)


def memmove_all(copies: list[tuple[int, int, int]]) -> None:
    """memmove each (to, from, size) of `copies`: memory that does not overlap and that stays valid
    until this returns. Shared with the helper thread when there are enough bytes and a second CPU."""
    global _helper
    total = sum(size for _, _, size in copies)
    if total >= SHARED and _cpus() > 1:
        with _starting:
            if _helper is None:
                _helper = _Helper()
        chunks = [(to + begin, source + begin, min(CHUNK, size - begin))
                  for to, source, size in copies for begin in range(0, size, CHUNK)]
        if _helper.copy(chunks):
            return
    memmove = ctypes.memmove
    for to, source, size in copies:
        memmove(to, source, size)
