"""Writing the safetensors format straight from a staging buffer, hashing while writing.

The format (huggingface/safetensors): 8 bytes little-endian header length, a JSON header
{name: {dtype, shape, data_offsets: [begin, end]}} padded with spaces to 8 bytes, then the data
with no holes. Staging lays tensors out exactly as that data section, so a whole file is one
header write and one buffer write, from memory the training process no longer touches (shared
memory in the writer process). Reading goes through the safetensors library: no code runs on load.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .store import FileRecord

WRITE_CHUNK = 64 << 20


def header_bytes(entries: list[tuple[str, str, tuple[int, ...], int, int]], metadata: dict | None = None) -> bytes:
    """The length prefix and header for entries (key, dtype code, shape, begin, end)."""
    header: dict = {key: {"dtype": dtype, "shape": list(shape), "data_offsets": [begin, end]}
                    for key, dtype, shape, begin, end in entries}
    if metadata:
        header["__metadata__"] = {k: str(v) for k, v in metadata.items()}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return len(raw).to_bytes(8, "little") + raw


def write(path: Path, header: bytes, data: memoryview) -> FileRecord:
    """Write header + data to `path`, fsync it, and return its size and sha256.

    The hash is computed from memory on a second thread while this one writes and fsyncs, so
    the commit costs about what the write alone costs (both release the GIL on large buffers).
    """
    digest = hashlib.sha256(header)
    with ThreadPoolExecutor(1, thread_name_prefix="colabkit-hash") as pool:
        hashing = pool.submit(digest.update, data)
        with open(path, "wb", buffering=0) as f:
            f.write(header)
            for begin in range(0, len(data), WRITE_CHUNK):
                f.write(data[begin:begin + WRITE_CHUNK])
            os.fsync(f.fileno())
        hashing.result()
    return FileRecord(len(header) + len(data), digest.hexdigest())


def write_sources(path: Path, header: bytes, sources) -> FileRecord:
    """The same file written tensor by tensor from the live state, when there is no RAM to stage it."""
    import numpy as np

    from .state import is_tensor

    digest = hashlib.sha256(header)
    size = len(header)
    with open(path, "wb", buffering=0) as f:
        f.write(header)
        for source in sources:
            value = source.value
            if is_tensor(value):
                value = value.detach().cpu().contiguous().reshape(-1).view(__import__("torch").uint8).numpy()
            view = memoryview(np.ascontiguousarray(value)).cast("B")
            digest.update(view)
            f.write(view)
            size += len(view)
        os.fsync(f.fileno())
    return FileRecord(size, digest.hexdigest())
