"""Which tensors changed since the last save: only those are staged, written and copied to Drive.

A CPU tensor whose memory (data_ptr) and version counter (bumped by every in-place write through
the tensor or its views: an optimizer step, load_state_dict, copy_) are what they were at the last
committed save is a candidate for "unchanged". The version counter misses writes that
go around it (`p.data.add_(...)`, `p.data -= lr * p.grad`, an EMA through `.data`, a NumPy array
from `t.numpy()`: measured with torch 2.13), so a candidate's bytes are hashed (XXH3-128, about 10x
a memcpy's speed) and compared with the hash the writer recorded: it is referenced only when they
match, and staged otherwise. A tensor whose counter moved is staged without hashing.

NumPy arrays, tensors made under torch.inference_mode() and GPU tensors are always staged (the
first two have no version counter; hashing a GPU tensor would cost its copy to the host); the
writer hashes them and writes no bytes the pool already holds.
"""

from __future__ import annotations

from . import durable, state

# Staged tensors start at multiples of this in the staging buffer: the largest element size, so
# each starts aligned for its dtype, and tensors whose sizes are multiples of it lie back to back
# (the writer writes and hashes such a run as one piece: pool.Pool._write_new).
ALIGN = 8


def kept_hashes(checkpoint, written) -> list | None:
    """What a save's result tells the trainer: the hashes of what it staged, or None when retention
    deleted the checkpoint at once (a step below the kept ones): nothing may then point at it."""
    return written.staged_hashes if checkpoint.path.is_dir() else None


class Changes:
    """The trainer's memory of its last committed save: key -> (token, hash)."""

    def __init__(self):
        self._saved: dict[str, tuple] = {}
        self._pending: tuple | None = None  # (keys, tokens, places) of the save in flight

    def place(self, sources: list) -> tuple[list, list[tuple], int]:
        """Decide where each source goes: `places` (a hash for an unchanged tensor, else an offset
        in the staging buffer), the (source, offset) pairs to stage, and the staged size."""
        places, staged, offset, tokens = [], [], 0, []
        torch = state._torch()
        tensor_type = torch.Tensor if torch is not None else ()
        saved_of, digest, cpu_bytes = self._saved.get, durable.digest, state.cpu_bytes
        for source in sources:
            value = source.value
            # What identifies a CPU tensor's memory and its writes (None: nothing to trust). Only a
            # candidate for "unchanged": the hash of its bytes decides.
            token = None
            if isinstance(value, tensor_type) and value.is_cpu and value.is_contiguous():
                try:
                    token = value.data_ptr(), value._version
                except RuntimeError:  # made under torch.inference_mode(): no version counter
                    pass
            tokens.append(token)
            if token is not None:
                saved = saved_of(source.key)
                if saved is not None and saved[0] == token:
                    hashed = digest(cpu_bytes(value))
                    if hashed == saved[1]:
                        places.append(hashed)
                        continue
            places.append(offset)
            staged.append((source, offset))
            offset += source.nbytes + (-source.nbytes % ALIGN)
        self._pending = ([s.key for s in sources], tokens, places)
        return places, staged, offset

    def settle(self, result: dict | None) -> None:
        """The in-flight save's result: remember what it committed, or forget everything if it
        failed (the next save stages all)."""
        pending, self._pending = self._pending, None
        if result is None or pending is None:
            return
        if not result.get("ok") or result.get("hashes") is None:
            self._saved = {}
            return
        keys, tokens, places = pending
        saved = {}
        for key, token, place, digest in zip(keys, tokens, places, result["hashes"]):
            if isinstance(place, str):
                saved[key] = self._saved[key]
            elif token is not None:
                saved[key] = (token, digest)
        self._saved = saved
