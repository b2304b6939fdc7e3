"""The staging copy shared by the training thread and a helper thread (issue 11: the stall of a
few large tensors): every byte lands where it belongs whoever copies it, and when the copy is
interrupted the helper lets go of the caller's memory before the caller goes on; no thread is
left behind."""

import ctypes
import threading
import time

import numpy as np
import pytest

from colabkit.checkpoint import parallel_copy, state


def addresses(sources, target, offsets):
    return [(target.ctypes.data + offset, source.ctypes.data, source.nbytes) for source, offset in zip(sources, offsets)]


def test_chunks_shared_with_the_helper_land_where_they_belong(monkeypatch):
    monkeypatch.setattr(parallel_copy, "CHUNK", 4096)
    monkeypatch.setattr(parallel_copy, "SHARED", 1)
    monkeypatch.setattr(parallel_copy, "_cpus", lambda: 2)
    rng = np.random.default_rng(5)
    sizes = [1, 4095, 4096, 4097, 3 * 4096 + 17, 200_000, 0, 65_536]
    sources = [rng.integers(0, 256, size, dtype=np.uint8) for size in sizes]
    offsets = np.cumsum([0] + sizes[:-1]).tolist()
    target = np.zeros(sum(sizes), dtype=np.uint8)
    copiers, helped, caller = set(), threading.Event(), threading.Event()
    memmove = ctypes.memmove

    def counted(*args):
        # Each thread's first chunk waits until the other has taken one: on a loaded machine
        # either may wake late, and the one awake would otherwise take every chunk.
        name = threading.current_thread().name
        first = name not in copiers
        copiers.add(name)
        mine, other = (helped, caller) if name == "colabkit-staging-copy" else (caller, helped)
        mine.set()
        if first:
            other.wait(20)
        return memmove(*args)

    monkeypatch.setattr(ctypes, "memmove", counted)
    parallel_copy.memmove_all(addresses(sources, target, offsets))
    assert bytes(target) == b"".join(s.tobytes() for s in sources)
    assert helped.is_set() and threading.current_thread().name in copiers
    assert not [t for t in threading.enumerate() if t.name == "colabkit-staging-copy"]


def test_an_interrupted_copy_leaves_the_helper_no_chunk_of_it(monkeypatch):
    monkeypatch.setattr(parallel_copy, "CHUNK", 4096)
    monkeypatch.setattr(parallel_copy, "SHARED", 1)
    monkeypatch.setattr(parallel_copy, "_cpus", lambda: 2)
    source = np.arange(1024 * 2000, dtype=np.uint32).view(np.uint8)  # 2,000 chunks
    target = np.zeros_like(source)
    after = []  # chunks copied once the caller was interrupted
    interrupted = threading.Event()
    memmove = ctypes.memmove

    def interrupting(*args):
        if interrupted.is_set():
            after.append(args)
        if threading.current_thread() is threading.main_thread():
            interrupted.set()
            raise KeyboardInterrupt
        time.sleep(0.001)  # the helper slower than the caller: it would still hold chunks
        return memmove(*args)

    monkeypatch.setattr(ctypes, "memmove", interrupting)
    with pytest.raises(KeyboardInterrupt):
        parallel_copy.memmove_all(addresses([source], target, [0]))
    assert len(after) < 100  # of 2,000 chunks: it stopped at the chunk it was in, not at the end
    settled = len(after)
    threading.Event().wait(0.2)
    assert len(after) == settled
    assert not [t for t in threading.enumerate() if t.name == "colabkit-staging-copy"]  # none left behind


def test_a_stage_of_large_and_small_tensors_copies_each_to_its_offset(monkeypatch):
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(parallel_copy, "SHARED", 1 << 20)
    monkeypatch.setattr(parallel_copy, "_cpus", lambda: 2)
    values = [torch.randn(n) for n in (300_000, 10, 1 << 19, 5, 700_001)]  # large ones above state.PARALLEL
    sources = [state.Source(f"t{i}", value, "F32", tuple(value.shape), value.nbytes) for i, value in enumerate(values)]
    offsets = np.cumsum([0] + [v.nbytes + 64 for v in values[:-1]]).tolist()
    buffer = bytearray(offsets[-1] + values[-1].nbytes)
    state.stage(list(zip(sources, offsets)), buffer)
    flat = np.frombuffer(buffer, dtype=np.uint8)
    for value, offset in zip(values, offsets):
        assert bytes(flat[offset:offset + value.nbytes]) == value.numpy().tobytes()

