"""Files that are on disk when we say so: written, hashed and fsync'd in one pass.

Every file of a checkpoint goes through `write` or `copy` here, so each has its size and hash
recorded from the very bytes written (never a second read), and nothing is called committed
before it is fsync'd.

The hash is XXH3-128 (`HASH`): 10.7 GB/s on one core of the 2-core test machine, against 1.6 GB/s
for sha256 (SHA-NI), 2.1 GB/s for BLAKE3 and 0.7 GB/s for blake2b (benchmarks/bench_hashes.py), so
hashing no longer competes with the training loop for the second core. It guards against damage
and files cut short (any change is caught but with odds of 2**-128), as sha256 did here: neither is
a signature, since whoever can edit a file can edit the manifest beside it. sha256 stays readable
for checkpoints written by colabkit before format 3.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import xxhash

HASH = "xxh3_128"  # what a format-3 manifest records; "sha256" in format 2
CHUNK = 64 << 20  # large writes go down in pieces of this size


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


def digest(data) -> str:
    """The HASH of one bytes-like object (a tensor's bytes), as hex."""
    return xxhash.xxh3_128_hexdigest(data)


def fsync_path(path: Path) -> None:
    """fsync a file or a folder (a folder's entry list is only durable once the folder is synced)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


SMALL = 1 << 20  # smaller chunks are gathered into one write (20,000 small tensors: not 20,000 writes)


def _pieces(chunks: Iterable) -> Iterable[memoryview]:
    gathered: list = []
    gathered_size = 0
    for chunk in chunks:
        view = memoryview(chunk).cast("B")
        if len(view) < SMALL:
            gathered.append(view)
            gathered_size += len(view)
            if gathered_size >= SMALL:
                yield memoryview(b"".join(gathered))
                gathered, gathered_size = [], 0
            continue
        if gathered:
            yield memoryview(b"".join(gathered))
            gathered, gathered_size = [], 0
        for begin in range(0, len(view), CHUNK):
            yield view[begin:begin + CHUNK]
    if gathered:
        yield memoryview(b"".join(gathered))


def write(path: Path, chunks: Iterable, total: int | None = None, algorithm: str = HASH) -> FileRecord:
    """Write `chunks` (bytes-like) to `path`, fsync it, and return its size and hash.

    The hash is taken from each piece just before it is written (XXH3 adds about a tenth to a
    write; `total` is the size expected, for the caller's checks)."""
    digest, size = hasher(algorithm), 0
    with open(path, "wb", buffering=0) as f:
        for piece in _pieces(chunks):
            digest.update(piece)
            f.write(piece)
            size += len(piece)
        os.fsync(f.fileno())
    return FileRecord(size, digest.hexdigest(), algorithm)


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
