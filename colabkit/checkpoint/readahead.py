"""Asking the kernel to read a checkpoint's packs ahead while the loader is still decoding.

A restore decodes state.json and the tensor index and works out where each tensor goes before
it reads a byte of the packs; the disk would sit idle all that while (20,000 tensors: about a
third of a cold restore). So from the start a thread asks the kernel to read the packs in the
order the loader reads them (posix_fadvise WILLNEED, a piece of the kernel's readahead window at a
time: it reads no more per call), staying at most WINDOW ahead of the loader so that a checkpoint
larger than free memory doesn't push its own unread pages out. The bytes still go into memory once,
when the loader reads them (hashed as they come); this only has the disk start sooner.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

PIECE = 2 << 20  # per call: the kernel reads at most its readahead size (or the disk's largest request) per call
WINDOW = 256 << 20


class Readahead:
    """Packs `paths` (of `sizes` bytes), read ahead in that order; `reached(n)` says the loader is
    n bytes in (counted over the packs one after another), `stop()` ends it."""

    def __init__(self, paths: list[Path], sizes: list[int]):
        self._reached, self._stopped = 0, False
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, args=(paths, sizes), name="colabkit-readahead", daemon=True)
        self._thread.start()

    def reached(self, position: int) -> None:
        with self._changed:
            self._reached = position
            self._changed.notify()

    def stop(self) -> None:
        with self._changed:
            self._stopped = True
            self._changed.notify()

    def _run(self, paths: list[Path], sizes: list[int]) -> None:
        advised = 0
        for path, size in zip(paths, sizes):
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError:  # missing: the loader says so
                return
            try:
                for offset in range(0, size, PIECE):
                    with self._changed:
                        self._changed.wait_for(lambda: self._stopped or advised - self._reached < WINDOW)
                        if self._stopped:
                            return
                    os.posix_fadvise(fd, offset, PIECE, os.POSIX_FADV_WILLNEED)
                    advised += min(PIECE, size - offset)
            except OSError:  # advice only: the loader reads all the same
                return
            finally:
                os.close(fd)
