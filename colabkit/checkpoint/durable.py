"""Files that are on disk when we say so: written, hashed and fsync'd in one pass.

Every file of a checkpoint goes through `Appender` (a pack), `write` or `copy` here, so each has
its size and hash recorded from the very bytes written (never a second read), and nothing is
called committed before it is fsync'd.

The hash is XXH3-128 (`HASH`): 10.7 GB/s on one core of the 2-core test machine, against 1.6 GB/s
for sha256 (SHA-NI), 2.1 GB/s for BLAKE3 and 0.7 GB/s for blake2b (benchmarks/bench_hashes.py), so
hashing no longer competes with the training loop for the second core. It guards against damage
and files cut short (any change is caught but with odds of 2**-128), as sha256 did here: neither is
a signature, since whoever can edit a file can edit the manifest beside it. sha256 stays readable
for checkpoints written by colabkit before format 3.
"""

from __future__ import annotations

import collections
import errno
import hashlib
import itertools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import xxhash

HASH = "xxh3_128"  # what a format-3 manifest records; "sha256" in format 2
CHUNK = 64 << 20  # large reads come up in pieces of this size


@dataclass(frozen=True)
class FileRecord:
    size: int
    hash: str  # hex digest by `algorithm`
    algorithm: str = HASH


def hasher(algorithm: str = HASH):
    """A fresh hash object of `algorithm` (HASH, or sha256 for older checkpoints)."""
    if algorithm == HASH:
        return xxhash.xxh3_128()
    if algorithm == "sha256":
        return hashlib.sha256()
    raise ValueError(f"unknown hash {algorithm!r}")


digest = xxhash.xxh3_128_hexdigest  # the HASH of one bytes-like object (a tensor's bytes), as hex


