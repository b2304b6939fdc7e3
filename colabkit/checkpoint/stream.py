"""A checkpoint larger than the staging budget, streamed to the writer through a ring of chunks.

Staging a whole state needs memory of its size; a state larger than the budget (sink.budget(): a
share of the RAM that is free now) goes through a ring of a few chunks instead. The trainer copies
the staged bytes chunk by chunk into free slots of the ring and tells the writer of each; the
writer hashes and writes a chunk while the trainer copies the next, and frees its slot once the
bytes are written. Training pauses until the last chunk is copied (about the copy, or the write
into the page cache when that is slower), and the memory taken is the ring's, whatever the size.
The stream is the staging layout (changes.place's offsets) cut into slot-sized chunks, so a
payload means the same whichever way it was staged; the writer commits it as any other (pool.py).

Messages on the writer's connection, after the job: ("chunk", slot, length) from the trainer,
("freed", slot) from the writer; the job's result comes last, as for a staged save. A trainer
interrupted in the middle sends ("abandon", 0, 0): the writer drops the save (its pack half
written is removed) and reports it failed, which the next consistent point says.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from . import durable, state

SLOTS = 4  # chunks in the ring: the writer works on one while the trainer fills the next
SLOT_MAX = 64 << 20
SLOT_MIN = 1 << 20


def slot_size(budget: int) -> int:
    """The chunk size for a ring that fits in `budget` bytes (at least SLOT_MIN: a ring of a few
    MiB is taken even from a machine that is nearly out of memory)."""
    return max(SLOT_MIN, min(SLOT_MAX, budget // SLOTS // mmap_page() * mmap_page()))


def mmap_page() -> int:
    import mmap

    return mmap.PAGESIZE


# -- the trainer's side --------------------------------------------------------------------------

def copy_range(value, begin: int, end: int, buffer, offset: int) -> None:
    """Copy bytes [begin, end) of a tensor or array into `buffer` at `offset` (a GPU tensor sends
    only that range to the host)."""
    if state.is_tensor(value) and (value.device.type != "cpu" or not value.is_contiguous()):
        torch = state._torch()
        source = value.detach().reshape(-1).view(torch.uint8)[begin:end]
        torch.frombuffer(buffer, dtype=torch.uint8, count=end - begin, offset=offset).copy_(source)
        return
    target = np.frombuffer(buffer, dtype=np.uint8, count=end - begin, offset=offset)
    np.copyto(target, state.host_bytes(value)[begin:end], casting="no")


def send(writer, staged: list, size: int, buffer, slot: int) -> None:
    """Copy the staged sources (source, offset) through the ring in `buffer` (slots of `slot`
    bytes) to `writer`, which has the job already. Returns once the last chunk is copied; raises
    OSError when the writer dies on the way (the save is then lost, and said)."""
    slots = buffer.size // slot
    free = list(range(slots))
    pending = iter(staged)
    current = next(pending, None)
    for chunk_begin in range(0, size, slot):
        chunk_end = min(chunk_begin + slot, size)
        if not free:
            free.append(writer.freed())
        index = free.pop(0)
        base = index * slot
        while current is not None:
            source, offset = current
            begin, end = max(offset, chunk_begin), min(offset + source.nbytes, chunk_end)
            if begin < end:
                copy_range(source.value, begin - offset, end - offset, buffer.buf, base + begin - chunk_begin)
            if offset + source.nbytes > chunk_end:
                break  # it goes on in the next chunk
            current = next(pending, None)
        writer.send_chunk(index, chunk_end - chunk_begin)


# -- the writer's side ---------------------------------------------------------------------------

class Abandoned(OSError):
    """The trainer was interrupted mid-stream: the save is dropped, by the user's own doing."""


def received(conn, ring: memoryview, slot: int, size: int) -> Iterator[tuple[int, memoryview]]:
    """The chunks of a stream of `size` bytes as they come, (their start in the stream, their
    bytes); a chunk's slot is freed when the next is asked for (its bytes are written by then)."""
    start = 0
    while start < size:
        kind, index, length = conn.recv()
        if kind == "abandon":
            raise Abandoned("the training thread stopped in the middle of copying it (interrupted)")
        if kind != "chunk":
            raise OSError(f"the trainer sent {kind!r} in the middle of a stream")
        view = ring[index * slot:index * slot + length]
        try:
            yield start, view
        finally:
            view.release()
        conn.send(("freed", index))
        start += length


def tensor_pieces(places: list, sizes: list[int], chunks) -> Iterator[tuple[int, memoryview | bytes]]:
    """Each staged tensor's bytes (places[i] an offset in the stream), in stream order, as
    (tensor number, piece); the padding between tensors is skipped. A piece smaller than
    durable.SMALL is a copy (the writer gathers small pieces, and the slot they came from is
    reused once the next chunk is asked for)."""
    order = [i for i, place in enumerate(places) if isinstance(place, int) and sizes[i]]
    position = 0
    for start, view in chunks:
        end = start + len(view)
        while position < len(order):
            i = order[position]
            begin, stop = max(places[i], start), min(places[i] + sizes[i], end)
            if begin < stop:
                piece = view[begin - start:stop - start]
                yield i, (bytes(piece) if len(piece) < durable.SMALL else piece)
            if places[i] + sizes[i] > end:
                break
            position += 1
    if position < len(order):
        raise OSError(f"the stream ended before the bytes of tensor {order[position]}")
