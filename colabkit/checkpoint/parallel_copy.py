"""The staging copy of large tensors, shared by the training thread and a helper thread.

A save's stall is its copy into the staging buffer. One thread copies about half as fast as the
memory can (1 GiB: 0.08 s against 0.04 s on two threads here), but torch's own parallel copy
(OpenMP threads that wait on each other) is several times slower than one thread when another
process is busy on the second core, as a data loader is on a 2-core Colab VM. So the bytes are
cut into chunks that the training thread and a helper thread take from one list, each as it
finishes the last (ctypes' memmove lets go of the GIL): on a quiet machine both copy, and when
the helper is starved of a core the training thread takes the chunks it would have copied, so the
stall is never much longer than one thread's copy. The helper lives for one copy (starting it
costs about 0.1 ms, against the 2 ms or more of a copy this large): no thread is left behind
for %unload_ext or a fork to deal with.
"""

from __future__ import annotations

import ctypes
import os
import threading

CHUNK = 8 << 20  # a chunk taken at a time: small enough to share the tail, large enough to cost nothing to hand out
SHARED = 32 << 20  # below this many bytes the helper's start costs more than it saves


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def memmove_all(copies: list[tuple[int, int, int]]) -> None:
    """memmove each (to, from, size) of `copies`: memory that does not overlap and that stays valid
    until this returns. Shared with a helper thread when there are enough bytes and a second CPU."""
    if sum(size for _, _, size in copies) < SHARED or _cpus() < 2:
        for copy in copies:
            ctypes.memmove(*copy)
        return
    chunks = iter([(to + begin, source + begin, min(CHUNK, size - begin))
                   for to, source, size in copies for begin in range(0, size, CHUNK)])
    lock, stopped = threading.Lock(), []

    def work() -> None:
        while True:
            with lock:
                chunk = None if stopped else next(chunks, None)
            if chunk is None:
                return
            ctypes.memmove(*chunk)

    helper = threading.Thread(target=work, name="colabkit-staging-copy", daemon=True)
    helper.start()
    try:
        work()
    finally:  # also on KeyboardInterrupt: the helper must be done with the caller's memory
        with lock:
            stopped.append(True)
        helper.join()