def fsync_path(path: Path) -> None:
    """fsync a file or a folder (a folder's entry list is only durable once the folder is synced)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


SMALL = 1 << 20  # smaller buffers are gathered into one vectored write; larger go down in pieces of this size
WRITEBACK = 16 << 20  # the disk is asked to start writing a file back every this many bytes
IOV_MAX = min(os.sysconf("SC_IOV_MAX"), 1024) if hasattr(os, "sysconf") else 16


class Appender:
    """A new file written from many buffers, hashed as they go in, fsync'd by `finish`.

    Buffers smaller than SMALL are gathered into one pwritev of about SMALL bytes (20,000 small
    tensors: not 20,000 writes, and no copy to gather them), each hashed just before, so the write
    finds its bytes still in the CPU's cache; larger ones go down a SMALL piece at a time, hashed
    the same way. Every WRITEBACK bytes the kernel is asked to start writing the file back
    (sync_file_range, Linux), so the disk works while the rest is hashed and copied and the
    closing fsync waits for the last few MiB rather than the whole file: this makes the commit
    of 256 MiB no slower than one raw write of it plus fsync. A buffer bigger than SMALL is
    written at once: a caller may reuse it as soon as `add` returns (stream.tensor_pieces)."""

    def __init__(self, path: Path, algorithm: str = HASH):
        self.path = path
        self.algorithm = algorithm
        self.digest = hasher(algorithm)
        self.size = 0  # bytes appended so far
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
        self._written = 0  # bytes handed to the kernel
        self._kicked = 0  # bytes whose writeback was started
        self._pending: list[memoryview] = []

    def __enter__(self) -> "Appender":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def append_small(self, view: memoryview) -> int:
        """add() for a memoryview of format "B" smaller than SMALL (20,000 small tensors: the
        checks add() makes cost 5 ms there)."""
        offset = self.size
        self.digest.update(view)
        self._pending.append(view)
        self.size = offset + len(view)
        if self.size - self._written >= SMALL or len(self._pending) >= IOV_MAX:
            self._flush()
        return offset

    def extend(self, views: list) -> list[int]:
        """append_small() for many memoryviews at once (20,000 small tensors: a few calls per
        megabyte rather than a few per tensor); their offsets."""
        offsets = list(itertools.accumulate(map(len, views), initial=self.size))
        collections.deque(map(self.digest.update, views), 0)
        self._pending += views
        self.size = offsets.pop()
        if self.size - self._written >= SMALL or len(self._pending) >= IOV_MAX:
            self._flush()
        return offsets

    def add(self, data) -> int:
        """Append `data`; its offset in the file."""
        view = data if type(data) is memoryview else memoryview(data)
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
        offset = self.size
        if len(view) < SMALL:
            self.append_small(view)
        else:
            for begin in range(0, len(view), SMALL):
                piece = view[begin:begin + SMALL]
                self.digest.update(piece)
                self._queue(piece)
            self._flush()
        return offset

    def add_hashed(self, view: memoryview) -> tuple[int, str]:
        """Append `view` (bytes, format "B") and return its offset and its own HASH, taken from
        the same pieces as they pass (one read of its bytes for both hashes and the write)."""
        offset = self.size
        if len(view) < SMALL:
            own = xxhash.xxh3_128_hexdigest(view)
            self.digest.update(view)
            self._queue(view)
            return offset, own
        own = xxhash.xxh3_128()
        for begin in range(0, len(view), SMALL):
            piece = view[begin:begin + SMALL]
            own.update(piece)
            self.digest.update(piece)
            self._queue(piece)
        self._flush()
        return offset, own.hexdigest()

    def mark(self) -> tuple:
        """Where the file is now, for `undo`."""
        return self.size, self.digest.copy()

    def undo(self, mark: tuple) -> None:
        """Take back everything appended since `mark` (a tensor written before its hash showed the
        pool holds it already)."""
        self._flush()
        self.size, self.digest = mark[0], mark[1].copy()
        os.ftruncate(self._fd, self.size)
        self._written = self.size
        self._kicked = min(self._kicked, self.size)

    def record(self) -> FileRecord:
        """The size and hash of what was appended (durable only once `finish` returns)."""
        return FileRecord(self.size, self.digest.hexdigest(), self.algorithm)

    def finish(self) -> FileRecord:
        """Write what is pending, fsync and close; the file's size and hash."""
        self._flush()
        os.fsync(self._fd)
        self.close()
        return self.record()

    def _queue(self, view: memoryview) -> None:
        self._pending.append(view)
        self.size += len(view)
        if self.size - self._written >= SMALL or len(self._pending) >= IOV_MAX:
            self._flush()

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        while pending:
            batch = pending[:IOV_MAX]
            done = os.pwritev(self._fd, batch, self._written)
            self._written += done
            if done == sum(map(len, batch)):
                del pending[:len(batch)]
                continue
            if done == 0:  # a file system that takes nothing and says no error would loop here forever
                raise OSError(errno.EIO, "the file system wrote nothing and gave no reason")
            while done >= len(pending[0]):  # a short write: go on from where it stopped
                done -= len(pending.pop(0))
            if done:
                pending[0] = pending[0][done:]
        if self._written - self._kicked >= WRITEBACK:
            _start_writeback(self._fd, self._kicked, self._written - self._kicked)
            self._kicked = self._written


_SYNC_FILE_RANGE_WRITE = 2
_sync_file_range = None  # libc's, looked up at the first write that needs it; False where there is none


def _start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing these bytes to disk now (no wait, no promise: only a hint;
    fsync still decides when they are durable)."""
    global _sync_file_range
    if _sync_file_range is None:
        try:
            import ctypes

            function = ctypes.CDLL(None, use_errno=True).sync_file_range
            function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
            _sync_file_range = function
        except (OSError, AttributeError):  # not Linux
            _sync_file_range = False
    if _sync_file_range:
        _sync_file_range(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


def write(path: Path, chunks: Iterable, algorithm: str = HASH) -> FileRecord:
    """Write `chunks` (bytes-like) to `path`, fsync it, and return its size and hash (taken from
    each piece just before it is written)."""
    with Appender(path, algorithm) as out:
        for chunk in chunks:
            out.add(chunk)
        return out.finish()


def copy(source: Path, target: Path, algorithm: str = HASH) -> FileRecord:
    """Copy with the hash computed from the bytes written, then fsync."""
    def read():
        with open(source, "rb", buffering=0) as f:
            while chunk := f.read(16 << 20):
                yield chunk

    return write(target, read(), algorithm=algorithm)


def hash_file(path: Path, algorithm: str = HASH) -> FileRecord:
    digest, size = hasher(algorithm), 0
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(8 << 20):
            digest.update(chunk)
            size += len(chunk)
    return FileRecord(size, digest.hexdigest(), algorithm)
