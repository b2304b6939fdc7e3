"""Files that are on disk when we say so: written, hashed and fsync'd in one pass.

Every file of a checkpoint goes through `write` or `copy` here, so each has its size and sha256
recorded from the very bytes written (never a second read), and nothing is called committed
before it is fsync'd.
"""

from __future__ import annotations

import hashlib
import os
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

CHUNK = 64 << 20  # large writes go down in pieces of this size
THREADED_HASH = 1 << 20  # from this size on, hashing runs beside the writing


@dataclass(frozen=True)
class FileRecord:
    size: int
    sha256: str


def fsync_path(path: Path) -> None:
    """fsync a file or a folder (a folder's entry list is only durable once the folder is synced)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _pieces(chunks: Iterable) -> Iterable[memoryview]:
    for chunk in chunks:
        view = memoryview(chunk).cast("B")
        for begin in range(0, len(view), CHUNK):
            yield view[begin:begin + CHUNK]


def write(path: Path, chunks: Iterable, total: int | None = None) -> FileRecord:
    """Write `chunks` (bytes-like) to `path`, fsync it, and return its size and sha256.

    For large files the hash is computed on a second thread from the same memory while this one
    writes and fsyncs, so the commit costs about what the write alone costs (both release the GIL).
    """
    digest, size = hashlib.sha256(), 0
    threaded = total is None or total >= THREADED_HASH
    pending: queue.Queue | None = queue.Queue(maxsize=8) if threaded else None
    hasher = None
    if pending is not None:
        def hash_pieces():
            while (piece := pending.get()) is not None:
                digest.update(piece)

        hasher = threading.Thread(target=hash_pieces, name="colabkit-hash", daemon=True)
        hasher.start()
    try:
        with open(path, "wb", buffering=0) as f:
            for piece in _pieces(chunks):
                if pending is not None:
                    pending.put(piece)
                else:
                    digest.update(piece)
                f.write(piece)
                size += len(piece)
            os.fsync(f.fileno())
    finally:
        if pending is not None:
            pending.put(None)
            hasher.join()
    return FileRecord(size, digest.hexdigest())


def copy(source: Path, target: Path) -> FileRecord:
    """Copy with the hash computed from the bytes written, then fsync."""
    def read():
        with open(source, "rb", buffering=0) as f:
            while chunk := f.read(16 << 20):
                yield chunk

    return write(target, read())


def hash_file(path: Path) -> FileRecord:
    digest, size = hashlib.sha256(), 0
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(8 << 20):
            digest.update(chunk)
            size += len(chunk)
    return FileRecord(size, digest.hexdigest())
